"""What the routes share: path parameter types, the app's session store, job queue and settings as
dependencies, and the conversions of sessions and jobs to their API schemas."""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import Depends, Path, Request

from organsam.inference.options import resolve_organs
from organsam.io import Volume
from organsam.server.errors import ApiError
from organsam.server.jobs import Job, JobQueue
from organsam.server.render import view_info
from organsam.server.schemas import JobOut, SessionOut
from organsam.server.sessions import Session, SessionStore
from organsam.server.settings import ServerSettings
from organsam.vocabulary.palette import organ_color

__all__ = [
    "JobId",
    "Queue",
    "RenderGate",
    "SessionId",
    "Settings",
    "Store",
    "View",
    "check_slice",
    "hex_color",
    "job_out",
    "organ_colors",
    "resolve_one_organ",
    "session_out",
]

SessionId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="session id (32 hex digits)")]
JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="job id (32 hex digits)")]
View = Annotated[str, Path(pattern="^(axial|coronal|sagittal)$", description="axial, coronal or sagittal")]


def _store(request: Request) -> SessionStore:
    return request.app.state.store


def _queue(request: Request) -> JobQueue:
    return request.app.state.queue


def _settings(request: Request) -> ServerSettings:
    return request.app.state.settings


def _render_gate(request: Request) -> threading.BoundedSemaphore:
    return request.app.state.render_gate


Store = Annotated[SessionStore, Depends(_store)]
Queue = Annotated[JobQueue, Depends(_queue)]
Settings = Annotated[ServerSettings, Depends(_settings)]
RenderGate = Annotated[threading.BoundedSemaphore, Depends(_render_gate)]


def hex_color(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def organ_colors(label_table: dict[int, str]) -> dict[str, tuple[int, int, int]]:
    """organ id -> RGB of a result's label table (each organ's fixed colour, :mod:`organsam.vocabulary.palette`)."""
    return {oid: organ_color(oid) for oid in label_table.values()}


def resolve_one_organ(text: str) -> str:
    """The one organ a correction names (422 when the text names several)."""
    ids = resolve_organs(text).organ_ids
    if len(ids) != 1:
        raise ApiError(
            422,
            "ambiguous_organ",
            f"a correction applies to one organ; {text!r} names {len(ids)} ({', '.join(ids)}): choose one of them",
        )
    return ids[0]


def check_slice(s: Session, view: str, index: int) -> None:
    """422 when ``index`` is not a slice of ``view``."""
    n = view_info(s.volume.shape, s.volume.spacing)[view]["count"]
    if not 0 <= index < n:
        raise ApiError(422, "bad_slice", f"{view} slice {index} is out of range 0..{int(n) - 1}")


def job_out(job: Job, queue: JobQueue) -> JobOut:
    return JobOut(
        id=job.id,
        session_id=job.session_id,
        state=job.state,
        stage=job.stage,  # type: ignore[arg-type]
        progress=round(job.progress, 4),
        slices_done=job.slices_done,
        slices_total=job.slices_total,
        queue_position=queue.position(job) if job.state == "queued" else None,
        organs=job.organs,
        error=job.error,
        created=job.created,
        started=job.started,
        finished=job.finished,
    )


def _views(volume: Volume) -> dict[str, dict[str, Any]]:
    """Each view's image size, and which of the input's voxel axes its slices step along (for the caption)."""
    views: dict[str, dict[str, Any]] = dict(view_info(volume.shape, volume.spacing))
    for axis, view in enumerate(("axial", "coronal", "sagittal")):
        letter, reversed_ = volume.ijk_axis(axis)
        views[view] = {**views[view], "file_axis": letter, "file_reversed": reversed_}
    return views


def session_out(s: Session, queue: JobQueue, settings: ServerSettings) -> SessionOut:
    v = s.volume
    return SessionOut(
        id=s.id,
        filename=s.filename,
        kind=s.kind,
        shape_zyx=list(v.shape),
        spacing_zyx_mm=[round(float(x), 6) for x in v.spacing],
        modality=v.modality,
        windows=s.windows,
        default_window=s.default_window,
        window_levels={k: [float(a), float(b)] for k, (a, b) in s.window_levels.items()},
        views=_views(v),  # type: ignore[arg-type]
        prompt=s.prompt,
        organs=s.organ_ids,
        job=job_out(s.job, queue) if s.job is not None else None,
        has_result=s.result is not None,
        result_version=s.result_version,
        corrections=len(s.corrections),
        expires_in_s=round(s.expires_in(settings.session_ttl_s), 1),
    )
