"""Where cases run: in this process, or in a pool of worker processes (Ray: :mod:`.ray_backend`)."""

from __future__ import annotations

import logging
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol

from organsam.inference.batch.worker import (
    BatchSettings,
    CaseJob,
    CaseOutcome,
    CaseRunner,
    available_cores,
    error_text,
    pool_init,
    pool_run,
)

logger = logging.getLogger(__name__)


class Backend(Protocol):
    """Runs :class:`CaseJob` s on ``slots`` workers."""

    slots: int

    def submit(self, job: CaseJob) -> None:
        """Start a job (at most ``slots`` are in flight)."""

    def wait_one(self) -> tuple[CaseJob, CaseOutcome]:
        """Block until one job in flight finishes; return it with its outcome."""

    def close(self) -> None:
        """Release the workers."""


class _InlineBackend:
    """Runs jobs in this process, one at a time."""

    slots = 1

    def __init__(self, settings: BatchSettings) -> None:
        self._runner = CaseRunner(settings)
        self._queue: list[CaseJob] = []

    def submit(self, job: CaseJob) -> None:
        self._queue.append(job)

    def wait_one(self) -> tuple[CaseJob, CaseOutcome]:
        job = self._queue.pop(0)
        return job, self._runner.run(job.input, job.case_dir, job.input)

    def close(self) -> None:
        self._queue.clear()


class _PoolBackend:
    """A spawn-started process pool; each worker builds its predictor once (initializer)."""

    def __init__(self, settings: BatchSettings, workers: int) -> None:
        self.slots = int(workers)
        self.threads = max(1, available_cores() // self.slots)
        self._settings = settings
        self._pool: ProcessPoolExecutor | None = None
        self._futures: dict[Future[CaseOutcome], CaseJob] = {}

    def submit(self, job: CaseJob) -> None:
        if self._pool is None:
            import multiprocessing

            self._pool = ProcessPoolExecutor(
                max_workers=self.slots,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=pool_init,
                initargs=(self._settings, self.threads),
            )
        self._futures[self._pool.submit(pool_run, job)] = job

    def wait_one(self) -> tuple[CaseJob, CaseOutcome]:
        done, _ = wait(list(self._futures), return_when=FIRST_COMPLETED)
        fut = next(iter(done))
        job = self._futures.pop(fut)
        try:
            return job, fut.result()
        except BrokenProcessPool as exc:
            # a worker died (killed, out of memory, crashed in native code, or its initializer failed):
            # every case in flight is reported failed; the next submit starts a fresh pool
            self._drop_pool()
            return job, CaseOutcome(
                False,
                f"a worker process died while this volume was in flight ({exc}); re-run to retry it",
                worker="pool",
            )
        except Exception as exc:
            return job, CaseOutcome(False, error_text(exc), worker="pool")

    def _drop_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def make_backend(settings: BatchSettings, workers: int | None, ray: str | None) -> tuple[Backend, str]:
    if ray is not None:
        from organsam.inference.batch.ray_backend import RayBackend

        return RayBackend(settings, address=ray, actors=workers), "ray"
    n = 1 if workers is None else int(workers)
    if n < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if n == 1:
        return _InlineBackend(settings), "inline"
    return _PoolBackend(settings, n), "pool"
