"""Per-organ post-processing of predicted masks and merging into one label volume."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import cc3d
import numpy as np
from scipy import ndimage

from organsam.vocabulary.palette import label_table

logger = logging.getLogger(__name__)

__all__ = [
    "SINGLE_COMPONENT_ORGANS",
    "bounding_box",
    "keep_largest_components",
    "fill_holes_per_slice",
    "postprocess_mask",
    "merge_labels",
]

#: Organs that anatomy says form one connected structure: keep only their largest component.
SINGLE_COMPONENT_ORGANS: frozenset[str] = frozenset(
    {
        "liver",
        "spleen",
        "kidney_left",
        "kidney_right",
        "gallbladder",
        "pancreas",
        "stomach",
        "urinary_bladder",
        "adrenal_gland_left",
        "adrenal_gland_right",
        "heart",
        "prostate",
        "uterus",
        "prostate_uterus",
    }
)
#: Components smaller than this fraction of an organ's largest one are dropped (a liver lobe that a thin
#: scan shows apart from the rest survives; stray blobs do not). Vessels are not filtered: a rejected
#: slice can legitimately split them.
MIN_COMPONENT_FRACTION: float = 0.2


#: Solid organs and vessels whose CT voxels are never below this (HU): air and fat are cut off their masks.
SOFT_TISSUE_FLOOR_HU: float = -80.0
SOLID_ORGANS: frozenset[str] = frozenset(
    {
        "liver",
        "spleen",
        "kidney_left",
        "kidney_right",
        "gallbladder",
        "pancreas",
        "aorta",
        "inferior_vena_cava",
        "adrenal_gland_left",
        "adrenal_gland_right",
        "heart",
        "prostate",
        "uterus",
        "prostate_uterus",
        "portal_vein_and_splenic_vein",
        "urinary_bladder",
    }
)


def keep_largest_components(
    mask: np.ndarray, n: int = 1, connectivity: int = 26, min_fraction: float = 1.0
) -> np.ndarray:
    """Keep the ``n`` largest connected components of a binary mask, plus any other component of at least
    ``min_fraction`` of the largest one's size.

    Args:
        mask: (Z, Y, X) bool.
        n: number of components always kept.
        connectivity: 6, 18 or 26.
        min_fraction: relative size above which further components are kept too (1.0: none).

    Returns:
        (Z, Y, X) bool.
    """
    mask = np.asarray(mask, dtype=bool)  # a label or float mask counts as one foreground, not one per value
    if not mask.any():
        return mask
    box = bounding_box(mask)  # components lie inside the mask's box: labelled there only
    labels, count = cc3d.connected_components(mask[box].astype(np.uint8), connectivity=connectivity, return_N=True)
    if count <= n:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    ranked = np.argsort(sizes)[::-1]
    keep = [c for i, c in enumerate(ranked) if sizes[c] > 0 and (i < n or sizes[c] >= min_fraction * sizes[ranked[0]])]
    out = np.zeros(mask.shape, dtype=bool)
    out[box] = np.isin(labels, keep)
    return out


def bounding_box(mask: np.ndarray, pad: int = 0) -> tuple[slice, ...]:
    """Slices of a non-empty mask's bounding box, grown by ``pad`` on each side (clipped to the array)."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(int(hit[0]) - pad, 0), min(int(hit[-1]) + 1 + pad, mask.shape[axis])))
    return tuple(box)


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Fill holes in each axial slice of a (Z, Y, X) bool mask."""
    out = mask.astype(bool, copy=True)
    for z in np.flatnonzero(out.reshape(out.shape[0], -1).any(axis=1)):
        # inside the box grown by one pixel: everything beyond it is background joined to the image border, so a
        # region is a hole there exactly when it is one in the whole slice
        box = bounding_box(out[z], pad=1)
        out[z][box] = ndimage.binary_fill_holes(out[z][box])
    return out


def postprocess_mask(organ_id: str, mask: np.ndarray, hu: np.ndarray | None = None) -> np.ndarray:
    """Hole filling for every organ; air/fat removal for solid organs on CT (voxels below
    :data:`SOFT_TISSUE_FLOOR_HU`); for organs in :data:`SINGLE_COMPONENT_ORGANS`, the largest component and
    those of at least :data:`MIN_COMPONENT_FRACTION` of its size.

    Args:
        organ_id: vocabulary id.
        mask: (Z, Y, X) bool.
        hu: (Z, Y, X) CT intensities in HU, or None (MR, 8-bit data): no intensity rule.

    Returns:
        (Z, Y, X) bool.
    """
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros(mask.shape, dtype=bool)  # written inside the mask's box only: pages elsewhere stay unmapped
    if not mask.any():
        return out
    # every rule acts inside the mask's box (grown by one voxel of background): outside it there is only background
    # joined to the image border, so the result is the whole volume's at the cost of the organ's size
    box = bounding_box(mask, pad=1)
    crop = fill_holes_per_slice(mask[box])
    if organ_id in SINGLE_COMPONENT_ORGANS:  # before the intensity rule, which can split an organ apart
        crop = keep_largest_components(crop, 1, min_fraction=MIN_COMPONENT_FRACTION)
    if hu is not None and organ_id in SOLID_ORGANS:
        crop &= hu[box] >= SOFT_TISSUE_FLOOR_HU
    out[box] = crop
    return out


def merge_labels(masks: Mapping[str, np.ndarray], organ_ids: Sequence[str]) -> tuple[np.ndarray, dict[int, str]]:
    """Merge per-organ masks (overlaps allowed) into one (Z, Y, X) label volume with each organ's fixed label
    value.

    Label values come from the vocabulary (:func:`organsam.vocabulary.palette.organ_label`), not from the order of
    the prompt. Where masks overlap, the smaller organ wins (it is painted last), so a gallbladder inside a generous
    liver mask survives.

    Args:
        masks: organ id -> (Z, Y, X) bool.
        organ_ids: the organs to merge (those without a mask are listed in the table and absent from the map).

    Returns:
        (Z, Y, X) uint8/uint16 label volume and its table {value: organ id}, ascending.
    """
    table = label_table(organ_ids)
    shape = next(iter(masks.values())).shape if masks else (0, 0, 0)
    dtype = np.uint8 if max(table, default=0) < 256 else np.uint16
    labels = np.zeros(shape, dtype=dtype)
    by_size = sorted(table.items(), key=lambda kv: -int(masks[kv[1]].sum()) if kv[1] in masks else 0)
    for value, oid in by_size:
        if oid in masks:
            labels[masks[oid]] = value
    return labels, table
