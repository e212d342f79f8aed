"""Two organs that are not anchors drawn on one structure: the one carried there by tracking gives the slice up.

On the AMOS 0001 slab (manual labels; it holds no right adrenal gland) the right adrenal's prior box on the last
slice drew the inferior vena cava, and track refinement carried that mask onto the IVC of two more slices."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path

from organsam.inference.assignment import ANCHORS
from organsam.inference.options import SegmentOptions, resolve_organs
from organsam.inference.pipeline import run_segmentation
from organsam.inference.predictor_factory import build_predictor
from organsam.inference.result import SegmentationResult
from organsam.inference.shared_structures import resolve_shared_structures, shared_structures
from organsam.inference.state import InferenceState, OrganPrompt, OrganResult
from organsam.io import Volume, load_labels, load_volume
from organsam.preprocessing.slices import geometry_for
from organsam.vocabulary import labelmap_info


def _result(mask: np.ndarray) -> OrganResult:
    r = OrganResult(mask=mask.copy())
    r.slice_scores.update({int(z): 0.9 for z in np.flatnonzero(mask.any(axis=(1, 2)))})
    return r


def test_the_organ_tracked_onto_a_placed_organs_structure_gives_the_slice_up() -> None:
    vessel = np.zeros((3, 40, 40), bool)
    vessel[:, 10:20, 10:20] = True
    gland = vessel.copy()
    gland[:, 10:21, 10:21] = True  # about the vessel's own pixels on every slice
    pancreas = np.zeros((3, 40, 40), bool)
    pancreas[:, 25:35, 25:35] = True  # elsewhere: shares nothing
    results = {
        "inferior_vena_cava": _result(vessel),
        "adrenal_gland_right": _result(gland),
        "pancreas": _result(pancreas),
        "liver": _result(vessel),  # an anchor: joint assignment's other part handles it
    }
    found = shared_structures(results, ANCHORS)
    assert {(s.z, s.a, s.b) for s in found} == {(z, "inferior_vena_cava", "adrenal_gland_right") for z in range(3)}
    box = (8.0, 8.0, 22.0, 22.0)
    boxes = {
        "inferior_vena_cava": {0: box, 1: box, 2: box},
        "adrenal_gland_right": {2: box},  # the gland's prior reaches slice 2 only; 0 and 1 came from tracking
        "pancreas": {0: box, 1: box, 2: box},
    }
    vol = Volume(np.zeros((3, 40, 40), np.float32), (5.0, 1.0, 1.0), modality="CT")
    state = InferenceState(volume=vol, intensities=vol.array, geometry=geometry_for((40, 40)))
    state.prompts = {o: OrganPrompt(o, text=o) for o in results}
    state.prompts["adrenal_gland_right"].boxes[1] = box  # the user's box there: that slice is never changed
    out, log = resolve_shared_structures(state, results, boxes, ANCHORS)
    assert [(r.organ_id, r.z, r.anchor, r.outcome) for r in log] == [
        ("adrenal_gland_right", 0, "inferior_vena_cava", "dropped")
    ]
    gland_out = out["adrenal_gland_right"]
    assert not gland_out.mask[0].any() and 0 in gland_out.rejected and 0 not in gland_out.slice_scores
    assert (gland_out.mask[1:] == gland[1:]).all()  # slice 1: the user's; slice 2: both placed there, both kept
    assert results["adrenal_gland_right"].mask[0].any()  # the input is not changed
    assert out["inferior_vena_cava"] is results["inferior_vena_cava"] and out["pancreas"] is results["pancreas"]


@pytest.mark.slow
def test_right_adrenal_is_not_carried_onto_the_vena_cava() -> None:
    vol = load_volume(data_path("amos_0001_slab", "image.nii.gz"))
    ref = load_labels(data_path("amos_0001_slab", "label.nii.gz"), vol)
    amos = labelmap_info("amos22")
    ivc_ref = np.isin(ref, amos.values_for("inferior_vena_cava"))
    assert not np.isin(ref, amos.values_for("adrenal_gland_right")).any()  # nothing to find on this slab
    predictor = build_predictor(progress=False)
    state = predictor.init_state(vol)
    request = resolve_organs("inferior vena cava, right adrenal gland")
    unverified = SegmentOptions(verify=False)  # this rule alone (verification rejects this "adrenal" too: below)
    predictor.shared_structures = False
    before = run_segmentation(predictor, vol, request, state=state, options=unverified)  # same embeddings below
    predictor.shared_structures = True
    after = run_segmentation(predictor, vol, request, state=state, options=unverified)

    def on_ivc(masks: dict[str, np.ndarray]) -> int:
        gland = masks["adrenal_gland_right"]
        return sum(int((gland[z] & ivc_ref[z]).sum() > 0.5 * gland[z].sum()) for z in range(gland.shape[0]))

    assert on_ivc(before.masks) >= 2  # the failure: the "adrenal" is the IVC on the slices tracking carried it to
    dropped = [r for r in state.reassignments if r.organ_id == "adrenal_gland_right"]
    assert dropped and all(r.anchor == "inferior_vena_cava" and r.outcome == "dropped" for r in dropped)
    assert on_ivc(after.masks) <= on_ivc(before.masks) - len(dropped)

    def ivc_dice(res: SegmentationResult) -> float:  # in the label map, where the smaller organ wins overlaps
        (value,) = [v for v, o in res.label_table.items() if o == "inferior_vena_cava"]
        ivc = res.labels == value
        return 2 * float((ivc & ivc_ref).sum()) / float(ivc.sum() + ivc_ref.sum())

    assert ivc_dice(after) > ivc_dice(before)  # the vena cava's voxels are its own again

    shipped = run_segmentation(predictor, vol, request, state=state)  # with verification, as segment runs
    entry = shipped.report["organs"]["adrenal_gland_right"]
    assert entry["status"] == "rejected_by_verification" and "inferior vena cava" in entry["absent_reason"]
    assert not shipped.masks["adrenal_gland_right"].any() and ivc_dice(shipped) > ivc_dice(after)
