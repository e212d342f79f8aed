"""Anatomical order: an organ drawn on the organ that lies in front of it is decoded again without it.

Some organs always lie behind others: the pancreas behind the stomach (the lesser sac between them), the inferior
vena cava behind the pancreatic head. ``organs.json`` keeps this as ``posterior_to`` (standard anatomy, no fitted
numbers). Inside a loose prior box the decoder draws the most salient structure, and for an organ that lies behind
another that is often the organ in front: on ``amos_0013_slab`` the IVC's prior box lies on the IVC, yet on seven
of its eleven slices it drew the pancreatic head in front of it (the pancreas's own box drew the head too). Joint
assignment against the anchors (:mod:`organsam.inference.assignment`) does not see this, since neither organ is an
anchor, and nothing in the two masks alone says which organ the one structure is; the anatomical order does: the
organ behind gives it up.

For each text-prompted organ with ``posterior_to`` neighbours among the organs drawn, in an order where every
neighbour in front is settled first (the stomach before the pancreas before the IVC), each slice whose mask lies
mostly (> ``max_inside``) inside one such neighbour's mask is decoded again without it
(:func:`organsam.inference.redraw.redraw_without`: the prior box cut to exclude the neighbour, the box with a
negative point on it, and the part of the box behind the neighbour's middle (:func:`~.redraw.behind_box`), alone
and with the point; the surest candidate that passes the predicted-IoU threshold and lies mostly inside no other
organ wins, else the slice is emptied). Slices a user prompted are never changed. The predictor
(:class:`~organsam.inference.volume_predictor.VolumePredictor`) segments the organs in front of an organ asked for
even when they were not asked for (the IVC asked for alone brings the pancreas and the stomach), and drops them
before anything is reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from organsam.inference.redraw import Reassignment, behind_box, log_reassignments, redraw_without, slices_drawn_on
from organsam.inference.state import Box, InferenceState, OrganResult
from organsam.inference.track_refine import Decoder

__all__ = ["assign_by_order", "front_first", "posterior_to"]


def posterior_to() -> dict[str, tuple[str, ...]]:
    """Organ id -> the organs it always lies behind (``posterior_to`` in ``organs.json``), for organs that have any."""
    from organsam.vocabulary import load_vocabulary

    return {o.id: o.posterior_to for o in load_vocabulary() if o.posterior_to}


def front_first(order: Mapping[str, Sequence[str]]) -> list[str]:
    """The organs of ``order`` (organ -> organs in front of it), each after every organ in front of it that is also
    a key (a cycle is broken in key order)."""
    done: list[str] = []
    visiting: set[str] = set()

    def visit(oid: str) -> None:
        if oid in done or oid in visiting:
            return
        visiting.add(oid)
        for front in order.get(oid, ()):
            if front in order:
                visit(front)
        visiting.discard(oid)
        done.append(oid)

    for oid in order:
        visit(oid)
    return done


def assign_by_order(
    state: InferenceState,
    results: Mapping[str, OrganResult],
    boxes: Mapping[str, Mapping[int, Box | None]],
    decode: Decoder,
    iou_threshold: float,
    order: Mapping[str, Sequence[str]],
    max_inside: float = 0.5,
) -> tuple[dict[str, OrganResult], list[Reassignment]]:
    """Decode again the slices where an organ was drawn on an organ in front of it (see the module docstring).

    Args:
        state: the session (its prompts say which slices the user prompted).
        results: organ id -> result (not changed).
        boxes: organ id -> {slice: prior box} of the text-prompted organs.
        decode: the predictor's decoder.
        iou_threshold: minimum score of a replacement.
        order: organ id -> the organs it lies behind (:func:`posterior_to`).
        max_inside: the largest fraction of a mask allowed inside an organ in front of it.

    Returns:
        (organ id -> result, new objects for the organs that changed; what happened on each slice).
    """
    out = dict(results)
    log: list[Reassignment] = []
    for oid in front_first(order):
        front = [f for f in order[oid] if f in out and out[f].mask.any()]
        if oid not in out or not front or not out[oid].mask.any():
            continue
        drawn_on = slices_drawn_on(state, oid, out[oid].mask, {f: out[f].mask for f in front}, max_inside)
        if drawn_on:
            out, more = redraw_without(state, out, boxes, decode, iou_threshold, max_inside, drawn_on, behind_box)
            log += more
    log_reassignments("anatomical order: %d slices drawn on the organ in front (%d redrawn)", log)
    return out, log
