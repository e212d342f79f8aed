"""Two organs drawn on one structure, one of them carried there by tracking: that one gives the slice up.

Joint assignment keeps the other organs off the anchors (:mod:`organsam.inference.assignment`). Two organs that
are not anchors can still be drawn on one structure. On ``amos_0001_slab`` the right adrenal's prior box, on the
slab's last slice at the level of the IVC, drew the IVC, and track refinement carried that mask two slices
further, onto the IVC the IVC's own prior boxes had placed and drawn (issue 14 saw the same on a held-out CT: a
76 mL "right adrenal", 94 % IVC). Where the masks of two such organs on a slice each lie mostly (> ``max_inside``)
inside the other, and only one of the two organs has a prior box on that slice, the other one (drawn there by
tracking beyond its prior's slices) is emptied there.

Where both have prior boxes nothing here decides: neither the prior boxes nor the predicted IoU tell which organ
the structure is (on ``amos_0013_slab`` the IVC's box lies on the IVC, yet both the IVC's and the pancreas's boxes
drew the pancreas head, each with predicted IoU about 0.85), and decoding both again without it and keeping the
assignment with the higher total score gave the pancreas head to the IVC on two slices (``bench/quality.py
--protocol amos15`` on that variant, not kept: 72.81 against 73.00 for this rule alone). Both masks are kept and
the merged label map gives the overlap to the smaller one. Slices a user prompted are never changed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from organsam.inference.redraw import Reassignment, apply_replacements, redrawable
from organsam.inference.state import Box, InferenceState, OrganResult

logger = logging.getLogger(__name__)

__all__ = ["SharedStructure", "one_structure", "resolve_shared_structures", "shared_structures"]


@dataclass(frozen=True)
class SharedStructure:
    """Organs ``a`` and ``b`` drawn on one structure on slice ``z``: each mask lies more than ``max_inside`` inside
    the other; ``a_in_b`` and ``b_in_a`` are those fractions."""

    z: int
    a: str
    b: str
    a_in_b: float
    b_in_a: float


def one_structure(a: np.ndarray, b: np.ndarray, max_inside: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per axial slice of two (Z, Y, X) masks: whether they are one structure there (each more than ``max_inside``
    inside the other), and the fractions of ``a`` inside ``b`` and of ``b`` inside ``a`` (0 where one is empty).
    The one definition of "drawn on one structure" (also used by :mod:`organsam.inference.verification`)."""
    common = (a & b).sum(axis=(1, 2)).astype(float)
    own, theirs = a.sum(axis=(1, 2)).astype(float), b.sum(axis=(1, 2)).astype(float)
    a_in_b = np.divide(common, own, out=np.zeros_like(common), where=own > 0)
    b_in_a = np.divide(common, theirs, out=np.zeros_like(common), where=theirs > 0)
    return (a_in_b > max_inside) & (b_in_a > max_inside), a_in_b, b_in_a


def shared_structures(
    results: Mapping[str, OrganResult], anchors: Sequence[str], max_inside: float = 0.5
) -> list[SharedStructure]:
    """Slices where two drawn organs that are not ``anchors`` were drawn on one structure."""
    present = [o for o, r in results.items() if o not in anchors and r.mask.any()]
    out: list[SharedStructure] = []
    for i, a in enumerate(present):
        for b in present[i + 1 :]:
            one, a_in_b, b_in_a = one_structure(results[a].mask, results[b].mask, max_inside)
            out += [SharedStructure(int(z), a, b, float(a_in_b[z]), float(b_in_a[z])) for z in np.flatnonzero(one)]
    return out


def _loser(state: InferenceState, boxes: Mapping[str, Mapping[int, Box | None]], s: SharedStructure) -> str | None:
    """The organ of ``s`` drawn there by tracking beyond its prior's slices while the other's prior box is there
    (None when both or neither have a prior box there, or the loser's slice was prompted by the user)."""
    placed = {o: boxes.get(o, {}).get(s.z) is not None for o in (s.a, s.b)}
    if placed[s.a] == placed[s.b]:
        return None
    loser = s.b if placed[s.a] else s.a
    return loser if redrawable(state, loser, s.z) else None


def resolve_shared_structures(
    state: InferenceState,
    results: Mapping[str, OrganResult],
    boxes: Mapping[str, Mapping[int, Box | None]],
    anchors: Sequence[str],
    max_inside: float = 0.5,
) -> tuple[dict[str, OrganResult], list[Reassignment]]:
    """Empty the slices where an organ carried by tracking shares a structure with an organ placed there (see the
    module docstring); nothing is decoded.

    Returns:
        (organ id -> result, new objects for the organs that changed; what happened on each slice).
    """
    losers: dict[tuple[str, int], tuple[str, float]] = {}
    for s in shared_structures(results, anchors, max_inside):
        loser = _loser(state, boxes, s)
        if loser is not None:
            keeper, inside = (s.b, s.a_in_b) if loser == s.a else (s.a, s.b_in_a)
            losers.setdefault((loser, s.z), (keeper, inside))
            logger.debug("slice %d: %s, carried by tracking onto %s, gives it up", s.z, loser, keeper)
    if not losers:
        return dict(results), []
    out, log = apply_replacements(results, losers, {})
    logger.info("joint assignment: %d slices of an organ carried by tracking onto another's structure", len(log))
    return out, log
