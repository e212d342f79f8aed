"""Trained design checkpoints in whole-volume inference (`segment(design=..., checkpoint=...)`), on a real CT with
manual labels (AMOS 0013 slab)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path

from organsam.inference.design_predictor import EverySlice, design_predictor
from organsam.inference.predictor_factory import check_design, is_design_checkpoint
from organsam.inference.segment import segment
from organsam.io import Volume, load_labels, load_volume
from organsam.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from organsam.model.designs.pg_sam import PROMPTED_ROWS
from organsam.registry import build_design
from organsam.vocabulary import labelmap_info


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(int(a.sum() + b.sum()), 1))


@pytest.fixture(scope="module")
def organ_prompts_checkpoint(tmp_path_factory):
    """An organ_prompts design as built before training: pretrained LiteMedSAM and zero prompt tokens."""
    model = build_design("organ_prompts", [{"organs": ["liver", "spleen", "kidney_left", "kidney_right"]}])
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_checkpoint(model, path, design="organ_prompts")
    return path


@pytest.mark.slow
def test_design_checkpoint_segments_through_segment(organ_prompts_checkpoint, tmp_path) -> None:
    """The design path with atlas boxes reproduces a box-prompted LiteMedSAM on held-out organs, writes the
    usual outputs and names the design in the report."""
    vol = load_volume(data_path("amos_0013_slab", "image.nii.gz"))
    labels = load_labels(data_path("amos_0013_slab", "label.nii.gz"), vol)
    amos = labelmap_info("amos22")
    res = segment(
        vol,
        "liver, spleen",
        design="organ_prompts",
        checkpoint=str(organ_prompts_checkpoint),
        output=tmp_path / "out",
        quiet=True,
    )
    assert res.report["design"] == "organ_prompts"
    assert (tmp_path / "out" / "segmentation.nii.gz").is_file() and (tmp_path / "out" / "report.json").is_file()
    for organ in ("liver", "spleen"):
        ref = np.isin(labels, amos.values_for(organ))
        assert _dice(res.masks[organ], ref) > 0.8, organ  # plain LiteMedSAM prior pass: liver 0.88, spleen 0.91
    with pytest.raises(ValueError, match="organ 'pancreas' is not in the vocabulary"):
        segment(vol, "pancreas", design="organ_prompts", checkpoint=str(organ_prompts_checkpoint), quiet=True)


@pytest.mark.slow
def test_text_only_prompts_decode_every_slice_without_a_prior() -> None:
    vol = load_volume(data_path("amos_0013_slab", "image.nii.gz"))
    model = build_design("unified", [{"organs": ["liver", "spleen"]}])  # trained heads would come from a checkpoint
    predictor = design_predictor(model, prompts="text", score_threshold=0.0, progress=False)
    state = predictor.init_state(vol)
    predictor.add_text_prompt(state, "liver and spleen")
    yielded = list(predictor.propagate(state))
    assert isinstance(state.prior, EverySlice.Fitted)  # text alone: every slice, no atlas registration
    assert predictor.encoded_slices == vol.array.shape[0]  # every slice asked, each encoded once for both organs
    scored = {
        z for oid in ("liver", "spleen") for z in (*state.results[oid].slice_scores, *state.results[oid].rejected)
    }
    assert scored == set(range(vol.array.shape[0]))
    for _z, ids, masks in yielded:
        assert masks.shape == (len(ids), *vol.array.shape[1:]) and masks.dtype == bool
    with pytest.raises(ValueError, match="prompts must be one of"):
        design_predictor(model, prompts="boxes")


def test_design_checks_name_the_fix(organ_prompts_checkpoint, tmp_path) -> None:
    assert is_design_checkpoint(organ_prompts_checkpoint)
    assert not is_design_checkpoint(None)
    check_design("litemedsam", None)  # the shipped pipeline needs no checkpoint
    with pytest.raises(KeyError, match="renamed: 'litemedsam' is the shipped pipeline.*'unified' the research"):
        check_design("organsam", None)  # the former name of both: refused with the two new names
    with pytest.raises(ValueError, match="needs a trained checkpoint.*packaged.*organsam train"):
        check_design("unified", None)  # no checkpoint of it ships
    with pytest.raises(ValueError, match="no checkpoint of design 'unified' ships.*scripts/train_design.sh"):
        check_design("unified", "packaged")
    with pytest.raises(KeyError, match="seg_sam"):
        check_design("seg_samm", None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_design("seg_sam", tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError):
        load_checkpoint(organ_prompts_checkpoint, design="seg_sam")
    with pytest.raises(ValueError, match="needs a trained checkpoint"):  # before the volume is read
        segment(tmp_path / "not_read.nii.gz", "liver", design="unified")


@pytest.mark.slow
def test_crisp_sam2_segments_a_volume_with_its_slice_memory() -> None:
    """``--design crisp_sam2`` propagates with its memory: each organ's slices are decoded in order, each one
    attending to a bounded bank of the organ's earlier slices (similarity eviction; 4 slots here); the memory
    changes what the design predicts (the design as built, its memory attention's layer scales set to 1; the presence
    scored is the decoder's first pass, ``locate_with_guide`` off and no box round: the guide reads the plain
    embedding, not the memory; the box round of the volume path is tested in ``test_model_guide_location.py``)."""
    import torch

    vol = load_volume(data_path("amos_0013_slab", "image.nii.gz"))
    torch.manual_seed(0)
    overrides = {"organs": ["liver"], "memory_slices": 4, "locate_with_guide": False, "text_box_rounds": 0}
    model = build_design("crisp_sam2", [overrides])
    with torch.no_grad():  # the memory attention's layer scales start at 1e-3: give them a trained module's weight
        for name, p in model.memory_attention.named_parameters():
            if name.endswith("gamma"):
                p.fill_(1.0)
    with_memory = design_predictor(model, prompts="text", score_threshold=0.0, progress=False)
    assert with_memory.decoder.memory
    state = with_memory.init_state(vol)
    with_memory.add_text_prompt(state, "liver")
    list(with_memory.propagate(state))
    banks = state.memories
    assert set(banks) == {"liver"}
    for bank in banks.values():  # 11 slices went through a 4-slot bank: bounded, the first slice kept
        assert len(bank) == 4 and bank.indices[0] == 0 and [e.conditioning for e in bank.entries][0]
    alone = design_predictor(model, prompts="text", score_threshold=0.0, progress=False)
    alone.decoder.memory = False
    state2 = alone.init_state(vol)
    state2.embeddings = state.embeddings  # the same encoder outputs
    alone.add_text_prompt(state2, "liver")
    list(alone.propagate(state2))
    assert not state2.memories

    def scores(st, organ):  # the presence probability of every slice, kept or not (untrained: masks empty)
        res = st.results[organ]
        return {**res.slice_scores, **res.rejected}

    with_mem, without = scores(state, "liver"), scores(state2, "liver")
    assert sorted(with_mem) == sorted(without) == list(range(vol.array.shape[0]))
    assert with_mem[0] == pytest.approx(without[0], abs=1e-6)  # slice 0 has no memory yet
    assert max(abs(with_mem[z] - without[z]) for z in with_mem if z > 0) > 1e-3


@pytest.mark.slow
def test_design_decoder_keeps_few_slices_and_only_the_levels_the_design_reads() -> None:
    """A design predictor holds at most ``max_slices`` encoder outputs, each with only the levels its design
    reads (pg_sam: levels 0 and 1), and draws the same masks as with every slice kept."""
    vol = load_volume(data_path("amos_0013_slab", "image.nii.gz"))
    model = build_design("pg_sam", [{"organs": ["liver"]}])  # warm start: draws what its box holds
    masks = {}
    for keep in (3, 32):
        predictor = design_predictor(model, score_threshold=0.0, progress=False)
        predictor.decoder.max_slices = keep
        state = predictor.init_state(vol)
        predictor.add_text_prompt(state, "liver")
        list(predictor.propagate(state))
        masks[keep] = {"liver": state.results["liver"].mask.copy()}
        assert len(state.embeddings) <= max(keep, predictor.batch_size)
        enc = next(iter(state.embeddings.values()))
        assert [lv.numel() > 0 for lv in enc.levels] == [True, True, False, False]
    assert masks[3]["liver"].sum() > 10000
    assert np.array_equal(masks[3]["liver"], masks[32]["liver"])


@pytest.mark.slow
def test_pg_sam_all_runs_prompt_free_one_pass_per_slice() -> None:
    """``segment --design pg_sam --all``: the shipped checkpoint, no atlas, text alone, every organ of a slice
    decoded in one pass (PG-SAM's prompt-free mode), then each box round (``text_box_rounds``) over the organs drawn,
    each row decoding only its own organ, a few rows at a time."""
    from organsam.inference.predictor_factory import build_predictor

    full = load_volume(data_path("amos_0013_slab", "image.nii.gz"))
    vol = Volume.from_array(full.array[3:8], full.spacing, "CT")  # 5 slices: each box round decodes every organ
    predictor = build_predictor("pg_sam", progress=False)  # no checkpoint: the packaged one
    model = predictor.decoder.model
    calls: list[tuple[int, int, int, bool]] = []  # (images, rows, organ tokens decoded, boxes given) per pass
    plain = model.decode_all

    def counted(encoded, boxes=None, points=None, organ_index=None, guide=None):  # noqa: ANN001, ANN202
        out = plain(encoded, boxes, points, organ_index, guide)
        calls.append((encoded.embedding.shape[0], out.masks.shape[0], out.masks.shape[1], boxes is not None))
        return out

    model.decode_all = counted
    try:
        res = segment(vol, all_organs=True, quiet=True, predictor=predictor)
    finally:
        del model.decode_all
    organs = len(res.report["organs"])
    assert res.report["design"] == "pg_sam" and organs > 10
    slices = vol.array.shape[0]
    text_alone = [c for c in calls if not c[3]]
    assert text_alone == [(1, 1, model.num_organs, False)] * slices  # one pass per slice, every organ
    boxed = [c for c in calls if c[3]]
    # each box round: the organs drawn, each row decoding its own organ's token, PROMPTED_ROWS rows at a time
    assert all(images == 1 and rows <= PROMPTED_ROWS and tokens == 1 for images, rows, tokens, _ in boxed)
    assert sum(rows for _, rows, _, _ in boxed) <= slices * organs * model.config.text_box_rounds


def test_packaged_checkpoint_is_hashed_in_the_weights_record() -> None:
    """``--checkpoint packaged`` (and a shipped design without a checkpoint) records the shipped file's SHA-256."""
    from organsam.inference.options import SegmentOptions
    from organsam.inference.pipeline import weights_record
    from organsam.io.files import file_sha256
    from organsam.model.checkpoint import packaged_checkpoint

    expected = file_sha256(packaged_checkpoint("pg_sam"))
    assert weights_record(SegmentOptions(design="pg_sam", checkpoint="packaged"))["checkpoint"] == expected
    assert weights_record(SegmentOptions(design="pg_sam"))["checkpoint"] == expected
