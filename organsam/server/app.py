"""The ``organsam serve`` FastAPI app: JSON API (documented on ``/docs``) and the single-page viewer on ``/``.

    from organsam.server import create_app, ServerSettings
    app = create_app(ServerSettings(max_upload_mb=100))

Safety: uploads are capped (``max_upload_mb``) while they stream in, their type is checked by content,
files are stored under server-made names in a per-session temp folder (no client path ever reaches the
file system), sessions expire, the single model is used by one worker thread fed by a bounded queue, and
every bad request gets a JSON error ``{"error": code, "detail": message}`` with a 4xx status.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Path, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from organsam import __version__
from organsam.server.jobs import Job, JobQueue, QueueFullError
from organsam.server.render import PALETTE, display_to_voxel, overlay_rgba, png_bytes, view_info
from organsam.server.schemas import (
    CorrectionIn,
    CorrectionOut,
    ErrorBody,
    HealthOut,
    JobOut,
    OrganOut,
    OrganRow,
    ParseIn,
    ParseOut,
    ResultOut,
    SegmentIn,
    SessionOut,
)
from organsam.server.sessions import Correction, ServerBusyError, Session, SessionNotFoundError, SessionStore
from organsam.server.settings import ServerSettings
from organsam.server.uploads import UploadError, safe_display_name
from organsam.vocabulary import UnknownOrganError, load_vocabulary, parse_prompt
from organsam.vocabulary.parse import PromptError

logger = logging.getLogger(__name__)

__all__ = ["ApiError", "create_app"]

_SESSION_ID = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="session id (32 hex digits)")]
_JOB_ID = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="job id (32 hex digits)")]
_VIEW = Annotated[str, Path(pattern="^(axial|coronal|sagittal)$", description="axial, coronal or sagittal")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    c: {"model": ErrorBody} for c in (400, 404, 409, 413, 415, 422, 429, 503)
}
_STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_SMALL_BODY = 1 << 20


class ApiError(Exception):
    """An error answered as JSON ``{"error": code, "detail": detail, ...extra}`` with ``status``."""

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers, self.extra = status, code, detail, headers, extra


def _error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"error": code, "detail": detail, **{k: v for k, v in extra.items() if v is not None}}
    return JSONResponse(body, status_code=status, headers=headers)


class BodyLimitMiddleware:
    """Refuse request bodies over a limit with 413, while they stream in (Content-Length or chunked).

    Uploads (``POST /api/sessions``) may be ``max_upload`` bytes plus multipart overhead; other bodies 1 MiB.
    """

    def __init__(self, app: ASGIApp, max_upload: int) -> None:
        self.app = app
        self.max_upload = max_upload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        upload = scope["path"].rstrip("/") == "/api/sessions"
        limit = self.max_upload + 64 * 1024 if upload else _SMALL_BODY
        what = (
            (
                f"the upload is larger than the server's limit of {self.max_upload / 2**20:.0f} MiB; "
                "crop the volume or restart the server with a larger --max-upload-mb"
            )
            if upload
            else f"the request body is larger than {_SMALL_BODY // 1024} KiB"
        )
        headers = dict(scope.get("headers") or [])
        try:
            declared = int(headers.get(b"content-length", b"-1"))
        except ValueError:
            declared = -1
        if declared > limit:
            await _error_response(413, "too_large", what, {"Connection": "close"})(scope, receive, send)
            return
        state = {"received": 0, "exceeded": False, "started": False}

        async def limited_receive() -> Message:
            msg = await receive()
            if msg["type"] == "http.request":
                state["received"] += len(msg.get("body", b""))
                if state["received"] > limit:
                    state["exceeded"] = True
                    return {"type": "http.disconnect"}
            return msg

        async def guarded_send(msg: Message) -> None:
            if state["exceeded"]:
                if msg["type"] == "http.response.start" and not state["started"]:
                    state["started"] = True
                    resp = _error_response(413, "too_large", what, {"Connection": "close"})
                    await send({"type": "http.response.start", "status": 413, "headers": resp.raw_headers})
                    await send({"type": "http.response.body", "body": resp.body})
                return
            if msg["type"] == "http.response.start":
                state["started"] = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not state["exceeded"]:
                raise
            if not state["started"]:
                resp = _error_response(413, "too_large", what, {"Connection": "close"})
                await send({"type": "http.response.start", "status": 413, "headers": resp.raw_headers})
                await send({"type": "http.response.body", "body": resp.body})


def _viewer_file(name: str) -> bytes:
    return resources.files("organsam.server").joinpath("viewer", name).read_bytes()


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _colors(label_table: dict[int, str]) -> dict[str, tuple[int, int, int]]:
    return {oid: PALETTE[(v - 1) % len(PALETTE)] for v, oid in label_table.items()}


def _resolve_one_organ(text: str) -> str:
    vocab = load_vocabulary()
    if text in vocab:
        return text
    ids = parse_prompt(text)
    if len(ids) != 1:
        raise ApiError(
            422,
            "ambiguous_organ",
            f"a correction applies to one organ; {text!r} names "
            f"{len(ids)} ({', '.join(ids)}): choose one of them",
        )
    return ids[0]


def create_app(settings: ServerSettings | None = None, predictor_factory: Any = None) -> FastAPI:
    """Build the web app.

    Args:
        settings: limits and options (default :class:`ServerSettings`).
        predictor_factory: callable building the single model (default: LiteMedSAM core + atlas prior).

    Returns:
        The FastAPI app; its ``state`` holds ``settings``, ``store`` (:class:`SessionStore`) and ``queue``
        (:class:`JobQueue`). Sessions and the worker start with the app's lifespan and are removed on
        shutdown.
    """
    settings = settings or ServerSettings()
    store = SessionStore(settings)
    queue = JobQueue(settings, predictor_factory)
    store.on_close.append(queue.cancel_session)
    render_gate = threading.BoundedSemaphore(settings.render_threads)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        store.start()
        queue.start()
        logger.info("organsam serve: sessions in %s", store.root)
        try:
            yield
        finally:
            queue.stop()
            store.close()

    app = FastAPI(
        title="organsam",
        version=__version__,
        description="Text-prompted organ segmentation of CT/MR volumes. Upload a volume (NIfTI, npz or a "
        "zipped DICOM series) to open a session, start a segmentation with a free-text prompt, poll the "
        "job, then fetch slices/overlays, the organ table and the downloads. Errors are JSON "
        '`{"error": code, "detail": message}`.',
        lifespan=lifespan,
        responses=_ERRORS,
    )
    app.state.settings, app.state.store, app.state.queue = settings, store, queue
    app.add_middleware(BodyLimitMiddleware, max_upload=settings.max_upload_bytes)

    # ------------------------------------------------------------------ errors
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError) -> JSONResponse:
        return _error_response(e.status, e.code, e.detail, e.headers, **e.extra)

    @app.exception_handler(UnknownOrganError)
    async def _unknown_organ(_: Request, e: UnknownOrganError) -> JSONResponse:
        return _error_response(422, "unknown_organ", str(e), suggestions=e.suggestions, term=e.term)

    @app.exception_handler(PromptError)
    async def _prompt_error(_: Request, e: PromptError) -> JSONResponse:
        return _error_response(422, "bad_prompt", str(e))

    @app.exception_handler(UploadError)
    async def _upload_error(_: Request, e: UploadError) -> JSONResponse:
        return _error_response(e.status, e.code, str(e))

    @app.exception_handler(SessionNotFoundError)
    async def _no_session(_: Request, e: SessionNotFoundError) -> JSONResponse:
        return _error_response(
            404,
            "no_such_session",
            "no session with this id (it may have expired or been deleted); upload the volume again",
        )

    @app.exception_handler(ServerBusyError)
    async def _busy(_: Request, e: ServerBusyError) -> JSONResponse:
        status = 429 if isinstance(e, QueueFullError) else 503
        return _error_response(
            status,
            "queue_full" if status == 429 else "server_busy",
            str(e),
            {"Retry-After": str(e.retry_after_s)},
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        parts = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{loc}: {err.get('msg')}")
        return _error_response(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return _error_response(e.status_code, code, str(e.detail), getattr(e, "headers", None))

    # ------------------------------------------------------------------ helpers
    def job_out(job: Job) -> JobOut:
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

    def session_out(s: Session) -> SessionOut:
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
            views=view_info(v.shape, v.spacing),  # type: ignore[arg-type]
            prompt=s.prompt,
            organs=s.organ_ids,
            job=job_out(s.job) if s.job is not None else None,
            has_result=s.result is not None,
            result_version=s.result_version,
            corrections=len(s.corrections),
            expires_in_s=round(s.expires_in(settings.session_ttl_s), 1),
        )

    # ------------------------------------------------------------------ viewer
    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return Response(
            _viewer_file("index.html"),
            media_type="text/html; charset=utf-8",
            headers={
                "Content-Security-Policy": _CSP,
                "Cache-Control": "no-cache",
                "X-Content-Type-Options": "nosniff",
            },
        )

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in _STATIC:
            raise ApiError(404, "not_found", f"no static file {safe_display_name(name)!r}")
        return Response(
            _viewer_file(name),
            media_type=_STATIC[name],
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    # ------------------------------------------------------------------ general
    @app.get("/api/health", response_model=HealthOut, tags=["server"])
    def health() -> HealthOut:
        """Liveness and load: sessions, queued jobs, whether the model is loaded."""
        running = queue.running
        return HealthOut(
            status="ok",
            model_loaded=queue.model_loaded,
            sessions=len(store),
            max_sessions=settings.max_sessions,
            queued_jobs=queue.queued,
            running_job=running.id if running is not None else None,
        )

    @app.get("/api/organs", response_model=list[OrganOut], tags=["vocabulary"])
    def organs() -> list[OrganOut]:
        """Every organ of the vocabulary (id and name)."""
        return [OrganOut(id=o.id, name=o.name) for o in load_vocabulary()]

    @app.post("/api/parse", response_model=ParseOut, tags=["vocabulary"])
    def parse(body: ParseIn) -> ParseOut:
        """Resolve a free-text prompt to organs; unknown words give 422 with the parser's suggestions."""
        vocab = load_vocabulary()
        return ParseOut(organs=[OrganOut(id=i, name=vocab[i].name) for i in parse_prompt(body.text)])

    # ------------------------------------------------------------------ sessions
    @app.post("/api/sessions", response_model=SessionOut, status_code=201, tags=["sessions"])
    def create_session(
        file: Annotated[
            UploadFile,
            File(
                description="a NIfTI (.nii/.nii.gz), a challenge .npz, or a zip of one "
                "DICOM series; the type is checked by content"
            ),
        ],
        modality: Annotated[str | None, Form(description="CT, MR or auto (default: from the file)")] = None,
    ) -> SessionOut:
        """Upload a volume and open a session."""
        name = safe_display_name(file.filename)
        s = store.create(file.file, name, modality)
        return session_out(s)

    @app.get("/api/sessions/{sid}", response_model=SessionOut, tags=["sessions"])
    def get_session(sid: _SESSION_ID) -> SessionOut:
        """A session: volume geometry, window presets, last prompt, job and result state."""
        return session_out(store.get(sid))

    @app.delete("/api/sessions/{sid}", status_code=204, tags=["sessions"])
    def delete_session(sid: _SESSION_ID) -> Response:
        """Delete a session and its files (its job is cancelled)."""
        if not store.delete(sid):
            raise SessionNotFoundError(sid)
        return Response(status_code=204)

    # ------------------------------------------------------------------ segmentation
    @app.post("/api/sessions/{sid}/segment", response_model=JobOut, status_code=202, tags=["segmentation"])
    def start_segmentation(sid: _SESSION_ID, body: SegmentIn) -> JobOut:
        """Queue a segmentation from a free-text prompt (omit ``prompt`` to re-run with the corrections)."""
        s = store.get(sid)
        text = body.prompt if body.prompt is not None else s.prompt
        if not text or not text.strip():
            raise ApiError(
                422, "no_prompt", 'say which organs to segment, e.g. {"prompt": "liver and both kidneys"}'
            )
        ids = parse_prompt(text)
        if not ids:
            raise ApiError(422, "no_organ", f"the prompt {text!r} names no organ")
        if s.busy:
            raise ApiError(
                409,
                "job_active",
                f"this session already has a {s.job.state} job ({s.job.id}); "
                f"wait for it (GET /api/jobs/{s.job.id})",
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
        return job_out(job)

    @app.get("/api/jobs/{job_id}", response_model=JobOut, tags=["segmentation"])
    def get_job(job_id: _JOB_ID) -> JobOut:
        """Poll a job: state, stage, progress (0..1), slices done, queue position, error."""
        job = queue.get(job_id)
        if job is None:
            raise ApiError(
                404, "no_such_job", "no job with this id (finished jobs are forgotten after a while)"
            )
        if job.session is not None:
            job.session.touch()
        return job_out(job)

    @app.get("/api/sessions/{sid}/result", response_model=ResultOut, tags=["segmentation"])
    def get_result(sid: _SESSION_ID) -> ResultOut:
        """The organ table (label, colour, volume in mL, confidence) and the full report."""
        s = store.get(sid)
        res, version = s.result, s.result_version
        if res is None:
            raise ApiError(404, "no_result", "no segmentation yet: POST /api/sessions/{id}/segment first")
        colors = _colors(res.label_table)
        rows = []
        for label, oid in sorted(res.label_table.items()):
            r = res.report["organs"][oid]
            rows.append(
                OrganRow(
                    id=oid,
                    name=r["name"],
                    label=label,
                    color=_hex(colors[oid]),
                    present=r["present"],
                    volume_ml=r["volume_ml"],
                    confidence=r["confidence"],
                    mean_hu=r.get("mean_hu"),
                )
            )
        return ResultOut(version=version, organs=rows, report=res.report)

    # ------------------------------------------------------------------ images
    def _index(s: Session, view: str, index: int) -> None:
        n = view_info(s.volume.shape, s.volume.spacing)[view]["count"]
        if not 0 <= index < n:
            raise ApiError(422, "bad_slice", f"{view} slice {index} is out of range 0..{int(n) - 1}")

    @app.get(
        "/api/sessions/{sid}/views/{view}/{index}/image.png",
        tags=["images"],
        responses={200: {"content": {"image/png": {}}}},
        response_class=Response,
    )
    def slice_image(
        sid: _SESSION_ID,
        view: _VIEW,
        index: int,
        window: Annotated[str, Query(max_length=20, description="auto, abdomen, bone, lung or raw")] = "auto",
    ) -> Response:
        """One slice as a grey PNG in display orientation (axial: anterior up, patient right on the left)."""
        s = store.get(sid)
        _index(s, view, index)
        with render_gate:
            try:
                img = s.display_slice(view, index, window)
            except ValueError as e:
                raise ApiError(422, "bad_window", str(e)) from e
            png = png_bytes(img)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=600"})

    @app.get(
        "/api/sessions/{sid}/views/{view}/{index}/overlay.png",
        tags=["images"],
        responses={200: {"content": {"image/png": {}}}},
        response_class=Response,
    )
    def slice_overlay(
        sid: _SESSION_ID,
        view: _VIEW,
        index: int,
        organs: Annotated[
            str | None, Query(max_length=2000, description="comma-separated organ ids to show (default: all)")
        ] = None,
    ) -> Response:
        """The coloured organ overlay of a slice as an RGBA PNG of the same size (transparent before a
        result)."""
        s = store.get(sid)
        _index(s, view, index)
        res, version = s.result, s.result_version
        masks = res.masks if res is not None else {}
        visible = None
        if organs is not None:
            visible = [o for o in organs.split(",") if o]
            unknown = [o for o in visible if o not in masks]
            if unknown and res is not None:
                raise ApiError(
                    422,
                    "bad_organ",
                    f"not in this result: {', '.join(unknown[:5])}; the result has {', '.join(masks)}",
                )
        with render_gate:
            rgba = overlay_rgba(
                masks,
                _colors(res.label_table) if res is not None else {},
                s.volume.shape,
                view,
                index,
                visible,
            )
            png = png_bytes(rgba)
        return Response(
            png,
            media_type="image/png",
            headers={"Cache-Control": "no-cache", "X-Result-Version": str(version)},
        )

    # ------------------------------------------------------------------ corrections
    @app.get("/api/sessions/{sid}/corrections", response_model=list[CorrectionOut], tags=["corrections"])
    def list_corrections(sid: _SESSION_ID) -> list[CorrectionOut]:
        """The correction points/boxes of the session (canonical voxel coordinates)."""
        s = store.get(sid)
        return [CorrectionOut(**c.as_dict()) for c in s.corrections]

    @app.post(
        "/api/sessions/{sid}/corrections",
        response_model=list[CorrectionOut],
        status_code=201,
        tags=["corrections"],
    )
    def add_correction(sid: _SESSION_ID, body: CorrectionIn) -> list[CorrectionOut]:
        """Add a point (any view) or a box (axial view) in slice-image pixels; applied by the next
        segment run."""
        s = store.get(sid)
        organ = _resolve_one_organ(body.organ)
        _index(s, body.view, body.index)
        info = view_info(s.volume.shape, s.volume.spacing)[body.view]
        W, H = info["width"], info["height"]
        if body.kind == "point":
            if body.x is None or body.y is None:
                raise ApiError(
                    422, "bad_correction", "a point needs x (column) and y (row) in the slice image"
                )
            if not (0 <= body.x < W and 0 <= body.y < H):
                raise ApiError(
                    422,
                    "bad_correction",
                    f"point ({body.x}, {body.y}) is outside the {body.view} image of {W}x{H} pixels",
                )
            z, y, x = display_to_voxel(s.volume.shape, body.view, body.index, body.x, body.y)
            corr = Correction(
                organ=organ, kind="point", z=int(round(z)), y=float(y), x=float(x), label=body.label
            )
        else:
            if body.view != "axial":
                raise ApiError(
                    422,
                    "bad_correction",
                    "boxes are drawn on the axial view (the model segments axial "
                    "slices); place a point on other views",
                )
            if body.box is None:
                raise ApiError(422, "bad_correction", "a box needs box = [col0, row0, col1, row1]")
            c0, r0, c1, r1 = body.box
            c0, c1 = sorted((max(0.0, min(c0, W - 1)), max(0.0, min(c1, W - 1))))
            r0, r1 = sorted((max(0.0, min(r0, H - 1)), max(0.0, min(r1, H - 1))))
            if c1 - c0 < 2 or r1 - r0 < 2:
                raise ApiError(
                    422,
                    "bad_correction",
                    "the box is too small (at least 2 pixels each way inside the image)",
                )
            Y = s.volume.shape[1]
            corr = Correction(organ=organ, kind="box", z=body.index, box=(c0, Y - 1 - r1, c1, Y - 1 - r0))
        with s.lock:
            if len(s.corrections) >= 500:
                raise ApiError(
                    422, "too_many_corrections", "at most 500 corrections per session; clear them first"
                )
            s.corrections.append(corr)
            return [CorrectionOut(**c.as_dict()) for c in s.corrections]

    @app.delete("/api/sessions/{sid}/corrections", status_code=204, tags=["corrections"])
    def clear_corrections(sid: _SESSION_ID) -> Response:
        """Forget every correction (the next run uses the text prompt alone)."""
        s = store.get(sid)
        with s.lock:
            s.corrections = []
        return Response(status_code=204)

    # ------------------------------------------------------------------ downloads
    _downloads = {
        "labelmap": ("segmentation.nii.gz", "application/gzip"),
        "masks": ("masks.zip", "application/zip"),
        "report": ("report.json", "application/json"),
        "dicom_seg": ("segmentation.dcm", "application/dicom"),
    }

    @app.get(
        "/api/sessions/{sid}/download/{what}",
        tags=["downloads"],
        response_class=FileResponse,
        responses={200: {"content": {"application/octet-stream": {}}}},
    )
    def download(
        sid: _SESSION_ID,
        what: Annotated[
            str,
            Path(
                pattern="^(labelmap|masks|report|dicom_seg)$",
                description="labelmap (NIfTI), masks (zip of NIfTI per organ), report "
                "(JSON) or dicom_seg (DICOM input only)",
            ),
        ],
    ) -> FileResponse:
        """The label map NIfTI, the per-organ masks (zip) or the report JSON of the last result, on the
        input's grid and orientation."""
        s = store.get(sid)
        key = "masks_zip" if what == "masks" else what
        with s.lock:
            path = s.files.get(key)
        if s.result is None or path is None:
            raise ApiError(
                404, "no_result", "no segmentation yet" if s.result is None else f"no {what} for this input"
            )
        fname, media = _downloads[what]
        stem = s.filename.split(".")[0] or "organsam"
        return FileResponse(path, media_type=media, filename=f"{stem}_{fname}")

    return app
