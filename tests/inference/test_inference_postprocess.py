"""Post-processing works inside each mask's bounding box and gives what the whole-volume computation gives."""

from __future__ import annotations

import cc3d
import numpy as np
from conftest import data_path
from scipy import ndimage

from organsam.inference.postprocess import (
    MIN_COMPONENT_FRACTION,
    SOFT_TISSUE_FLOOR_HU,
    fill_holes_per_slice,
    keep_largest_components,
    postprocess_mask,
)
from organsam.io import load_labels, load_volume


def _whole_volume_reference(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    filled = np.stack([ndimage.binary_fill_holes(s) for s in mask])
    labels = cc3d.connected_components(mask.astype(np.uint8), connectivity=26)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return filled, labels == int(np.argmax(sizes))


def test_cropped_hole_filling_and_components_equal_the_whole_volume_result() -> None:
    rng = np.random.default_rng(0)
    vol = load_volume(data_path("amos_0013_slab", "image.nii.gz"))
    lab = np.asarray(load_labels(data_path("amos_0013_slab", "label.nii.gz"), like=vol))
    masks = [lab == 6, lab == 1]  # the real liver and spleen of AMOS 0013
    for _ in range(3):  # random blobs: holes, islands, rings open towards the box edge, objects at the border
        m = ndimage.binary_opening(rng.random((6, 96, 80)) > 0.55, iterations=1)
        m[:, 0, 10:20] = True
        m[2, 30:40, 30:40] = True
        m[2, 33:37, 33:37] = False  # an enclosed hole
        m[3, 50:60, 0:8] = True
        m[3, 53:57, 0:5] = False  # open to the image border: not a hole
        masks.append(m)
    filled_any = removed_any = False
    for m in masks:
        m = m.copy()
        m[m.shape[0] // 2][tuple(rng.integers(0, s, 40) for s in m.shape[1:])] = False  # pinholes
        filled, largest = _whole_volume_reference(m)
        assert np.array_equal(fill_holes_per_slice(m), filled)
        assert np.array_equal(keep_largest_components(m), largest)
        filled_any |= bool((filled & ~m).any())
        removed_any |= bool((m & ~largest).any())
    assert filled_any and removed_any  # both operations had something to do


def test_postprocess_mask_in_the_organs_box_equals_every_rule_over_the_whole_volume() -> None:
    """``postprocess_mask`` works inside the mask's box (so a 300-slice CT does not hold a full copy per organ);
    the liver rules (holes, largest components, the soft-tissue floor) give what they give over the whole volume,
    the mask touching the volume's edge included, and nothing is drawn outside the mask's box."""
    vol = load_volume(data_path("amos_0013_slab", "image.nii.gz"))
    lab = np.asarray(load_labels(data_path("amos_0013_slab", "label.nii.gz"), like=vol))
    hu = vol.array
    liver = lab == 6
    noisy = liver.copy()
    noisy[5][::7, ::7] = False  # pinholes
    noisy[0, 10:20, 10:20] = True  # a far island at the volume's corner (kept or dropped by size)
    noisy[8, 300:304, 300:304] = True  # a small island inside the liver's box
    for mask in (liver, noisy):
        filled = np.stack([ndimage.binary_fill_holes(s) for s in mask])
        expected = keep_largest_components(filled, 1, min_fraction=MIN_COMPONENT_FRACTION) & (
            hu >= SOFT_TISSUE_FLOOR_HU
        )
        got = postprocess_mask("liver", mask, hu)
        assert got.shape == mask.shape and got.dtype == bool
        assert np.array_equal(got, expected)
    assert not postprocess_mask("liver", np.zeros_like(liver), hu).any()
