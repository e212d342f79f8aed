"""Organ priors without learning: an atlas CT registered onto the target, and per-slice boxes.

- ``registration``: ``register_atlas`` (z-level search, affine, Demons) and ``warp_labels``.
- ``atlas``: ``Atlas``, ``default_atlas``, ``AtlasPrior`` -> ``AtlasResult`` (warped masks, boxes).
- ``pseudo_ct``: ``registration_image`` (HU for CT, a pseudo-CT for MR: what the atlas is registered onto).
- ``boxes``: ``mask_to_boxes`` / ``boxes_from_labels`` (also used for oracle prompts in evaluation).
"""

from __future__ import annotations

from organsam.priors.atlas import (
    ATLAS_ENV,
    Atlas,
    AtlasNotFoundError,
    AtlasPrior,
    AtlasResult,
    default_atlas,
)
from organsam.priors.boxes import Box, box_of_slice, boxes_from_labels, mask_to_boxes
from organsam.priors.pseudo_ct import pseudo_ct, registration_image
from organsam.priors.registration import (
    AtlasTransform,
    RegistrationError,
    RegistrationSettings,
    register_atlas,
    warp_labels,
)

__all__ = [
    "ATLAS_ENV",
    "Atlas",
    "AtlasNotFoundError",
    "AtlasPrior",
    "AtlasResult",
    "AtlasTransform",
    "Box",
    "RegistrationError",
    "RegistrationSettings",
    "box_of_slice",
    "boxes_from_labels",
    "default_atlas",
    "mask_to_boxes",
    "pseudo_ct",
    "register_atlas",
    "registration_image",
    "warp_labels",
]
