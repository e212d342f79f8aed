"""Track refinement: correct prior-placed masks by following each organ from its most confident slice.

A location prior (the atlas) places a box for an organ on every slice independently; where it is off
(wrong size, shifted, or on slices where the organ has already ended), the decoder segments the wrong
thing or only part of the organ. Slice-to-slice tracking, as in SAM2's video propagation, fixes much of
that: starting from the slice whose mask the decoder trusts most (highest predicted IoU), each next slice
is also decoded with the box of the previous slice's mask, and the better of the two candidates (by
predicted IoU) is kept; the kept mask's own box is then decoded once more (an iterative box
optimisation, as PG-SAM's mask optimiser does with masks) and kept when its predicted IoU is higher.

Guards against drifting onto a neighbouring structure: a tracked mask must be non-empty, smaller than
twice the previous slice's mask, and centred inside the prior's box (widened by a quarter) where the
prior has one; beyond the prior's extent it needs a predicted IoU of at least ``extend_iou``. Slices with
a user box or points are never changed. Every decode of a slice is batched across organs.

Before that, during the prior pass, :func:`widen_cut_boxes` widens prior boxes that cut the organ (a mask
touching a box side: that side moves out by the margin and the slice is decoded again). ``VolumePredictor(
track_refine=False)`` turns both off. Measured by ``bench/quality.py`` (row "without track refinement"),
see the README.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from organsam.inference.state import Box, Candidate, DecodeJob, InferenceState, OrganResult
from organsam.priors.boxes import box_of_slice

logger = logging.getLogger(__name__)

__all__ = ["TrackRefiner", "box_iou", "widen_cut_boxes"]

#: ``decode(state, jobs) -> candidates``: one (mask (Y, X) bool, score) per job, in order.
Decoder = Callable[[InferenceState, list[DecodeJob]], list[Candidate]]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return float(ix * iy / union) if union > 0 else 0.0


def _as_box(mask2d: np.ndarray, margin_px: int) -> Box | None:
    b = box_of_slice(mask2d, margin_px)
    return None if b is None else tuple(float(v) for v in b)  # type: ignore[return-value]


def widen_cut_boxes(
    state: InferenceState, jobs: list[DecodeJob], decoded: list[Candidate], decode: Decoder, margin_px: int
) -> list[Candidate]:
    """Decode again the prior boxes that cut their organ, each widened on the sides its mask touches.

    Where a prior-box mask touches a side of its box, that side is moved out by ``margin_px`` and the slice is
    decoded again (all such jobs in one ``decode`` call); the result with the higher predicted IoU is kept.
    User boxes (``state.prompts[organ].boxes``) and point prompts are left as they are.

    Args:
        state: the session (its volume gives the slice size, its prompts the user boxes).
        jobs: the decoded jobs, (slice, organ, box (x0, y0, x1, y1) pixels or None, points or None).
        decoded: their results, (mask (Y, X) bool, predicted IoU) per job.
        decode: the predictor's decoder (``VolumePredictor.decode``).
        margin_px: how far a touched side moves out, pixels.

    Returns:
        A new list: ``decoded`` with the widened results where they scored higher.
    """
    H, W = state.volume.array.shape[1:]
    again: list[tuple[int, DecodeJob]] = []
    for j, ((z, oid, box, pts), (m, _)) in enumerate(zip(jobs, decoded)):
        if box is None or pts is not None or z in state.prompts[oid].boxes or not m.any():
            continue
        x0, y0, x1, y1 = box
        ys, xs = np.nonzero(m)
        grow = (xs.min() <= x0 + 1, ys.min() <= y0 + 1, xs.max() >= x1 - 1, ys.max() >= y1 - 1)
        if not any(grow):
            continue
        wide = (
            max(0.0, x0 - margin_px * grow[0]),
            max(0.0, y0 - margin_px * grow[1]),
            min(W - 1.0, x1 + margin_px * grow[2]),
            min(H - 1.0, y1 + margin_px * grow[3]),
        )
        if wide != box:
            again.append((j, DecodeJob(z, oid, wide, None)))
    if not again:
        return list(decoded)
    out = list(decoded)
    for (j, _), (m, iou) in zip(again, decode(state, [job for _, job in again])):
        if m.any() and iou > out[j][1]:
            out[j] = Candidate(m, iou)
    return out


def _centred_in(mask2d: np.ndarray, box: Box, slack: float = 0.25) -> bool:
    ys, xs = np.nonzero(mask2d)
    cy, cx = float(ys.mean()), float(xs.mean())
    w, h = box[2] - box[0], box[3] - box[1]
    return (box[0] - slack * w <= cx <= box[2] + slack * w) and (box[1] - slack * h <= cy <= box[3] + slack * h)


@dataclass
class TrackRefiner:
    """Refine prior-placed organ masks by tracking (see the module docstring).

    Attributes:
        iou_threshold: minimum predicted IoU of a tracked mask on a slice the prior covers.
        extend_iou: minimum predicted IoU of a tracked mask on a slice the prior does not cover.
        max_growth: a tracked mask may have at most this many times the previous slice's area.
        rebox_below: decode the kept mask's own box when it overlaps the box it came from by less than
            this box IoU (1.0: always; 0: never); the tracked box is not decoded when it overlaps the prior's
            box of the slice's accepted prior-pass mask, or that mask's own box, by at least this much.
    """

    iou_threshold: float = 0.5
    extend_iou: float = 0.8
    max_growth: float = 2.0
    rebox_below: float = 0.85
    decodes: int = 0

    def refine(
        self, state: InferenceState, planned: dict[str, dict[int, Box | None]], decode: Decoder, margin_px: int
    ) -> dict[str, OrganResult]:
        """The refined results of the prior-placed organs (``state`` is read, not changed).

        Args:
            state: the session after the prior pass (``results[organ].mask`` / ``slice_scores`` filled).
            planned: organ id -> {slice: box} the prior (or the user) placed.
            decode: the predictor's batched decoder.
            margin_px: margin around a mask's box, in slice pixels.

        Returns:
            organ id -> refined result (new objects), for the organs of ``planned``.
        """
        Z = state.num_slices
        results = {oid: state.results[oid].copy() for oid in planned}
        seeds = {
            oid: max(results[oid].slice_scores, key=results[oid].slice_scores.__getitem__)
            for oid in planned
            if results[oid].slice_scores
        }
        for direction in (1, -1):
            active = set(seeds)
            for z in range(Z) if direction == 1 else range(Z - 1, -1, -1):
                todo = []
                for oid in sorted(active):
                    if (z - seeds[oid]) * direction <= 0:
                        continue
                    p = state.prompts[oid]
                    if z in p.boxes or z in p.points:  # the user's prompt on this slice wins
                        continue
                    box = _as_box(results[oid].mask[z - direction], margin_px)
                    if box is None:
                        active.discard(oid)
                        continue
                    todo.append((oid, box))
                if todo:
                    for oid in self._slice(state, results, z, direction, todo, planned, decode, margin_px):
                        active.discard(oid)
        logger.debug("track refinement: %d decodes", self.decodes)
        return results

    def _agrees(
        self, res: OrganResult, planned: dict[str, dict[int, Box | None]], oid: str, z: int, box: Box, margin_px: int
    ) -> bool:
        prior_box = planned[oid].get(z)
        if z not in res.slice_scores or prior_box is None:
            return False
        if box_iou(box, prior_box) >= self.rebox_below:
            return True
        own = _as_box(res.mask[z], margin_px)
        return own is not None and box_iou(box, own) >= self.rebox_below

    def _slice(
        self,
        state: InferenceState,
        results: dict[str, OrganResult],
        z: int,
        direction: int,
        todo: list[tuple[str, Box]],
        planned: dict[str, dict[int, Box | None]],
        decode: Decoder,
        margin_px: int,
    ) -> list[str]:
        """Refine one slice for several organs in ``results``; returns the organs whose track ends here."""
        # a track box close to the box the accepted prior-pass mask came from, or to that mask's own box,
        # would decode (nearly) the same mask: not decoded
        run = [(oid, box) for oid, box in todo if not self._agrees(results[oid], planned, oid, z, box, margin_px)]
        decoded = dict(zip([oid for oid, _ in run], decode(state, [DecodeJob(z, oid, box, None) for oid, box in run])))
        self.decodes += len(run)
        ended: list[str] = []
        best: dict[str, tuple[float, np.ndarray, Box]] = {}
        for oid, box in todo:
            res = results[oid]
            prior_box = planned[oid].get(z)
            cands: list[tuple[float, np.ndarray, Box]] = []
            if z in res.slice_scores and prior_box is not None:
                cands.append((res.slice_scores[z], res.mask[z], prior_box))
            prev_area = int(res.mask[z - direction].sum())
            need = self.iou_threshold if prior_box is not None else self.extend_iou
            mask, iou = decoded.get(oid, (None, 0.0))
            if (
                mask is not None
                and mask.any()
                and iou >= need
                and mask.sum() < self.max_growth * prev_area
                and (prior_box is None or _centred_in(mask, prior_box))
            ):
                cands.append((iou, mask, box))
            if not cands:
                if res.mask[z].any():
                    res.rejected[z] = res.slice_scores.pop(z, 0.0)
                    res.mask[z] = False
                if prior_box is None:
                    ended.append(oid)
                continue
            best[oid] = max(cands, key=lambda c: c[0])
        rebox = []
        for oid, (_, mask, used) in best.items():
            box = _as_box(mask, margin_px)
            if box is not None and box_iou(box, used) < self.rebox_below:
                rebox.append((oid, box))
        if rebox:
            again = decode(state, [DecodeJob(z, oid, box, None) for oid, box in rebox])
            self.decodes += len(rebox)
            for (oid, _), (mask, iou) in zip(rebox, again):
                if mask.any() and iou > best[oid][0]:
                    best[oid] = (iou, mask, best[oid][2])
        for oid, (iou, mask, _) in best.items():
            res = results[oid]
            res.mask[z] = mask
            res.slice_scores[z] = iou
            res.rejected.pop(z, None)
        return ended
