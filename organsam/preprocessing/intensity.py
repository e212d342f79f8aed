"""Intensity schemes: CT windows, MR percentile normalisation, pre-windowed 8-bit detection, modality checks.

Every scheme maps intensities to float32 display values in [0, 255] (the range LiteMedSAM was trained on)
and exists as a small class (``__call__`` / ``run``) and as a function.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from organsam.io.volume import Volume

__all__ = [
    "CT_WINDOWS",
    "CTWindow",
    "DisplayConverter",
    "IntensityError",
    "MRNormalizer",
    "check_ct_intensities",
    "display_scheme",
    "guess_modality",
    "is_ct_in_hu",
    "model_intensities",
    "is_prewindowed_8bit",
    "normalize_mr",
    "resolve_window",
    "to_uint8_display",
    "window_ct",
]

logger = logging.getLogger(__name__)

#: Named CT windows as (level, width) in HU.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "abdomen": (40.0, 400.0),
    "liver": (80.0, 150.0),
    "bone": (400.0, 1800.0),
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft_tissue": (50.0, 400.0),
}

_SAMPLE = 4_000_000


class IntensityError(ValueError):
    """The intensities do not fit the requested modality or scheme.

    Args:
        path: The image file (or ``None`` for in-memory arrays).
        problem: What is wrong.
        fix: What the user can do.
    """

    def __init__(self, path: str | Path | None, problem: str, fix: str = "") -> None:
        self.path = None if path is None else Path(path)
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}" + (f" Fix: {fix}" if fix else ""))


def _sample(arr: np.ndarray) -> np.ndarray:
    flat = np.asarray(arr).reshape(-1)
    if flat.size > _SAMPLE:
        flat = flat[:: flat.size // _SAMPLE + 1]
    return flat


def resolve_window(window: str | tuple[float, float]) -> tuple[float, float]:
    """(level, width) of a named window or of an explicit pair.

    Args:
        window: A name from :data:`CT_WINDOWS` (case-insensitive, ``-`` or space for ``_``) or (level, width).

    Returns:
        (level, width) in HU.
    """
    if isinstance(window, str):
        key = window.strip().lower().replace("-", "_").replace(" ", "_")
        if key not in CT_WINDOWS:
            raise ValueError(
                f"unknown CT window {window!r}; choose one of {sorted(CT_WINDOWS)} or give (level, width) in HU"
            )
        return CT_WINDOWS[key]
    try:
        level, width = (float(v) for v in window)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a CT window is a name or (level, width), got {window!r}") from exc
    if not width > 0:
        raise ValueError(f"CT window width must be positive, got {width}")
    return level, width


class CTWindow:
    """Clip HU to [level - width/2, level + width/2] and scale linearly to [0, 255].

    Args:
        window: Name from :data:`CT_WINDOWS` or (level, width) in HU.
    """

    def __init__(self, window: str | tuple[float, float] = "abdomen") -> None:
        self.level, self.width = resolve_window(window)

    @property
    def lower(self) -> float:
        """Lowest HU shown (maps to 0)."""
        return self.level - self.width / 2.0

    @property
    def upper(self) -> float:
        """Highest HU shown (maps to 255)."""
        return self.level + self.width / 2.0

    def __call__(self, arr: np.ndarray) -> np.ndarray:
        """Apply the window.

        Args:
            arr: HU array of any shape.

        Returns:
            float32 array of the same shape in [0, 255].
        """
        a = np.asarray(arr, dtype=np.float32)
        out = np.clip(a, np.float32(self.lower), np.float32(self.upper))
        out -= np.float32(self.lower)
        out *= np.float32(255.0 / self.width)
        return out

    run = __call__

    def __repr__(self) -> str:
        return f"CTWindow(level={self.level:g}, width={self.width:g})"


def window_ct(arr: np.ndarray, window: str | tuple[float, float] = "abdomen") -> np.ndarray:
    """Window a CT array (HU) to float32 display values in [0, 255].

    Args:
        arr: HU array of any shape, e.g. (Z, Y, X).
        window: Name from :data:`CT_WINDOWS` (``"abdomen"`` = L40/W400: clip to [-160, 240]) or (level, width).

    Returns:
        float32 array of the same shape in [0, 255].
    """
    return CTWindow(window)(arr)


class MRNormalizer:
    """Percentile normalisation: clip to the [lower, upper] percentiles and scale to [0, 255].

    Args:
        lower: Lower percentile (0..100).
        upper: Upper percentile (0..100), greater than ``lower``.
        foreground_only: Compute the percentiles over voxels > 0 only (MR background is 0) and keep
            background voxels at 0. Falls back to all voxels when there are none above 0.
    """

    def __init__(self, lower: float = 0.5, upper: float = 99.5, foreground_only: bool = True) -> None:
        if not 0.0 <= lower < upper <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {lower}, {upper}")
        self.lower = float(lower)
        self.upper = float(upper)
        self.foreground_only = foreground_only

    def __call__(self, arr: np.ndarray) -> np.ndarray:
        """Normalise.

        Args:
            arr: Intensities of any shape, e.g. (Z, Y, X).

        Returns:
            float32 array of the same shape in [0, 255].
        """
        a = np.asarray(arr, dtype=np.float32)
        sample = _sample(a)
        sample = sample[np.isfinite(sample)]
        background = None
        if self.foreground_only:
            fg = sample[sample > 0]
            if fg.size:
                sample = fg
                background = a <= 0
        if sample.size == 0:
            return np.zeros_like(a)
        lo, hi = (float(v) for v in np.percentile(sample, [self.lower, self.upper]))
        if hi <= lo:
            out = np.where(a > lo, np.float32(255.0), np.float32(0.0)).astype(np.float32)
        else:
            out = np.clip(a, np.float32(lo), np.float32(hi))
            out -= np.float32(lo)
            out *= np.float32(255.0 / (hi - lo))
        if background is not None:
            out[background] = 0.0
        return out

    run = __call__

    def __repr__(self) -> str:
        return f"MRNormalizer(lower={self.lower:g}, upper={self.upper:g}, foreground_only={self.foreground_only})"


def normalize_mr(arr: np.ndarray, lower: float = 0.5, upper: float = 99.5, foreground_only: bool = True) -> np.ndarray:
    """Percentile-normalise an MR (or any non-HU) array to float32 in [0, 255].

    Args:
        arr: Intensities of any shape, e.g. (Z, Y, X).
        lower: Lower percentile.
        upper: Upper percentile.
        foreground_only: Percentiles over voxels > 0 only, background kept at 0.

    Returns:
        float32 array of the same shape in [0, 255].
    """
    return MRNormalizer(lower, upper, foreground_only)(arr)


def is_prewindowed_8bit(arr: np.ndarray) -> bool:
    """Whether an array already holds 8-bit display values (integers in 0..255), not HU or raw MR.

    Args:
        arr: Intensities of any shape.

    Returns:
        True when all values are whole numbers within [0, 255] and the maximum is above 1 (a 0/1 mask is
        not an image).
    """
    a = np.asarray(arr)
    if a.size == 0:
        return False
    if a.dtype == np.uint8:
        return bool(a.max() > 1)
    if not (np.issubdtype(a.dtype, np.number) and not np.iscomplexobj(a)):
        return False
    lo, hi = float(np.min(a)), float(np.max(a))
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 255 or hi <= 1:
        return False
    if np.issubdtype(a.dtype, np.integer):
        return True
    s = _sample(a)
    return bool(np.all(s == np.round(s)))


def guess_modality(arr: np.ndarray) -> str:
    """Guess the modality from the intensity range (used when the file does not say).

    Args:
        arr: Intensities of any shape.

    Returns:
        ``"CT"`` when there is air around -1000 (minimum between -3100 and -500: HU with padding),
        ``"unknown"`` for 8-bit display data, else ``"MR"`` when values are mostly non-negative with a
        range beyond 8 bits, else ``"unknown"``.
    """
    a = np.asarray(arr)
    if a.size == 0:
        return "unknown"
    lo, hi = float(np.min(a)), float(np.max(a))
    if -3100.0 <= lo <= -500.0:
        return "CT"
    if is_prewindowed_8bit(a):
        return "unknown"
    if lo > -200.0 and hi > 255.0:
        return "MR"
    return "unknown"


def check_ct_intensities(arr: np.ndarray, path: str | Path | None = None) -> None:
    """Raise when CT was asked for but the intensities are not Hounsfield units.

    Accepted: HU (some voxel at or below -200 HU: air or fat) and already-windowed 8-bit data.

    Args:
        arr: Intensities of any shape.
        path: The source file, named in the message.

    Raises:
        IntensityError: e.g. an MR image passed as CT, or CT stored without RescaleSlope/Intercept.
    """
    a = np.asarray(arr)
    if a.size == 0 or is_prewindowed_8bit(a):
        return
    lo, hi = float(np.min(a)), float(np.max(a))
    if lo > -200.0:
        raise IntensityError(
            path,
            f"CT was requested but the intensities do not look like Hounsfield units (minimum {lo:g}, "
            f"maximum {hi:g}; CT has air at about -1000 HU and fat at about -100 HU).",
            "if this is an MR image pass modality 'MR'; if it is a CT stored without "
            "rescaling, convert it to HU (value * RescaleSlope + RescaleIntercept) first.",
        )
    if lo < -10000.0 or hi > 100000.0:
        raise IntensityError(
            path,
            f"CT was requested but the intensities range from {lo:g} to {hi:g}, far outside HU.",
            "check the scaling (scl_slope/scl_inter or RescaleSlope/Intercept) of the file.",
        )


def display_scheme(volume: Volume) -> str:
    """Which scheme :func:`to_uint8_display` uses for a volume.

    Args:
        volume: A :class:`organsam.io.Volume`.

    Returns:
        ``"prewindowed"`` (values kept), ``"ct_window"`` or ``"mr_percentile"``.
    """
    if volume.meta.is_8bit or is_prewindowed_8bit(volume.array):
        return "prewindowed"
    if volume.modality == "CT":
        return "ct_window"
    return "mr_percentile"


def model_intensities(volume: Volume, window: str = "abdomen") -> np.ndarray:
    """The one rule for what the model sees (training and inference): (Z, Y, X) float32 in [0, 255], CT windowed,
    MR (and unknown modalities) percentile-normalised, 8-bit display data kept (clipped to 0..255).

    Args:
        volume: an :class:`organsam.io.Volume`.
        window: CT window name (see :class:`CTWindow`).
    """
    scheme = display_scheme(volume)
    if scheme == "prewindowed":
        return np.clip(volume.array, 0, 255).astype(np.float32, copy=False)
    if scheme == "ct_window":
        return window_ct(volume.array, window)
    return normalize_mr(volume.array)


def is_ct_in_hu(volume: Volume) -> bool:
    """The one rule for "this volume holds CT Hounsfield units" (HU thresholds, ``mean_hu`` in reports):
    a CT whose values are not 0..255 display values."""
    return display_scheme(volume) == "ct_window"


class DisplayConverter:
    """Pick the display scheme for a volume by modality and range, and apply it.

    Args:
        window: CT window for CT volumes.
        mr_lower: Lower percentile for MR/unknown volumes.
        mr_upper: Upper percentile for MR/unknown volumes.
    """

    def __init__(
        self, window: str | tuple[float, float] = "abdomen", mr_lower: float = 0.5, mr_upper: float = 99.5
    ) -> None:
        self.ct = CTWindow(window)
        self.mr = MRNormalizer(mr_lower, mr_upper)

    def __call__(self, volume: Volume) -> np.ndarray:
        """Convert.

        Args:
            volume: A :class:`organsam.io.Volume`.

        Returns:
            (Z, Y, X) uint8 display array.
        """
        scheme = display_scheme(volume)
        if scheme == "prewindowed":
            out = np.clip(volume.array, 0, 255)
        elif scheme == "ct_window":
            out = self.ct(volume.array)
        else:
            out = self.mr(volume.array)
        logger.debug("display scheme %s for %s", scheme, volume.path)
        return np.rint(out).astype(np.uint8)

    run = __call__


def to_uint8_display(volume: Volume, window: str | tuple[float, float] = "abdomen") -> np.ndarray:
    """8-bit display array of a volume: CT windowed, MR percentile-normalised, 8-bit data kept.

    Args:
        volume: A :class:`organsam.io.Volume`.
        window: CT window used when the volume is CT in HU.

    Returns:
        (Z, Y, X) uint8.
    """
    return DisplayConverter(window)(volume)
