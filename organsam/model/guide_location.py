"""Locating an organ from a prior guide (PG-SAM's prior aligner, also used by CRISP-SAM2): the guide's first pass and
its loss.

With text alone at inference, a design whose guide locates organs returns the organ's guide map (upsampled) as the
first pass's mask and the guide's highest logit as its presence; the box round that every design has
(``text_box_rounds``, :mod:`organsam.model.text_box_refinement`) then decodes the organ from a box around the map's
largest piece. The guide learns at 64x64: 0.2 BCE + 0.8 Dice over every organ the sample's dataset labels when
``all_targets`` are given, else over the prompted organ's row.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from organsam.model import losses

__all__ = ["guide_first_pass", "guide_loss"]


def guide_first_pass(guide_mask: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """The first pass of text alone from the prompted organs' guide logits (B, 1, h, w).

    Returns:
        masks (B, 1, *size) (the guide upsampled) and presence logits (B,) (the guide's highest logit: the organ is
        on the slice where the guide marks any pixel).
    """
    masks = F.interpolate(guide_mask, size=size, mode="bilinear", align_corners=False)
    return masks, guide_mask.flatten(1).amax(1)


def guide_loss(
    guide_logits: Tensor,
    guide_mask: Tensor,
    target_masks: Tensor,
    all_targets: Tensor | None,
    bce_weight: float = 0.2,
    dice_weight: float = 0.8,
) -> Tensor:
    """The guide's loss at its own resolution.

    Args:
        guide_logits: (B, K, h, w) every organ's guide logits.
        guide_mask: (B, 1, h, w) the prompted organ's row.
        target_masks: (B, 1, H, W) the prompted organ's targets.
        all_targets: (B, K, H, W) every organ's targets (``UNKNOWN`` where the dataset does not label it), or None.
        bce_weight: weight of the binary cross-entropy.
        dice_weight: weight of the Dice term.
    """
    size = guide_logits.shape[-1]
    if all_targets is not None:  # organs the sample's dataset does not label are left out
        return losses.labelled_bce_dice_loss(
            guide_logits, losses.downsample_target(all_targets, size), bce_weight, dice_weight
        )
    return losses.bce_dice_loss(guide_mask, losses.downsample_target(target_masks, size), bce_weight, dice_weight)
