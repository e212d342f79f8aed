"""Orientation helpers: permutation/flips from affines, inverse transforms, canonical affines."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from conftest import data_path

from organsam.preprocessing.orientation import (
    axcodes,
    canonical_index_affine,
    canonical_transform,
    from_canonical,
    spacing_from_affine,
    to_canonical,
)


def _affine(codes_matrix, zooms=(1.0, 2.0, 3.0)):
    a = np.eye(4)
    a[:3, :3] = np.asarray(codes_matrix, dtype=float) * np.asarray(zooms)[None, :]
    a[:3, 3] = [10.0, -20.0, 30.0]
    return a


@pytest.mark.parametrize(
    ("rotation", "perm", "flips", "codes"),
    [
        (np.eye(3), (2, 1, 0), (False, False, True), ("R", "A", "S")),  # RAS (x, y, z)
        (np.diag([-1, 1, 1]), (2, 1, 0), (False, False, False), ("L", "A", "S")),  # LAS: already canonical
        (np.diag([-1, -1, 1]), (2, 1, 0), (False, True, False), ("L", "P", "S")),  # LPS
        # DICOM-style (slice, row, col) with rows running posterior: see the ts_b series
        (np.array([[0, 0, -1], [0, -1, 0], [1, 0, 0]]), (0, 1, 2), (False, True, False), ("S", "P", "L")),
    ],
)
def test_canonical_transform(rotation, perm, flips, codes):
    a = _affine(rotation)
    assert axcodes(a) == codes
    assert canonical_transform(a) == (perm, flips)
    shape = (4, 5, 6)
    can_aff = canonical_index_affine(a, shape, perm, flips)
    assert axcodes(can_aff) == ("S", "A", "L")
    # every file voxel lands at the same world point through the canonical array
    arr = np.arange(np.prod(shape)).reshape(shape)
    can = to_canonical(arr, perm, flips)
    for idx in [(0, 0, 0), (3, 4, 5), (1, 2, 3)]:
        value = arr[idx]
        cidx = np.argwhere(can == value)[0]
        assert np.allclose(a @ [*idx, 1], can_aff @ [*cidx, 1])
    assert np.array_equal(from_canonical(can, perm, flips), arr)


def test_oblique_affine_uses_nearest_axes():
    theta = np.deg2rad(12)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    a = _affine(rot @ np.diag([-1, 1, 1]))
    assert axcodes(a) == ("L", "A", "S")
    perm, flips = canonical_transform(a)
    assert (perm, flips) == ((2, 1, 0), (False, False, False))
    assert np.allclose(spacing_from_affine(a), (1.0, 2.0, 3.0))


def test_degenerate_affine_is_rejected():
    a = np.eye(4)
    a[2, 2] = 0.0
    with pytest.raises(ValueError, match="singular"):
        canonical_transform(a)


def test_matches_nibabel_on_real_affines():
    for rel in ("ts_a/image.nii.gz", "ts_mr/image.nii.gz", "amos_0001_slab/image.nii.gz"):
        img = nib.load(str(data_path(*rel.split("/"))))
        assert axcodes(img.affine) == nib.aff2axcodes(img.affine)
