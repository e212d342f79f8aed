"""Losses shared by the designs: SAM-style focal + Dice, CE + Dice, IoU regression, presence, mask alignment.

All functions take logits (any float dtype; computed in float32, also under autocast) and float targets
in {0, 1} (or soft targets in [0, 1]) of the same shape. Dice is per sample and channel (MONAI
``DiceLoss(sigmoid=True, batch=False)``) and averaged over the masks whose target is **not empty**: a soft
Dice cannot be satisfied on an empty target (any probability > 0 gives a loss near 1), so absent organs are
left to the pixel-wise term (focal / BCE) and the presence head. MONAI is imported on first use (it takes
seconds to import).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "dice_loss",
    "focal_loss",
    "focal_dice_loss",
    "bce_dice_loss",
    "UNKNOWN",
    "labelled_channels",
    "labelled_bce_dice_loss",
    "iou_targets",
    "iou_l1_loss",
    "presence_loss",
    "mask_alignment_loss",
    "downsample_target",
    "neutral_class_targets",
]


@functools.cache
def _monai_loss(kind: str) -> Any:
    from monai.losses import DiceLoss, FocalLoss

    if kind == "dice":
        return DiceLoss(sigmoid=True, batch=False, reduction="none")
    if kind == "focal":
        # SAM's focal loss: gamma 2, positives weighted 0.25 and negatives 0.75.
        return FocalLoss(gamma=2.0, alpha=0.25, use_softmax=False, reduction="mean")
    raise ValueError(f"unknown loss {kind!r}")


def _check(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    if logits.shape != target.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must have the same shape (B, C, H, W)"
        )
    if logits.ndim != 4:
        raise ValueError(f"mask losses expect (B, C, H, W) tensors, got {tuple(logits.shape)}")
    return logits.float(), target.float()


def dice_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Soft Dice loss of sigmoid(logits), per sample and channel, averaged over non-empty targets.

    Args:
        logits: (B, C, H, W) mask logits.
        target: (B, C, H, W) float targets in [0, 1].

    Returns:
        scalar float32 (0, still attached to the graph, when every target is empty).
    """
    logits, target = _check(logits, target)
    with torch.autocast(device_type=logits.device.type, enabled=False):
        per_mask = _monai_loss("dice")(logits, target).reshape(target.shape[:2])
    valid = target.flatten(2).sum(-1) > 0
    if not bool(valid.any()):
        return per_mask.sum() * 0.0
    return per_mask[valid].mean()


def focal_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Sigmoid focal loss (gamma 2, alpha 0.25), mean over all pixels.

    Args:
        logits: (B, C, H, W) mask logits.
        target: (B, C, H, W) float targets in [0, 1].

    Returns:
        scalar float32.
    """
    logits, target = _check(logits, target)
    with torch.autocast(device_type=logits.device.type, enabled=False):
        return _monai_loss("focal")(logits, target)


def focal_dice_loss(logits: Tensor, target: Tensor, focal_weight: float = 20.0, dice_weight: float = 1.0) -> Tensor:
    """SAM's mask loss: ``focal_weight * focal + dice_weight * Dice`` (20:1 by default).

    Args:
        logits: (B, C, H, W) mask logits.
        target: (B, C, H, W) float targets.
        focal_weight: weight of the focal term.
        dice_weight: weight of the Dice term.

    Returns:
        scalar float32.
    """
    return focal_weight * focal_loss(logits, target) + dice_weight * dice_loss(logits, target)


def bce_dice_loss(logits: Tensor, target: Tensor, bce_weight: float = 0.2, dice_weight: float = 0.8) -> Tensor:
    """``bce_weight * BCE + dice_weight * Dice`` with per-class sigmoids (multi-label, organs may overlap).

    Args:
        logits: (B, C, H, W) mask logits.
        target: (B, C, H, W) float targets.
        bce_weight: weight of the binary cross-entropy.
        dice_weight: weight of the Dice term.

    Returns:
        scalar float32.
    """
    logits, target = _check(logits, target)
    with torch.autocast(device_type=logits.device.type, enabled=False):
        bce = F.binary_cross_entropy_with_logits(logits, target)
    return bce_weight * bce + dice_weight * dice_loss(logits, target)


@torch.no_grad()
def iou_targets(logits: Tensor, target: Tensor) -> Tensor:
    """IoU of the thresholded masks (logit > 0) with the targets (> 0.5); 1 when both are empty.

    Args:
        logits: (B, C, H, W) mask logits.
        target: (B, C, H, W) targets.

    Returns:
        (B, C) float32, no gradient.
    """
    logits, target = _check(logits, target)
    pred = logits > 0
    gt = target > 0.5
    inter = (pred & gt).flatten(2).sum(-1).float()
    union = (pred | gt).flatten(2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def iou_l1_loss(pred_iou: Tensor, logits: Tensor, target: Tensor) -> Tensor:
    """L1 between the predicted IoU and the IoU the thresholded mask actually has.

    Args:
        pred_iou: (B, C) predicted IoU.
        logits: (B, C, H, W) mask logits the IoU was predicted for.
        target: (B, C, H, W) targets.

    Returns:
        scalar float32.
    """
    actual = iou_targets(logits, target)
    if pred_iou.shape != actual.shape:
        raise ValueError(f"pred_iou must be {tuple(actual.shape)}, got {tuple(pred_iou.shape)}")
    return F.l1_loss(pred_iou.float(), actual)


def presence_loss(presence_logits: Tensor, present: Tensor) -> Tensor:
    """Binary cross-entropy of "is the organ on this slice" (or multi-label over K organs).

    Args:
        presence_logits: (B,) or (B, K) logits.
        present: same shape, float in {0, 1}.

    Returns:
        scalar float32.
    """
    if presence_logits.shape != present.shape:
        raise ValueError(
            f"presence logits {tuple(presence_logits.shape)} and targets {tuple(present.shape)} "
            f"must have the same shape"
        )
    with torch.autocast(device_type=presence_logits.device.type, enabled=False):
        return F.binary_cross_entropy_with_logits(presence_logits.float(), present.float())


def mask_alignment_loss(logits_a: Tensor, logits_b: Tensor) -> Tensor:
    """Cross-mask spatial alignment: 1 - soft Dice between the two decoders' probability maps.

    Gradients flow into both masks, pulling them towards overlapping each other.

    Args:
        logits_a: (B, C, H, W) logits of one decoder.
        logits_b: (B, C, H, W) logits of the other.

    Returns:
        scalar float32 in [0, 1].
    """
    a, b = _check(logits_a, logits_b)
    pa, pb = torch.sigmoid(a).flatten(2), torch.sigmoid(b).flatten(2)
    inter = (pa * pb).sum(-1)
    denom = pa.sum(-1) + pb.sum(-1)
    return (1.0 - (2.0 * inter + 1e-5) / (denom + 1e-5)).mean()


#: Value of every pixel of an ``all_targets`` channel whose organ the sample's dataset does not label.
UNKNOWN = -1.0


def labelled_channels(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """The (mask, target) channels of organs the sample's dataset labels, as (1, N, H, W) each.

    ``all_targets`` (B, K, H, W) hold 0/1 for the organs a dataset labels and :data:`UNKNOWN` everywhere in the
    channel of an organ it does not label (TotalSegmentator labels the adrenals, AMOS the duodenum, neither
    everything): those channels are left out of the loss rather than taught as empty.

    Args:
        logits: (B, K, H, W) mask logits.
        target: (B, K, H, W) targets, :data:`UNKNOWN` channels among them.

    Returns:
        logits and targets of the labelled channels, (1, N, H, W); N may be 0.
    """
    logits, target = _check(logits, target)
    known = target[:, :, 0, 0] >= 0  # a channel is unknown everywhere or nowhere
    return logits[known].unsqueeze(0), target[known].unsqueeze(0)


def labelled_bce_dice_loss(logits: Tensor, target: Tensor, bce_weight: float = 0.2, dice_weight: float = 0.8) -> Tensor:
    """:func:`bce_dice_loss` over the labelled channels of ``target`` (see :func:`labelled_channels`); 0, still
    attached to the graph, when no channel is labelled."""
    lg, tg = labelled_channels(logits, target)
    if lg.shape[1] == 0:
        return logits.float().sum() * 0.0
    return bce_dice_loss(lg, tg, bce_weight, dice_weight)


def downsample_target(target: Tensor, size: int) -> Tensor:
    """Area-average (B, C, H, W) targets to (B, C, size, size) soft targets in [0, 1]."""
    return F.adaptive_avg_pool2d(target.float(), size)


def neutral_class_targets(output: Any, targets: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Class targets with the unknown organs (not labelled by the sample's dataset) taken out of the loss.

    Unknown entries get ``sigmoid(logit).detach()`` as target, so their binary cross-entropy has zero
    gradient (its value is a constant). Designs without ``aux["class_logits"]`` get the targets unchanged.

    Args:
        output: the design's ``DesignOutput``.
        targets: (B, K) float 0/1 class targets.
        known: (B, K) bool, organ labelled by the sample's dataset.

    Returns:
        (B, K) float targets.
    """
    logits = output.aux.get("class_logits") if hasattr(output, "aux") else None
    if logits is None or tuple(logits.shape) != tuple(targets.shape):
        return targets
    neutral = torch.sigmoid(logits.detach().float())
    return torch.where(known, targets.float(), neutral)
