"""Memory training over short slice sequences (``data.sequence_length``) on the real shared data: the sequence
sampler (windows of consecutive slices, organ balance, determinism), the sequence dataset, crisp_sam2 runs
whose memory encoder / memory attention now learn (and do not in an independent-slice run), resume
equivalence and config errors.

The training runs use the pretrained LiteMedSAM core on one case (amos_0001, 11 slices), batch 1, T = 2 and
a feature cache shared by the module's runs, to stay fast on a CPU."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import data_path

from organsam.config import ConfigError
from organsam.training.case_store import CaseStore
from organsam.training.datasets import read_dataset
from organsam.training.sampling import StepBatchSampler
from organsam.training.sequence_sampling import SequenceSampler
from organsam.training.train_config import load_train_config
from organsam.vocabulary import load_vocabulary

IDS = load_vocabulary().ids()
MEMORY = ("memory_encoder.", "memory_attention.")


@pytest.fixture(scope="module")
def store():
    cases = [c for c in read_dataset("shared", data_path()) if c.case_id in ("ts_a", "amos_0001")]
    return CaseStore(cases, IDS)


# ---------------------------------------------------------------------------------------------- sampler
def test_sequences_are_consecutive_windows_around_a_present_organ(store):
    s = SequenceSampler.from_store(store, length=3, absent_fraction=0.0, seed=3)
    specs = s.draw(0, 0, 400)
    for sp in specs:
        zs = np.asarray(sp.zs)
        assert len(zs) == 3 and set(np.abs(np.diff(zs))) == {1} and len(set(np.sign(np.diff(zs)))) == 1
        Z = store.areas[sp.case].shape[0]
        assert zs.min() >= 0 and zs.max() < Z
        # the organ is on the anchor slice, which is the centre unless the window was shifted at a volume end
        assert store.areas[sp.case][sp.anchor_z, sp.organ] * store.model_scale(sp.case) ** 2 >= s.min_area
        assert sp.present[sp.anchor] and sp.present == tuple(store.areas[sp.case][z, sp.organ] > 0 for z in sp.zs)
        if 1 <= sp.anchor_z <= Z - 2:
            assert sp.anchor == 1
    assert {sp.zs[0] < sp.zs[-1] for sp in specs} == {True, False}  # both directions
    assert {store.cases[sp.case].case_id for sp in specs} == {"ts_a", "amos_0001"}
    # windows at the ends of the 11-slice AMOS slab are shifted inwards, the anchor moves off the centre
    amos = store.case_index("amos_0001")
    assert s.window(amos, 0) == ([0, 1, 2], 0) and s.window(amos, 10) == ([8, 9, 10], 2)
    assert s.window(amos, 5) == ([4, 5, 6], 1)
    strided = SequenceSampler.from_store(store, length=3, stride=2, seed=3)
    assert strided.window(amos, 5) == ([3, 5, 7], 1) and strided.window(amos, 10) == ([6, 8, 10], 2)
    for sp in strided.draw(1, 0, 50):
        assert set(np.abs(np.diff(sp.zs))) == {2}


def test_sequence_draws_are_deterministic_and_organ_balanced(store):
    s = SequenceSampler.from_store(store, length=2, absent_fraction=0.0, seed=1)
    assert s.draw(4, 0, 8) == SequenceSampler.from_store(store, length=2, absent_fraction=0.0, seed=1).draw(4, 0, 8)
    assert s.draw(4, 0, 8) != s.draw(5, 0, 8)
    assert s.draw(4, 0, 8) != SequenceSampler.from_store(store, length=2, absent_fraction=0.0, seed=2).draw(4, 0, 8)
    # the anchors follow the slice sampler's organ-balanced weights (every organ equally often)
    n = 3000
    drawn = np.bincount([sp.organ for sp in s.draw(0, 0, n)], minlength=len(IDS)) / n
    p = s.organ_probabilities()
    organs = np.nonzero(s.organ_counts)[0]
    np.testing.assert_allclose(p[organs], 1.0 / organs.size)
    assert np.all(np.abs(drawn[organs] - p[organs]) < 5 * np.sqrt(p[organs] * (1 - p[organs]) / n))
    # resumable and DDP-consistent through the same StepBatchSampler as the slice sampler
    one = list(StepBatchSampler(s, 2, 0, 4))
    assert list(StepBatchSampler(s, 2, 2, 4)) == one[2:]
    r0 = list(StepBatchSampler(s, 1, 0, 4, rank=0, world_size=2))
    r1 = list(StepBatchSampler(s, 1, 0, 4, rank=1, world_size=2))
    assert all(a + b == g for a, b, g in zip(r0, r1, one))


def test_absent_anchors_and_too_short_volumes(store):
    s = SequenceSampler.from_store(store, length=2, absent_fraction=0.5, seed=4)
    absent = [sp for sp in s.draw(0, 0, 400) if not sp.present[sp.anchor]]
    assert 0.4 < len(absent) / 400 < 0.6
    assert all(store.known[sp.case][sp.organ] for sp in absent)
    # ts_a (112 slices) is long enough for 12-slice sequences, the 11-slice AMOS slab is not: never drawn
    long = SequenceSampler.from_store(store, length=12, seed=4)
    assert {sp.case for sp in long.draw(0, 0, 50)} == {store.case_index("ts_a")}
    amos = [c for c in store.cases if c.case_id == "amos_0001"]
    with pytest.raises(ValueError, match="sequence_length"):
        SequenceSampler.from_store(CaseStore(amos, IDS), length=12)


def test_sequence_dataset_items_share_the_augmentation(store):
    from organsam.training.sequence_dataset import SequenceDataset
    from organsam.training.transforms import AugmentConfig, SliceTransform

    aug = AugmentConfig(affine_prob=1.0, intensity_prob=0.0, noise_prob=0.0, rotate_degrees=20.0)
    transform = SliceTransform(aug, box_jitter=5.0)
    ds = SequenceDataset(store, transform)
    s = SequenceSampler.from_store(store, length=3, absent_fraction=0.0, seed=6)
    spec = next(sp for sp in s.draw(0, 0, 50) if all(sp.present))
    item = ds[spec]
    assert item["image"].shape == (3, 3, 256, 256) and item["mask"].shape == (3, 1, 256, 256)
    assert item["box"].shape == (3, 4) and item["class_targets"].shape == (3, len(IDS))
    assert item["zs"] == spec.zs and item["spacing"] == store.data[spec.case].spacing[0]
    assert torch.equal(item["present"], item["mask"].flatten(1).amax(1))
    # every slice goes through the sequence's own (same) random transform; only the box jitter differs
    for t, z in enumerate(spec.zs):
        alone = transform(store.image_slice(spec.case, z), store.organ_mask(spec.case, z, spec.organ), spec.seed)
        assert torch.equal(alone["image"], item["image"][t]) and torch.equal(alone["mask"], item["mask"][t])
    assert len({tuple(b.tolist()) for b in item["box"]}) == 3


# ---------------------------------------------------------------------------------------------- config
def test_sequence_config_errors_name_the_key():
    cfg = load_train_config("train_crisp_memory")
    assert cfg.design == "crisp_sam2" and cfg.data.feature_cache
    assert cfg.data.sequence_length > cfg.model["memory_slices"]  # the bank's eviction runs in training
    assert load_train_config("train_smoke").data.sequence_length == 0
    with pytest.raises(ConfigError, match=r"data\.sequence_length must be 0 .* or an integer >= 2.*got 1"):
        load_train_config("train_smoke", ["data.sequence_length=1"])
    with pytest.raises(ConfigError, match=r"data\.sequence_length .*got -2"):
        load_train_config("train_smoke", ["data.sequence_length=-2"])
    with pytest.raises(ConfigError, match=r"data\.sequence_stride must be an integer >= 1.*got 0"):
        load_train_config("train_smoke", ["data.sequence_length=3", "data.sequence_stride=0"])


# ---------------------------------------------------------------------------------------------- training
def _overrides(out: Path, cache: Path, *extra: str) -> list[str]:
    return [
        f"data.root={data_path()}",
        f"out_dir={out}",
        "progress=false",
        "threads=2",
        "data.options.cases=[amos_0001]",
        "data.organs=[liver,spleen,kidney_left]",
        "data.absent_fraction=0.0",
        f"data.feature_cache_dir={cache}",
        "data.feature_cache_dtype=float32",
        "val.every=-1",
        "steps=2",
        "ckpt_every=1",
        *extra,
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """crisp_sam2: a 2-step memory run (T = 2, batch 1, checkpoint every step) and a 1-step run on
    independent slices, both from the same initial weights."""
    from organsam.training.trainer import train

    cache = tmp_path_factory.mktemp("feature_cache")
    seq_out = tmp_path_factory.mktemp("seq")
    seq = train(load_train_config("train_crisp_memory", _overrides(seq_out, cache, "data.sequence_length=2")))
    flat_out = tmp_path_factory.mktemp("flat")
    flat = train(
        load_train_config("train_crisp_memory", _overrides(flat_out, cache, "data.sequence_length=0", "steps=1"))
    )
    return {"cache": cache, "seq": seq, "seq_out": seq_out, "flat": flat, "flat_out": flat_out}


def _initial_state(cfg_model: dict) -> dict[str, torch.Tensor]:
    from organsam.registry import build_design

    torch.manual_seed(0)  # the trainer seeds with cfg.seed before building the design
    return build_design("crisp_sam2", [cfg_model]).state_dict()


@pytest.mark.slow
def test_memory_modules_learn_only_in_sequence_runs(runs):
    from organsam.training.trainer import STATE_FILE, load_train_state

    seq, flat = runs["seq"], runs["flat"]
    assert [h["step"] for h in seq.history] == [1.0, 2.0] and [h["step"] for h in flat.history] == [1.0]
    for h in seq.history + flat.history:
        assert math.isfinite(h["loss"]) and h["loss"] > 0 and h["skipped"] == 0.0 and math.isfinite(h["grad_norm"])
    s_seq = load_train_state(runs["seq_out"] / STATE_FILE)
    s_flat = load_train_state(runs["flat_out"] / STATE_FILE)
    init = _initial_state(load_train_config("train_crisp_memory").model)
    memory = [k for k in init if k.startswith(MEMORY) and init[k].is_floating_point()]
    assert len(memory) > 20
    changed_seq = {k for k in memory if not torch.equal(init[k], s_seq["model"][k])}
    changed_flat = {k for k in memory if not torch.equal(init[k], s_flat["model"][k])}
    assert len(changed_seq) > 0.9 * len(memory), sorted(set(memory) - changed_seq)
    assert {k.split(".")[0] for k in changed_seq} == {"memory_encoder", "memory_attention"}
    assert not changed_flat
    # the independent-slice run did train the rest of the design
    others = [k for k in init if k.startswith(("refinement.", "prompt_encoder.", "cross."))]
    assert any(not torch.equal(init[k], s_flat["model"][k]) for k in others)
    assert not any(not torch.equal(init[k], s_seq["model"][k]) for k in init if k.startswith("core.image_encoder."))


@pytest.mark.slow
def test_sequence_resume_continues_with_identical_loss(runs, tmp_path):
    from organsam.training.trainer import STATE_FILE, load_train_state, train

    a = runs["seq"]
    resume = runs["seq_out"] / "checkpoints" / "step_0000001.pt"
    b = train(
        load_train_config(
            "train_crisp_memory", _overrides(tmp_path, runs["cache"], "data.sequence_length=2", f"resume={resume}")
        )
    )
    assert [h["step"] for h in b.history] == [2.0]
    assert b.history[0]["loss"] == a.history[1]["loss"] and b.history[0]["lr"] == a.history[1]["lr"]
    sa = load_train_state(runs["seq_out"] / STATE_FILE)["model"]
    sb = load_train_state(tmp_path / STATE_FILE)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
def test_design_without_memory_trains_on_sequences(tmp_path):
    """organsam (no slice memory: T independent slices) in sequence mode, encoding without the feature cache,
    augmented sequences and box prompts on every slice."""
    from organsam.training.trainer import train

    cfg = load_train_config(
        "train_smoke",
        [
            f"data.root={data_path()}",
            f"out_dir={tmp_path}",
            "progress=false",
            "threads=2",
            "data.options.cases=[amos_0001]",
            "data.sequence_length=2",
            "data.augment.affine_prob=1.0",
            "data.box_prompt_prob=1.0",
            "val.every=-1",
            "steps=1",
            "batch_size=1",
        ],
    )
    r = train(cfg)
    h = r.history[0]
    assert r.step == 1 and math.isfinite(h["loss"]) and h["loss"] > 0 and "loss_class" in h
    assert (tmp_path / "model.safetensors").is_file()
