"""A partial scan: TS-B (20 slices of 2 mm from the lung bases to the pancreas; TotalSegmentator's labels hold no
kidney). The atlas, registered onto it, places kidneys inside it; the right kidney's boxes draw a piece of the
liver, which verification rejects and reports instead of drawing it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path

from organsam.inference.options import resolve_organs
from organsam.inference.pipeline import run_segmentation
from organsam.inference.predictor_factory import build_predictor
from organsam.io import load_labels, load_volume
from organsam.vocabulary import labelmap_info


@pytest.fixture(scope="module")
def ts_b_run():
    """One run over TS-B with the kidneys, which it does not hold, and the liver and spleen they lie against."""
    vol = load_volume(data_path("ts_b_dicom", "dicom"))
    ref = load_labels(data_path("ts_b_dicom", "label_ts_v2.nii.gz"), vol)
    predictor = build_predictor(progress=False)
    state = predictor.init_state(vol)
    request = resolve_organs("liver, spleen, right kidney, left kidney")
    return run_segmentation(predictor, vol, request, state=state), state, ref


def _dice(mask: np.ndarray, ref: np.ndarray, organ: str) -> float:
    own = np.isin(ref, labelmap_info("totalsegmentator_v2").values_for(organ))
    return float(2 * (mask & own).sum() / (mask.sum() + own.sum()))


@pytest.mark.slow
def test_a_kidney_the_scan_does_not_hold_is_not_drawn_on_the_liver(ts_b_run) -> None:
    res, _, ref = ts_b_run
    ts = labelmap_info("totalsegmentator_v2")
    assert not np.isin(ref, ts.values_for("kidney_right") + ts.values_for("kidney_left")).any()
    entry = res.report["organs"]["kidney_right"]
    assert entry["status"] == "rejected_by_verification" and "along the liver" in entry["absent_reason"]
    assert not res.masks["kidney_right"].any()
    assert _dice(res.masks["liver"], ref, "liver") > 0.8  # the liver itself is drawn


@pytest.mark.slow
def test_a_kidney_box_on_the_spleen_gives_the_spleen_back(ts_b_run) -> None:
    """The left kidney's boxes draw the spleen's medial half; the spleen's own mask holds it on most slices, and
    being the same tissue as the rest of the spleen, the kidney gives it up there. Measured: before, the spleen was
    decoded again without it (spleen Dice 0.64, the kidney 23,044 voxels); now spleen 0.83, the kidney 687."""
    res, state, ref = ts_b_run
    given_up = [r for r in state.reassignments if r.organ_id == "kidney_left" and r.anchor == "spleen"]
    assert len(given_up) >= 10 and sum(r.organ_id == "spleen" for r in state.reassignments) <= 2
    assert res.masks["kidney_left"].sum() < 2000
    assert _dice(res.masks["spleen"], ref, "spleen") > 0.75
