"""Validation during training: Dice per organ per case on the val split, in model space.

For every val case, the scored slices are those where any scored organ is labelled (or ``max_slices`` of
them, evenly spaced); each slice is encoded once and decoded with every scored organ's text prompt. The
prediction of an organ is ``mask logit > 0`` (and ``presence logit > 0`` with ``presence_gate``); Dice is
computed over all scored slices of the case together (a 3D Dice on the 256x256 model grid, not the
original voxel grid; use ``organsam.evaluation`` for final numbers).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from organsam.preprocessing.slices import to_model_input_batch
from organsam.training.case_store import CaseStore

logger = logging.getLogger(__name__)

__all__ = ["ValResult", "validate"]


@dataclass
class ValResult:
    """Validation scores.

    Attributes:
        rows: (case id, organ id, Dice) per scored organ and case.
        per_organ: organ id -> mean Dice over the cases.
        mean_dice: mean of ``per_organ`` (NaN when nothing was scored).
    """

    rows: list[tuple[str, str, float]]
    per_organ: dict[str, float]
    mean_dice: float


def _pick(slices: np.ndarray, max_slices: int) -> np.ndarray:
    if max_slices <= 0 or slices.size <= max_slices:
        return slices
    idx = np.unique(((np.arange(max_slices) + 0.5) * slices.size / max_slices).astype(int))
    return slices[idx]


def _margin_box(mask: np.ndarray, margin: float) -> np.ndarray:
    """(4,) float32 xyxy tight box of a non-empty (256, 256) mask grown by ``margin`` pixels, inside the image."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    box = np.array([xs.min() - margin, ys.min() - margin, xs.max() + margin, ys.max() + margin], dtype=np.float32)
    return np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1]).astype(np.float32)


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    store: CaseStore,
    organs: Sequence[int] | None = None,
    *,
    max_slices: int = 0,
    presence_gate: bool = True,
    batch_size: int = 4,
    autocast: contextlib.AbstractContextManager | None = None,
    box_margin: float | None = None,
) -> ValResult:
    """Score a design on the val cases.

    Args:
        model: the design (unwrapped, any device); put in eval mode for the call and restored after.
        store: val cases over the model's vocabulary.
        organs: organ indices to score (default: all); an organ is scored on a case that labels it and
            where it is present.
        max_slices: slices per case, evenly spaced and centred (0: all slices with a scored organ).
        presence_gate: gate masks by the presence logit.
        batch_size: slices encoded together.
        autocast: context manager for mixed precision (default: none).
        box_margin: prompt with boxes: each organ's tight reference box grown by this many model pixels, on the
            slices where the organ is present (absent organs are not prompted there); ``None``: text only.

    Returns:
        :class:`ValResult`.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    allowed = np.zeros(len(store.organ_ids), dtype=bool)
    allowed[list(organs) if organs is not None else slice(None)] = True
    rows: list[tuple[str, str, float]] = []
    try:
        for ci, case in enumerate(store.cases):
            areas = store.areas[ci]
            scored = np.nonzero(store.known[ci] & allowed & (areas.sum(0) > 0))[0]
            if scored.size == 0:
                continue
            zs = _pick(np.nonzero(areas[:, scored].sum(1) > 0)[0], max_slices)
            inter = np.zeros(scored.size)
            psum = np.zeros(scored.size)
            tsum = np.zeros(scored.size)
            organ_index = torch.as_tensor(scored, dtype=torch.long, device=device)
            for s in range(0, zs.size, batch_size):
                chunk = zs[s : s + batch_size]
                imgs, geom = to_model_input_batch(np.stack([store.image_slice(ci, int(z)) for z in chunk]))
                with autocast or contextlib.nullcontext():
                    enc = model.encode_plain(torch.from_numpy(imgs).to(device))
                    for b, z in enumerate(chunk):
                        gts = [geom.mask_to_model(store.organ_mask(ci, int(z), int(k))) for k in scored]
                        pred_np = np.zeros((scored.size, *gts[0].shape), dtype=bool)
                        rows_b = np.arange(scored.size)
                        boxes = None
                        if box_margin is not None:
                            rows_b = np.array([j for j, g in enumerate(gts) if g.any()], dtype=np.int64)
                            if rows_b.size == 0:
                                continue
                            boxes = torch.from_numpy(np.stack([_margin_box(gts[j], box_margin) for j in rows_b]))
                            boxes = boxes.to(device)
                        out = model(
                            None, organ_index[torch.from_numpy(rows_b).to(device)], boxes, encoded=enc.select(b)
                        )
                        pred = out.masks[:, 0].float() > 0
                        if presence_gate:
                            pred &= (out.presence_logit.float() > 0)[:, None, None]
                        pred_np[rows_b] = pred.cpu().numpy()
                        for j, gt in enumerate(gts):
                            inter[j] += np.logical_and(pred_np[j], gt).sum()
                            psum[j] += pred_np[j].sum()
                            tsum[j] += gt.sum()
            for j, k in enumerate(scored):
                denom = psum[j] + tsum[j]
                if denom > 0:
                    rows.append((case.case_id, store.organ_ids[int(k)], float(2 * inter[j] / denom)))
    finally:
        model.train(was_training)
    per_organ: dict[str, list[float]] = {}
    for _, organ, d in rows:
        per_organ.setdefault(organ, []).append(d)
    means = {o: float(np.mean(v)) for o, v in per_organ.items()}
    mean = float(np.mean(list(means.values()))) if means else math.nan
    logger.info("validation: mean Dice %.4f over %d organs", mean, len(means))
    return ValResult(rows, means, mean)
