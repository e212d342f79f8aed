"""``evaluate`` on the real AMOS 0013 slab: predictions made from the reference labels (shifted, relabelled,
split into masks) so that the expected scores are known without running the model."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from conftest import data_path
from PIL import Image

from organsam.evaluation import EvaluationError, evaluate, get_protocol, pair_cases
from organsam.io import load_labels, load_volume, write_labels, write_masks
from organsam.vocabulary import labelmap_info

SYN8 = get_protocol("synapse8").organs


@pytest.fixture(scope="module")
def amos(tmp_path_factory) -> dict:
    """Reference paths, the reference grid and predictions written into a temporary folder."""
    ref = data_path("amos_0013_slab", "label.nii.gz")
    like = load_volume(ref, modality="unknown", check_values=False)  # the label map, for its grid
    lab = load_labels(ref, like)
    tmp = tmp_path_factory.mktemp("amos_eval")
    out = {"ref": ref, "like": like, "labels": lab, "tmp": tmp}
    for k in (2, 4):  # reference shifted by k voxels towards the patient's left
        sh = np.zeros_like(lab)
        sh[:, :, k:] = lab[:, :, :-k]
        out[f"shift{k}"] = write_labels(sh, like, tmp / f"shift{k}" / "pred.nii.gz")
    # an organsam-style output folder: own label values (1..8 in protocol order) + report.json table
    amos_map = labelmap_info("amos22")
    seg = np.zeros_like(lab)
    for i, oid in enumerate(SYN8, start=1):
        seg[np.isin(lab, amos_map.values_for(oid))] = i
    seg[seg == SYN8.index("gallbladder") + 1] = 0  # gallbladder called absent
    folder = tmp / "organsam_out"
    write_labels(seg, like, folder / "segmentation.nii.gz")
    (folder / "report.json").write_text(json.dumps({"labels": {str(i): o for i, o in enumerate(SYN8, 1)}}))
    out["folder"] = folder
    masks = {o: np.isin(lab, amos_map.values_for(o)) for o in ("liver", "spleen")}
    write_masks(masks, like, tmp / "masks_only")
    out["masks"] = tmp / "masks_only"
    return out


@pytest.mark.slow
def test_shifted_predictions_rank_and_files(amos):
    sx = amos["like"].spacing[2]
    r2 = evaluate(
        amos["shift2"],
        amos["ref"],
        "synapse8",
        ref_labelmap="amos22",
        pred_labelmap="amos22",
        method="shift 2",
        output=amos["tmp"] / "report2",
    )
    r4 = evaluate(
        amos["shift4"], amos["ref"], "synapse8", ref_labelmap="amos22", pred_labelmap="amos22", method="shift 4"
    )
    assert r2.cases == ["amos_0013_slab"] and r2.organs == list(SYN8)
    for o in SYN8:
        d2, d4 = r2.value("amos_0013_slab", o, "dice"), r4.value("amos_0013_slab", o, "dice")
        assert 0.5 < d4 < d2 < 1.0, o
        # a pure translation by t moves every surface voxel by t: HD95 <= 2 voxels, NSD 1 at >= 2 mm tolerance
        assert 0 < r2.value("amos_0013_slab", o, "hd95") <= 2 * sx + 1e-4
        assert r2.value("amos_0013_slab", o, "nsd") == pytest.approx(1.0)
        assert r4.value("amos_0013_slab", o, "hd95") > r2.value("amos_0013_slab", o, "hd95") - 1e-6
    assert r4.value("amos_0013_slab", "aorta", "nsd") < 1.0  # 4 * 0.78 mm > 2 mm aorta tolerance
    s = r2.summary()
    assert s["dice"]["mean"] == pytest.approx(np.mean([r2.value("amos_0013_slab", o, "dice") for o in SYN8]))

    out = amos["tmp"] / "report2"
    md = (out / "evaluation.md").read_text()
    assert "protocol synapse8" in md and "| amos_0013_slab |" in md and "### HD95 (mm)" in md
    rows = list(csv.DictReader((out / "evaluation.csv").open()))
    assert [r["organ"] for r in rows] == list(SYN8) and rows[0]["method"] == "shift 2"
    assert float(rows[0]["dice"]) == pytest.approx(r2.value("amos_0013_slab", SYN8[0], "dice"), abs=1e-5)
    doc = json.loads((out / "evaluation.json").read_text())
    assert doc["protocol"] == "synapse8" and doc["hd95_unit"] == "mm" and len(doc["rows"]) == 8
    for m in ("dice", "hd95", "nsd"):
        with Image.open(out / f"{m}.png") as im:
            assert im.size[0] > 600 and im.size[1] == 440


@pytest.mark.slow
def test_output_folder_with_report_table_and_empty_rules(amos):
    strict = evaluate(amos["folder"], amos["ref"], "synapse8", ref_labelmap="amos22", empty="strict")
    for o in SYN8:
        if o != "gallbladder":
            assert strict.value("amos_0013_slab", o, "dice") == pytest.approx(1.0)
            assert strict.value("amos_0013_slab", o, "hd95") == pytest.approx(0.0)
    gb = next(r for r in strict.rows if r["organ"] == "gallbladder")
    assert gb["status"] == "pred_empty" and gb["dice"] == 0.0 and gb["hd95"] > 400  # grid diagonal in mm
    tu = evaluate(amos["folder"], amos["ref"], "synapse8", ref_labelmap="amos22")  # protocol rule: transunet
    assert tu.rule == "transunet" and tu.value("amos_0013_slab", "gallbladder", "hd95") == 0.0
    assert "pred empty" in tu.to_markdown()


@pytest.mark.slow
def test_masks_folder_and_organs_not_predicted(amos):
    r = evaluate(amos["masks"], amos["ref"], "amos15", ref_labelmap="amos22")
    assert r.value("amos_0013_slab", "liver", "dice") == pytest.approx(1.0)
    assert r.value("amos_0013_slab", "spleen", "nsd") == pytest.approx(1.0)
    status = {row["organ"]: row["status"] for row in r.rows}
    assert status["aorta"] == "not_predicted" and math.isnan(r.value("amos_0013_slab", "aorta", "dice"))
    s = r.summary()["dice"]
    assert s["organs"]["aorta"]["n"] == 0 and s["mean"] == pytest.approx(1.0)  # n/a left out of the mean
    assert "aorta: not predicted" in r.to_markdown()


def test_pairing_and_input_errors(amos, tmp_path):
    with pytest.raises(EvaluationError, match="--pred-labelmap"):
        evaluate(amos["shift2"], amos["ref"], "synapse8", ref_labelmap="amos22")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pair_cases(tmp_path / "nothing", amos["ref"])
    with pytest.raises(EvaluationError, match="equal length"):
        pair_cases([amos["shift2"], amos["shift4"]], [amos["ref"]])
    # folders paired by case name: ref/<case>/label.nii.gz with pred/<case>.nii.gz
    refs, preds = tmp_path / "refs", tmp_path / "preds"
    (refs / "amos_0013_slab").mkdir(parents=True)
    (refs / "amos_0013_slab" / "label.nii.gz").symlink_to(amos["ref"])
    preds.mkdir()
    with pytest.raises(EvaluationError, match="no prediction .* amos_0013_slab"):
        pair_cases(preds, refs)
    (preds / "amos_0013_slab.nii.gz").symlink_to(amos["shift2"])
    pairs = pair_cases(preds, refs)
    assert [(c, p.name) for c, p, _ in pairs] == [("amos_0013_slab", "amos_0013_slab.nii.gz")]
