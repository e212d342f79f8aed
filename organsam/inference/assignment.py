"""Joint assignment: an organ's mask may not be drawn on an anchor organ.

Text prompts are decoded one organ at a time, and inside a loose prior box the decoder draws the most salient
structure: a stomach box that reaches into the liver gets the liver (issue 14 measured it on a held-out CT:
stomach 95 % liver, right adrenal 94 % IVC). The anchors are the organs LiteMedSAM draws reliably once it is
pointed at them (liver, spleen, kidneys, aorta: Dice about 0.9 in ``bench/quality.py`` and on the held-out
CT), and where their own boxes are misplaced they draw each other: first, where two anchors were drawn on one
structure (:func:`anchor_conflicts`), the one the decoder is less sure of is decoded again without the other (or
emptied on slices its prior has no box). Then, for every other text-prompted organ, each slice whose mask lies
mostly (> ``max_inside``) inside an anchor's mask is decoded again without the anchor:

- the prior box cut on each side to exclude the anchor's extent inside it (the parts left, right, above and
  below the anchor that are big enough), and
- the prior box with a negative point at the deepest point of the overlap;

the candidate with the highest score that lies at most ``max_inside`` inside any other organ's mask (anchor or
not) and passes the predicted-IoU threshold wins; without one the slice is left empty (the organ is not drawn
there, as on slices where it was drawn by tracking beyond its prior's slices). Slices with a user's box or points
are never changed. Anchors not asked for but next to an organ that was (:func:`neighbouring_anchors`) are segmented
by the predictor for this and dropped before anything is reported. Nothing is written into the session: new
results are returned.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from organsam.inference.redraw import Reassignment, log_reassignments, redraw_without, redrawable, slices_drawn_on
from organsam.inference.shared_structures import resolve_shared_structures
from organsam.inference.state import Box, InferenceState, OrganResult
from organsam.inference.track_refine import Decoder

logger = logging.getLogger(__name__)

__all__ = [
    "ANCHORS",
    "AnchorConflict",
    "Reassignment",
    "anchor_conflicts",
    "assign_against_anchors",
    "neighbouring_anchors",
    "resolve_anchor_conflicts",
]

#: Organs the core draws reliably once placed (Dice ~0.9 with atlas boxes: bench/quality.py, issue 14).
ANCHORS: tuple[str, ...] = ("liver", "spleen", "kidney_left", "kidney_right", "aorta")


def neighbouring_anchors(
    planned: Mapping[str, Mapping[int, Box | None]], anchor_boxes: Mapping[str, Mapping[int, Box | None]]
) -> list[str]:
    """The anchors not asked for whose prior boxes overlap, on some slice, the box of an organ that was asked for
    and is not an anchor: they are segmented too (and not reported) so that joint assignment can keep that organ
    off them."""
    out = []
    for anchor, a_boxes in anchor_boxes.items():
        if anchor in planned:
            continue
        for oid, boxes in planned.items():
            if oid in ANCHORS:
                continue
            if any(b is not None and a_boxes.get(z) is not None and _overlaps(b, a_boxes[z]) for z, b in boxes.items()):
                out.append(anchor)
                break
    return out


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


@dataclass(frozen=True)
class AnchorConflict:
    """Two anchors drawn on one structure on slice ``z``.

    Attributes:
        z: the slice.
        a, b: the anchors; ``score_a`` and ``score_b`` their predicted IoU there.
        inner: the anchor whose mask lies inside the other's when only one does (the other swallowed it and
            more), or None when each lies inside the other (both drew the same structure).
    """

    z: int
    a: str
    b: str
    score_a: float
    score_b: float
    inner: str | None

    @property
    def outer(self) -> str:
        return self.b if self.inner == self.a else self.a

    @property
    def surer(self) -> str:
        return self.a if self.score_a >= self.score_b else self.b


def anchor_conflicts(
    results: Mapping[str, OrganResult], anchors: Sequence[str], max_inside: float = 0.5
) -> list[AnchorConflict]:
    """Slices where one anchor's mask lies more than ``max_inside`` inside another's (see :class:`AnchorConflict`)."""
    present = [a for a in anchors if a in results and results[a].mask.any()]
    drawn = {a: results[a].mask.any(axis=(1, 2)) for a in present}
    out: list[AnchorConflict] = []
    for i, a in enumerate(present):
        for b in present[i + 1 :]:
            both = drawn[a] & drawn[b]
            for z in np.flatnonzero(both):
                z = int(z)
                ma, mb = results[a].mask[z], results[b].mask[z]
                common = float((ma & mb).sum())
                a_in_b, b_in_a = common / ma.sum() > max_inside, common / mb.sum() > max_inside
                if not (a_in_b or b_in_a):
                    continue
                inner = None if a_in_b == b_in_a else (a if a_in_b else b)
                out.append(
                    AnchorConflict(
                        z, a, b, results[a].slice_scores.get(z, 0.0), results[b].slice_scores.get(z, 0.0), inner
                    )
                )
                logger.debug(
                    "slice %d: %s (%d px, predicted IoU %.2f) and %s (%d px, %.2f) drawn on one structure (inside: %s)",
                    z,
                    a,
                    ma.sum(),
                    out[-1].score_a,
                    b,
                    mb.sum(),
                    out[-1].score_b,
                    inner,
                )
    return out


def _inside_fraction(results: Mapping[str, OrganResult], oid: str, other: str, z: int) -> float:
    m = results[oid].mask[z]
    return float((m & results[other].mask[z]).sum()) / max(int(m.sum()), 1)


def _one_structure(image: np.ndarray, inner: np.ndarray, outer: np.ndarray) -> bool:
    """Whether the inner mask is a piece of the same tissue as the rest of the outer mask: its median intensity
    lies within the interquartile range of the outer mask's other pixels (on CT a kidney inside a liver mask is
    about 170 HU against the rest's -70, a spleen box's piece of the kidney 205 HU against the kidney's 80-215)."""
    rest = outer & ~inner
    if rest.sum() < 10 or not inner.any():
        return True
    lo, hi = np.percentile(image[rest], [25, 75])
    return bool(lo <= float(np.median(image[inner])) <= hi)


def _take_slice(
    out: dict[str, OrganResult], src: Mapping[str, OrganResult], original: Mapping[str, OrganResult], oid: str, z: int
) -> None:
    """Copy organ ``oid``'s slice ``z`` (mask and scores) from ``src`` into ``out``; the result is copied once,
    while ``out`` still shares it with ``original``."""
    if out[oid] is original[oid]:
        out[oid] = out[oid].copy()
    res = out[oid]
    res.mask[z] = src[oid].mask[z]
    for table in ("slice_scores", "rejected"):
        mine, theirs = getattr(res, table), getattr(src[oid], table)
        mine.pop(z, None)
        if z in theirs:
            mine[z] = theirs[z]


def resolve_anchor_conflicts(
    state: InferenceState,
    results: Mapping[str, OrganResult],
    boxes: Mapping[str, Mapping[int, Box | None]],
    decode: Decoder,
    iou_threshold: float,
    anchors: Sequence[str] = ANCHORS,
    max_inside: float = 0.5,
    split_margin: float = 0.1,
) -> tuple[dict[str, OrganResult], list[Reassignment]]:
    """Two anchors drawn on one structure: who keeps it.

    * One mask inside the other (a liver box drew liver and kidney): when the inner one is the same tissue as the
      rest of the outer one (:func:`_one_structure`: a spleen box that drew a piece of the kidney; on the partial
      scan TS-B, which holds no kidney, a kidney box that drew part of the spleen), the inner one gives it up.
      Otherwise the outer one is decoded again without the inner one, and when that is about as sure as before
      (predicted IoU down by less than ``split_margin``) the outer one takes the new mask; when it is not, both
      stay (on MR the liver mask covers the right kidney), as nothing here tells which mask is wrong.
    * Each inside the other (a spleen box at kidney level drew the kidney): the one the decoder is surer of
      keeps it.

    The anchor that gives the structure up is decoded again without the other, or emptied there.
    """
    conflicts = anchor_conflicts(results, anchors, max_inside)
    image = state.volume.array
    same = {
        c: _one_structure(image[c.z], results[c.inner].mask[c.z], results[c.outer].mask[c.z])
        for c in conflicts
        if c.inner is not None
    }
    splits = {
        (c.outer, c.z): (c.inner, _inside_fraction(results, c.inner, c.outer, c.z))
        for c in conflicts
        if c.inner is not None and not same[c] and redrawable(state, c.outer, c.z)
    }
    tried = redraw_without(state, results, boxes, decode, iou_threshold, max_inside, splits)[0] if splits else results
    out = dict(results)
    log: list[Reassignment] = []
    losers: dict[tuple[str, int], tuple[str, float]] = {}
    for c in conflicts:
        if c.inner is not None and same[c]:
            loser, winner = c.inner, c.outer
        elif c.inner is not None:
            before = results[c.outer].slice_scores.get(c.z, 0.0)
            after = tried[c.outer].slice_scores.get(c.z) if tried[c.outer].mask[c.z].any() else None
            if (c.outer, c.z) in splits and after is not None and after >= before - split_margin:
                _take_slice(out, tried, results, c.outer, c.z)
                log.append(Reassignment(c.outer, c.z, c.inner, round(splits[(c.outer, c.z)][1], 3), "redrawn"))
            continue  # split, or two tissues that did not split cleanly: which mask is wrong is not known
        else:
            winner = c.surer
            loser = c.b if winner == c.a else c.a
        if redrawable(state, loser, c.z):
            losers.setdefault((loser, c.z), (winner, _inside_fraction(results, loser, winner, c.z)))
    out, more = redraw_without(state, out, boxes, decode, iou_threshold, max_inside, losers)
    return out, log + more


def assign_against_anchors(
    state: InferenceState,
    results: Mapping[str, OrganResult],
    boxes: Mapping[str, Mapping[int, Box | None]],
    decode: Decoder,
    iou_threshold: float,
    anchors: Sequence[str] = ANCHORS,
    max_inside: float = 0.5,
    shared_structures: bool = True,
) -> tuple[dict[str, OrganResult], list[Reassignment]]:
    """Decode again the slices where an organ was drawn on an anchor (see the module docstring).

    First the anchors among themselves (:func:`resolve_anchor_conflicts`), then every other text-prompted organ
    against the anchors as they now stand.

    Args:
        state: the session (its prompts say which slices the user prompted).
        results: organ id -> result after propagation (not changed).
        boxes: organ id -> {slice: prior box} of the text-prompted organs.
        decode: the predictor's decoder.
        iou_threshold: minimum score of a replacement.
        anchors: the anchor organs (those among ``results`` with a mask take part).
        max_inside: the largest fraction of a mask allowed inside one anchor.
        shared_structures: then, where two other organs were drawn on one structure and one of them was carried
            there by tracking, that one gives the slice up (:mod:`organsam.inference.shared_structures`).

    Returns:
        (organ id -> result, new objects for the organs that changed; what happened on each slice).
    """
    out, log = resolve_anchor_conflicts(state, results, boxes, decode, iou_threshold, anchors, max_inside)
    present = [a for a in anchors if a in out and out[a].mask.any()]
    drawn_on: dict[tuple[str, int], tuple[str, float]] = {}
    for oid, res in out.items():
        if oid not in anchors and present:
            drawn_on.update(slices_drawn_on(state, oid, res.mask, {a: out[a].mask for a in present}, max_inside))
    out, more = redraw_without(state, out, boxes, decode, iou_threshold, max_inside, drawn_on)
    log += more
    if shared_structures:
        out, more = resolve_shared_structures(state, out, boxes, anchors, max_inside)
        log += more
    log_reassignments("joint assignment: %d slices drawn on an anchor (%d redrawn)", log)
    return out, log
