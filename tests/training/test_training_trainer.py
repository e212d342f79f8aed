"""Real training runs on the shared data: a few steps of the cheapest design config (train_smoke: unified,
frozen encoder, pretrained LiteMedSAM core), resume equivalence, feature cache, CLI,
and DDP with torchrun (gloo on CPU) against a 1-process run with the same global batch."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, data_path

from organsam.config import ConfigError
from organsam.registry import list_designs, resolve_config
from organsam.training.train_config import load_train_config
from organsam.training.trainer import STATE_FILE, load_train_state, train

CASES = "data.options.cases=[ts_a,amos_0001,amos_0013]"


def _overrides(root: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [
        f"data.root={root}",
        f"out_dir={out}",
        "progress=false",
        "threads=1",
        CASES,
        "data.feature_cache=true",
        f"data.feature_cache_dir={cache}",
        *extra,
    ]


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    """3 steps, batch 2, checkpoint at step 2; validation at the end on amos_0013 (liver, left kidney,
    1 slice)."""
    root = data_path()
    cache = tmp_path_factory.mktemp("feature_cache")
    out = tmp_path_factory.mktemp("run_a")
    cfg = load_train_config("train_smoke", _overrides(root, out, cache, "val.max_slices=1"))
    t0 = time.perf_counter()
    result = train(cfg)
    return {
        "cfg": cfg,
        "result": result,
        "root": root,
        "cache": cache,
        "out": out,
        "seconds": time.perf_counter() - t0,
    }


@pytest.mark.slow
def test_training_run_changes_trainable_parameters(run_a):
    r = run_a["result"]
    out = run_a["out"]
    assert r.step == 3 and [h["step"] for h in r.history] == [1.0, 2.0, 3.0]
    assert all(math.isfinite(h["loss"]) and h["loss"] > 0 for h in r.history)
    assert all(h["skipped"] == 0.0 and math.isfinite(h["grad_norm"]) for h in r.history)
    s2 = load_train_state(out / "checkpoints" / "step_0000002.pt")
    s3 = load_train_state(out / STATE_FILE)
    assert s2["step"] == 2 and s3["step"] == 3
    from organsam.registry import build_design

    trainable = {n for n, p in build_design("unified", [run_a["cfg"].model]).named_parameters() if p.requires_grad}
    changed = {k for k in s3["model"] if not torch.equal(s2["model"][k], s3["model"][k])}
    assert changed and changed <= trainable | {k for k in s3["model"] if "running" in k or "num_batches" in k}
    assert len(changed & trainable) > 0.5 * len(trainable)
    assert not any(k.startswith("core.image_encoder.") for k in changed)  # frozen encoder stays as released
    # logs: one metrics row per step, validation Dice per organ, final checkpoint through save_checkpoint
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert rows[0].startswith("step,") and len(rows) == 4 and "loss" in rows[0]
    val = (out / "val.csv").read_text()
    assert "amos_0013,liver," in val and "mean,kidney_left," in val and "mean,all," in val
    assert r.val is not None and set(r.val.per_organ) == {"liver", "kidney_left"}
    assert all(0.0 <= d <= 1.0 for d in r.val.per_organ.values())
    from organsam.model.checkpoint import load_checkpoint, read_checkpoint_info

    info = read_checkpoint_info(out / "model.safetensors")
    assert info["design"] == "unified" and info["extra"]["step"] == 3
    model = load_checkpoint(out / "model.safetensors")
    state = model.state_dict()
    assert all(torch.equal(state[k], s3["model"][k]) for k in s3["model"])


@pytest.mark.slow
def test_resume_continues_with_identical_loss(run_a, tmp_path):
    """Resumed from the step-2 state (saved, as before 2026-12, under the design's former name organsam)."""
    a = run_a["result"]
    state = load_train_state(run_a["out"] / "checkpoints" / "step_0000002.pt")
    assert state["design"] == "unified"
    renamed = tmp_path / "former_name.pt"
    torch.save({**state, "design": "organsam"}, renamed)
    cfg = load_train_config(
        "train_smoke",
        _overrides(
            run_a["root"],
            tmp_path,
            run_a["cache"],
            "val.every=-1",
            f"resume={renamed}",
        ),
    )
    b = train(cfg)
    assert [h["step"] for h in b.history] == [3.0]
    assert b.history[0]["loss"] == a.history[2]["loss"]
    assert b.history[0]["lr"] == a.history[2]["lr"]
    sa = load_train_state(run_a["out"] / STATE_FILE)["model"]
    sb = load_train_state(tmp_path / STATE_FILE)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
def test_feature_cache_holds_the_encoder_output(run_a):
    from safetensors.torch import load_file

    from organsam.preprocessing.slices import to_model_input
    from organsam.registry import build_design
    from organsam.training.case_store import CaseStore
    from organsam.training.datasets import read_dataset
    from organsam.training.feature_cache import FeatureCache

    model = build_design("unified", [run_a["cfg"].model])
    cache = FeatureCache(run_a["cache"], model, tag="abdomen|to_model_input")
    files = sorted(cache.root.rglob("*.safetensors"))
    assert files and files[0].parent.name in ("ts_a", "amos_0001")
    case_id, z = files[0].parent.name, int(files[0].stem)
    case = [c for c in read_dataset("shared", run_a["root"]) if c.case_id == case_id]
    store = CaseStore(case, model.organ_ids)
    image = torch.from_numpy(to_model_input(store.image_slice(0, z))[0])[None]
    with torch.no_grad():
        fresh = model.encode_plain(image).embedding[0]
    torch.testing.assert_close(load_file(str(files[0]))["embedding"], fresh, rtol=1e-4, atol=1e-4)
    hits = cache.hits
    enc = cache.get(model, image, [(case_id, z)])
    assert cache.hits == hits + 1 and cache.misses == 0 and enc.embedding.shape == (1, 256, 64, 64)
    # another encoder (weights changed) never reads these features
    with torch.no_grad():
        next(model.core.image_encoder.parameters()).add_(1e-3)
    assert FeatureCache(run_a["cache"], model, tag="abdomen|to_model_input").hash != cache.hash


def test_config_presets_overrides_and_errors(tmp_path):
    cfg = load_train_config("train_smoke", ["steps=7", "optim.lr=3e-4", "data.augment.rotate_degrees=5"])
    assert cfg.steps == 7 and cfg.optim.lr == 3e-4 and cfg.data.augment.rotate_degrees == 5
    assert cfg.model["freeze_image_encoder"] is True and cfg.design == "unified"
    default = load_train_config(["train_default", "data/amos22"], ["data.root=/x"])
    assert default.data.dataset == "amos22" and default.data.root == "/x" and default.steps == 2000
    with pytest.raises(ConfigError, match="unknown key"):
        load_train_config("train_smoke", ["data.nope=1"])
    with pytest.raises(ConfigError, match="precision"):
        load_train_config("train_smoke", ["precision=fp8"])
    with pytest.raises(FileNotFoundError, match="presets: .*train_default"):
        load_train_config("no_such_config")


def test_cli_print_config_and_errors(capsys):
    from organsam.cli.main import main

    assert main(["train", "--config", "train_smoke", "--print-config", "steps=5"]) == 0
    out = capsys.readouterr().out
    assert "design: unified" in out and "steps: 5" in out
    assert main(["train", "--config", "train_smoke", "steps=0"]) == 2
    assert "steps must be >= 1" in capsys.readouterr().err
    assert main(["train"]) == 2


@pytest.mark.slow
def test_resume_refuses_another_design_config(run_a, tmp_path):
    cfg = load_train_config(
        "train_smoke",
        _overrides(
            run_a["root"],
            tmp_path,
            run_a["cache"],
            "model.optimizer_iterations=2",
            f"resume={run_a['out'] / STATE_FILE}",
        ),
    )
    with pytest.raises(ConfigError, match="optimizer_iterations"):
        train(cfg)


@pytest.mark.slow
def test_cli_trains_one_augmented_step_without_cache(tmp_path, capsys):
    from organsam.cli.main import main

    root = data_path()
    rc = main(
        [
            "train",
            "--config",
            "train_smoke",
            "-q",
            f"data.root={root}",
            f"out_dir={tmp_path}",
            CASES,
            "steps=1",
            "batch_size=1",
            "val.every=-1",
            "threads=1",
            "data.augment.affine_prob=1.0",
        ]
    )
    assert rc == 0
    assert "trained unified for 1 steps" in capsys.readouterr().out
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "model.json").is_file()
    assert (tmp_path / STATE_FILE).is_file()


def _torchrun() -> list[str] | None:
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.exists() else ([shutil.which("torchrun")] if shutil.which("torchrun") else None)


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(run_a, tmp_path):
    """torchrun --nproc_per_node=2 (gloo, CPU), 2 steps of batch 1 per process = run_a's global batch 2."""
    launcher = _torchrun()
    if launcher is None:
        pytest.skip("torchrun is not installed next to this Python")
    out = tmp_path / "ddp"
    args = _overrides(run_a["root"], out, run_a["cache"], "batch_size=1", "steps=2", "val.every=-1", "device=cpu")
    cmd = [
        *launcher,
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "organsam.cli.main",
        "train",
        "--config",
        "train_smoke",
        "-q",
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("torchrun did not finish within 300 s")
    err = proc.stderr
    if (
        proc.returncode != 0
        and not (out / STATE_FILE).exists()
        and ("Address already in use" in err or "RendezvousConnectionError" in err or "DistNetworkError" in err)
    ):
        pytest.skip(f"torchrun could not start its process group here: {err.strip().splitlines()[-1]}")
    assert proc.returncode == 0, err[-3000:]
    ddp = load_train_state(out / STATE_FILE)
    one = load_train_state(run_a["out"] / "checkpoints" / "step_0000002.pt")
    after = load_train_state(run_a["out"] / STATE_FILE)["model"]
    assert ddp["world_size"] == 2 and ddp["step"] == 2 and one["world_size"] == 1
    # same parameters within float tolerance; the difference is tiny next to one optimizer update
    num = den = 0.0
    for k, v in one["model"].items():
        if v.is_floating_point():
            torch.testing.assert_close(ddp["model"][k], v, rtol=1e-3, atol=1e-4)
            num += float(((ddp["model"][k] - v) ** 2).sum())
            den += float(((after[k] - v) ** 2).sum())
    assert den > 0 and math.sqrt(num / den) < 0.05


@pytest.mark.parametrize("design", list_designs())
def test_train_smoke_config_takes_every_design(design: str) -> None:
    """``organsam train --config train_smoke design=NAME`` resolves for every design (its model overrides are
    common to all designs; a design-specific key there made seg_sam fail)."""
    cfg = load_train_config("train_smoke", [f"design={design}"])
    assert resolve_config(cfg.design, [cfg.model]).freeze_image_encoder
