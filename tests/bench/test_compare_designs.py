"""bench/compare_designs.py end to end on the shared data: one training step of the unified design scored on
one validation slice, then a rerun that reuses the finished run instead of training again."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, data_path

SCRIPT = REPO / "bench" / "compare_designs.py"
SYNAPSE8 = ("liver", "spleen", "kidney_right", "kidney_left", "gallbladder", "stomach", "aorta", "pancreas")


@pytest.mark.slow
def test_compare_designs_one_step_then_reuse(tmp_path):
    root = data_path()
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--steps",
        "1",
        "--batch-size",
        "1",
        "--designs",
        "unified",
        "--val-slices",
        "1",
        "--no-prefill",
        "--device",
        "cpu",
        "--data",
        str(root),
        "--out",
        str(tmp_path / "runs"),
        "--json",
        str(tmp_path / "result.json"),
    ]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    lines = first.stdout.strip().splitlines()  # stdout holds the table only (logs go to stderr)
    assert lines[0].startswith("Design comparison, tiny data: 1 steps x batch 1")
    assert "3 patients" in lines[0] and "frozen" in lines[0] and "text prompts only" in lines[0]
    assert lines[2] == "| organ | unified |"
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in lines[4:]}
    assert set(SYNAPSE8) | {"**mean**", "trainable params"} <= set(rows)
    result = json.loads((tmp_path / "result.json").read_text())["results"]["unified"]
    assert result["nonfinite_losses"] == 0 and result["steps_this_run"] == 1
    assert result["trainable_params"] > 0 and 0.0 <= result["mean_dice"] <= 1.0
    assert (tmp_path / "runs" / "unified" / "model.safetensors").is_file()

    second = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "reusing the finished run" in second.stderr and "saved training state" not in second.stderr
    assert second.stdout.splitlines()[2:] == first.stdout.splitlines()[2:]


@pytest.mark.slow
def test_compare_designs_box_prompts_score_like_litemedsam(tmp_path):
    """With --prompts box every design gets LiteMedSAM's box path: after one step the box-prompted masks of the
    validation slice are already good (a text-only design after one step scores about 0)."""
    root = data_path()
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--prompts",
        "box",
        "--steps",
        "1",
        "--batch-size",
        "1",
        "--designs",
        "organ_prompts",
        "--val-slices",
        "1",
        "--no-prefill",
        "--device",
        "cpu",
        "--data",
        str(root),
        "--out",
        str(tmp_path / "runs"),
        "--json",
        str(tmp_path / "result.json"),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert "text + box prompts" in lines[0] and "box-prompted" in lines[0]
    assert lines[2] == "| organ | LiteMedSAM, box only | organ_prompts |"  # the untrained reference comes first
    results = json.loads((tmp_path / "result.json").read_text())["results"]
    result = results["organ_prompts"]
    assert result["steps_this_run"] == 1 and result["nonfinite_losses"] == 0
    assert result["mean_dice"] > 0.6, result
    baseline = results["LiteMedSAM, box only"]
    assert baseline["trainable_params"] == 0 and baseline["mean_dice"] > 0.6, baseline


def test_organ_prompts_needs_box_prompts():
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--designs", "organ_prompts"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert run.returncode == 2 and "--prompts box" in run.stderr
