"""Metric values checked against hand-computed ones (shifted cubes and plates of known geometry)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from organsam.evaluation.metrics import (
    DEFAULT_NSD_TOLERANCE_MM,
    EMPTY_RULES,
    dice,
    empty_rule,
    grid_diagonal,
    hausdorff,
    nsd_tolerance,
    score_organ,
    surface_dice,
)


@pytest.fixture(scope="module")
def cubes() -> tuple[np.ndarray, np.ndarray]:
    """A 6x6x6 cube and the same cube shifted by 2 voxels along x, away from the array border.

    Hand count (6-neighbour surface voxels, 152 per cube): along the shift, each cube's 152 surface voxels
    are 80 at distance 0 (shared side walls), 32 at distance 1 and 40 at distance 2 (voxels)."""
    a = np.zeros((12, 12, 14), bool)
    a[3:9, 3:9, 3:9] = True
    b = np.zeros_like(a)
    b[3:9, 3:9, 5:11] = True
    return a, b


def test_dice_of_shifted_cubes(cubes):
    a, b = cubes
    assert dice(a, b) == pytest.approx(2 * (6 * 6 * 4) / (2 * 216))  # = 2/3
    assert dice(a, a) == pytest.approx(1.0)
    assert dice(a, np.zeros_like(a)) == 0.0
    assert math.isnan(dice(np.zeros_like(a), np.zeros_like(a)))


def test_hausdorff_of_shifted_cubes_in_mm(cubes):
    a, b = cubes
    s = (0.5, 0.5, 0.5)
    # 40 of 152 distances are 2 voxels -> ranks 112..151 hold 2, the 95th percentile (rank 143.45) is 2 voxels
    assert hausdorff(a, b, s, 95) == pytest.approx(1.0)
    assert hausdorff(a, b, s, 100) == pytest.approx(1.0)
    assert hausdorff(a, b, None, 95) == pytest.approx(2.0)  # voxels
    assert hausdorff(a, a, s) == pytest.approx(0.0)


def test_surface_dice_of_shifted_cubes(cubes):
    a, b = cubes
    s = (0.5, 0.5, 0.5)
    assert surface_dice(a, b, s, 0.4) == pytest.approx(2 * 80 / 304)  # only the shared walls (distance 0)
    assert surface_dice(a, b, s, 0.6) == pytest.approx(2 * 112 / 304)  # + the 32 voxels at 1 voxel = 0.5 mm
    assert surface_dice(a, b, s, 1.0) == pytest.approx(1.0)  # all within 2 voxels = 1 mm


def test_plates_with_anisotropic_spacing():
    """Two one-voxel-thick plates two slices apart: every surface distance is exactly 2 * sz."""
    p = np.zeros((10, 20, 20), bool)
    p[3, 4:15, 4:15] = True
    q = np.zeros_like(p)
    q[5, 4:15, 4:15] = True
    sp = (5.0, 0.8, 0.8)
    assert hausdorff(p, q, sp, 95) == pytest.approx(10.0)
    assert surface_dice(p, q, sp, 9.9) == pytest.approx(0.0)
    assert surface_dice(p, q, sp, 10.0) == pytest.approx(1.0)
    assert dice(p, q) == 0.0


def test_tolerances_follow_the_flare_table():
    assert nsd_tolerance("liver") == 5.0
    assert nsd_tolerance("aorta") == 2.0
    assert nsd_tolerance("duodenum") == 7.0
    assert nsd_tolerance("urinary_bladder") == 3.0
    assert nsd_tolerance("colon") == DEFAULT_NSD_TOLERANCE_MM == 3.0


def test_score_organ_uses_organ_tolerance(cubes):
    a, b = cubes
    s = score_organ(a, b, (0.5, 0.5, 0.5), organ_id="aorta")  # 2 mm tolerance covers the 1 mm shift
    assert (s.status, s.tolerance_mm, s.ref_voxels, s.pred_voxels) == ("both", 2.0, 216, 216)
    assert s.dice == pytest.approx(2 / 3) and s.hd95 == pytest.approx(1.0) and s.nsd == pytest.approx(1.0)
    tight = score_organ(a, b, (0.5, 0.5, 0.5), tolerance_mm=0.4)
    assert tight.nsd == pytest.approx(160 / 304)
    vox = score_organ(a, b, (0.5, 0.5, 0.5), hd95_unit="voxels")
    assert vox.hd95 == pytest.approx(2.0)


@pytest.mark.parametrize(
    "rule, both, ref_empty, pred_empty",
    [
        ("strict", (1.0, 1.0, 0.0), (0.0, 0.0, "nan"), (0.0, 0.0, "max")),
        ("transunet", (0.0, 0.0, 0.0), (1.0, 1.0, 0.0), (0.0, 0.0, 0.0)),
        ("monai", ("nan", "nan", "nan"), ("nan", "nan", "nan"), (0.0, 0.0, "max")),
    ],
)
def test_empty_rules(cubes, rule, both, ref_empty, pred_empty):
    a, _ = cubes
    z = np.zeros_like(a)
    sp = (2.0, 1.0, 0.5)
    diag = grid_diagonal(a.shape, sp)
    assert diag == pytest.approx(math.sqrt((11 * 2.0) ** 2 + 11.0**2 + (13 * 0.5) ** 2))
    for (pred, ref), want, status in (
        ((z, z), both, "both_empty"),
        ((a, z), ref_empty, "ref_empty"),
        ((z, a), pred_empty, "pred_empty"),
    ):
        s = score_organ(pred, ref, sp, rule=rule)
        assert s.status == status
        for got, exp in zip((s.dice, s.nsd, s.hd95), want):
            if exp == "nan":
                assert math.isnan(got)
            elif exp == "max":
                assert got == pytest.approx(diag)
            else:
                assert got == exp


def test_errors():
    a = np.zeros((4, 5, 6), bool)
    with pytest.raises(ValueError, match="differ in shape"):
        dice(a, np.zeros((4, 5, 7), bool))
    with pytest.raises(ValueError, match="one value per mask axis"):
        hausdorff(a, a, (1.0, 1.0))
    with pytest.raises(ValueError, match="unknown empty-case rule"):
        empty_rule("lenient")
    with pytest.raises(ValueError, match="hd95_unit"):
        score_organ(a, a, (1, 1, 1), hd95_unit="cm")
    assert set(EMPTY_RULES) == {"strict", "transunet", "monai"}
