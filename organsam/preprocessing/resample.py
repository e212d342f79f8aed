"""Resampling of images (linear) and label maps (nearest neighbour) with scipy.ndimage.

Voxels are treated as cells (``grid_mode``): the outer edges of the first and last voxel stay where they
are, so a volume resampled from spacing ``s`` to ``s'`` keeps its physical extent ``shape * spacing``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

__all__ = ["resample_to_shape", "resample_volume", "resampled_shape", "resample_z"]

logger = logging.getLogger(__name__)


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]) -> tuple[int, ...]:
    """Grid shape after resampling to ``new_spacing`` (physical extent kept, at least 1 voxel per axis).

    Args:
        shape: Input shape, e.g. (Z, Y, X).
        spacing: Input voxel size per axis in mm.
        new_spacing: Wanted voxel size per axis in mm.

    Returns:
        The output shape; the exact output spacing is ``shape * spacing / out_shape``.
    """
    if not (len(shape) == len(spacing) == len(new_spacing)):
        raise ValueError(
            f"shape {tuple(shape)}, spacing {tuple(spacing)} and new_spacing {tuple(new_spacing)} "
            "must have the same length"
        )
    if any(s <= 0 for s in spacing) or any(s <= 0 for s in new_spacing):
        raise ValueError(f"spacings must be positive, got {tuple(spacing)} -> {tuple(new_spacing)}")
    return tuple(max(1, int(round(n * s / ns))) for n, s, ns in zip(shape, spacing, new_spacing))


def resample_to_shape(arr: np.ndarray, shape: Sequence[int], order: int = 1) -> np.ndarray:
    """Resample an array to a given shape over the same physical extent.

    Args:
        arr: N-D array, e.g. (Z, Y, X) image or label map.
        shape: Output shape (same number of axes).
        order: Spline order: 1 (linear) for images, 0 (nearest) for label maps and masks.

    Returns:
        Array of ``shape``: float32 for ``order > 0`` (or float input), the input dtype for ``order == 0``.
    """
    from scipy import ndimage

    a = np.asarray(arr)
    shape = tuple(int(s) for s in shape)
    if len(shape) != a.ndim:
        raise ValueError(f"target shape {shape} has {len(shape)} axes, the array {a.ndim} ({a.shape})")
    if any(s < 1 for s in shape):
        raise ValueError(f"target shape must be positive, got {shape}")
    if order not in range(6):
        raise ValueError(f"order must be 0..5, got {order}")
    out_dtype = a.dtype if order == 0 else (a.dtype if np.issubdtype(a.dtype, np.floating) else np.float32)
    if shape == a.shape:
        return a.astype(out_dtype, copy=True)
    work = a
    if a.dtype == bool:
        work = a.astype(np.uint8)
    elif order > 0 and not np.issubdtype(a.dtype, np.floating):
        work = a.astype(np.float32)
    factors = [t / s for t, s in zip(shape, a.shape)]
    out = ndimage.zoom(work, factors, order=order, mode="nearest", grid_mode=True, prefilter=order > 1)
    if out.shape != shape:  # guard against rounding in scipy's shape computation
        raise RuntimeError(f"scipy zoom produced {out.shape} instead of {shape}")
    return out.astype(out_dtype, copy=False)


def resample_volume(
    arr: np.ndarray, spacing: Sequence[float], new_spacing: Sequence[float], order: int = 1
) -> np.ndarray:
    """Resample an image (``order=1``) or label map (``order=0``) from ``spacing`` to ``new_spacing``.

    Args:
        arr: (Z, Y, X) array (any N-D works).
        spacing: (sz, sy, sx) of ``arr`` in mm.
        new_spacing: Wanted (sz, sy, sx) in mm.
        order: 1 (linear) for images, 0 (nearest) for labels.

    Returns:
        Array of shape :func:`resampled_shape` ``(arr.shape, spacing, new_spacing)``.
    """
    target = resampled_shape(np.shape(arr), spacing, new_spacing)
    logger.debug(
        "resample %s @ %s -> %s @ %s (order %d)", np.shape(arr), tuple(spacing), target, tuple(new_spacing), order
    )
    return resample_to_shape(arr, target, order)


def resample_z(arr: np.ndarray, new_z: int) -> np.ndarray:
    """Linear resampling along axis 0 only (cell-centred, like :func:`resample_to_shape`), slice by slice.

    Much cheaper than a 3D zoom for (Z, Y, X) volumes whose in-plane grid stays: each output slice is a
    weighted sum of the two nearest input slices.

    Args:
        arr: (Z, ...) array (bool masks are treated as 0/1).
        new_z: output length of axis 0 (>= 1).

    Returns:
        (new_z, ...) float32.
    """
    a = np.asarray(arr)
    if new_z < 1:
        raise ValueError(f"new_z must be >= 1, got {new_z}")
    Z = a.shape[0]
    pos = np.clip((np.arange(new_z) + 0.5) * Z / new_z - 0.5, 0, Z - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, Z - 1)
    w = (pos - lo).astype(np.float32)
    out = np.empty((new_z,) + a.shape[1:], dtype=np.float32)
    for i in range(new_z):
        if w[i] == 0.0 or lo[i] == hi[i]:
            out[i] = a[lo[i]]
        else:
            out[i] = (1.0 - w[i]) * a[lo[i]].astype(np.float32) + w[i] * a[hi[i]].astype(np.float32)
    return out
