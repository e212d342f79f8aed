"""``organsam evaluate`` on the real AMOS 0013 slab (prediction = reference shifted by 2 voxels)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import data_path

from organsam.cli.main import main
from organsam.io import load_labels, load_volume, write_labels


@pytest.mark.slow
def test_cli_evaluate_writes_tables(tmp_path, capsys):
    ref = data_path("amos_0013_slab", "label.nii.gz")
    like = load_volume(ref, modality="unknown", check_values=False)  # the label map, for its grid
    lab = load_labels(ref, like)
    sh = np.zeros_like(lab)
    sh[:, 2:, :] = lab[:, :-2, :]  # 2 voxels towards anterior
    pred = write_labels(sh, like, tmp_path / "pred" / "shifted.nii.gz")
    out = tmp_path / "eval"
    code = main(
        [
            "evaluate",
            "--pred",
            str(pred),
            "--pred-labelmap",
            "amos22",
            "--ref",
            str(ref),
            "--ref-labelmap",
            "amos22",
            "--protocol",
            "synapse8",
            "--method",
            "shifted",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    stdout = capsys.readouterr().out
    assert "Protocol synapse8" in stdout and "| amos_0013_slab |" in stdout and "### NSD (%)" in stdout
    for name in ("evaluation.md", "evaluation.csv", "evaluation.json", "dice.png", "hd95.png", "nsd.png"):
        assert (out / name).is_file(), name
    doc = json.loads((out / "evaluation.json").read_text())
    dice = [r["dice"] for r in doc["rows"]]
    assert len(dice) == 8 and all(0.5 < d < 1.0 for d in dice)
    assert doc["method"] == "shifted" and doc["ref_labelmap"] == "amos22"


def test_cli_evaluate_errors(tmp_path, capsys):
    ref = data_path("amos_0013_slab", "label.nii.gz")
    assert main(["evaluate", "--pred", str(ref), "--ref", str(ref), "--protocol", "synapse8"]) == 2
    assert "--pred-labelmap" in capsys.readouterr().err
    assert main(["evaluate", "--pred", str(tmp_path / "missing"), "--ref", str(ref)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["evaluate", "--describe", "--protocol", "word16"]) == 0
    assert "WORD" in capsys.readouterr().out
