"""The segmentation a job runs on a session: text prompts placed by the location prior, user corrections,
slice encoding with progress, post-processing, report and downloadable files.

It keeps the session's :class:`organsam.inference.state.InferenceState` between runs, so a re-run after a
correction reuses the slice embeddings and the fitted prior and only decodes again.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from organsam.inference.options import OrganRequest
from organsam.inference.pipeline import JobCancelledError, ProgressFn, run_segmentation
from organsam.inference.result import SegmentationResult
from organsam.io.output_folder import write_output_folder
from organsam.priors.boxes import box_of_slice
from organsam.server.sessions import Correction, Session

logger = logging.getLogger(__name__)

__all__ = ["JobCancelledError", "correction_box", "run_session", "write_downloads"]


def correction_box(
    mask_slice: np.ndarray | None,
    points: np.ndarray,
    labels: np.ndarray,
    margin_px: int,
    shape_yx: tuple[int, int],
) -> tuple[float, float, float, float] | None:
    """A box for a slice that has correction points: the organ's current box there grown to hold the
    positive points, with a margin.

    Args:
        mask_slice: (Y, X) bool mask of the organ on that slice from the previous run (or None).
        points: (N, 2) xy canonical pixels.
        labels: (N,) 1 = organ, 0 = not organ.
        margin_px: margin added around positive points.
        shape_yx: (Y, X) of the slice, to clip the box.

    Returns:
        (x0, y0, x1, y1) or None when there is neither a mask nor a positive point.
    """
    xs: list[float] = []
    ys: list[float] = []
    if mask_slice is not None and mask_slice.any():
        b = box_of_slice(mask_slice, 0)
        if b is not None:
            xs += [float(b[0]), float(b[2])]
            ys += [float(b[1]), float(b[3])]
    pos = points[labels == 1]
    for x, y in pos:
        xs += [float(x) - margin_px, float(x) + margin_px]
        ys += [float(y) - margin_px, float(y) + margin_px]
    if not xs:
        return None
    Y, X = shape_yx
    x0, x1 = max(0.0, min(xs)), min(float(X - 1), max(xs))
    y0, y1 = max(0.0, min(ys)), min(float(Y - 1), max(ys))
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1, y1)


def _apply_corrections(
    predictor: Any,
    state: Any,
    corrections: Sequence[Correction],
    previous: dict[str, np.ndarray] | None,
    margin_px: int,
) -> None:
    boxes: dict[tuple[str, int], tuple[float, float, float, float]] = {}
    points: dict[tuple[str, int], list[tuple[float, float, int]]] = {}
    for c in corrections:
        if c.kind == "box" and c.box is not None:
            boxes[(c.organ, c.z)] = c.box
        elif c.kind == "point" and c.x is not None and c.y is not None:
            points.setdefault((c.organ, c.z), []).append((c.x, c.y, int(c.label or 0)))
    for (oid, z), box in boxes.items():
        predictor.add_box(state, oid, z, box)
    shape_yx = state.volume.array.shape[1:]
    for (oid, z), pts in points.items():
        coords = np.array([[x, y] for x, y, _ in pts], dtype=np.float32)
        labels = np.array([lab for *_, lab in pts], dtype=np.int64)
        predictor.add_points(state, oid, z, coords, labels)
        prompt = state.prompts.get(oid)
        if (oid, z) not in boxes and prompt is not None and prompt.text is not None:
            # text-prompted organs are decoded with a box on every slice: give this one a box too
            prev = previous.get(oid)[z] if previous and oid in previous else None
            box = correction_box(prev, coords, labels, margin_px, shape_yx)
            if box is not None:
                predictor.add_box(state, oid, z, box)


def run_session(
    predictor: Any,
    session: Session,
    organ_ids: Sequence[str],
    corrections: Sequence[Correction],
    progress: ProgressFn,
    cancelled: Callable[[], bool],
    encode_chunk: int = 2,
) -> SegmentationResult:
    """Segment ``organ_ids`` in the session's volume with the shared predictor (call from the worker only):
    the one pipeline (:func:`organsam.inference.pipeline.run_segmentation`) with the session's state, its
    prompt text and the translation of its viewer corrections.

    Args:
        predictor: the :class:`organsam.inference.VolumePredictor`.
        session: the session (its ``state`` is created on first use and kept).
        organ_ids: organs of the text prompt.
        corrections: user points/boxes (organs not in ``organ_ids`` are tracked from them).
        progress: called with (stage, done, total) as the work advances.
        cancelled: polled between steps; when it returns True the run stops with :class:`JobCancelledError`.
        encode_chunk: slices encoded between two progress reports.

    Returns:
        The result (masks and label map in the canonical (Z, Y, X) layout, report).
    """
    if session.state is None:
        session.state = predictor.init_state(session.volume)
    previous = session.result.masks if session.result is not None else None

    def add_corrections(predictor: Any, state: Any) -> None:
        _apply_corrections(predictor, state, corrections, previous, predictor.margin_px(state))

    result = run_segmentation(
        predictor,
        session.volume,
        OrganRequest(session.prompt or "", tuple(organ_ids)),
        state=session.state,
        corrections=add_corrections,
        progress=progress,
        cancelled=cancelled,
        encode_chunk=encode_chunk,
        report_extra={"corrections": [c.as_dict() for c in corrections]},
    )
    result.report["input"] = session.filename
    return result


def write_downloads(result: SegmentationResult, outdir: Path) -> dict[str, Path]:
    """Write the label map NIfTI, the per-organ masks (zip) and the report JSON of a result.

    Args:
        result: the segmentation.
        outdir: a new folder inside the session folder.

    Returns:
        ``labelmap`` / ``masks_zip`` / ``report`` (/ ``dicom_seg`` for DICOM input) -> path.
    """

    def build(folder: Path) -> dict[str, Path]:
        written = result.write_files(folder, overview=False)
        files = {"labelmap": written["segmentation"], "report": written["report"]}
        if "dicom_seg" in written:
            files["dicom_seg"] = written["dicom_seg"]
        files["masks_zip"] = folder / "masks.zip"
        with zipfile.ZipFile(files["masks_zip"], "w", compression=zipfile.ZIP_STORED) as zf:
            for p in sorted(written["masks"].glob("*.nii.gz")):
                zf.write(p, arcname=f"masks/{p.name}")
        return files

    return write_output_folder(outdir, build)
