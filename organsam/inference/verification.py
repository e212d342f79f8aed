"""Verification: a mask that cannot be the organ asked for is not drawn, and the report says why.

Three checks:

* size, with numbers from ``organs.json`` (published anatomy): a mask bigger than the largest volume the organ can
  have (``max_volume_ml``; e.g. an "adrenal gland" of 76 mL is the inferior vena cava next to it) is rejected.
  Only upper bounds are checked, since a partial scan holds part of an organ;
* another organ's structure (:func:`drawn_on_another`): a mask that, on the slices holding nearly all of it
  (``share``), is one structure with another organ's mask (each more than ``max_inside`` inside the other there),
  while that organ has slices of its own, is that organ drawn again. On ``amos_0001_slab``, which holds no right
  adrenal gland, the right adrenal's box on the last slice drew the IVC, with the IVC's own mask there;
* wrapped by another organ (:func:`contact`): for organs with ``max_contact`` in ``organs.json`` (the kidneys, in
  their fat capsule), a mask more of whose in-plane boundary than that lies along one other organ's mask is a piece
  of that organ. On ``ts_b_dicom``, a scan that holds no kidney, the kidneys' boxes drew the spleen and the liver.

A learned check over mask-pooled encoder features (SEG-SAM's organ classification) was measured and not adopted
(README, "Tried, measured, not adopted").
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage

from organsam.inference.shared_structures import one_structure
from organsam.vocabulary import load_vocabulary

__all__ = ["contact", "drawn_on_another", "verify_mask"]


def _around(mask: np.ndarray, pad: int) -> tuple[slice, slice, slice]:
    """The slices of ``mask``'s bounding box (non-empty mask), grown in plane by ``pad`` and clipped."""
    zs, ys, xs = (np.flatnonzero(mask.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1)))
    Y, X = mask.shape[1:]
    return (
        slice(int(zs[0]), int(zs[-1]) + 1),
        slice(max(int(ys[0]) - pad, 0), min(int(ys[-1]) + pad + 1, Y)),
        slice(max(int(xs[0]) - pad, 0), min(int(xs[-1]) + pad + 1, X)),
    )


def _shared_share(mask: np.ndarray, other: np.ndarray, max_inside: float) -> tuple[float, float]:
    """The fractions of ``mask``'s and of ``other``'s voxels on the axial slices where the two are one structure
    (each more than ``max_inside`` inside the other); (0, 0) when they do not meet. Non-empty ``mask``."""
    slab = slice(*np.flatnonzero(mask.any(axis=(1, 2)))[[0, -1]] + [0, 1])  # the other may reach beyond in plane
    if not (mask[slab] & other[slab]).any():
        return 0.0, 0.0
    one, _, _ = one_structure(mask[slab], other[slab], max_inside)
    own, theirs = mask[slab].sum(axis=(1, 2)), other[slab].sum(axis=(1, 2))
    return float(own[one].sum() / max(own.sum(), 1)), float(theirs[one].sum() / max(int(other.sum()), 1))


#: In-plane neighbourhood of the contact check (no link across slices: slabs of 5 mm slices end on organs).
_IN_PLANE = np.array(
    [[[0, 0, 0], [0, 0, 0], [0, 0, 0]], [[0, 1, 0], [1, 1, 1], [0, 1, 0]], [[0, 0, 0], [0, 0, 0], [0, 0, 0]]], bool
)


def contact(mask: np.ndarray, other: np.ndarray, reach: int = 2) -> float:
    """The fraction of ``mask``'s in-plane boundary pixels that lie within ``reach`` pixels (in plane) of ``other``
    (or inside it); 0 for an empty mask."""
    if not mask.any():
        return 0.0
    box = _around(mask, reach + 1)  # the mask's outline and everything within reach of it
    mask, other = mask[box], other[box]
    boundary = mask & ~ndimage.binary_erosion(mask, _IN_PLANE)
    near = ndimage.binary_dilation(other, _IN_PLANE, iterations=reach)
    return float((boundary & near).sum()) / float(boundary.sum())


def drawn_on_another(
    mask: np.ndarray, others: Mapping[str, np.ndarray], max_inside: float = 0.5, share: float = 0.9
) -> str | None:
    """The organ among ``others`` whose structure ``mask`` is (see the module docstring), or None.

    Args:
        mask: (Z, Y, X) bool, axial slices along axis 0.
        others: organ id -> mask of the same grid (the other organs of the run).
        max_inside: on a slice of one structure, each mask lies more than this inside the other.
        share: the smallest fraction of ``mask``'s voxels on such slices; the other organ must have less there
            (otherwise the two are one structure everywhere, and nothing tells which organ it is).
    """
    if not mask.any():
        return None
    for oid, other in others.items():
        if not other.any():
            continue
        mine, theirs = _shared_share(mask, other, max_inside)
        if mine >= share and theirs < share:
            return oid
    return None


def verify_mask(
    organ_id: str, mask: np.ndarray, voxel_ml: float, others: Mapping[str, np.ndarray] | None = None
) -> str | None:
    """Why ``mask`` cannot be ``organ_id`` (one sentence), or None when it passes.

    Args:
        organ_id: vocabulary id.
        mask: (Z, Y, X) bool on a grid whose voxels hold ``voxel_ml`` mL each (``Volume.voxel_ml``), axial slices
            along axis 0.
        others: the masks of the run's other organs (same grid), for :func:`drawn_on_another`.
    """
    vocab = load_vocabulary()
    organ = vocab[organ_id]
    if organ.max_volume_ml is not None and mask.any():
        volume = float(mask.sum()) * voxel_ml
        if volume > organ.max_volume_ml:
            return (
                f"rejected by verification: the mask is {volume:.0f} mL, more than the {organ.max_volume_ml:g} mL "
                f"a {organ.name} can have (organs.json); it is a neighbouring structure, so it is not drawn"
            )
    if organ.max_contact is not None and others and mask.any():
        for oid, m in others.items():
            share = contact(mask, m) if m.any() else 0.0
            if share > organ.max_contact:
                return (
                    f"rejected by verification: {100 * share:.0f} % of the mask's outline lies along the "
                    f"{vocab[oid].name}, more than the {100 * organ.max_contact:.0f} % a {organ.name} can have "
                    f"(organs.json); it is a piece of the {vocab[oid].name}, so it is not drawn"
                )
    other = drawn_on_another(mask, others) if others else None
    if other is not None:
        return (
            f"rejected by verification: on the slices that hold nearly all of it, the mask is the structure drawn "
            f"for the {vocab[other].name} (which was drawn on other slices too), so it is not drawn as the "
            f"{organ.name}"
        )
    return None
