"""The batch driver: discover the cases, skip the finished ones, run the rest on a backend, install each case's
outputs in one step and record it."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from organsam.inference.batch.backends import make_backend
from organsam.inference.batch.cases import MANIFEST_NAME, BatchCase, BatchInputError, discover_cases, unique_cases
from organsam.inference.batch.records import (
    BatchManifest,
    BatchSummary,
    CaseStatus,
    hash_outputs,
    input_sha256,
    now_iso,
)
from organsam.inference.batch.worker import BatchSettings, CaseJob, CaseOutcome, error_text
from organsam.inference.options import SegmentOptions, resolve_organs
from organsam.inference.predictor_factory import DEFAULT_DESIGN, resolve_device
from organsam.io.files import file_sha256
from organsam.io.output_folder import write_output_folder

logger = logging.getLogger(__name__)


_LOCK_NAME = ".batch.lock"


# --------------------------------------------------------------------------------------------- driver
class _OutdirLock:
    """An exclusive ``flock`` on ``OUTDIR/.batch.lock`` (released by the OS if the process dies)."""

    def __init__(self, outdir: Path) -> None:
        self.path = outdir / _LOCK_NAME
        self._fh: Any = None

    def __enter__(self) -> _OutdirLock:
        self._fh = open(self.path, "a+")  # noqa: SIM115 - held for the whole run
        try:
            import fcntl
        except ImportError:  # not POSIX: no locking
            return self
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            self._fh.close()
            raise BatchInputError(
                f"{self.path.parent}: another organsam batch run is writing to this "
                f"folder; wait for it to finish or choose another output folder"
            ) from e
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()


def install_files(files: dict[str, bytes], case_dir: Path, inputs: Sequence[str | os.PathLike[str]] = ()) -> None:
    """Replace ``case_dir`` by the given files (relative path -> bytes) in one step
    (:func:`organsam.io.output_folder.write_output_folder`: built beside it, refused when ``case_dir`` holds files
    organsam did not write or holds an input)."""

    def build(stage: Path) -> dict[str, Path]:
        for rel, data in files.items():
            if ".." in Path(rel).parts or Path(rel).is_absolute():
                raise ValueError(f"refusing to write {rel!r} outside {case_dir}")
            target = stage / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return {}

    write_output_folder(case_dir, build, inputs)


def run_batch(
    source: str | os.PathLike[str] | Sequence[BatchCase],
    organs: str | Sequence[str] | None,
    output: str | os.PathLike[str],
    *,
    all_organs: bool = False,
    workers: int | None = None,
    ray: str | None = None,
    resume: bool = True,
    design: str = DEFAULT_DESIGN,
    checkpoint: str | None = None,
    device: str = "auto",
    fast: bool = False,
    modality: str | None = None,
    runtime: str = "auto",
    progress: bool = True,
    on_case: Callable[[CaseStatus], None] | None = None,
) -> BatchSummary:
    """Segment every volume of a batch into ``output/<case_id>/``; resumable, failures isolated.

    Args:
        source: folder or manifest (see :func:`discover_cases`), or a list of :class:`BatchCase`.
        organs: organ prompt, e.g. ``"liver, spleen"`` (or ``all_organs=True``).
        output: output folder (created); holds ``batch_manifest.json`` and one folder per case.
        all_organs: segment the default organ set.
        workers: local: number of processes (1 or None: in this process; N > 1: a process pool with
            ``cores // N`` torch threads each). On Ray: number of actors (None: one per GPU of the cluster
            with ``device="cuda"``, else one per CPU).
        ray: Ray cluster address (``"auto"``: a running cluster found by Ray; ``"local"``: start a private
            local one; or e.g. ``"ray://head:10001"``); needs ``pip install 'organsam[ray]'``. If Ray is
            already initialised in this process, that session is used.
        resume: skip cases finished earlier with unchanged input, prompt, settings and outputs (see
            :meth:`BatchManifest.is_current`); False recomputes every case.
        design, checkpoint, device, fast, modality, runtime: as in :func:`organsam.inference.segment.segment`.
        progress: a progress bar over volumes (stderr).
        on_case: called with each case's status as soon as it is known.

    Returns:
        The :class:`BatchSummary` (also recorded in ``output/batch_manifest.json``).

    Raises:
        FileNotFoundError, BatchInputError: bad input or output folder; ValueError: unknown organ or
        design. Failures of single volumes are never raised: they are in the summary.
    """
    t_start = time.perf_counter()
    outdir = Path(output).expanduser()
    if outdir.exists() and not outdir.is_dir():
        raise BatchInputError(f"{outdir}: output exists and is not a folder; give a folder for the results")
    if isinstance(source, (str, os.PathLike)):
        cases = discover_cases(source, exclude=outdir)
    else:
        cases = list(source)
        if not cases:
            raise BatchInputError("the batch is empty: no cases given")
        unique_cases(cases, Path("<cases>"))
    request = resolve_organs(organs, all_organs)
    SegmentOptions(
        design=design, checkpoint=checkpoint, device=device, fast=bool(fast), modality=modality, runtime=runtime
    ).check()
    device = resolve_device(device)  # workers and their count follow the device actually used
    ck_sha = None if checkpoint is None else file_sha256(Path(checkpoint))
    if ray is not None:
        from organsam.inference.batch.ray_backend import require_ray

        require_ray()  # fail before creating anything
    ck_path = None if checkpoint is None else str(Path(checkpoint).resolve())
    settings = BatchSettings(
        request.organ_ids, design, ck_path, ck_sha, device, bool(fast), modality, request.prompt, runtime
    )
    outdir.mkdir(parents=True, exist_ok=True)
    with _OutdirLock(outdir):
        return _run_locked(cases, settings, outdir, workers, ray, resume, progress, on_case, t_start)


def _run_locked(
    cases: list[BatchCase],
    settings: BatchSettings,
    outdir: Path,
    workers: int | None,
    ray: str | None,
    resume: bool,
    progress: bool,
    on_case: Callable[[CaseStatus], None] | None,
    t_start: float,
) -> BatchSummary:
    from tqdm.auto import tqdm

    manifest = BatchManifest(outdir / MANIFEST_NAME)
    statuses: dict[str, CaseStatus] = {}
    hashes: dict[str, str] = {}
    bar = tqdm(total=len(cases), desc="volumes", unit="vol", disable=not progress, file=sys.stderr)

    def finish(status: CaseStatus) -> None:
        statuses[status.case_id] = status
        bar.update(1)
        nfail = sum(s.state == "failed" for s in statuses.values())
        if nfail:
            bar.set_postfix(failed=nfail)
        if on_case is not None:
            on_case(status)

    def record(case: BatchCase, outcome: CaseOutcome, outputs: dict[str, str] | None) -> None:
        prev = manifest.cases.get(case.case_id, {})
        same_input = prev.get("input_sha256") == hashes.get(case.case_id)
        attempts = int(prev.get("attempts", 0)) + 1 if same_input else 1
        manifest.record(
            case.case_id,
            {
                "input": str(case.path),
                "input_sha256": hashes.get(case.case_id),
                "prompt": settings.prompt,
                "settings": settings.fingerprint(),
                "status": "done" if outcome.ok else "failed",
                "error": outcome.error,
                "outputs": outputs or {},
                "timings_s": outcome.timings,
                "worker": outcome.worker,
                "attempts": attempts,
                "finished_at": now_iso(),
            },
        )

    def pending() -> Iterator[CaseJob]:
        """Cases to run, hashing each input just before deciding (skipped and unreadable ones reported)."""
        for case in cases:
            case_dir = outdir / case.case_id
            try:
                hashes[case.case_id] = input_sha256(case.path)
            except OSError as e:
                msg = error_text(e) if isinstance(e, FileNotFoundError) else f"{case.path}: cannot be read ({e})"
                outcome = CaseOutcome(False, msg, worker="driver")
                record(case, outcome, None)
                finish(CaseStatus(case.case_id, "failed", str(case.path), msg))
                continue
            if resume:
                ok, why = manifest.is_current(case.case_id, hashes[case.case_id], settings, case_dir)
                if ok:
                    finish(CaseStatus(case.case_id, "skipped", str(case.path)))
                    continue
                logger.info("%s: %s; segmenting", case.case_id, why)
            yield CaseJob(case.case_id, str(case.path), str(case_dir))

    by_id = {c.case_id: c for c in cases}
    backend, kind = make_backend(settings, workers, ray)
    in_flight = 0
    try:
        jobs = pending()
        exhausted = False
        while True:
            while not exhausted and in_flight < backend.slots:
                job = next(jobs, None)
                if job is None:
                    exhausted = True
                    break
                backend.submit(job)
                in_flight += 1
            if in_flight == 0:
                break
            job, outcome = backend.wait_one()
            in_flight -= 1
            case = by_id[job.case_id]
            case_dir = Path(job.case_dir)
            outputs = None
            if outcome.ok:
                try:
                    if outcome.files is not None:
                        install_files(outcome.files, case_dir, [case.path])
                    outputs = hash_outputs(case_dir)
                except (OSError, ValueError) as e:
                    outcome = CaseOutcome(
                        False, f"{case_dir}: outputs could not be written ({e})", outcome.timings, outcome.worker
                    )
            outcome.files = None
            record(case, outcome, outputs)
            finish(
                CaseStatus(
                    case.case_id,
                    "done" if outcome.ok else "failed",
                    str(case.path),
                    outcome.error or "",
                    float(outcome.timings.get("wall", 0.0)),
                )
            )
    finally:
        backend.close()
        bar.close()
    slots = backend.slots
    return BatchSummary(
        outdir, manifest.path, [statuses[c.case_id] for c in cases], time.perf_counter() - t_start, kind, slots
    )
