"""Organs placed relative to the anchors: move the location prior onto the anchor organs that were drawn.

Two steps, both judged by the anchor organs (liver, spleen, kidneys, aorta), which the core draws well once its box
is around them:

* before segmenting, :func:`search_offset`: the prior's anchor boxes on a few slices are moved together by
  candidate in-plane offsets (a search along x, then y, then x) and decoded; where they fit clearly better moved
  (higher summed predicted IoU), the whole prior moves by that offset (:class:`MovedPrior`), so the organs next to
  the anchors (stomach, pancreas, gallbladder, ...) move with them;
* after segmenting, :func:`z_offset`: the drawn anchors' slice ranges against the prior's (only ends that lie
  inside the scan on both sides count: an organ cut by the scan's edge says nothing about z). When the anchors
  agree on a shift, the prior moves along z and the text-prompted organs are segmented again.

Measured by ``bench/stress_prior.py`` (the prior shifted on purpose) and ``bench/quality.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from organsam.inference.assignment import ANCHORS
from organsam.inference.state import Box, Candidate, DecodeJob, InferenceState, OrganResult

logger = logging.getLogger(__name__)

__all__ = ["MovedPrior", "move_prior", "search_offset", "z_offset"]

#: ``decode(state, jobs) -> candidates``
Decoder = Callable[[InferenceState, list[DecodeJob]], list[Candidate]]


class MovedPrior:
    """A fitted location prior whose boxes are moved by (dz slices, dy px, dx px), clipped to the volume.

    Args:
        fitted: the fitted prior (``present``, ``boxes``).
        offset: (dz, dy, dx) in voxels; dz is rounded to whole slices.
        shape: (Z, Y, X) of the volume.
    """

    def __init__(self, fitted: Any, offset: tuple[float, float, float], shape: tuple[int, int, int]) -> None:
        self.fitted = fitted
        self.offset = (float(offset[0]), float(offset[1]), float(offset[2]))
        self.shape = tuple(int(s) for s in shape)

    def present(self, organ_id: str) -> bool:
        return bool(self.fitted.present(organ_id)) and bool(self.boxes(organ_id))

    def boxes(self, organ_id: str, margin_px: int = 0) -> dict[int, Box | None]:
        Z, Y, X = self.shape
        dz, dy, dx = int(round(self.offset[0])), self.offset[1], self.offset[2]
        out: dict[int, Box | None] = {}
        for z, b in self.fitted.boxes(organ_id, margin_px=margin_px).items():
            zz = int(z) + dz
            if not 0 <= zz < Z:
                continue
            if b is None:
                out[zz] = None
                continue
            x0, y0, x1, y1 = (float(v) for v in b)
            moved = (
                min(max(x0 + dx, 0.0), X - 1.0),
                min(max(y0 + dy, 0.0), Y - 1.0),
                min(max(x1 + dx, 0.0), X - 1.0),
                min(max(y1 + dy, 0.0), Y - 1.0),
            )
            if moved[2] - moved[0] >= 2 and moved[3] - moved[1] >= 2:
                out[zz] = moved
        return out


def move_prior(state: InferenceState, offset: tuple[float, float, float], step: str, **record: Any) -> None:
    """Move the session's fitted prior by ``offset`` (dz, dy, dx voxels) and record the move in
    ``state.prior_moves`` (in mm, with ``record``'s entries)."""
    state.prior = MovedPrior(state.prior, offset, state.volume.array.shape)
    mm = [round(o * s, 1) for o, s in zip(offset, state.volume.spacing)]
    state.prior_moves.append({"step": step, "offset_mm": mm, **record})


def _along_z(boxes: Mapping[int, Box | None], mask: np.ndarray) -> float | None:
    """Shift in slices of the drawn slice range's ends against the prior's, from ends inside the scan."""
    Z = mask.shape[0]
    drawn = np.flatnonzero(mask.reshape(Z, -1).any(axis=1))
    placed = sorted(int(z) for z, b in boxes.items() if b is not None)
    if drawn.size == 0 or not placed:
        return None
    ends = []
    if placed[0] > 0 and drawn[0] > 0:
        ends.append(int(drawn[0]) - placed[0])
    if placed[-1] < Z - 1 and drawn[-1] < Z - 1:
        ends.append(int(drawn[-1]) - placed[-1])
    return float(np.mean(ends)) if ends else None


def search_offset(
    state: InferenceState,
    anchor_boxes: Mapping[str, Mapping[int, Box | None]],
    decode: Decoder,
    *,
    steps_mm: Sequence[float] = (-20.0, -10.0, 0.0, 10.0, 20.0),
    slices_per_anchor: int = 2,
    min_gain: float = 0.25,
) -> tuple[float, float] | None:
    """The in-plane (dy, dx) offset in pixels that the prior's anchor boxes fit best, or None (stay).

    Each anchor's boxes on its ``slices_per_anchor`` largest slices are moved together by candidate offsets and
    decoded; an offset scores the sum over anchors of their mean predicted IoU (a box around the organ gives a
    confident mask; a box that cuts it or sits beside it does not). The search runs along x, then y, then x again
    over ``steps_mm``; the best offset is returned when it beats staying by ``min_gain``.
    """
    Z, Y, X = state.volume.array.shape
    sy, sx = state.volume.spacing[1], state.volume.spacing[2]
    picks: list[tuple[str, int, Box]] = []
    for anchor, boxes in anchor_boxes.items():
        sized = [(z, b) for z, b in boxes.items() if b is not None]
        sized.sort(key=lambda zb: -(zb[1][2] - zb[1][0]) * (zb[1][3] - zb[1][1]))
        picks += [(anchor, z, b) for z, b in sized[:slices_per_anchor]]
    if len({a for a, _, _ in picks}) < 2:
        return None
    scores: dict[tuple[float, float], float] = {}

    def score(dy_mm: float, dx_mm: float) -> float:
        if (dy_mm, dx_mm) not in scores:
            dy, dx = dy_mm / sy, dx_mm / sx
            jobs = [
                DecodeJob(
                    z,
                    a,
                    (
                        min(max(b[0] + dx, 0.0), X - 3.0),
                        min(max(b[1] + dy, 0.0), Y - 3.0),
                        min(max(b[2] + dx, 2.0), X - 1.0),
                        min(max(b[3] + dy, 2.0), Y - 1.0),
                    ),
                    None,
                )
                for a, z, b in picks
            ]
            per: dict[str, list[float]] = {}
            for (a, _, _), cand in zip(picks, decode(state, jobs)):
                per.setdefault(a, []).append(cand.score)
            scores[(dy_mm, dx_mm)] = float(sum(np.mean(v) for v in per.values()))
        return scores[(dy_mm, dx_mm)]

    best = (0.0, 0.0)
    for axis in (1, 0, 1):
        trial = [(best[0], float(s)) if axis == 1 else (float(s), best[1]) for s in steps_mm]
        best = max(trial, key=lambda o: score(*o))
    gain = score(*best) - score(0.0, 0.0)
    if gain < min_gain:
        return None
    logger.info(
        "anchor search: the prior's anchor boxes fit best moved by %.0f/%.0f mm (y/x; predicted IoU "
        "+%.2f over %d anchors)",
        best[0],
        best[1],
        gain,
        len({a for a, _, _ in picks}),
    )
    return best[0] / sy, best[1] / sx


def z_offset(
    planned: Mapping[str, Mapping[int, Box | None]],
    results: Mapping[str, OrganResult],
    slice_mm: float,
    *,
    min_anchors: int = 2,
    max_spread_mm: float = 15.0,
    min_shift_mm: float = 5.0,
) -> float | None:
    """The shift in slices that moves the prior's slice ranges onto the anchors drawn, or None (no move needed, or
    the anchors do not agree).

    Args:
        planned: organ id -> {slice: prior box} the masks were drawn from.
        results: organ id -> result (the anchors' masks).
        slice_mm: slice spacing in mm.
        min_anchors: anchors that must give an estimate.
        max_spread_mm: largest disagreement between the anchors' estimates.
        min_shift_mm: smallest offset worth a second pass.
    """
    est = [
        dz * slice_mm
        for a in ANCHORS
        if a in planned and a in results and results[a].mask.any()
        for dz in [_along_z(planned[a], results[a].mask)]
        if dz is not None
    ]
    if len(est) < min_anchors or max(est) - min(est) > max_spread_mm:
        return None
    shift = float(np.median(est))
    if abs(shift) < min_shift_mm:
        return None
    logger.info("the anchors drawn end %.0f mm (z) from the prior's slices: moving it onto them", shift)
    return shift / slice_mm
