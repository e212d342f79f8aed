"""Joint assignment on a real CT with manual labels (AMOS 0001 slab): the atlas box of the stomach reaches into
the liver and LiteMedSAM draws the liver there; the anchor rule must stop that, and no predicted organ may lie
mostly inside another reference organ."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path

from organsam.inference.assignment import ANCHORS, anchor_conflicts
from organsam.inference.options import resolve_organs
from organsam.inference.pipeline import run_segmentation
from organsam.inference.predictor_factory import build_predictor
from organsam.inference.redraw import excluding_boxes
from organsam.inference.state import OrganResult
from organsam.io import load_labels, load_volume
from organsam.vocabulary import labelmap_info

SYNAPSE8 = "aorta, gallbladder, left kidney, right kidney, liver, pancreas, spleen, stomach"


def _inside_other_reference(mask: np.ndarray, organ: str, ref: np.ndarray) -> tuple[float, str]:
    amos = labelmap_info("amos22")
    best = (0.0, "")
    for value, other in amos.organs.items():
        if other == organ or not mask.any():
            continue
        f = float((mask & (ref == value)).sum() / mask.sum())
        best = max(best, (f, other))
    return best


@pytest.mark.slow
def test_no_organ_is_drawn_on_its_neighbour() -> None:
    vol = load_volume(data_path("amos_0001_slab", "image.nii.gz"))
    ref = load_labels(data_path("amos_0001_slab", "label.nii.gz"), vol)
    predictor = build_predictor(progress=False)
    predictor.expand_boxes = False  # joint assignment alone (box expansion keeps most of these slices off the liver)
    state = predictor.init_state(vol)
    request = resolve_organs(SYNAPSE8)
    predictor.joint_assignment = False
    before = run_segmentation(predictor, vol, request, state=state)  # the same embeddings and registration below
    predictor.joint_assignment = True
    after = run_segmentation(predictor, vol, request, state=state)
    liver_ref = np.isin(ref, labelmap_info("amos22").values_for("liver"))
    stomach_before, stomach_after = before.masks["stomach"], after.masks["stomach"]
    assert (stomach_before & liver_ref).sum() > 0.8 * stomach_before.sum()  # the failure: stomach drawn on liver
    assert {r.organ_id for r in state.reassignments} == {"stomach"}
    assert any(r.outcome == "redrawn" for r in state.reassignments)
    stomach_ref = np.isin(ref, labelmap_info("amos22").values_for("stomach"))
    assert (stomach_after & stomach_ref).sum() > 0.5 * stomach_after.sum()  # now mostly the real stomach
    for organ in request.organ_ids:
        inside, other = _inside_other_reference(after.masks[organ], organ, ref)
        assert inside < 0.5, (organ, other, inside)


def test_excluding_boxes_cut_the_anchor_out() -> None:
    anchor = np.zeros((100, 100), bool)
    anchor[:, :40] = True  # the anchor fills the left of the box
    parts = excluding_boxes((10.0, 10.0, 90.0, 90.0), anchor)
    assert parts == [(40.0, 10.0, 90.0, 90.0)]  # only the part right of the anchor is wide enough
    assert excluding_boxes((50.0, 10.0, 90.0, 90.0), anchor) == []  # no anchor inside the box: nothing to cut


@pytest.mark.slow
def test_stomach_alone_is_kept_off_the_liver_it_was_not_asked_for() -> None:
    """Asked for the stomach alone, the neighbouring anchors (the liver here) are segmented too, used to keep the
    stomach off them, and neither reported nor written."""
    vol = load_volume(data_path("amos_0001_slab", "image.nii.gz"))
    ref = load_labels(data_path("amos_0001_slab", "label.nii.gz"), vol)
    predictor = build_predictor(progress=False)
    predictor.expand_boxes = False  # joint assignment alone (box expansion uses the hidden liver too: its own test)
    state = predictor.init_state(vol)
    res = run_segmentation(predictor, vol, resolve_organs("stomach"), state=state)
    assert res.organ_ids == ["stomach"] and list(res.report["organs"]) == ["stomach"]
    assert list(state.prompts) == ["stomach"] and list(state.results) == ["stomach"]
    assert {r.anchor for r in state.reassignments} == {"liver"}
    stomach = res.masks["stomach"]
    amos = labelmap_info("amos22")
    assert (stomach & np.isin(ref, amos.values_for("stomach"))).sum() > 0.5 * stomach.sum()
    assert (stomach & np.isin(ref, amos.values_for("liver"))).sum() < 0.5 * stomach.sum()


def test_anchor_conflicts_tell_a_swallowed_anchor_from_one_structure_drawn_twice() -> None:
    def result(mask: np.ndarray, score: float) -> OrganResult:
        r = OrganResult(mask=mask[None].copy())
        r.slice_scores[0] = score
        return r

    kidney = np.zeros((40, 40), bool)
    kidney[10:20, 10:20] = True
    liver = np.zeros((40, 40), bool)
    liver[5:35, 5:35] = True  # swallowed the kidney and more
    far = np.zeros((40, 40), bool)
    far[36:39, 36:39] = True  # another anchor, touching nothing of the kidney
    results = {"liver": result(liver, 0.84), "kidney_right": result(kidney, 0.97), "aorta": result(far, 0.9)}
    (c,) = anchor_conflicts(results, ANCHORS)
    assert (c.z, c.inner, c.outer, c.surer) == (0, "kidney_right", "liver", "kidney_right")
    spleen = kidney.copy()
    spleen[10:21, 10:21] = True  # nearly the kidney's own pixels: one structure drawn twice
    (c,) = anchor_conflicts({"spleen": result(spleen, 0.8), "kidney_left": result(kidney, 0.94)}, ANCHORS)
    assert c.inner is None and c.surer == "kidney_left"
