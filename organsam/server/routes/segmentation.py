"""Segmentation jobs: start one from a text prompt, poll it, read the result's organ table."""

from __future__ import annotations

from fastapi import APIRouter

from organsam.inference.options import resolve_organs
from organsam.server.deps import JobId, Queue, SessionId, Store, hex_color, job_out, organ_colors
from organsam.server.errors import ApiError
from organsam.server.schemas import JobOut, OrganRow, ResultOut, SegmentIn
from organsam.server.sessions import ServerBusyError
from organsam.vocabulary import UnknownOrganError

router = APIRouter(tags=["segmentation"])


@router.post("/api/sessions/{sid}/segment", response_model=JobOut, status_code=202)
def start_segmentation(sid: SessionId, body: SegmentIn, store: Store, queue: Queue) -> JobOut:
    """Queue a segmentation from a free-text prompt (omit ``prompt`` to re-run with the corrections)."""
    s = store.get(sid)
    text = body.prompt if body.prompt is not None else s.prompt
    if not text or not text.strip():
        raise ApiError(422, "no_prompt", 'say which organs to segment, e.g. {"prompt": "liver and both kidneys"}')
    try:
        ids = list(resolve_organs(text).organ_ids)
    except UnknownOrganError:
        raise
    except ValueError as e:
        raise ApiError(422, "no_organ", f"the prompt {text!r} names no organ") from e
    if s.busy:
        raise ApiError(
            409,
            "job_active",
            f"this session already has a {s.job.state} job ({s.job.id}); wait for it (GET /api/jobs/{s.job.id})",
            job_id=s.job.id,
        )
    with s.lock:
        if text != s.prompt:
            s.corrections = [c for c in s.corrections if c.organ in ids]
        s.prompt, s.organ_ids = text, ids
        corrections = list(s.corrections)
    try:
        job = queue.submit(s, ids, corrections)
    except RuntimeError as e:
        if isinstance(e, ServerBusyError):
            raise
        raise ApiError(409, "job_active", str(e)) from e
    return job_out(job, queue)


@router.get("/api/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: JobId, queue: Queue) -> JobOut:
    """Poll a job: state, stage, progress (0..1), slices done, queue position, error."""
    job = queue.get(job_id)
    if job is None:
        raise ApiError(404, "no_such_job", "no job with this id (finished jobs are forgotten after a while)")
    if job.session is not None:
        job.session.touch()
    return job_out(job, queue)


@router.get("/api/sessions/{sid}/result", response_model=ResultOut)
def get_result(sid: SessionId, store: Store) -> ResultOut:
    """The organ table (label, colour, volume in mL, confidence) and the full report."""
    s = store.get(sid)
    res, version = s.result, s.result_version
    if res is None:
        raise ApiError(404, "no_result", "no segmentation yet: POST /api/sessions/{id}/segment first")
    colors = organ_colors(res.label_table)
    rows = []
    for label, oid in sorted(res.label_table.items()):
        r = res.report["organs"][oid]
        rows.append(
            OrganRow(
                id=oid,
                name=r["name"],
                label=label,
                color=hex_color(colors[oid]),
                present=r["present"],
                volume_ml=r["volume_ml"],
                confidence=r["confidence"],
                mean_hu=r.get("mean_hu"),
            )
        )
    return ResultOut(version=version, organs=rows, report=res.report)
