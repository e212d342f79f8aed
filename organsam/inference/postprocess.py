"""Per-organ post-processing of predicted masks and merging into one label map."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import cc3d
import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

__all__ = ["SINGLE_COMPONENT_ORGANS", "keep_largest_components", "fill_holes_per_slice", "postprocess_mask",
           "merge_labelmap"]

#: Organs that anatomy says form one connected structure: keep only their largest component.
SINGLE_COMPONENT_ORGANS: frozenset[str] = frozenset({
    "liver", "spleen", "kidney_left", "kidney_right", "gallbladder", "pancreas", "stomach", "aorta",
    "inferior_vena_cava", "esophagus", "urinary_bladder", "adrenal_gland_left", "adrenal_gland_right",
    "heart", "prostate", "uterus", "prostate_uterus", "portal_vein_and_splenic_vein", "trachea",
})


#: Solid organs and vessels whose CT voxels are never below this (HU): air and fat are cut off their masks.
SOFT_TISSUE_FLOOR_HU: float = -80.0
SOLID_ORGANS: frozenset[str] = frozenset({
    "liver", "spleen", "kidney_left", "kidney_right", "gallbladder", "pancreas", "aorta", "inferior_vena_cava",
    "adrenal_gland_left", "adrenal_gland_right", "heart", "prostate", "uterus", "prostate_uterus",
    "portal_vein_and_splenic_vein", "urinary_bladder",
})


def keep_largest_components(mask: np.ndarray, n: int = 1, connectivity: int = 26) -> np.ndarray:
    """Keep the ``n`` largest connected components of a binary mask.

    Args:
        mask: (Z, Y, X) bool.
        n: number of components to keep.
        connectivity: 6, 18 or 26.

    Returns:
        (Z, Y, X) bool.
    """
    if not mask.any():
        return mask.astype(bool, copy=False)
    labels, count = cc3d.connected_components(mask.astype(np.uint8), connectivity=connectivity,
                                              return_N=True)
    if count <= n:
        return mask.astype(bool, copy=False)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = np.argsort(sizes)[::-1][:n]
    return np.isin(labels, keep)


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Fill holes in each axial slice of a (Z, Y, X) bool mask."""
    out = mask.astype(bool, copy=True)
    for z in np.flatnonzero(out.reshape(out.shape[0], -1).any(axis=1)):
        out[z] = ndimage.binary_fill_holes(out[z])
    return out


def postprocess_mask(organ_id: str, mask: np.ndarray, hu: np.ndarray | None = None) -> np.ndarray:
    """Hole filling for every organ; air/fat removal for solid organs on CT (voxels below
    :data:`SOFT_TISSUE_FLOOR_HU`); largest component for organs in :data:`SINGLE_COMPONENT_ORGANS`.

    Args:
        organ_id: vocabulary id.
        mask: (Z, Y, X) bool.
        hu: (Z, Y, X) CT intensities in HU, or None (MR, 8-bit data): no intensity rule.

    Returns:
        (Z, Y, X) bool.
    """
    out = fill_holes_per_slice(mask)
    if hu is not None and organ_id in SOLID_ORGANS:
        out &= hu >= SOFT_TISSUE_FLOOR_HU
    if organ_id in SINGLE_COMPONENT_ORGANS:
        out = keep_largest_components(out, 1)
    return out


def merge_labelmap(masks: Mapping[str, np.ndarray], order: Sequence[str]) -> tuple[np.ndarray, dict[int, str]]:
    """Merge per-organ masks (overlaps allowed) into one label map.

    Label values follow ``order`` (1, 2, ...). Where masks overlap, the smaller organ wins (it is painted
    last), so a gallbladder inside a generous liver mask survives.

    Args:
        masks: organ id -> (Z, Y, X) bool.
        order: organ ids in the order that defines the label values.

    Returns:
        (Z, Y, X) uint8/uint16 label map and its table {value: organ id}.
    """
    table = {i + 1: oid for i, oid in enumerate(order)}
    shape = next(iter(masks.values())).shape if masks else (0, 0, 0)
    dtype = np.uint8 if len(order) < 256 else np.uint16
    labels = np.zeros(shape, dtype=dtype)
    by_size = sorted(table.items(), key=lambda kv: -int(masks[kv[1]].sum()) if kv[1] in masks else 0)
    for value, oid in by_size:
        if oid in masks:
            labels[masks[oid]] = value
    return labels, table
