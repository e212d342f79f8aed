"""The ``organsam serve`` FastAPI app: JSON API (documented on ``/docs``) and the single-page viewer on ``/``.

    from organsam.server import create_app, ServerSettings
    app = create_app(ServerSettings(max_upload_mb=100))

Safety: uploads are capped (``max_upload_mb``) while they stream in, their type is checked by content,
files are stored under server-made names in a per-session temp folder (no client path ever reaches the
file system), sessions expire, the single model is used by one worker thread fed by a bounded queue, and
every bad request gets a JSON error ``{"error": code, "detail": message}`` with a 4xx status.

The routes live in :mod:`organsam.server.routes` (one router per resource); they reach the session store, the
job queue and the settings through :mod:`organsam.server.deps`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from organsam import __version__
from organsam.server.errors import ERROR_RESPONSES, ApiError, install_error_handlers
from organsam.server.jobs import JobQueue
from organsam.server.middleware import LOOPBACK_NAMES, BodyLimitMiddleware, HostCheckMiddleware
from organsam.server.routes import ROUTERS
from organsam.server.sessions import SessionStore
from organsam.server.settings import ServerSettings

logger = logging.getLogger(__name__)

__all__ = ["ApiError", "create_app"]


def create_app(settings: ServerSettings | None = None, predictor_factory: Any = None) -> FastAPI:
    """Build the web app.

    Args:
        settings: limits and options (default :class:`ServerSettings`).
        predictor_factory: callable building the single model (default: LiteMedSAM core + atlas prior).

    Returns:
        The FastAPI app; its ``state`` holds ``settings``, ``store`` (:class:`SessionStore`), ``queue``
        (:class:`JobQueue`) and ``render_gate`` (the semaphore bounding concurrent image renders). Sessions and
        the worker start with the app's lifespan and are removed on shutdown.
    """
    settings = settings or ServerSettings()
    store = SessionStore(settings)
    queue = JobQueue(settings, predictor_factory)
    store.on_close.append(queue.cancel_session)

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
        responses=ERROR_RESPONSES,
    )
    app.state.settings, app.state.store, app.state.queue = settings, store, queue
    app.state.render_gate = threading.BoundedSemaphore(settings.render_threads)
    app.add_middleware(BodyLimitMiddleware, max_upload=settings.max_upload_bytes)
    if settings.is_loopback or settings.allowed_hosts:
        app.add_middleware(HostCheckMiddleware, allowed=(*LOOPBACK_NAMES, settings.host, *settings.allowed_hosts))
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
