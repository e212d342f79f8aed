"""One model, one worker thread, a bounded queue of segmentation jobs.

The model (:class:`organsam.inference.VolumePredictor`: LiteMedSAM core placed by the atlas prior) is built
lazily by the worker on the first job and is only ever used from that thread, so requests never run it
concurrently. Jobs report their stage and progress for polling; a full queue refuses new jobs (HTTP 429).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from organsam.server.segmenter import JobCancelledError, run_session, write_downloads
from organsam.server.sessions import Correction, ServerBusyError, Session
from organsam.server.settings import ServerSettings

logger = logging.getLogger(__name__)

__all__ = ["Job", "JobQueue", "QueueFullError", "default_predictor_factory"]

_KEEP_FINISHED = 500


class QueueFullError(ServerBusyError):
    """The job queue is full."""


@dataclass
class Job:
    """A segmentation request of one session (fields mirror :class:`organsam.server.schemas.JobOut`)."""

    id: str
    session_id: str
    organs: list[str]
    corrections: list[Correction]
    state: str = "queued"
    stage: str = "waiting for the model"
    progress: float = 0.0
    slices_done: int = 0
    slices_total: int = 0
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    session: Session | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")


def default_predictor_factory(settings: ServerSettings) -> Callable[[], Any]:
    """A function building the server's single predictor (the shipped pipeline, through the one factory
    :func:`organsam.inference.predictor_factory.build_predictor`; ``fast_prior``: coarser atlas registration)."""

    def build() -> Any:
        from organsam.inference.predictor_factory import build_predictor

        prior: Any = None
        if settings.fast_prior:
            from organsam.priors import AtlasPrior, default_atlas

            prior = AtlasPrior(default_atlas(), fast=True)
        return build_predictor(device=settings.device, progress=False, prior=prior)

    return build


# weights of the stages in the overall progress fraction
_STAGE_SPAN = {
    "locating": (0.0, 0.15),
    "encoding": (0.15, 0.85),
    "segmenting": (0.85, 0.97),
    "post": (0.97, 0.99),
}


class JobQueue:
    """The job queue and its single worker thread.

    Args:
        settings: ``queue_size``, ``encode_chunk``.
        predictor_factory: builds the model on first use (default: :func:`default_predictor_factory`).
    """

    def __init__(self, settings: ServerSettings, predictor_factory: Callable[[], Any] | None = None) -> None:
        self.settings = settings
        self._factory = predictor_factory or default_predictor_factory(settings)
        self._predictor: Any = None
        self._queue: deque[Job] = deque()
        self._jobs: dict[str, Job] = {}
        self._cond = threading.Condition()
        self._running: Job | None = None
        self._stop = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the worker thread."""
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._work, name="organsam-model-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel queued jobs, ask the running one to stop, and join the worker."""
        with self._cond:
            self._stop = True
            while self._queue:
                self._finish(self._queue.popleft(), "cancelled", error="the server is shutting down")
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None

    @property
    def model_loaded(self) -> bool:
        return self._predictor is not None

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> Job | None:
        return self._running

    # ------------------------------------------------------------------ API
    def submit(self, session: Session, organ_ids: list[str], corrections: list[Correction]) -> Job:
        """Queue a segmentation of ``session``.

        Raises:
            QueueFullError: ``queue_size`` jobs are already waiting.
            RuntimeError: the session already has a queued or running job (check ``session.busy`` first).
        """
        with self._cond:
            if self._stop:
                raise QueueFullError("the server is shutting down", retry_after_s=60)
            if session.busy:
                raise RuntimeError(f"session {session.id} already has an active job {session.job.id}")
            if len(self._queue) >= self.settings.queue_size:
                raise QueueFullError(
                    f"the model queue is full ({self.settings.queue_size} jobs waiting); retry in a minute",
                    retry_after_s=max(10, 20 * len(self._queue)),
                )
            job = Job(
                id=uuid.uuid4().hex,
                session_id=session.id,
                organs=list(organ_ids),
                corrections=list(corrections),
                session=session,
            )
            self._jobs[job.id] = job
            self._queue.append(job)
            session.job = job
            self._prune()
            self._cond.notify_all()
        logger.info("job %s queued for session %s: %s", job.id, session.id, ", ".join(organ_ids))
        return job

    def get(self, job_id: str) -> Job | None:
        """The job with that id, or None."""
        return self._jobs.get(job_id)

    def position(self, job: Job) -> int | None:
        """Jobs ahead of a queued job (0 = next), None when it is not queued."""
        with self._cond:
            for i, j in enumerate(self._queue):
                if j is job:
                    return i + (1 if self._running is not None else 0)
        return None

    def cancel_session(self, session: Session) -> None:
        """Cancel the session's job: removed from the queue, or stopped at the next step if running."""
        with self._cond:
            for j in list(self._queue):
                if j.session_id == session.id:
                    self._queue.remove(j)
                    self._finish(j, "cancelled", error="the session was deleted")
            self._cond.notify_all()

    # ------------------------------------------------------------------ worker
    def _prune(self) -> None:
        done = [j for j in self._jobs.values() if not j.active]
        for j in sorted(done, key=lambda j: j.finished or 0)[: max(0, len(done) - _KEEP_FINISHED)]:
            self._jobs.pop(j.id, None)

    def _finish(self, job: Job, state: str, error: str | None = None) -> None:
        job.state = state
        job.error = error
        job.finished = time.time()
        if state == "done":
            job.progress = 1.0
            job.stage = "done"
        else:
            job.stage = state
        job.session = None

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                job = self._queue.popleft()
                self._running = job
            try:
                self._run(job)
            except Exception:  # the worker must survive anything
                logger.exception("job %s crashed", job.id)
                if job.active:
                    self._finish(job, "failed", error="internal error while segmenting (see the server log)")
            finally:
                with self._cond:
                    self._running = None

    def _run(self, job: Job) -> None:
        session = job.session
        if session is None or session.closed:
            self._finish(job, "cancelled", error="the session was deleted")
            return
        job.state, job.started = "running", time.time()

        def progress(stage: str, done: int, total: int) -> None:
            key = (
                "locating"
                if stage.startswith("locating")
                else "encoding"
                if stage.startswith("encoding")
                else "segmenting"
                if stage.startswith("segmenting")
                else "post"
            )
            lo, hi = _STAGE_SPAN[key]
            frac = lo + (hi - lo) * (done / total if total else 0.0)
            job.stage, job.slices_done, job.slices_total = stage, int(done), int(total)
            job.progress = max(job.progress, min(frac, 1.0))
            session.touch()

        def cancelled() -> bool:
            return session.closed or self._stop

        try:
            if self._predictor is None:
                job.stage = "loading the model"
                self._predictor = self._factory()
            result = run_session(
                self._predictor,
                session,
                job.organs,
                job.corrections,
                progress,
                cancelled,
                encode_chunk=self.settings.encode_chunk,
            )
            if cancelled():
                raise JobCancelledError(session.id)
            job.stage = "writing the downloads"
            version = session.result_version + 1
            outdir = session.dir / f"result-{version}"
            files = write_downloads(result, outdir)
            if cancelled():
                raise JobCancelledError(session.id)
            with session.lock:
                old = session.files.get("labelmap")
                session.result, session.files, session.result_version = result, files, version
            if old is not None and old.parent.name.startswith("result-"):
                stale = session.dir / f"result-{version - 2}"  # keep the previous one for downloads in flight
                shutil.rmtree(stale, ignore_errors=True)
            self._finish(job, "done")
            logger.info("job %s done in %.1f s", job.id, time.time() - (job.started or job.created))
        except JobCancelledError:
            self._finish(
                job,
                "cancelled",
                error="the server is shutting down" if self._stop and not session.closed else "the session was deleted",
            )
        except (ValueError, FileNotFoundError, KeyError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            self._finish(job, "failed", error=str(msg).replace(str(session.dir), session.filename))
        finally:
            if session.closed:
                shutil.rmtree(session.dir, ignore_errors=True)
                session.state = session.result = None
