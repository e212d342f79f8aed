"""One training slice -> model space (256x256) with MONAI augmentation, target mask and a jittered box.

The slice goes through the same preprocessing as inference (:func:`organsam.preprocessing.slices.
to_model_input`: display intensities resized into the padded 256x256 input and scaled to [0, 1]; the mask
with ``SliceGeometry.mask_to_model``), then, when enabled, MONAI augmentation in model space:

* ``RandAffined`` on image (bilinear) and mask (nearest): small rotation and scaling, optional shift;
* ``RandScaleIntensityd`` / ``RandShiftIntensityd`` (contrast and brightness) and ``RandGaussianNoised``.

No flips: left and right organs (kidney_left/right) are told apart by their side of the image, which a
left-right flip would swap. Every random choice is seeded by the sample's own seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from organsam.preprocessing.slices import to_model_input

__all__ = ["AugmentConfig", "SliceTransform", "box_from_mask"]

SIZE = 256


@dataclass
class AugmentConfig:
    """Augmentation settings (``data.augment`` in the training YAML).

    Attributes:
        enabled: apply augmentation (off for validation and with the feature cache).
        affine_prob: probability of the spatial transform.
        rotate_degrees: rotation range +- degrees.
        scale: relative scale range (+- per axis).
        translate: shift range +- in model pixels.
        intensity_prob: probability of each of the intensity scale and shift.
        intensity_scale: relative contrast change range (+-).
        intensity_shift: brightness shift range (+-, image in [0, 1]).
        noise_prob: probability of Gaussian noise.
        noise_std: its largest standard deviation.
    """

    enabled: bool = True
    affine_prob: float = 0.5
    rotate_degrees: float = 10.0
    scale: float = 0.1
    translate: float = 0.0
    intensity_prob: float = 0.3
    intensity_scale: float = 0.1
    intensity_shift: float = 0.05
    noise_prob: float = 0.15
    noise_std: float = 0.02


def box_from_mask(
    mask: np.ndarray,
    jitter: float,
    rng: np.random.Generator,
    fallback: tuple[float, float, float, float],
    jitter_rel: float = 0.0,
    margin: float = 0.0,
) -> np.ndarray:
    """Tight xyxy box of a (256, 256) mask, jittered.

    Two jitters, applied in this order: an atlas-like one (``jitter_rel`` > 0: the centre moves by a normal
    shift of ``jitter_rel`` x the box's width/height, each side length is scaled by ``exp(N(0, 4/3 jitter_rel))``
    and the box grows by ``margin`` x U(0.5, 1.5) on every side, as a registered atlas's box widened by a
    margin does), then each side moves by up to ``jitter`` pixels.

    Args:
        mask: (H, W) bool.
        jitter: largest random shift of each coordinate, in model pixels.
        rng: random generator.
        fallback: box returned for an empty mask (e.g. the whole image area).
        jitter_rel: relative centre shift / size change (0: off).
        margin: box margin in model pixels (used with ``jitter_rel``).

    Returns:
        (4,) float32 x_min, y_min, x_max, y_max within the image.
    """
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return np.asarray(fallback, dtype=np.float32)
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float64)
    if jitter_rel > 0:
        w, h = box[2] - box[0] + 1, box[3] - box[1] + 1
        cx = (box[0] + box[2]) / 2 + rng.normal(0, jitter_rel) * w
        cy = (box[1] + box[3]) / 2 + rng.normal(0, jitter_rel) * h
        sw = w * np.exp(rng.normal(0, 4 * jitter_rel / 3)) + 2 * margin * rng.uniform(0.5, 1.5)
        sh = h * np.exp(rng.normal(0, 4 * jitter_rel / 3)) + 2 * margin * rng.uniform(0.5, 1.5)
        box = np.array([cx - sw / 2, cy - sh / 2, cx + sw / 2, cy + sh / 2])
    if jitter > 0:
        box += rng.uniform(-jitter, jitter, size=4)
    h, w = mask.shape
    box[[0, 2]] = np.clip(box[[0, 2]], 0, w - 1)
    box[[1, 3]] = np.clip(box[[1, 3]], 0, h - 1)
    box[0], box[2] = min(box[0], box[2]), max(box[0], box[2])
    box[1], box[3] = min(box[1], box[3]), max(box[1], box[3])
    return box.astype(np.float32)


def _plain(x: Any) -> torch.Tensor:
    if hasattr(x, "as_tensor"):
        x = x.as_tensor()
    return torch.as_tensor(x)


class SliceTransform:
    """Slice + organ mask -> model-space sample.

    Args:
        augment: augmentation settings (``None`` or ``enabled=False``: none).
        box_jitter: largest shift of each box side, model pixels.
        box_jitter_rel: atlas-like relative box jitter (see :func:`box_from_mask`; 0: off).
        box_margin: box margin in model pixels, with ``box_jitter_rel``.
    """

    def __init__(
        self,
        augment: AugmentConfig | None = None,
        box_jitter: float = 5.0,
        box_jitter_rel: float = 0.0,
        box_margin: float = 0.0,
    ) -> None:
        self.augment = augment if augment is not None and augment.enabled else None
        self.box_jitter = float(box_jitter)
        self.box_jitter_rel = float(box_jitter_rel)
        self.box_margin = float(box_margin)
        self._compose = self._build(self.augment) if self.augment is not None else None

    @staticmethod
    def _build(cfg: AugmentConfig) -> Any:
        from monai.transforms import (
            Compose,
            RandAffined,
            RandGaussianNoised,
            RandScaleIntensityd,
            RandShiftIntensityd,
        )

        return Compose(
            [
                RandAffined(
                    keys=("image", "mask"),
                    prob=cfg.affine_prob,
                    rotate_range=(math.radians(cfg.rotate_degrees),),
                    scale_range=(cfg.scale, cfg.scale),
                    translate_range=(cfg.translate, cfg.translate),
                    mode=("bilinear", "nearest"),
                    padding_mode="zeros",
                    spatial_size=(SIZE, SIZE),
                    cache_grid=True,
                ),
                RandScaleIntensityd(keys="image", factors=cfg.intensity_scale, prob=cfg.intensity_prob),
                RandShiftIntensityd(keys="image", offsets=cfg.intensity_shift, prob=cfg.intensity_prob),
                RandGaussianNoised(keys="image", std=cfg.noise_std, prob=cfg.noise_prob),
            ]
        )

    def __call__(
        self,
        image_hw: np.ndarray,
        mask_hw: np.ndarray,
        seed: int,
        box_seed: int | None = None,
        others: np.ndarray | None = None,
    ) -> dict[str, torch.Tensor]:
        """Transform one slice.

        Args:
            image_hw: (H, W) display intensities in [0, 255].
            mask_hw: (H, W) bool organ mask (all False for an absent organ).
            seed: the sample's seed (augmentation and, by default, box jitter).
            box_seed: seed of the box jitter alone (slices of one sequence share ``seed``, hence the
                augmentation, but not their box jitter).
            others: (C, H, W) bool masks of other organs, transformed exactly as ``mask_hw``.

        Returns:
            ``image`` (3, 256, 256) float32 in [0, 1], ``mask`` (1, 256, 256) float32 {0, 1}, ``box`` (4,)
            float32 xyxy in model pixels (tight box + jitter; the resized image area for an empty mask); with
            ``others``, also ``others`` (C, 256, 256) float32 {0, 1}.
        """
        img, geom = to_model_input(image_hw, SIZE)
        masks = [geom.mask_to_model(mask_hw)] + [geom.mask_to_model(m) for m in (others if others is not None else [])]
        image = torch.from_numpy(img[:1].copy())
        target = torch.from_numpy(np.stack(masks).astype(np.float32))
        if self._compose is not None:
            self._compose.set_random_state(seed=int(seed) % (2**32 - 1))
            out = self._compose({"image": image, "mask": target})
            image = _plain(out["image"]).float().clamp_(0.0, 1.0)
            target = (_plain(out["mask"]).float() > 0.5).float()
        h, w = geom.resized_shape
        rng = np.random.default_rng([int(seed if box_seed is None else box_seed), 1])
        box = box_from_mask(
            target[0].numpy() > 0.5,
            self.box_jitter,
            rng,
            (0.0, 0.0, w - 1.0, h - 1.0),
            self.box_jitter_rel,
            self.box_margin,
        )
        out = {
            "image": image.expand(3, -1, -1).contiguous(),
            "mask": target[:1].contiguous(),
            "box": torch.from_numpy(box),
        }
        if others is not None:
            out["others"] = target[1:].contiguous()
        return out
