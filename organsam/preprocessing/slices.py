"""2D slices to and from the LiteMedSAM model input space (256x256, [0, 1], grey replicated to 3 channels).

The recipe follows LiteMedSAM inference: the longest side is resized to ``size`` with OpenCV-style
``INTER_AREA`` resampling (reproduced here without OpenCV), the resized image is min-max scaled to [0, 1]
per image, then zero-padded at the bottom and right to ``size`` x ``size``. Boxes are scaled by
``size / max(H, W)`` and truncated to whole model pixels; low-resolution logits are cropped to the unpadded
part and resized back to (H, W) bilinearly (``align_corners=False``) before thresholding at 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["SliceGeometry", "geometry_for", "to_model_input", "to_model_input_batch", "resize_area"]


@dataclass(frozen=True)
class SliceGeometry:
    """How an (H, W) slice maps onto the square model input.

    Attributes:
        original_shape: (H, W) of the slice.
        resized_shape: (h, w) of the resized image inside the model input (top-left corner).
        size: side of the square model input (256).
    """

    original_shape: tuple[int, int]
    resized_shape: tuple[int, int]
    size: int = 256

    @property
    def scale(self) -> float:
        """Model pixels per original pixel, ``size / max(H, W)``."""
        return self.size / max(self.original_shape)

    def box_to_model(self, box_xyxy: np.ndarray | torch.Tensor | list[float], integer: bool = True) -> np.ndarray:
        """Scale boxes from original pixel coordinates to the model input space.

        Args:
            box_xyxy: (..., 4) boxes (x_min, y_min, x_max, y_max) in original pixel indices (x = column).
            integer: truncate the scaled coordinates to whole model pixels, as LiteMedSAM inference does
                (``int(coord * 256 / max(H, W))``); the pixel containing each corner. ``False`` keeps the
                plain scaled floats.

        Returns:
            (..., 4) float32 boxes in model pixels.
        """
        b = np.asarray(box_xyxy.cpu() if isinstance(box_xyxy, torch.Tensor) else box_xyxy, dtype=np.float64)
        if b.shape[-1:] != (4,):
            raise ValueError(f"boxes must have shape (..., 4) as x_min, y_min, x_max, y_max; got {b.shape}")
        scaled = b * self.scale
        if integer:
            scaled = np.floor(scaled + 1e-6)
        return scaled.astype(np.float32)

    def points_to_model(self, points_xy: np.ndarray | torch.Tensor | list[float]) -> np.ndarray:
        """Scale (..., 2) xy points from original pixels to model pixels (float32)."""
        p = np.asarray(points_xy.cpu() if isinstance(points_xy, torch.Tensor) else points_xy, dtype=np.float64)
        if p.shape[-1:] != (2,):
            raise ValueError(f"points must have shape (..., 2) as x, y; got {p.shape}")
        return (p * self.scale).astype(np.float32)

    def logits_to_original(self, low_res: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Paste model-space logits back onto the original slice grid.

        Args:
            low_res: (..., size, size) logits in the model input space.

        Returns:
            (..., H, W) logits (same type as the input; float32 for numpy): the unpadded part resized
            bilinearly (``align_corners=False``). Threshold at 0 (= sigmoid 0.5) for a mask.
        """
        is_np = isinstance(low_res, np.ndarray)
        t = torch.from_numpy(low_res) if is_np else low_res
        if tuple(t.shape[-2:]) != (self.size, self.size):
            raise ValueError(f"logits must end in ({self.size}, {self.size}), got {tuple(t.shape)}")
        lead = t.shape[:-2]
        h, w = self.resized_shape
        x = t[..., :h, :w].reshape(-1, 1, h, w)
        if x.dtype not in (torch.float32, torch.float64):
            x = x.float()
        out = F.interpolate(x, size=self.original_shape, mode="bilinear", align_corners=False)
        out = out.reshape(*lead, *self.original_shape)
        return out.numpy().astype(np.float32, copy=False) if is_np else out

    def mask_to_model(self, mask: np.ndarray) -> np.ndarray:
        """Resize (..., H, W) binary masks into the padded (..., size, size) model space.

        A model pixel is set where at least half of its area is covered by the mask (area resampling),
        which keeps the mask's extent unbiased.

        Args:
            mask: (..., H, W) bool (or 0/1) masks.

        Returns:
            (..., size, size) bool, False in the padding.
        """
        m = np.asarray(mask)
        if tuple(m.shape[-2:]) != self.original_shape:
            raise ValueError(f"mask must end in {self.original_shape}, got {m.shape}")
        h, w = self.resized_shape
        frac = resize_area((m != 0).astype(np.float32).reshape(-1, *self.original_shape), (h, w))
        out = np.zeros((frac.shape[0], self.size, self.size), dtype=bool)
        out[:, :h, :w] = frac >= 0.5 - 1e-6
        return out.reshape(m.shape[:-2] + (self.size, self.size))


def geometry_for(shape_hw: tuple[int, int], size: int = 256) -> SliceGeometry:
    """The :class:`SliceGeometry` of an (H, W) slice (resized size rounded as LiteMedSAM does)."""
    H, W = int(shape_hw[0]), int(shape_hw[1])
    if H < 1 or W < 1:
        raise ValueError(f"slice shape must be positive, got {(H, W)}")
    scale = size / max(H, W)
    h, w = min(size, int(H * scale + 0.5)), min(size, int(W * scale + 0.5))
    return SliceGeometry((H, W), (max(h, 1), max(w, 1)), size)


@lru_cache(maxsize=64)
def _resample_matrix(n_in: int, n_out: int, area: bool) -> np.ndarray:
    """(n_out, n_in) weights of 1D OpenCV ``INTER_AREA`` resampling along one axis.

    ``area=True`` is the pure-downscaling path (exact pixel-area averaging); ``area=False`` is the path
    OpenCV takes when the image is enlarged (a linear interpolation with area-shaped coefficients).
    """
    W = np.zeros((n_out, n_in), dtype=np.float64)
    scale = n_in / n_out
    if area:
        for d in range(n_out):
            a, b = d * scale, min((d + 1) * scale, n_in)
            cell = b - a
            for s in range(int(math.floor(a)), min(int(math.ceil(b)), n_in)):
                W[d, s] = (min(b, s + 1) - max(a, s)) / cell
    else:
        inv = n_out / n_in
        for d in range(n_out):
            s = int(math.floor(d * scale))
            f = (d + 1) - (s + 1) * inv
            f = 0.0 if f <= 0 else f - math.floor(f)
            if s < 0:
                s, f = 0, 0.0
            if s >= n_in - 1:
                s, f = n_in - 1, 0.0
            W[d, s] += 1.0 - f
            if f > 0:
                W[d, s + 1] += f
    return W


def resize_area(images: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Resize (..., H, W) images like OpenCV ``cv2.resize(..., interpolation=cv2.INTER_AREA)`` (float).

    Args:
        images: (..., H, W) array.
        out_hw: (h, w) output size.

    Returns:
        (..., h, w) float32.
    """
    in_h, in_w = images.shape[-2:]
    out_h, out_w = out_hw
    area = out_h <= in_h and out_w <= in_w
    Wy = _resample_matrix(in_h, out_h, area).astype(np.float32)
    Wx = _resample_matrix(in_w, out_w, area).astype(np.float32)
    x = np.asarray(images, dtype=np.float32)
    return np.matmul(np.matmul(Wy, x), Wx.T)


def _normalise_and_pad(resized: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w) -> (N, 3, size, size): per-image min-max to [0, 1], zero padding, 3 channels."""
    n, h, w = resized.shape
    flat = resized.reshape(n, -1)
    lo = flat.min(axis=1)[:, None, None]
    hi = flat.max(axis=1)[:, None, None]
    scaled = (resized - lo) / np.clip(hi - lo, 1e-8, None)
    out = np.zeros((n, 3, size, size), dtype=np.float32)
    out[:, :, :h, :w] = scaled[:, None]
    return out


def to_model_input(slice_2d: np.ndarray, size: int = 256) -> tuple[np.ndarray, SliceGeometry]:
    """Prepare one slice for the model.

    Args:
        slice_2d: (H, W) float intensities, typically windowed to 0..255 (rows posterior->anterior,
            columns patient right->left for axial slices, see ``organsam.io.Volume``).
        size: side of the model input.

    Returns:
        (3, size, size) float32 image in [0, 1] and the slice's :class:`SliceGeometry`.
    """
    a = np.asarray(slice_2d)
    if a.ndim != 2:
        raise ValueError(
            f"to_model_input expects one (H, W) slice, got shape {a.shape}; use to_model_input_batch for (N, H, W)"
        )
    batch, geom = to_model_input_batch(a[None], size)
    return batch[0], geom


def to_model_input_batch(slices: np.ndarray, size: int = 256) -> tuple[np.ndarray, SliceGeometry]:
    """Prepare many slices of the same shape (e.g. all axial slices of a volume) at once.

    Args:
        slices: (N, H, W) float intensities (e.g. windowed to 0..255).
        size: side of the model input.

    Returns:
        (N, 3, size, size) float32 images in [0, 1] (each min-max scaled on its own) and the shared
        :class:`SliceGeometry`.
    """
    a = np.asarray(slices)
    if a.ndim != 3:
        raise ValueError(f"to_model_input_batch expects (N, H, W) slices, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise ValueError(f"slices must be real numbers, got dtype {a.dtype}")
    geom = geometry_for(a.shape[1:], size)
    resized = resize_area(a.astype(np.float32, copy=False), geom.resized_shape)
    return _normalise_and_pad(resized, size), geom
