"""Decoding a slice of an organ again without the structure it was drawn on.

Used by joint assignment (:mod:`organsam.inference.assignment`: an organ drawn on an anchor, or two organs drawn on
one structure): the slice's prior box is cut on each side to exclude the other structure's extent inside it (the
parts left, right, above and below it that are big enough), and the prior box is decoded with a negative point at
the deepest point of the overlap; the candidate with the highest score that lies at most ``max_inside`` inside any
other organ's mask and passes the predicted-IoU threshold wins, else the slice is emptied.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from organsam.inference.state import Box, Candidate, DecodeJob, InferenceState, OrganResult
from organsam.inference.track_refine import Decoder

logger = logging.getLogger(__name__)

__all__ = [
    "Reassignment",
    "apply_replacements",
    "behind_box",
    "deepest_point",
    "excluding_boxes",
    "log_reassignments",
    "most_inside",
    "redraw_without",
    "redrawable",
    "slices_drawn_on",
]


@dataclass(frozen=True)
class Reassignment:
    """One slice of an organ that had been drawn on an anchor or on another organ's structure.

    Attributes:
        organ_id, z: the organ and slice.
        anchor: the organ it covered; inside: the fraction of the mask inside that organ's mask.
        outcome: ``"redrawn"`` (a candidate without the anchor won) or ``"dropped"`` (none did).
    """

    organ_id: str
    z: int
    anchor: str
    inside: float
    outcome: str


def most_inside(mask: np.ndarray, anchors: Mapping[str, np.ndarray]) -> tuple[float, str | None]:
    """The largest fraction of ``mask`` inside one of the ``anchors`` masks (any masks of its shape), and whose."""
    area = int(mask.sum())
    best: tuple[float, str | None] = (0.0, None)
    if area == 0:
        return best
    for name, a in anchors.items():
        f = float((mask & a).sum()) / area
        if f > best[0]:
            best = (f, name)
    return best


def excluding_boxes(box: Box, anchor: np.ndarray, min_frac: float = 0.2) -> list[Box]:
    """Parts of ``box`` left, right, above and below the anchor's extent inside it (each at least ``min_frac``
    of the box's width or height)."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    inside = np.zeros_like(anchor)
    inside[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = anchor[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1]
    if not inside.any():
        return []
    ys, xs = np.nonzero(inside)
    ax0, ax1, ay0, ay1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    w, h = x1 - x0, y1 - y0
    parts = [(x0, y0, ax0 - 1, y1), (ax1 + 1, y0, x1, y1), (x0, y0, x1, ay0 - 1), (x0, ay1 + 1, x1, y1)]
    return [
        tuple(float(v) for v in p)
        for p in parts  # type: ignore[misc]
        if p[2] - p[0] >= max(4, min_frac * w) and p[3] - p[1] >= max(4, min_frac * h)
    ]


def behind_box(box: Box, front: np.ndarray, min_frac: float = 0.2) -> list[Box]:
    """The part of ``box`` behind the middle of the ``front`` organ's mask inside it (canonical rows run from
    posterior to anterior: the rows below the mask's mean row), as a one-box list; empty when the front mask does
    not reach into the box or the part is shorter than ``min_frac`` of the box's height."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    inside = front[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1]
    if not inside.any():
        return []
    middle = max(y0, 0) + int(round(float(np.nonzero(inside)[0].mean())))
    if middle - y0 < max(4, min_frac * (y1 - y0)):
        return []
    return [(float(x0), float(y0), float(x1), float(middle))]


def deepest_point(region: np.ndarray) -> np.ndarray:
    """(1, 2) xy of the pixel of ``region`` farthest from its border."""
    dist = ndimage.distance_transform_edt(region)
    y, x = np.unravel_index(int(np.argmax(dist)), region.shape)
    return np.array([[float(x), float(y)]], dtype=np.float32)


def log_reassignments(message: str, log: list[Reassignment]) -> None:
    """Log ``message`` (two ``%d``: slices changed, slices redrawn) when ``log`` holds any reassignment."""
    if log:
        logger.info(message, len(log), sum(r.outcome == "redrawn" for r in log))


def redrawable(state: InferenceState, oid: str, z: int) -> bool:
    """Text-prompted, and not a slice the user prompted (those are never changed)."""
    prompt = state.prompts.get(oid)
    return prompt is not None and prompt.text is not None and z not in prompt.boxes and z not in prompt.points


def slices_drawn_on(
    state: InferenceState, oid: str, mask: np.ndarray, others: Mapping[str, np.ndarray], max_inside: float
) -> dict[tuple[str, int], tuple[str, float]]:
    """The slices of organ ``oid``'s (Z, Y, X) ``mask`` that lie more than ``max_inside`` inside one of ``others``
    (organ id -> (Z, Y, X) mask) -> (that organ, the fraction inside it); slices the user prompted are left out."""
    drawn_on: dict[tuple[str, int], tuple[str, float]] = {}
    for z in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)):
        z = int(z)
        if not redrawable(state, oid, z):
            continue
        inside, other = most_inside(mask[z], {o: m[z] for o, m in others.items()})
        if other is not None and inside > max_inside:
            drawn_on[(oid, z)] = (other, inside)
    return drawn_on


def redraw_without(
    state: InferenceState,
    results: Mapping[str, OrganResult],
    boxes: Mapping[str, Mapping[int, Box | None]],
    decode: Decoder,
    iou_threshold: float,
    max_inside: float,
    drawn_on: Mapping[tuple[str, int], tuple[str, float]],
    more_boxes: Callable[[Box, np.ndarray], list[Box]] | None = None,
) -> tuple[dict[str, OrganResult], list[Reassignment]]:
    """Decode each (organ, slice) of ``drawn_on`` (-> (the organ it covered, the fraction inside it)) again without
    the organ it covered (cut boxes, a negative point); the surest candidate that passes ``iou_threshold`` and lies
    at most ``max_inside`` inside every other organ's mask wins, else the slice is emptied
    (:func:`apply_replacements`). An organ with no prior box on a slice (drawn there by tracking) has nothing to
    decode again from and is emptied there. One decode call.

    ``more_boxes(box, covered)`` gives further boxes to try (e.g. :func:`behind_box`), each alone and with the
    negative point."""
    jobs: list[DecodeJob] = []
    owners: list[tuple[str, int]] = []
    for (oid, z), (anchor, _) in drawn_on.items():
        box = boxes.get(oid, {}).get(z)
        if box is None:
            continue
        anchor_mask = results[anchor].mask[z]
        neg = (deepest_point(results[oid].mask[z] & anchor_mask), np.zeros(1, dtype=np.int64))
        cands = [DecodeJob(z, oid, b, None) for b in excluding_boxes(box, anchor_mask)]
        cands.append(DecodeJob(z, oid, box, neg))
        for b in more_boxes(box, anchor_mask) if more_boxes is not None else []:
            cands += [DecodeJob(z, oid, b, None), DecodeJob(z, oid, b, neg)]
        jobs += cands
        owners += [(oid, z)] * len(cands)
    best: dict[tuple[str, int], Candidate] = {}
    for (oid, z), cand in zip(owners, decode(state, jobs) if jobs else []):
        # a replacement may lie mostly inside no other organ's mask: not the anchor's, nor a neighbour's
        others = {o: r.mask[z] for o, r in results.items() if o != oid}
        ok = cand.mask.any() and cand.score >= iou_threshold and most_inside(cand.mask, others)[0] <= max_inside
        if ok and ((oid, z) not in best or cand.score > best[(oid, z)].score):
            best[(oid, z)] = cand
    return apply_replacements(results, drawn_on, best)


def apply_replacements(
    results: Mapping[str, OrganResult],
    drawn_on: Mapping[tuple[str, int], tuple[str, float]],
    best: Mapping[tuple[str, int], Candidate],
) -> tuple[dict[str, OrganResult], list[Reassignment]]:
    """Each (organ, slice) of ``drawn_on`` takes its replacement from ``best``, or is emptied; new result objects
    for the organs that change (``results`` is not changed)."""
    out = dict(results)
    log: list[Reassignment] = []
    for (oid, z), (anchor, inside) in drawn_on.items():
        if out[oid] is results[oid]:
            out[oid] = results[oid].copy()
        res = out[oid]
        if (oid, z) in best:
            res.mask[z] = best[(oid, z)].mask
            res.slice_scores[z] = best[(oid, z)].score
            outcome = "redrawn"
        else:
            res.mask[z] = False
            res.rejected[z] = res.slice_scores.pop(z, 0.0)
            outcome = "dropped"
        log.append(Reassignment(oid, z, anchor, round(inside, 3), outcome))
    return out, log
