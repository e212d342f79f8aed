"""Per-slice bounding boxes from 3D masks and label maps.

A box is ``(x0, y0, x1, y1)`` in the axial slice's pixel coordinates of the canonical (Z, Y, X)
layout: ``x`` is the column index (axis 2), ``y`` the row index (axis 1). Bounds are inclusive pixel
indices of the extreme mask pixels, widened by ``margin_px`` on every side and clipped to the image
(``0 <= x0 <= x1 <= X-1``, ``0 <= y0 <= y1 <= Y-1``). The same boxes serve as prompts built from an
atlas prior and as "oracle" prompts built from reference labels in evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["Box", "mask_to_boxes", "boxes_from_labels", "box_of_slice"]

Box = tuple[int, int, int, int]


def box_of_slice(mask2d: np.ndarray, margin_px: int = 0) -> Box | None:
    """Bounding box of one 2D mask, widened and clipped.

    Args:
        mask2d: (Y, X) boolean (or 0/non-0) mask of one axial slice.
        margin_px: pixels added on every side before clipping (>= 0).

    Returns:
        ``(x0, y0, x1, y1)`` inclusive pixel bounds, or ``None`` when the mask is empty.

    Raises:
        ValueError: ``mask2d`` is not 2D or ``margin_px`` is negative.
    """
    m = np.asarray(mask2d)
    if m.ndim != 2:
        raise ValueError(f"box_of_slice expects a 2D (Y, X) mask, got shape {m.shape}")
    if margin_px < 0:
        raise ValueError(f"margin_px must be >= 0, got {margin_px}")
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(m.any(axis=0))
    ny, nx = m.shape
    y0 = max(int(rows[0]) - margin_px, 0)
    y1 = min(int(rows[-1]) + margin_px, ny - 1)
    x0 = max(int(cols[0]) - margin_px, 0)
    x1 = min(int(cols[-1]) + margin_px, nx - 1)
    return (x0, y0, x1, y1)


def mask_to_boxes(mask: np.ndarray, margin_px: int = 0, min_pixels: int = 1) -> dict[int, Box]:
    """One box per axial slice where a 3D mask is present.

    Args:
        mask: (Z, Y, X) boolean (or 0/non-0) mask in the canonical layout.
        margin_px: pixels added on every side of each slice's box before clipping to the image.
        min_pixels: slices with fewer mask pixels than this get no box (default 1: any pixel).

    Returns:
        ``{slice_index: (x0, y0, x1, y1)}`` for every slice ``k`` with at least ``min_pixels`` mask
        pixels, in increasing ``k`` order; empty dict for an empty mask.

    Raises:
        ValueError: ``mask`` is not 3D or ``margin_px`` is negative.
    """
    m = np.asarray(mask).astype(bool, copy=False)
    if m.ndim != 3:
        raise ValueError(f"mask_to_boxes expects a 3D (Z, Y, X) mask, got shape {m.shape}")
    if margin_px < 0:
        raise ValueError(f"margin_px must be >= 0, got {margin_px}")
    counts = m.reshape(m.shape[0], -1).sum(axis=1)
    out: dict[int, Box] = {}
    for k in np.flatnonzero(counts >= max(int(min_pixels), 1)):
        box = box_of_slice(m[k], margin_px)
        if box is not None:
            out[int(k)] = box
    return out


def boxes_from_labels(
    labels: np.ndarray,
    label_to_organ: Mapping[int, str] | None = None,
    margin_px: int = 0,
    min_pixels: int = 1,
) -> dict[str, dict[int, Box]]:
    """Per-slice boxes of every organ of a label map (e.g. oracle prompts from reference labels).

    Args:
        labels: (Z, Y, X) integer label map in the canonical layout, 0 = background.
        label_to_organ: label value -> organ id. Several values may map to the same organ (their
            masks are merged). ``None`` uses ``str(value)`` for every non-zero value present.
            Values absent from the mapping are ignored.
        margin_px: pixels added on every side of each slice's box before clipping.
        min_pixels: minimum mask pixels for a slice to get a box.

    Returns:
        ``{organ_id: {slice_index: (x0, y0, x1, y1)}}`` for each organ present in ``labels``.

    Raises:
        ValueError: ``labels`` is not 3D.
    """
    lab = np.asarray(labels)
    if lab.ndim != 3:
        raise ValueError(f"boxes_from_labels expects a 3D (Z, Y, X) label map, got shape {lab.shape}")
    present = [int(v) for v in np.unique(lab) if v != 0]
    if label_to_organ is None:
        label_to_organ = {v: str(v) for v in present}
    by_organ: dict[str, list[int]] = {}
    for v in present:
        organ = label_to_organ.get(v)
        if organ is not None:
            by_organ.setdefault(organ, []).append(v)
    return {organ: mask_to_boxes(np.isin(lab, values), margin_px, min_pixels) for organ, values in by_organ.items()}
