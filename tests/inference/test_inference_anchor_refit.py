"""Anchor re-placement on a real CT with manual labels (AMOS 0013 slab): a location prior moved off on purpose is
found again from the anchor organs, a prior that fits is left where it is, and the organs next to the anchors are
not drawn on their neighbours."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path

from organsam.inference.anchor_refit import MovedPrior, search_offset
from organsam.inference.assignment import ANCHORS
from organsam.inference.options import resolve_organs
from organsam.inference.pipeline import run_segmentation
from organsam.inference.predictor_factory import build_predictor
from organsam.io import load_labels, load_volume
from organsam.priors import AtlasPrior, default_atlas
from organsam.vocabulary import labelmap_info


class _Boxes:
    """A fitted prior given as plain per-slice boxes."""

    def __init__(self, boxes: dict[str, dict[int, tuple[float, float, float, float]]]) -> None:
        self._boxes = boxes

    def present(self, organ_id: str) -> bool:
        return organ_id in self._boxes

    def boxes(self, organ_id: str, margin_px: int = 0) -> dict[int, tuple[float, float, float, float]]:
        return {
            z: (b[0] - margin_px, b[1] - margin_px, b[2] + margin_px, b[3] + margin_px)
            for z, b in self._boxes.get(organ_id, {}).items()
        }


class _Fixed:
    """A location prior whose ``fit`` returns a prior fitted beforehand."""

    def __init__(self, fitted: object) -> None:
        self.fitted = fitted

    def fit(self, array: np.ndarray, spacing: tuple[float, float, float]) -> object:
        return self.fitted


def test_moved_prior_moves_boxes_and_drops_what_leaves_the_volume() -> None:
    fitted = _Boxes({"liver": {0: (10.0, 10.0, 30.0, 30.0), 3: (90.0, 10.0, 99.0, 30.0)}})
    moved = MovedPrior(fitted, (1.0, 5.0, 8.0), (4, 100, 100))
    boxes = moved.boxes("liver", margin_px=2)
    assert boxes == {1: (16.0, 13.0, 40.0, 37.0)}  # slice 3 moved to slice 4: outside the 4-slice volume
    assert moved.present("liver") and not moved.present("spleen")


@pytest.fixture(scope="module")
def amos_0013() -> tuple:
    vol = load_volume(data_path("amos_0013_slab", "image.nii.gz"))
    ref = load_labels(data_path("amos_0013_slab", "label.nii.gz"), vol)
    return vol, ref, AtlasPrior(default_atlas()).fit(vol)


@pytest.mark.slow
def test_search_finds_a_prior_moved_off_and_keeps_one_that_fits(amos_0013: tuple) -> None:
    vol, _, fitted = amos_0013
    predictor = build_predictor(progress=False)
    state = predictor.init_state(vol)
    margin = predictor.margin_px(state)
    sx = vol.spacing[2]
    boxes = {a: fitted.boxes(a, margin_px=margin) for a in ANCHORS if fitted.present(a)}
    assert search_offset(state, boxes, predictor.decode) is None  # the registered prior fits: stay
    off = MovedPrior(fitted, (0.0, 0.0, 20.0 / sx), vol.array.shape)  # 20 mm towards the patient's left
    moved = {a: off.boxes(a, margin_px=margin) for a in ANCHORS if fitted.present(a)}
    found = search_offset(state, moved, predictor.decode)
    assert found is not None
    dy_mm, dx_mm = found[0] * vol.spacing[1], found[1] * sx
    assert -30.0 <= dx_mm <= -10.0 and abs(dy_mm) <= 10.0, (dy_mm, dx_mm)


@pytest.mark.slow
def test_a_prior_moved_off_in_plane_draws_no_organ_on_its_neighbour(amos_0013: tuple) -> None:
    """The prior moved 20 mm anteriorly: without re-placement the gallbladder is drawn on the liver and the pancreas
    on the stomach; with it, no organ lies mostly inside another reference organ."""
    vol, ref, fitted = amos_0013
    moved = MovedPrior(fitted, (0.0, 20.0 / vol.spacing[1], 0.0), vol.array.shape)
    predictor = build_predictor(progress=False, prior=_Fixed(moved))
    state = predictor.init_state(vol)
    res = run_segmentation(predictor, vol, resolve_organs("gallbladder, pancreas, stomach, liver"), state=state)
    assert state.prior_moves[0]["step"] == "anchor search" and state.prior_moves[0]["offset_mm"][1] < -10
    amos = labelmap_info("amos22")
    for organ, mask in res.masks.items():
        if not mask.any():
            continue
        for value, other in amos.organs.items():
            if other != organ:
                assert (mask & (ref == value)).sum() < 0.5 * mask.sum(), (organ, other)


@pytest.mark.slow
def test_a_prior_moved_off_in_z_draws_no_anchor_on_another(amos_0013: tuple) -> None:
    """The prior moved 30 mm towards the feet: its spleen boxes sit at the level of the left kidney and the spleen
    was drawn on the kidney (91 % inside it). The two anchors now compete for the structure: the left kidney, which
    the decoder is surer of, keeps it, and the spleen is not drawn there."""
    vol, ref, fitted = amos_0013
    moved = MovedPrior(fitted, (-30.0 / vol.spacing[0], 0.0, 0.0), vol.array.shape)
    predictor = build_predictor(progress=False, prior=_Fixed(moved))
    state = predictor.init_state(vol)
    res = run_segmentation(predictor, vol, resolve_organs("spleen, left kidney"), state=state)
    amos = labelmap_info("amos22")
    kidney = np.isin(ref, amos.values_for("kidney_left"))
    spleen = res.masks["spleen"]
    assert (spleen & kidney).sum() < 0.5 * max(spleen.sum(), 1)
    assert any(r.organ_id == "spleen" and r.anchor == "kidney_left" for r in state.reassignments)
    left = res.masks["kidney_left"]
    assert 2 * (left & kidney).sum() / (left.sum() + kidney.sum()) > 0.85
