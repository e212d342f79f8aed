"""Organs a run segments without being asked for, and drops before anything is reported.

Joint assignment needs the anchor organs next to an organ asked for (:mod:`organsam.inference.assignment`: a
stomach asked for alone is still kept off the liver), and anatomical order needs the organs an organ asked for
lies behind, and those they lie behind in turn (:mod:`organsam.inference.anatomical_order`: the IVC asked for alone
brings the pancreas, which brings the stomach).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping

from organsam.inference.anatomical_order import posterior_to
from organsam.inference.assignment import ANCHORS, neighbouring_anchors
from organsam.inference.state import Box

__all__ = ["hidden_organs"]


def hidden_organs(
    planned: Mapping[str, Mapping[int, Box | None]],
    asked: Container[str],
    known: set[str] | None,
    prior_boxes: Callable[[str], Mapping[int, Box | None]],
    joint_assignment: bool = True,
    anatomical_order: bool = True,
) -> list[str]:
    """The organs to segment without being asked for.

    Args:
        planned: organ id -> {slice: prior box} of the text-prompted organs of the run.
        asked: the organs of the run (never hidden).
        known: the organs the location prior can place (None: any).
        prior_boxes: an organ's prior boxes (for the anchors' neighbourhood test).
        joint_assignment: add the anchors whose prior boxes touch an organ asked for that is not an anchor.
        anatomical_order: add the organs in front (``posterior_to``) of the organs asked for, recursively.
    """
    hidden: list[str] = []
    if joint_assignment:
        candidates = [a for a in ANCHORS if a not in asked and (known is None or a in known)]
        if candidates:
            hidden += neighbouring_anchors(planned, {a: prior_boxes(a) for a in candidates})
    if anatomical_order:
        order, todo = posterior_to(), list(planned)
        while todo:
            for front in order.get(todo.pop(), ()):
                if front not in asked and front not in hidden and (known is None or front in known):
                    hidden.append(front)
                    todo.append(front)
    return hidden
