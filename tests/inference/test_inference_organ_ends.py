"""Organ-end trimming on real reference masks (manual AMOS labels of both slabs)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path

from organsam.inference.organ_ends import ORGANS, trim_organ_ends, trim_prior_placed
from organsam.inference.state import InferenceState, OrganPrompt, OrganResult
from organsam.io import load_labels, load_volume
from organsam.preprocessing.slices import geometry_for
from organsam.vocabulary import labelmap_info


def _case(name: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    vol = load_volume(data_path(name, "image.nii.gz"))
    ref = load_labels(data_path(name, "label.nii.gz"), vol)
    amos = labelmap_info("amos22")
    return vol.array, {o: np.isin(ref, amos.values_for(o)) for o in amos.organs.values() if o}


def _result(mask: np.ndarray) -> OrganResult:
    """Each drawn slice scored 0.8-0.95 by its share of the largest slice's area (an organ's middle scores
    highest, as the decoder's predicted IoU does)."""
    areas = mask.reshape(mask.shape[0], -1).sum(axis=1)
    return OrganResult(mask.copy(), {int(z): 0.8 + 0.15 * float(areas[z] / areas.max()) for z in np.flatnonzero(areas)})


@pytest.mark.parametrize("case", ["amos_0013_slab", "amos_0001_slab"])
def test_a_real_organ_keeps_its_end_slices(case: str) -> None:
    """Partial volume at an organ's real ends (the spleen's tip, the kidneys' poles, the gallbladder's fundus)
    keeps the median inside the fences: no slice of any checked organ's reference mask is cut."""
    image, masks = _case(case)
    checked = [o for o in ORGANS if o in masks and masks[o].any(axis=(1, 2)).sum() >= 3]
    assert len(checked) >= 6
    for organ in checked:
        result, cut = trim_organ_ends(_result(masks[organ]), image)
        assert cut == [] and np.array_equal(result.mask, masks[organ]), organ


@pytest.mark.parametrize(("organ", "neighbour"), [("gallbladder", "liver"), ("liver", "kidney_right")])
def test_slices_past_the_end_drawn_on_a_neighbour_are_cut(organ: str, neighbour: str) -> None:
    """Below the organ's first slice the decoder drew the neighbour (a prior that runs on; scored lower than the
    organ, as measured): those slices, and only those, are cut and move to the rejected slices with their
    scores."""
    image, masks = _case("amos_0013_slab")
    own = masks[organ]
    below = [z for z in range(int(np.flatnonzero(own.any(axis=(1, 2)))[0])) if masks[neighbour][z].any()]
    assert below, (organ, neighbour)
    drawn = own.copy()
    drawn[below] = masks[neighbour][below]
    start = _result(drawn)
    start.slice_scores.update({z: 0.7 for z in below})
    result, cut = trim_organ_ends(start, image)
    assert cut == below
    assert np.array_equal(result.mask, own)
    assert set(result.rejected) == set(below) and all(result.rejected[z] == 0.7 for z in below)
    assert start.mask[below].any()  # the input is not changed


def _session(organs: dict[str, OrganResult], boxes: dict[str, dict] | None = None) -> InferenceState:
    vol = load_volume(data_path("amos_0013_slab", "image.nii.gz"))
    state = InferenceState(volume=vol, intensities=vol.array, geometry=geometry_for(vol.array.shape[1:]))
    for oid, result in organs.items():
        state.prompts[oid] = OrganPrompt(oid, text=oid, boxes=(boxes or {}).get(oid, {}))
        state.results[oid] = result
    return state


def test_a_trim_is_refused_when_what_is_left_lies_on_an_anchor() -> None:
    """The gallbladder drawn on the liver below its first slice: cut when the rest is its own; when an anchor organ
    drawn covers the rest (the trusted slices were the anchor's), nothing is cut; a mask of an organ that is not an
    anchor over the rest (a bowel-sized duodenum) does not stop the cut. An organ with a user box is never
    trimmed."""
    image, masks = _case("amos_0013_slab")
    own = masks["gallbladder"]
    below = [z for z in range(int(np.flatnonzero(own.any(axis=(1, 2)))[0])) if masks["liver"][z].any()]
    drawn = own.copy()
    drawn[below] = masks["liver"][below]

    def gallbladder() -> OrganResult:
        result = _result(drawn)
        result.slice_scores.update({z: 0.7 for z in below})
        return result

    trimmed = trim_prior_placed(_session({"gallbladder": gallbladder(), "liver": _result(masks["liver"] & ~own)}))
    assert np.array_equal(trimmed["gallbladder"].mask, own)
    covered = _session({"gallbladder": gallbladder(), "kidney_right": _result(own)})  # an anchor drawn on the rest
    assert trim_prior_placed(covered) == {}
    bowel = _session({"gallbladder": gallbladder(), "duodenum": _result(own)})  # not an anchor: still cut
    assert np.array_equal(trim_prior_placed(bowel)["gallbladder"].mask, own)
    boxed = _session({"gallbladder": gallbladder()}, boxes={"gallbladder": {below[0]: (0.0, 0.0, 9.0, 9.0)}})
    assert trim_prior_placed(boxed) == {}
