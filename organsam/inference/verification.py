"""Verification: a mask that cannot be the organ asked for is not drawn, and the report says why.

Checks use numbers from ``organs.json`` (published anatomy): a mask bigger than the largest volume the organ can
have (``max_volume_ml``; e.g. an "adrenal gland" of 76 mL is the inferior vena cava next to it) is rejected. Only
upper bounds are checked, since a partial scan holds part of an organ. A learned check over mask-pooled encoder
features (SEG-SAM's organ classification) is the next part to add here.
"""

from __future__ import annotations

import numpy as np

from organsam.vocabulary import load_vocabulary

__all__ = ["verify_mask"]


def verify_mask(organ_id: str, mask: np.ndarray, voxel_ml: float) -> str | None:
    """Why ``mask`` cannot be ``organ_id`` (one sentence), or None when it passes.

    Args:
        organ_id: vocabulary id.
        mask: (Z, Y, X) bool on a grid whose voxels hold ``voxel_ml`` mL each (``Volume.voxel_ml``).
    """
    organ = load_vocabulary()[organ_id]
    if organ.max_volume_ml is not None and mask.any():
        volume = float(mask.sum()) * voxel_ml
        if volume > organ.max_volume_ml:
            return (
                f"rejected by verification: the mask is {volume:.0f} mL, more than the {organ.max_volume_ml:g} mL "
                f"a {organ.name} can have (organs.json); it is a neighbouring structure, so it is not drawn"
            )
    return None
