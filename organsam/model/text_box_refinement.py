"""Text-alone masks decoded again from a box around them (the designs' iterative mask optimizer, as boxes).

With text alone a design must find the organ and draw it in one pass; LiteMedSAM, the core every design builds on,
draws an organ far better from a box than without one (issue 15: 90.9 mean Dice on ``amos_0013`` with the
reference boxes). At inference, each round takes the largest connected piece of the previous mask, puts a box
around it (grown by ``margin`` model pixels, the jitter the designs are trained with) and decodes the organ again
from its text and that box. The presence logit stays the text-alone pass's (whether the organ is on the slice is
the text's question, not the box's); a row whose mask is empty keeps its output.

``python bench/compare_designs.py --checkpoints pg_sam seg_sam`` measures it
(``bench/results/compare_designs_shipped.md``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from organsam.model.design_types import DesignOutput

__all__ = ["BOX_MARGIN", "box_rounds", "largest_piece_boxes", "merge_refined"]

#: Model pixels (of 256) a box grows around the mask's largest piece: the box jitter the designs train with.
BOX_MARGIN = 5.0


def largest_piece_boxes(mask_logits: Tensor, margin: float = BOX_MARGIN) -> tuple[Tensor, Tensor]:
    """(B, 4) xyxy model-space boxes around the largest connected piece of each (B, 1, H, W) mask (logit > 0),
    grown by ``margin`` and kept inside the image, and (B,) whether the mask had any pixel (rows without one get
    the whole image as a placeholder box)."""
    masks = (mask_logits[:, 0] > 0).cpu().numpy()
    B, H, W = masks.shape
    boxes = np.tile(np.array([0.0, 0.0, W - 1.0, H - 1.0], dtype=np.float32), (B, 1))
    found = np.zeros(B, dtype=bool)
    for b in range(B):
        labels, n = ndimage.label(masks[b])
        if n == 0:
            continue
        sizes = np.bincount(labels.ravel())[1:]
        ys, xs = np.nonzero(labels == 1 + int(np.argmax(sizes)))
        boxes[b] = [xs.min() - margin, ys.min() - margin, xs.max() + margin, ys.max() + margin]
        found[b] = True
    np.clip(boxes, 0, [W - 1, H - 1, W - 1, H - 1], out=boxes)
    device = mask_logits.device
    return torch.from_numpy(boxes).to(device), torch.from_numpy(found).to(device)


def merge_refined(first: DesignOutput, refined: DesignOutput, found: Tensor) -> DesignOutput:
    """The refined masks and IoU where the text-alone mask had a piece (``found`` (B,)), the text-alone output
    elsewhere; the presence logit is always the text-alone pass's."""
    keep = found.view(-1, 1, 1, 1)
    return DesignOutput(
        masks=torch.where(keep, refined.masks, first.masks),
        iou=torch.where(found.view(-1, 1), refined.iou, first.iou),
        presence_logit=first.presence_logit,
        aux=refined.aux,
    )


def box_rounds(out: DesignOutput, rounds: int, decode_box: Callable[[Tensor], DesignOutput]) -> DesignOutput:
    """Up to ``rounds`` box rounds of a text-alone output: ``decode_box(boxes (B, 4))`` decodes the organs again from
    a box around each mask's largest piece; rows without a piece keep their output (:func:`merge_refined`)."""
    for _ in range(rounds):
        around, found = largest_piece_boxes(out.masks)
        if not bool(found.any()):
            break
        out = merge_refined(out, decode_box(around), found)
    return out
