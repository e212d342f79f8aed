"""Box expansion off the anchors: decode the prior box of an organ that is not an anchor again with its sides
pushed out, and keep the best mask that is not drawn on an anchor.

LiteMedSAM was trained on boxes a little larger than the organ (``bench/quality.py``: oracle boxes widened by 10 px
score as well as tight ones), and an atlas box that cuts an elongated or curved organ (the stomach wrapped over
the liver's left lobe, the pancreas) makes it draw the most salient structure inside the box instead: on
``amos_0001_slab`` the stomach's prior boxes drew the liver on most of its slices. Each such box is decoded again
(one more decode call per slice) with each side pushed out by ``fraction`` of the box's size, and with all four
sides pushed out (five more prompts); among the candidates, the original included, the one with the highest
predicted IoU, at least ``iou_threshold``, that lies at most ``max_inside`` inside the mask an anchor organ got on
the same slice (anchor masks below ``iou_threshold`` do not count) wins, and its box becomes the job's box (so the
widening of boxes whose mask touches a side, :func:`organsam.inference.track_refine.widen_cut_boxes`, starts from
it). When no candidate qualifies, the original is kept (joint assignment, :mod:`organsam.inference.assignment`,
then decodes it again without the anchor).

Only prior boxes of text-prompted organs that are not anchors are expanded, on slices where an anchor was drawn
(the anchors say what to stay off), and only on CT: on MR the box search (:mod:`organsam.inference.box_search`)
pulls the loosely registered boxes in instead, and no MR labels of a non-anchor organ are here to measure it on.
The anchors, user boxes, point prompts and boxes tracked from a user's prompt are left as they are, and so are the
tubes (organs of the vocabulary groups ``TUBE_GROUPS``: vessels and intestines): their boxes do not cut a curved
solid organ, and a wider box lets them take in bowel or the organ beside them (``bench/quality.py --protocol
amos15``: expanding them too gave the duodenum 23.35 against 34.01, the IVC 53.07 against 53.85). Measured by
``bench/quality.py`` (row "without box expansion") and ``bench/stress_prior.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

from organsam.inference.assignment import ANCHORS
from organsam.inference.box_search import Decoder, placed_by_prior
from organsam.inference.redraw import most_inside
from organsam.inference.state import Box, Candidate, DecodeJob, InferenceState
from organsam.vocabulary import load_vocabulary

__all__ = ["EXPAND_FRACTION", "TUBE_GROUPS", "expand_off_anchors", "pushed_out"]

#: How far a side of a prior box moves out, as a fraction of the box's width (left, right) or height (top, bottom).
EXPAND_FRACTION = 0.2

#: Vocabulary groups (``organs.json``) of the organs whose boxes are not expanded.
TUBE_GROUPS = frozenset({"vessels", "intestines"})


def _tube(organ_id: str) -> bool:
    return bool(TUBE_GROUPS & set(load_vocabulary()[organ_id].groups))


def pushed_out(box: Box, fraction: float, height: int, width: int) -> list[Box]:
    """``box`` with each side moved out by ``fraction`` of its size, one side at a time, then all four at once;
    clipped to the slice (variants that clipping leaves equal to ``box`` or to another variant are dropped)."""
    x0, y0, x1, y1 = box
    dx, dy = fraction * (x1 - x0), fraction * (y1 - y0)
    out: list[Box] = []
    for grow in ((1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1), (1, 1, 1, 1)):
        wide = (
            max(0.0, x0 - dx * grow[0]),
            max(0.0, y0 - dy * grow[1]),
            min(width - 1.0, x1 + dx * grow[2]),
            min(height - 1.0, y1 + dy * grow[3]),
        )
        if wide != tuple(box) and wide not in out:
            out.append(wide)
    return out


def expand_off_anchors(
    state: InferenceState,
    jobs: list[DecodeJob],
    decoded: list[Candidate],
    decode: Decoder,
    iou_threshold: float,
    anchors: Sequence[str] = ANCHORS,
    fraction: float = EXPAND_FRACTION,
    max_inside: float = 0.5,
) -> tuple[list[DecodeJob], list[Candidate]]:
    """Decode the non-anchor prior boxes of one slice's jobs again, expanded (see the module docstring).

    Args:
        state: the session (its prompts tell prior boxes from the user's; its volume the modality).
        jobs: one slice's decoded jobs, (slice, organ, box (x0, y0, x1, y1) pixels or None, points or None).
        decoded: their results, (mask (Y, X) bool, predicted IoU) per job; the anchors' among them are the masks
            the candidates must stay off.
        decode: the predictor's decoder (``VolumePredictor.decode``).
        iou_threshold: the smallest predicted IoU of a mask that is kept (of a candidate, and of an anchor's mask
            that counts).
        anchors: the anchor organs.
        fraction: how far a side moves out, as a fraction of the box's size.
        max_inside: the largest fraction of a candidate allowed inside one anchor's mask.

    Returns:
        New lists: the jobs with the chosen box, and their candidates.
    """
    anchor_masks = {
        oid: c.mask for (_, oid, _, _), c in zip(jobs, decoded) if oid in anchors and c.score >= iou_threshold
    }
    if state.volume.modality == "MR" or not any(m.any() for m in anchor_masks.values()):
        return list(jobs), list(decoded)
    H, W = state.volume.array.shape[1:]
    again: list[tuple[int, DecodeJob]] = []
    for j, job in enumerate(jobs):
        if job.organ_id not in anchors and not _tube(job.organ_id) and placed_by_prior(state, job):
            again += [(j, DecodeJob(job.z, job.organ_id, b, None)) for b in pushed_out(job.box, fraction, H, W)]
    out_jobs, out = list(jobs), list(decoded)
    if not again:
        return out_jobs, out
    candidates: dict[int, list[tuple[DecodeJob, Candidate]]] = {j: [(jobs[j], decoded[j])] for j, _ in again}
    for (j, job), cand in zip(again, decode(state, [job for _, job in again])):
        candidates[j].append((job, cand))
    for j, cands in candidates.items():
        ok = [
            (job, c)
            for job, c in cands
            if c.mask.any() and c.score >= iou_threshold and most_inside(c.mask, anchor_masks)[0] <= max_inside
        ]
        if ok:
            out_jobs[j], out[j] = max(ok, key=lambda jc: jc[1].score)
    return out_jobs, out
