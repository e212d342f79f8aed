"""What a location prior registers against: the CT in HU, or an MR turned into a pseudo-CT.

The atlas is a CT, and its registration (``registration.py``) reads HU: the body is what lies above -500 HU, and
slices are compared by their clipped HU. An MR has arbitrary positive intensities, so its whole field of view
(background included) would pass as body and the atlas would be placed at random. :func:`pseudo_ct` gives the
registration what it needs from an MR: the body (above a fraction of the robust maximum, largest component, holes
filled per slice) set to soft-tissue HU by intensity rank (-100..150 HU, so the ordering of tissues is kept), and
everything outside it set to air (-1000 HU). The organs' contrast is not that of a CT; the affine stage's mutual
information does not need it to be.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["pseudo_ct", "registration_image"]

#: fraction of the 99.5th-percentile intensity above which an MR voxel counts as body
BODY_FRACTION = 0.08
#: HU range the body's intensity ranks are spread over
SOFT_TISSUE_HU = (-100.0, 150.0)
AIR_HU = -1000.0


def pseudo_ct(array: np.ndarray) -> np.ndarray:
    """(Z, Y, X) MR intensities -> float32 pseudo-HU (see the module docstring)."""
    a = np.asarray(array, dtype=np.float32)
    finite = np.isfinite(a)
    top = float(np.percentile(a[finite], 99.5)) if finite.any() else 0.0
    body = finite & (a > BODY_FRACTION * top) if top > 0 else np.zeros(a.shape, dtype=bool)
    labels, n = ndimage.label(body)
    if n > 1:
        body = labels == int(np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    body = np.stack([ndimage.binary_fill_holes(s) for s in body]) if body.ndim == 3 else body
    out = np.full(a.shape, AIR_HU, dtype=np.float32)
    if body.any():
        values = np.where(finite, a, 0.0)[body]
        ranks = np.searchsorted(np.sort(values), values, side="left") / max(values.size - 1, 1)
        lo, hi = SOFT_TISSUE_HU
        out[body] = lo + (hi - lo) * ranks
    return out


def registration_image(volume: Any) -> np.ndarray:
    """The array a location prior registers against: ``volume.array`` for CT, :func:`pseudo_ct` of it for MR."""
    return pseudo_ct(volume.array) if getattr(volume, "modality", "CT") == "MR" else volume.array
