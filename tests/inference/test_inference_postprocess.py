"""Post-processing works inside each mask's bounding box and gives what the whole-volume computation gives."""

from __future__ import annotations

import cc3d
import numpy as np
from conftest import data_path
from scipy import ndimage

from organsam.inference.postprocess import fill_holes_per_slice, keep_largest_components
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
