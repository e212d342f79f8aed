"""Box search: decode a prior box again with each side pulled in, and keep the mask the decoder trusts most.

A location prior registered across modalities (the CT atlas onto an MR, through a pseudo-CT) places organ
boxes less tightly than on a CT: on ``ts_mr`` the atlas liver reaches across the upper abdomen on slices
where the organ covers half that width, and the decoder, given the wide box, fills it with the liver and
its neighbours or draws only part of it. LiteMedSAM's predicted IoU is higher for a box that fits the
organ (mean 0.92 for the reference boxes against 0.84 for the atlas boxes on ``ts_mr``), so the box is
searched: each side of the prior box moves in by each of ``fractions`` of the box's size, one side at a
time, every variant is decoded (one batched call per slice) and the mask with the highest predicted IoU
is kept. User boxes, point prompts and the boxes tracked from a user's prompt are never changed.

``VolumePredictor(box_search=...)`` turns it on; by default it runs on MR volumes only (on CT the prior is
registered within its modality, and the search costs eight decodes per box). Measured by
``bench/mr_agreement.py`` (row "without box search"), see the README.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from organsam.inference.state import Box, Candidate, DecodeJob, InferenceState

__all__ = ["FRACTIONS", "placed_by_prior", "pulled_in", "search_boxes"]

#: How far one side of a prior box moves in, as fractions of the box's width (left, right) or height.
FRACTIONS: tuple[float, ...] = (0.2, 0.4)

#: ``decode(state, jobs) -> candidates``: one (mask (Y, X) bool, score) per job, in order.
Decoder = Callable[[InferenceState, list[DecodeJob]], list[Candidate]]


def placed_by_prior(state: InferenceState, job: DecodeJob) -> bool:
    """Whether ``job`` is a box the location prior placed for a text prompt: not a user's box, not a point prompt,
    not a box tracked from a user's prompt."""
    prompt = state.prompts[job.organ_id]
    return job.box is not None and job.points is None and prompt.text is not None and job.z not in prompt.boxes


def pulled_in(box: Box, fractions: Sequence[float] = FRACTIONS) -> list[Box]:
    """The variants of ``box`` with one side moved in by each fraction of the box's size (4 per fraction)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    out: list[Box] = []
    for f in fractions:
        out += [(x0 + f * w, y0, x1, y1), (x0, y0 + f * h, x1, y1), (x0, y0, x1 - f * w, y1), (x0, y0, x1, y1 - f * h)]
    return out


def search_boxes(
    state: InferenceState,
    jobs: list[DecodeJob],
    decoded: list[Candidate],
    decode: Decoder,
    fractions: Sequence[float] = FRACTIONS,
) -> list[Candidate]:
    """Decode every prior-box job again with its box pulled in (see the module docstring).

    Args:
        state: the session (its prompts give the user boxes, which are left alone).
        jobs: the decoded jobs, (slice, organ, box (x0, y0, x1, y1) pixels or None, points or None).
        decoded: their results, (mask (Y, X) bool, predicted IoU) per job.
        decode: the predictor's decoder (``VolumePredictor.decode``).
        fractions: how far a side moves in, as fractions of the box's size.

    Returns:
        A new list: per job, the non-empty candidate with the highest predicted IoU among the original
        and its variants.
    """
    again: list[tuple[int, DecodeJob]] = []
    for j, job in enumerate(jobs):
        if placed_by_prior(state, job):
            again += [(j, DecodeJob(job.z, job.organ_id, b, None)) for b in pulled_in(job.box, fractions)]
    out = list(decoded)
    if not again:
        return out
    for (j, _), (m, iou) in zip(again, decode(state, [job for _, job in again])):
        if m.any() and (iou > out[j][1] or not out[j][0].any()):
            out[j] = Candidate(m, iou)
    return out
