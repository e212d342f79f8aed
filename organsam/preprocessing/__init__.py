"""Preprocessing: intensity schemes, resampling and orientation helpers (numpy/scipy only)."""

from __future__ import annotations

from organsam.preprocessing.intensity import (
    CT_WINDOWS,
    CTWindow,
    DisplayConverter,
    IntensityError,
    MRNormalizer,
    check_ct_intensities,
    guess_modality,
    is_prewindowed_8bit,
    normalize_mr,
    to_uint8_display,
    window_ct,
)
from organsam.preprocessing.orientation import (
    axcodes,
    canonical_index_affine,
    canonical_transform,
    from_canonical,
    to_canonical,
)
from organsam.preprocessing.resample import resample_to_shape, resample_volume, resampled_shape

__all__ = [
    "CT_WINDOWS",
    "CTWindow",
    "DisplayConverter",
    "IntensityError",
    "MRNormalizer",
    "axcodes",
    "canonical_index_affine",
    "canonical_transform",
    "check_ct_intensities",
    "from_canonical",
    "guess_modality",
    "is_prewindowed_8bit",
    "normalize_mr",
    "resample_to_shape",
    "resample_volume",
    "resampled_shape",
    "to_canonical",
    "to_uint8_display",
    "window_ct",
]
