"""The one segmentation pipeline: every entry point (``organsam.segment``, the CLI, batch workers, the server)
calls :func:`run_segmentation`.

Stages, in the order data flows through them:

1. **model grid** (:func:`model_grid`): thin-sliced volumes may be segmented on a coarser z grid
   (``min_slice_mm``); otherwise the input volume itself.
2. **prompts**: the requested organs become text prompts; an interactive caller adds its user boxes and points
   (``corrections``) once the prior is fitted.
3. **location prior** (``predictor.fit_prior``): the atlas registered onto the volume gives each organ a box per
   slice where it lies.
4. **slice encoding** (``predictor.encode_slices``): the slices that any prompt needs, in chunks, with progress and
   cancellation between chunks.
5. **decoding and propagation** (``predictor.propagate``): boxes -> masks, predicted-IoU rejection, box widening,
   track refinement, joint assignment (no organ drawn on an anchor organ), anatomical order (no organ drawn on
   the organ in front of it), organ-end trimming (no end slice of another tissue).
6. **post-processing** (:func:`organsam.inference.postprocess.postprocess_mask`): masks back on the input grid,
   HU cleanup, connected components; one merged label volume.
7. **verification** (:func:`organsam.inference.verification.verify_mask`): a text-prompted organ's mask that
   cannot be that organ (bigger than it can be, or the structure drawn for another organ) is not drawn; the report
   says why.
8. **report** (:func:`organ_report`): per-organ facts, the prompt, the settings and timings.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from organsam import __version__
from organsam.inference.options import ALL_ORGANS_TEXT, OrganRequest, SegmentOptions
from organsam.inference.postprocess import bounding_box, merge_labels, postprocess_mask
from organsam.inference.predictor_factory import DEFAULT_DESIGN
from organsam.inference.result import SegmentationResult
from organsam.inference.state import InferenceState, OrganResult
from organsam.inference.verification import verify_mask
from organsam.io import Volume, VolumeMeta, VolumeReadError
from organsam.preprocessing.intensity import is_ct_in_hu
from organsam.preprocessing.resample import resample_z
from organsam.vocabulary import load_vocabulary

logger = logging.getLogger(__name__)

__all__ = [
    "MIN_SLICES_FOR_TEXT",
    "ORGAN_STATUSES",
    "JobCancelledError",
    "ProgressFn",
    "check_segmentable",
    "locatable_request",
    "model_grid",
    "organ_report",
    "run_segmentation",
    "to_input_grid",
]

#: progress(stage, done, total)
ProgressFn = Callable[[str, int, int], None]
#: corrections(predictor, state): adds user boxes/points to the state once the prior is fitted
CorrectionsFn = Callable[[Any, InferenceState], None]


class JobCancelledError(RuntimeError):
    """``cancelled()`` returned True while the run was working."""


def model_grid(volume: Volume, min_slice_mm: float) -> Volume:
    """The volume the model runs on: ``volume`` itself, or, when its slices are thinner than
    ``min_slice_mm`` (> 0), a copy linearly resampled along z to slices about ``min_slice_mm`` apart."""
    sz = float(volume.spacing[0])
    Z = volume.array.shape[0]
    if min_slice_mm <= 0 or sz >= min_slice_mm or Z < 2:
        return volume
    new_z = max(2, int(round(Z * sz / min_slice_mm)))
    if new_z >= Z:
        return volume
    logger.info(
        "%d slices of %.2f mm: segmenting %d slices of %.2f mm, masks interpolated back", Z, sz, new_z, Z * sz / new_z
    )
    spacing = (Z * sz / new_z, float(volume.spacing[1]), float(volume.spacing[2]))
    meta = VolumeMeta(modality_source=volume.meta.modality_source, is_8bit=volume.meta.is_8bit)
    return dataclasses.replace(volume, array=resample_z(volume.array, new_z), spacing=spacing, meta=meta)


def to_input_grid(mask: np.ndarray, volume: Volume) -> np.ndarray:
    """(z, Y, X) bool mask on the model grid -> (Z, Y, X) bool on ``volume``'s slices (linear along z, > 0.5)."""
    Z = volume.array.shape[0]
    if mask.shape[0] == Z:
        return mask
    return resample_z(mask, Z) > 0.5


#: What a report says of an organ: drawn; searched and judged not there; never searched because nothing places
#: it from text (no prior for it: give a box); or found but rejected by verification (not drawn; the reason).
ORGAN_STATUSES = ("present", "absent", "not_locatable", "rejected_by_verification")


def organ_report(
    organ_id: str,
    mask: np.ndarray,
    volume: Volume,
    res: OrganResult | None,
    unlocatable: str | None = None,
    rejection: str | None = None,
) -> dict[str, Any]:
    """The report entry of one organ: status, size, intensity, extent, confidence and where it came from.

    Args:
        unlocatable: why nothing could place the organ from text (e.g. the location atlas does not have it), or
            None when it could be placed.
        rejection: why verification rejected the organ's mask (then ``mask`` is empty).
    """
    voxel_ml = volume.voxel_ml
    status = (
        "present"
        if mask.any()
        else "rejected_by_verification"
        if rejection
        else "not_locatable"
        if unlocatable
        else "absent"
    )
    entry: dict[str, Any] = {
        "name": load_vocabulary()[organ_id].name,
        "status": status,
        "present": bool(mask.any()),
        "voxels": int(mask.sum()),
        "volume_ml": round(int(mask.sum()) * voxel_ml, 2),
        "confidence": round(res.confidence, 4) if res is not None else 0.0,
        "slices": int(mask.reshape(mask.shape[0], -1).any(axis=1).sum()),
        "rejected_slices": len(res.rejected) if res is not None else 0,
        "source": res.source if res is not None else "",
    }
    key = "mean_hu" if is_ct_in_hu(volume) else "mean_intensity"
    entry[key] = round(float(volume.array[mask].mean()), 1) if mask.any() else None
    if mask.any():
        box = bounding_box(volume.to_ijk_layout(mask))  # not np.argwhere: 24 bytes a voxel of the mask
        entry["bbox_voxels"] = {
            "min": [b.start for b in box],
            "max": [b.stop - 1 for b in box],
            "axes": "ijk: column, row, slice of the input's voxel grid (as ITK, 3D Slicer "
            "and ITK-SNAP number voxels), 0-based",
        }
    else:
        entry["bbox_voxels"] = None
        if rejection:
            entry["absent_reason"] = rejection
        elif unlocatable:
            entry["absent_reason"] = f"cannot be located from text: {unlocatable}"
        elif res is not None and res.rejected:
            entry["absent_reason"] = "searched: no slice passed the predicted-IoU check"
        else:
            entry["absent_reason"] = "searched: the location prior places it outside this scan"
    return entry


#: Fewest slices text prompts can be placed on: the location atlas is registered to the scan in 3D.
MIN_SLICES_FOR_TEXT = 4


def check_segmentable(volume: Volume, work: Volume | None = None) -> None:
    """Refuse, in one line, a volume that text prompts cannot be placed on (too few slices on the model grid).

    Called before any work by :func:`run_segmentation` (with ``work``, the model grid of ``volume``) and by the
    server when a volume is uploaded.

    Raises:
        VolumeReadError: fewer than :data:`MIN_SLICES_FOR_TEXT` slices (a picture, a single DICOM slice, a
            three-slice series).
    """
    Z = (work if work is not None else volume).array.shape[0]
    if Z < MIN_SLICES_FOR_TEXT:
        grid = "" if volume.array.shape[0] == Z else " on the model grid (--min-slice-mm)"
        raise VolumeReadError(
            volume.path,
            f"has {Z} slice(s){grid}; text prompts place organs with a 3D atlas "
            f"registered to the scan, which needs at least {MIN_SLICES_FOR_TEXT} slices.",
            "give the whole series (every slice of the scan), or a smaller --min-slice-mm.",
        )


def weights_record(options: SegmentOptions) -> dict[str, str]:
    """SHA-256 of the weight files a run with ``options`` reads (checked against these when loaded)."""
    from organsam.inference.predictor_factory import resolve_checkpoint
    from organsam.io.files import file_sha256
    from organsam.weights import WEIGHTS

    out = {"atlas": WEIGHTS["atlas"].sha256 or ""}
    checkpoint = resolve_checkpoint(options.design, options.checkpoint)  # "packaged": the shipped file
    if checkpoint:
        out["checkpoint"] = file_sha256(checkpoint)
    else:
        out["lite_medsam"] = WEIGHTS["lite_medsam"].sha256 or ""
    if options.organ_prompts is True:
        out["organ_prompts"] = WEIGHTS["organ_prompts"].sha256 or ""
    elif options.organ_prompts:
        out["organ_prompts"] = file_sha256(options.organ_prompts)
    return out


def locatable_request(predictor: Any, request: OrganRequest) -> OrganRequest:
    """ "All organs" means the organs the predictor can place from text: the others are left out (named)."""
    if request.prompt != ALL_ORGANS_TEXT or not hasattr(predictor, "locatable_organs"):
        return request
    known = predictor.locatable_organs()
    if known is None:
        return request
    kept = tuple(o for o in request.organ_ids if o in known)
    if len(kept) < len(request.organ_ids):
        logger.warning(
            "all organs: leaving out %s (the location atlas does not have them; give boxes to segment them)",
            ", ".join(o for o in request.organ_ids if o not in known),
        )
    return OrganRequest(request.prompt, kept)


_GIVE_A_BOX = "give a box on a slice (viewer or VolumePredictor.add_box)"


def _unlocatable(state: InferenceState, organ_id: str, known: set[str] | None, found: bool) -> str | None:
    """Why nothing could place the organ from text, or None (``known``: the organs of the predictor's location
    atlas, None: any; ``found``: whether a mask was drawn)."""
    prompt = state.prompts[organ_id]
    if prompt.boxes or prompt.points or prompt.text is None or known is None:
        return None
    if organ_id not in known:
        return f"the location atlas has no {load_vocabulary()[organ_id].name}; {_GIVE_A_BOX}"
    if state.volume.modality == "MR" and not found:
        return f"the location atlas is a CT and did not place it on this MR volume; {_GIVE_A_BOX}"
    return None


def _needed_slices(predictor: Any, state: InferenceState) -> list[int]:
    """Slices any prompt decodes on the first pass (prior boxes of text prompts, user boxes and points)."""
    needed: set[int] = set()
    for oid, p in state.prompts.items():
        if p.text is not None:
            needed |= set(predictor.prior_boxes(state, oid))
        needed |= set(p.boxes) | set(p.points)
    return sorted(z for z in needed if z not in state.embeddings)


def run_segmentation(
    predictor: Any,
    volume: Volume,
    request: OrganRequest,
    *,
    options: SegmentOptions | None = None,
    state: InferenceState | None = None,
    corrections: CorrectionsFn | None = None,
    progress: ProgressFn | None = None,
    cancelled: Callable[[], bool] | None = None,
    encode_chunk: int | None = None,
    report_extra: dict[str, Any] | None = None,
) -> SegmentationResult:
    """Segment the requested organs of ``volume``: every stage from the location prior to the report.

    Args:
        predictor: a :class:`~organsam.inference.volume_predictor.VolumePredictor` (or a design predictor), e.g.
            from :meth:`SegmentOptions.build_predictor`.
        volume: the input volume.
        request: the organs and the prompt they came from (:func:`~organsam.inference.options.resolve_organs`).
        options: the run's settings (the model grid and the report use them; the predictor already carries
            the others); default :class:`SegmentOptions()`.
        state: a session state to reuse (an interactive session keeps its slice embeddings and fitted prior
            between runs); it must be on the model grid of ``volume``. None: a new one.
        corrections: called once the prior is fitted to add user boxes/points (organs not in the request are
            then tracked from them and reported too).
        progress: called with (stage, done, total) as the work advances.
        cancelled: polled between steps; when it returns True the run stops with :class:`JobCancelledError`.
        encode_chunk: slices encoded between two progress reports (default: the predictor's batch size).
        report_extra: entries added to the report (e.g. the server's corrections).

    Returns:
        The :class:`SegmentationResult` (masks on the input grid, merged label volume, report, timings).
    """
    options = options or SegmentOptions()

    def report_progress(stage: str, done: int, total: int) -> None:
        if progress is not None:
            progress(stage, done, total)

    def check_cancelled() -> None:
        if cancelled is not None and cancelled():
            raise JobCancelledError("the segmentation was cancelled")

    t0 = time.perf_counter()
    decoder = getattr(predictor, "decoder", None)  # what draws the masks (its runtime and counts are reported)
    decodes0 = int(getattr(decoder, "decoded_prompts", 0))
    work = model_grid(volume, options.min_slice_mm)
    check_segmentable(volume, work)  # every requested organ is text-prompted
    if state is None:
        state = predictor.init_state(work)
    elif state.volume.array.shape != work.array.shape:
        raise ValueError(
            f"the session state is on a {state.volume.array.shape} grid, the volume's model grid is "
            f"{work.array.shape}; start a new state"
        )
    predictor.reset(state)  # keeps the slice embeddings and the fitted prior
    request = locatable_request(predictor, request)
    for oid in request.organ_ids:
        predictor.add_text_prompt(state, oid)
    report_progress("locating the organs (atlas prior)", 0, 0)
    predictor.fit_prior(state)
    t_prior = time.perf_counter()
    if corrections is not None:
        corrections(predictor, state)
    todo = _needed_slices(predictor, state)
    keep = getattr(decoder, "max_slices", None)
    if keep:  # a decoder keeping few slices' encoder outputs: the first ones now, the rest as segmentation goes
        todo = todo[:keep]
    chunk = max(1, int(encode_chunk or getattr(predictor, "batch_size", 1) or 1))
    for i in range(0, len(todo), chunk):
        check_cancelled()
        report_progress("encoding slices", i, len(todo))
        predictor.encode_slices(state, todo[i : i + chunk])
    t_encode = time.perf_counter()
    Z = work.array.shape[0]
    report_progress("segmenting", 0, Z)
    organ_ids = list(state.prompts)  # requested organs first, then organs only a correction named
    model_masks = {oid: np.zeros(work.array.shape, dtype=bool) for oid in organ_ids}
    for z, ids, slice_masks in predictor.propagate(state):  # each slice yielded once it is final
        for oid, m in zip(ids, slice_masks):
            model_masks[oid][z] = m
        check_cancelled()
        report_progress("segmenting", z + 1, Z)
    t_model = time.perf_counter()
    report_progress("post-processing", Z, Z)
    hu = volume.array if is_ct_in_hu(volume) else None
    drawn = {oid: bool(model_masks[oid].any()) for oid in organ_ids}
    # each model-grid mask is let go once post-processed: with text alone an organ's mask can span the whole volume,
    # and a 512x512x300 CT's 13 organs would otherwise hold both copies at once at the end of the run
    masks = {oid: postprocess_mask(oid, to_input_grid(model_masks.pop(oid), volume), hu) for oid in organ_ids}
    rejections = {}
    for oid in organ_ids:
        if not options.verify or state.prompts[oid].text is None:
            continue  # the user's own boxes/points are never second-guessed
        reason = verify_mask(oid, masks[oid], volume.voxel_ml, {o: m for o, m in masks.items() if o != oid})
        if reason:
            logger.warning("%s: %s", oid, reason)
            rejections[oid] = reason
            masks[oid] = np.zeros(masks[oid].shape, dtype=bool)  # not zeros_like: that writes every page
    labels, table = merge_labels(masks, organ_ids)
    known = predictor.locatable_organs() if hasattr(predictor, "locatable_organs") else None
    t_end = time.perf_counter()
    timings = {
        "prior": t_prior - t0,
        "encode": t_encode - t_prior,
        "model": t_model - t_encode,
        "postprocess": t_end - t_model,
        "total": t_end - t0,
    }
    report: dict[str, Any] = {
        "organsam_version": __version__,
        "input": str(volume.path) if volume.path else None,
        "prompt": request.prompt,
        "organ_ids": list(request.organ_ids),
        "design": getattr(predictor, "design_name", DEFAULT_DESIGN),
        "device": str(getattr(predictor, "device", "cpu")),
        "compute": dict(getattr(decoder, "compute", {})),
        "weights_sha256": weights_record(options),
        "modality": volume.modality,
        "shape_zyx": list(volume.array.shape),
        "spacing_zyx_mm": [float(s) for s in volume.spacing],
        "corrections": [],
        "labels": {str(v): k for v, k in table.items()},
        "organs": {
            oid: organ_report(
                oid,
                masks[oid],
                volume,
                state.results.get(oid),
                _unlocatable(state, oid, known, drawn[oid]),
                rejections.get(oid),
            )
            for oid in organ_ids
        },
        "prior_moves": [dict(m) for m in state.prior_moves],
        "encoded_slices": int(getattr(predictor, "encoded_slices", len(state.embeddings))),
        "model_slices": int(Z),
        "decoded_prompts": int(getattr(decoder, "decoded_prompts", 0)) - decodes0,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    report.update(report_extra or {})
    return SegmentationResult(volume, organ_ids, masks, labels, table, report, timings)
