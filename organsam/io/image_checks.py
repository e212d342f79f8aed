"""Checks that an image read from disk can be a CT/MR volume at all, each failing with one line that names the
file, the problem and the fix (:class:`organsam.io.errors.VolumeReadError`).

They look at the stored values, before any model sees them: a label map or a blank volume given as the image,
absurd magnitudes (a wrong data type or scale factor), signed 8-bit display data, and non-finite voxels (NaN and
-Inf become the minimum, +Inf the maximum, with a warning). Geometry is checked where the file is read
(:mod:`organsam.io.nifti`, :mod:`organsam.preprocessing.orientation`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from organsam.io.errors import VolumeReadError

logger = logging.getLogger(__name__)

__all__ = ["LABEL_MAP_MAX_VALUES", "MAX_ABS_INTENSITY", "check_image_values", "repair_non_finite"]

#: Largest magnitude accepted as an intensity: CT is about -1024..3071 HU (up to ~30,000 with metal on some
#: scanners), MR is arbitrary but stored in 16 bits or as small floats.
MAX_ABS_INTENSITY = 1e6
#: A whole-number image with at most this many distinct values, mostly 0, is a label map, not a CT/MR.
LABEL_MAP_MAX_VALUES = 64


def repair_non_finite(arr: np.ndarray, path: Path) -> np.ndarray:
    """NaN and -Inf voxels become the smallest finite value, +Inf the largest (warned); all non-finite is an
    error."""
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
        return arr
    finite = np.isfinite(arr)
    if finite.all():
        return arr
    if not finite.any():
        raise VolumeReadError(
            path,
            "the image is all NaN/infinite: there is no image data.",
            "re-export the image; check its scl_slope/RescaleSlope is not 0 or NaN.",
        )
    lo, hi = float(np.min(arr[finite])), float(np.max(arr[finite]))
    out = np.array(arr, copy=True)
    pos_inf = np.isposinf(arr)
    out[pos_inf] = hi
    out[~finite & ~pos_inf] = lo
    logger.warning(
        "%s: %d NaN/-Inf voxel(s) set to the minimum %g and %d +Inf voxel(s) to the maximum %g",
        path,
        int((~finite & ~pos_inf).sum()),
        lo,
        int(pos_inf.sum()),
        hi,
    )
    return out


def check_image_values(arr: np.ndarray, stored_dtype: np.dtype, path: Path, *, is_8bit: bool = False) -> None:
    """Refuse values that cannot be a CT/MR image (see the module docstring).

    Args:
        arr: the image values (finite).
        stored_dtype: the data type in the file (before scaling to float).
        path: the file, for the message.
        is_8bit: the file is an 8-bit picture (PNG/JPEG): its values are display grey levels.
    """
    if np.issubdtype(np.dtype(stored_dtype), np.complexfloating):
        raise VolumeReadError(path, "holds complex values.", "save the magnitude image instead.")
    if np.dtype(stored_dtype) == np.int8:
        raise VolumeReadError(
            path,
            "is stored as signed 8-bit integers (-128..127), which cannot hold CT "
            "Hounsfield units or MR intensities: it looks like display data.",
            "export the original image (16-bit HU for CT), or an unsigned 8-bit picture.",
        )
    lo, hi = float(arr.min()), float(arr.max())
    if max(abs(lo), abs(hi)) > MAX_ABS_INTENSITY:
        raise VolumeReadError(
            path,
            f"holds values from {lo:.3g} to {hi:.3g}, far beyond any CT (HU) or MR "
            "intensity: the data type or the scale factor is wrong.",
            "check the file's data type and scl_slope/RescaleSlope, and re-export it.",
        )
    if lo == hi:
        raise VolumeReadError(
            path,
            f"is blank: every voxel is {lo:g}, so there is nothing to segment.",
            "give the image itself (check that the export wrote the pixel data).",
        )
    if is_8bit:
        return
    sample = arr.ravel()[:: max(1, arr.size // 2_000_000)]
    if lo >= 0 and hi <= 1000 and np.all(sample == np.round(sample)):
        values = np.unique(sample)
        if len(values) <= LABEL_MAP_MAX_VALUES and float((sample == 0).mean()) >= 0.3:
            raise VolumeReadError(
                path,
                f"looks like a label map or mask ({len(values)} whole-number values from "
                f"{lo:g} to {hi:g}, mostly 0), not a CT/MR image.",
                "give the CT/MR image as input (a label map goes to `organsam evaluate` as the reference).",
            )
