"""What a slice mask looks like to the organ verifier: features of one mask on one slice.

A candidate mask is described by what it covers, not by where the prior put it:

* the LiteMedSAM image embedding pooled inside the mask and in a ring around it (SEG-SAM's mask-pooled semantic
  features; the ring carries the context: a kidney lies in fat beside the spine, the stomach under the diaphragm);
* the intensities inside the mask (HU percentiles on CT; organ enhancement, fat, air and fluid tell organs apart);
* its size and its place on the slice relative to the body outline (centroid and extent as fractions of the body's
  box; the body's width in mm sets the patient's scale). Relative to the body, not to the atlas, so a misplaced
  prior does not move these features.

``mask_features`` returns one float32 vector; :data:`FEATURE_GROUPS` names its parts in order.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from organsam.preprocessing.slices import SliceGeometry

__all__ = ["FEATURE_GROUPS", "body_box", "feature_size", "mask_features"]

#: the parts of a feature vector, in order, and their sizes
FEATURE_GROUPS: dict[str, int] = {"embedding_inside": 256, "embedding_ring": 256, "intensity": 6, "shape": 7}
#: HU window of the intensity features (values outside are clipped)
_HU_RANGE = (-250.0, 350.0)
#: ring width around the mask, in model pixels (256-pixel input; 4 model pixels = one embedding cell)
_RING_PX = 12


def feature_size() -> int:
    """Length of a feature vector."""
    return sum(FEATURE_GROUPS.values())


def body_box(hu: np.ndarray, threshold: float = -400.0) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) box of the body on a CT slice (pixels above ``threshold`` HU; rows and columns holding at
    least 2 % of the longest run, so the table and stray pixels do not count); the whole slice when nothing is."""
    body = hu > threshold
    Y, X = body.shape
    rows, cols = body.sum(1), body.sum(0)
    ys = np.flatnonzero(rows >= max(1, 0.02 * rows.max(initial=0)))
    xs = np.flatnonzero(cols >= max(1, 0.02 * cols.max(initial=0)))
    if not rows.any() or ys.size == 0 or xs.size == 0:
        return 0, 0, X - 1, Y - 1
    return int(xs[0]), int(ys[0]), int(xs[-1]), int(ys[-1])


def _pooled(embedding: torch.Tensor, weight: np.ndarray) -> np.ndarray:
    """Mean of the (C, 64, 64) embedding under a (256, 256) weight map pooled to the embedding grid."""
    w = torch.from_numpy(weight.astype(np.float32))[None, None]
    cells = F.avg_pool2d(w, kernel_size=weight.shape[0] // embedding.shape[-1])[0, 0]
    total = float(cells.sum())
    if total <= 0:
        return np.zeros(embedding.shape[0], dtype=np.float32)
    return ((embedding.float() * cells).sum((1, 2)) / total).numpy()


def mask_features(embedding: torch.Tensor, geometry: SliceGeometry, hu: np.ndarray, mask: np.ndarray,
                  spacing_yx: tuple[float, float], body: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Feature vector of one mask on one slice.

    Args:
        embedding: (256, 64, 64) LiteMedSAM image embedding of the slice.
        geometry: how the slice maps onto the model input.
        hu: (Y, X) slice in HU.
        mask: (Y, X) bool, not empty.
        spacing_yx: in-plane pixel spacing (sy, sx) in mm.
        body: the slice's :func:`body_box` (computed when not given).

    Returns:
        float32 vector of :func:`feature_size` values (:data:`FEATURE_GROUPS` in order).
    """
    if not mask.any():
        raise ValueError("mask_features needs a non-empty mask")
    inside = geometry.mask_to_model(mask)
    if not inside.any():  # smaller than half a model pixel: keep the pixel holding its centre
        inside = np.zeros_like(inside)
        yy, xx = np.nonzero(mask)
        s = geometry.scale
        inside[min(int(yy.mean() * s), geometry.size - 1), min(int(xx.mean() * s), geometry.size - 1)] = True
    grown = F.max_pool2d(torch.from_numpy(inside.astype(np.float32))[None, None], 2 * _RING_PX + 1, 1,
                         _RING_PX)[0, 0].numpy() > 0
    ring = grown & ~inside
    h, w = geometry.resized_shape
    ring[h:, :] = False
    ring[:, w:] = False

    values = np.clip(hu[mask].astype(np.float32), *_HU_RANGE)
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    intensity = np.array([values.mean(), values.std(), p10, p50, p90, (values < -50).mean() * 100.0]) / 100.0

    sy, sx = spacing_yx
    x0, y0, x1, y1 = body if body is not None else body_box(hu)
    bw, bh = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
    yy, xx = np.nonzero(mask)
    area_cm2 = mask.sum() * sy * sx / 100.0
    shape = np.array([
        np.log1p(area_cm2),
        (xx.mean() - x0) / bw, (yy.mean() - y0) / bh,
        (xx.max() - xx.min() + 1) / bw, (yy.max() - yy.min() + 1) / bh,
        bw * sx / 300.0, bh * sy / 300.0,
    ])
    return np.concatenate([_pooled(embedding, inside), _pooled(embedding, ring), intensity, shape]).astype(np.float32)
