"""Batch inference: segment many volumes with a local worker pool or on a Ray cluster, resumably.

    summary = run_batch("scans/", "liver, spleen", "results/", workers=2)
    print(summary.format())

Inputs (:func:`discover_cases`): a folder (every NIfTI/NRRD/MetaImage/npz file in it and every DICOM
series subfolder) or a manifest (``.csv``, ``.json`` or ``.txt``) listing paths, optionally with case ids.
Each case's outputs (those of :meth:`organsam.inference.segment.SegmentationResult.save`) go to
``OUTDIR/<case_id>/``. ``OUTDIR/batch_manifest.json`` records every case (input path and SHA-256, organ
prompt, settings, output file hashes, status and error, timings); it is rewritten atomically after each
case. On a re-run a case is skipped when its record says done, its input hash, prompt and settings are
unchanged and every recorded output file exists with its recorded hash; failed cases are retried.

Execution backends: ``workers=1`` runs in this process; ``workers=N`` uses a pool of N processes
(``concurrent.futures.ProcessPoolExecutor``, spawn start), each building its predictor once and using
``cores // N`` torch threads; ``ray=ADDRESS`` streams the volumes to one :class:`SegmentActor` per slot
on a Ray cluster (see :mod:`organsam.inference.ray_backend`). One failing volume is recorded as failed
and does not stop the others.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from organsam.inference.predictor_factory import DEFAULT_DESIGN, build_predictor, check_design
from organsam.vocabulary import load_vocabulary, parse_prompt

logger = logging.getLogger(__name__)

__all__ = [
    "MANIFEST_NAME",
    "VOLUME_SUFFIXES",
    "BatchCase",
    "BatchInputError",
    "BatchManifest",
    "BatchSettings",
    "BatchSummary",
    "CaseJob",
    "CaseOutcome",
    "CaseRunner",
    "CaseStatus",
    "available_cores",
    "discover_cases",
    "hash_outputs",
    "install_files",
    "input_sha256",
    "is_batch_input",
    "run_batch",
]

#: Name of the per-run record inside the output folder.
MANIFEST_NAME = "batch_manifest.json"
#: File endings read as one volume each when a folder is given.
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".npz")
MANIFEST_SUFFIXES = (".csv", ".json", ".txt")
_LOCK_NAME = ".batch.lock"
_STAGING_PREFIXES = (".staging-", ".old-")
_MANIFEST_FORMAT = "organsam-batch-manifest"
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


class BatchInputError(ValueError):
    """The batch input (folder or manifest) or the output folder cannot be used as given."""


# --------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class BatchCase:
    """One volume of a batch.

    Attributes:
        case_id: folder name of its outputs under the output folder (letters, digits, ``._-``).
        path: the input file or DICOM series folder.
    """

    case_id: str
    path: Path


def _strip_suffix(name: str) -> str:
    low = name.lower()
    for suf in VOLUME_SUFFIXES:
        if low.endswith(suf):
            return name[: -len(suf)]
    return name


def _safe_case_id(raw: str) -> str:
    cid = _SAFE_ID.sub("_", raw.strip()).strip("_")
    return cid.lstrip(".") or "case"


def _check_case_id(cid: str, where: str) -> str:
    if not cid or cid != _safe_case_id(cid) or cid == MANIFEST_NAME:
        raise BatchInputError(f"{where}: case id {cid!r} is not usable as a folder name; use letters, "
                              f"digits, '.', '_' and '-' only (e.g. {_safe_case_id(cid)!r})")
    return cid


def _is_dicom_series_folder(path: Path) -> bool:
    from organsam.io.dicom import DicomReader

    return path.is_dir() and DicomReader().can_read(path)


def is_batch_input(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a batch (a folder of volumes or a manifest) rather than one volume.

    A folder that itself holds a DICOM series is one volume; any other folder is a batch, and so is a
    ``.csv``, ``.json`` or ``.txt`` file.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        return not _is_dicom_series_folder(p)
    return p.name.lower().endswith(MANIFEST_SUFFIXES)


def _unique(cases: list[BatchCase], source: Path) -> list[BatchCase]:
    seen: dict[str, Path] = {}
    for c in cases:
        if c.case_id in seen:
            raise BatchInputError(
                f"{source}: two inputs get the case id {c.case_id!r} ({seen[c.case_id]} and {c.path}); "
                f"rename one, or list them in a manifest (.csv with columns case_id,path) with distinct ids")
        seen[c.case_id] = c.path
    return cases


def _discover_folder(folder: Path, exclude: Path | None) -> list[BatchCase]:
    cases: list[BatchCase] = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or (exclude is not None and entry.resolve() == exclude):
            continue
        if entry.is_file() and entry.name.lower().endswith(VOLUME_SUFFIXES):
            cases.append(BatchCase(_safe_case_id(_strip_suffix(entry.name)), entry))
        elif entry.is_dir() and _is_dicom_series_folder(entry):
            cases.append(BatchCase(_safe_case_id(entry.name), entry))
        else:
            logger.debug("%s: not a volume file or DICOM series folder; ignored", entry)
    return cases


def _manifest_rows(path: Path) -> list[tuple[str | None, str]]:
    """(case_id or None, path text) rows of a manifest file."""
    text = path.read_text(encoding="utf-8-sig")
    low = path.name.lower()
    rows: list[tuple[str | None, str]] = []
    if low.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise BatchInputError(f"{path}: not valid JSON ({e}); fix the file") from e
        if isinstance(data, dict) and isinstance(data.get("cases"), list):
            data = data["cases"]
        if isinstance(data, dict):
            rows = [(str(k), str(v)) for k, v in data.items()]
        elif isinstance(data, list):
            for i, item in enumerate(data):
                if isinstance(item, str):
                    rows.append((None, item))
                elif isinstance(item, dict) and isinstance(item.get("path"), str):
                    cid = item.get("case_id", item.get("id"))
                    rows.append((None if cid is None else str(cid), item["path"]))
                else:
                    raise BatchInputError(f"{path}: entry {i} is {item!r}; expected a path string or an "
                                          f"object with 'path' (and optional 'case_id')")
        else:
            raise BatchInputError(f"{path}: expected a list of paths, a list of {{'path', 'case_id'}} "
                                  f"objects, {{'cases': [...]}} or a case_id -> path object")
    elif low.endswith(".csv"):
        table = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
        if table and any(c.strip().lower() == "path" for c in table[0]):
            header = [c.strip().lower() for c in table[0]]
            ip = header.index("path")
            ic = next((header.index(k) for k in ("case_id", "id", "case") if k in header), None)
            for r in table[1:]:
                rows.append((r[ic].strip() if ic is not None and ic < len(r) and r[ic].strip() else None,
                             r[ip].strip() if ip < len(r) else ""))
        else:
            for r in table:
                rows.append((None, r[0].strip()) if len(r) == 1 else (r[0].strip(), r[1].strip()))
    else:  # .txt: one path per line, or "case_id<TAB>path"; '#' starts a comment line
        for line in text.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if "\t" in line:
                cid, p = line.split("\t", 1)
                rows.append((cid.strip(), p.strip()))
            else:
                rows.append((None, line.strip()))
    for cid, p in rows:
        if not p:
            raise BatchInputError(f"{path}: a row has an empty path (case id {cid!r}); fix the manifest")
    return rows


def discover_cases(source: str | os.PathLike[str], exclude: str | os.PathLike[str] | None = None
                   ) -> list[BatchCase]:
    """List the volumes of a batch.

    Args:
        source: a folder (its ``*.nii``, ``*.nii.gz``, ``*.nrrd``, ``*.nhdr``, ``*.mha``, ``*.mhd``,
            ``*.npz`` files and its DICOM series subfolders, in name order; case id = file name without
            its ending, or the subfolder's name) or a manifest: ``.txt`` (one path per line, or
            ``case_id<TAB>path``), ``.csv`` (a ``path`` column and optional ``case_id``; or rows ``path``
            / ``case_id,path`` without header) or ``.json`` (list of paths, list of ``{"path",
            "case_id"}``, ``{"cases": [...]}`` or ``{case_id: path}``). Relative paths in a manifest are
            relative to the manifest's folder. Listed paths are not checked here: a missing one fails
            as its own case.
        exclude: a folder inside ``source`` to leave out (the output folder).

    Returns:
        The cases, in order.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        BatchInputError: nothing found, an unreadable manifest, bad or duplicate case ids.
    """
    src = Path(source).expanduser()
    if not src.exists():
        raise FileNotFoundError(f"{src}: batch input does not exist; give a folder of volumes or a "
                                f".csv/.json/.txt manifest")
    excl = Path(exclude).expanduser().resolve() if exclude is not None else None
    if src.is_dir():
        cases = _discover_folder(src, excl)
        if not cases:
            raise BatchInputError(f"{src}: no volumes found (looked for {', '.join(VOLUME_SUFFIXES)} files "
                                  f"and DICOM series subfolders); point -i at the folder holding them or "
                                  f"list them in a manifest")
        return _unique(cases, src)
    if not src.name.lower().endswith(MANIFEST_SUFFIXES):
        raise BatchInputError(f"{src}: not a folder or a manifest (.csv, .json, .txt)")
    rows: list[tuple[str | None, Path]] = []
    for cid, p in _manifest_rows(src):
        path = Path(p).expanduser()
        rows.append((cid, path if path.is_absolute() else src.parent / path))
    if not rows:
        raise BatchInputError(f"{src}: the manifest lists no volumes")
    # ids from file names; where two coincide (e.g. case1/image.nii.gz, case2/image.nii.gz) the parent
    # folder's name is put in front
    derived = [_safe_case_id(_strip_suffix(p.name)) for _, p in rows]
    clash = {d for d in derived if derived.count(d) > 1}
    cases = []
    for (cid, path), d in zip(rows, derived):
        if cid is None:
            cid = _safe_case_id(f"{path.parent.name}_{d}") if d in clash else d
        cases.append(BatchCase(_check_case_id(cid, str(src)), path))
    return _unique(cases, src)


# --------------------------------------------------------------------------------------------- hashing
def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _series_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))


def input_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of an input: of the file's bytes, or for a folder (DICOM series) of the sorted list of its
    files' names and SHA-256s (hidden files left out).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    p = Path(path)
    if p.is_dir():
        h = hashlib.sha256()
        for f in _series_files(p):
            h.update(f.name.encode() + b"\0" + _file_sha256(f).encode() + b"\n")
        return h.hexdigest()
    if not p.exists():
        raise FileNotFoundError(f"{p}: does not exist; fix the path in the batch input")
    return _file_sha256(p)


def hash_outputs(case_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Relative POSIX path -> SHA-256 of every file under ``case_dir`` (hidden entries left out)."""
    root = Path(case_dir)
    out: dict[str, str] = {}
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root)
        if f.is_file() and not any(part.startswith(".") for part in rel.parts):
            out[rel.as_posix()] = _file_sha256(f)
    return out


# --------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class BatchSettings:
    """What every case is segmented with.

    Attributes:
        organ_ids: resolved organ ids, in prompt order.
        design, checkpoint, device, fast, modality: as in :func:`organsam.inference.segment.segment`.
        checkpoint_sha256: hash of ``checkpoint`` (outputs depend on the weights, not the file name).
    """

    organ_ids: tuple[str, ...]
    design: str = DEFAULT_DESIGN
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    device: str = "cpu"
    fast: bool = False
    modality: str | None = None

    @property
    def prompt(self) -> str:
        """The canonical organ prompt recorded in the manifest (ids joined by ``", "``)."""
        return ", ".join(self.organ_ids)

    def fingerprint(self) -> dict[str, Any]:
        """The settings besides the prompt that change the outputs (compared on resume; the device is not)."""
        return {"design": self.design, "checkpoint_sha256": self.checkpoint_sha256, "fast": self.fast,
                "modality": self.modality}


def _resolve_organs(organs: str | Sequence[str] | None, all_organs: bool) -> tuple[str, ...]:
    """Organ ids of a prompt, as :func:`segment` resolves them (raises ValueError on unknown terms)."""
    if organs is None and not all_organs:
        raise ValueError("say which organs to segment (e.g. organs='liver, spleen') or pass all_organs=True")
    texts = ["all organs"] if all_organs else ([organs] if isinstance(organs, str) else list(organs or []))
    vocab = load_vocabulary()
    ids: list[str] = []
    for t in texts:
        for oid in (parse_prompt(t) if t not in vocab else [t]):
            if oid not in ids:
                ids.append(oid)
    if not ids:
        raise ValueError(f"the prompt {organs!r} names no organ; e.g. organs='liver, spleen'")
    return tuple(ids)


# --------------------------------------------------------------------------------------------- workers
@dataclass(frozen=True)
class CaseJob:
    """One case handed to a worker.

    Attributes:
        case_id: the case.
        input: input file or DICOM folder as the driver sees it (recorded in ``report.json``).
        case_dir: output folder of the case (``OUTDIR/<case_id>``).
    """

    case_id: str
    input: str
    case_dir: str


@dataclass
class CaseOutcome:
    """What a worker reports back for one case.

    Attributes:
        ok: segmented and saved.
        error: one-line reason when not ``ok``.
        timings: seconds per stage (``segment``'s stages plus ``wall``, the worker's time for the case).
        worker: which worker ran it (``host:pid``, prefixed ``ray:`` on Ray).
        files: relative path -> bytes of the outputs, when the worker did not write them itself (Ray).
    """

    ok: bool
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    worker: str = ""
    files: dict[str, bytes] | None = None


def worker_name() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def error_text(exc: BaseException) -> str:
    if isinstance(exc, (ValueError, FileNotFoundError, KeyError)):
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        return " ".join(str(msg).split())
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


class CaseRunner:
    """Segments cases one after another with one predictor, built on first use and then reused.

    Args:
        settings: the batch settings.
        progress: show the per-volume slice progress bar.
    """

    def __init__(self, settings: BatchSettings, progress: bool = False) -> None:
        self.settings = settings
        self.progress = progress
        self._predictor: Any = None

    def predictor(self) -> Any:
        """The :class:`VolumePredictor` (built once, as :func:`segment` builds it)."""
        if self._predictor is None:
            s = self.settings
            self._predictor = build_predictor(s.design, s.checkpoint, device=s.device, fast=s.fast,
                                              progress=self.progress)
        return self._predictor

    def run(self, input_path: str | os.PathLike[str], case_dir: str | os.PathLike[str],
            report_input: str | None = None) -> CaseOutcome:
        """Segment one volume and save its outputs into ``case_dir``; never raises for a bad case.

        Args:
            input_path: file or DICOM folder to read.
            case_dir: output folder (written atomically by ``SegmentationResult.save``).
            report_input: input path to record in ``report.json`` (default ``input_path``).

        Returns:
            The outcome (``files`` is None: the outputs are on disk).
        """
        from organsam.inference.segment import segment
        from organsam.io import load_volume

        t0 = time.perf_counter()
        try:
            volume = load_volume(input_path, modality=self.settings.modality)
            result = segment(volume, list(self.settings.organ_ids), design=self.settings.design,
                             device=self.settings.device, quiet=True, predictor=self.predictor())
            result.report["input"] = report_input if report_input is not None else str(input_path)
            result.save(case_dir)
        except Exception as exc:  # one bad volume must not stop the batch
            logger.debug("case %s failed", input_path, exc_info=True)
            return CaseOutcome(False, error_text(exc), {"wall": time.perf_counter() - t0}, worker_name())
        timings = {k: round(float(v), 3) for k, v in result.timings.items()}
        timings["wall"] = round(time.perf_counter() - t0, 3)
        return CaseOutcome(True, None, timings, worker_name())


# pool worker state: one CaseRunner per worker process, made by the initializer
_POOL_RUNNER: CaseRunner | None = None


def _pool_init(settings: BatchSettings, threads: int) -> None:
    global _POOL_RUNNER
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _POOL_RUNNER = CaseRunner(settings)
    try:
        _POOL_RUNNER.predictor()  # build it once, before the first case
    except Exception:  # reported per case by CaseRunner.run, which tries again
        logging.getLogger(__name__).debug("predictor build failed in the worker initializer", exc_info=True)


def _pool_run(job: CaseJob) -> CaseOutcome:
    assert _POOL_RUNNER is not None, "worker initializer did not run"
    return _POOL_RUNNER.run(job.input, job.case_dir, job.input)


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


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

            self._pool = ProcessPoolExecutor(max_workers=self.slots,
                                             mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_pool_init, initargs=(self._settings, self.threads))
        self._futures[self._pool.submit(_pool_run, job)] = job

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
            return job, CaseOutcome(False, f"a worker process died while this volume was in flight ({exc}); "
                                           f"re-run to retry it", worker="pool")
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


# --------------------------------------------------------------------------------------------- manifest
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class BatchManifest:
    """``OUTDIR/batch_manifest.json``: one record per case, rewritten atomically on every change.

    A record: ``input``, ``input_sha256``, ``prompt``, ``settings``, ``status`` (``"done"`` or
    ``"failed"``), ``error``, ``outputs`` (relative path -> SHA-256), ``timings_s``, ``worker``,
    ``attempts``, ``finished_at``.

    Args:
        path: the manifest file (read when it exists).

    Raises:
        BatchInputError: the file exists but is not a batch manifest.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.cases: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            fix = "delete it to recompute every case, or choose another output folder"
            try:
                data = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise BatchInputError(f"{self.path}: unreadable batch manifest ({e}); {fix}") from e
            if not isinstance(data, dict) or data.get("format") != _MANIFEST_FORMAT:
                raise BatchInputError(f"{self.path}: not an organsam batch manifest; {fix}")
            self.cases = dict(data.get("cases", {}))

    def save(self) -> None:
        """Write the manifest atomically (temporary file, fsync, rename)."""
        data = {"format": _MANIFEST_FORMAT, "version": 1, "updated_at": _now(), "cases": self.cases}
        _atomic_write_text(self.path, json.dumps(data, indent=2, sort_keys=False) + "\n")

    def record(self, case_id: str, entry: dict[str, Any]) -> None:
        """Set a case's record and save."""
        self.cases[case_id] = entry
        self.save()

    def is_current(self, case_id: str, input_sha: str, settings: BatchSettings, case_dir: Path
                   ) -> tuple[bool, str]:
        """Whether a case's finished outputs can be kept.

        Returns:
            (True, "") when the record says done, the input hash, prompt and settings match and every
            recorded output exists with its recorded hash; else (False, why).
        """
        rec = self.cases.get(case_id)
        if rec is None:
            return False, "not run yet"
        if rec.get("status") != "done":
            return False, f"previous attempt {rec.get('status')}"
        if rec.get("input_sha256") != input_sha:
            return False, "input changed"
        if rec.get("prompt") != settings.prompt or rec.get("settings") != settings.fingerprint():
            return False, "prompt or settings changed"
        outputs = rec.get("outputs") or {}
        if not outputs:
            return False, "no outputs recorded"
        for rel, sha in outputs.items():
            f = case_dir / rel
            if not f.is_file() or _file_sha256(f) != sha:
                return False, f"output {rel} missing or changed"
        return True, ""


# --------------------------------------------------------------------------------------------- summary
@dataclass
class CaseStatus:
    """One line of the batch summary.

    Attributes:
        case_id: the case.
        state: ``"done"`` (segmented now), ``"skipped"`` (finished earlier, unchanged) or ``"failed"``.
        input: the input path.
        message: the error for failed cases.
        seconds: the worker's wall time for the case (0 when skipped).
    """

    case_id: str
    state: str
    input: str
    message: str = ""
    seconds: float = 0.0


@dataclass
class BatchSummary:
    """Result of :func:`run_batch`.

    Attributes:
        outdir: the output folder.
        manifest: path of ``batch_manifest.json``.
        cases: one status per case, in input order.
        wall_seconds: wall time of the whole run.
        backend: ``"inline"``, ``"pool"`` or ``"ray"``.
        workers: number of workers used.
    """

    outdir: Path
    manifest: Path
    cases: list[CaseStatus]
    wall_seconds: float = 0.0
    backend: str = "inline"
    workers: int = 1

    def _count(self, state: str) -> int:
        return sum(c.state == state for c in self.cases)

    @property
    def done(self) -> int:
        """Cases segmented in this run."""
        return self._count("done")

    @property
    def skipped(self) -> int:
        """Cases kept from an earlier run."""
        return self._count("skipped")

    @property
    def failed(self) -> int:
        """Cases that failed."""
        return self._count("failed")

    @property
    def exit_code(self) -> int:
        """0 when no case failed, else 1."""
        return 1 if self.failed else 0

    def format(self) -> str:
        """The summary: one line per case, then the totals."""
        width = max([len(c.case_id) for c in self.cases] + [4])
        lines = []
        for c in self.cases:
            if c.state == "done":
                detail = f"{c.seconds:7.1f} s  -> {self.outdir / c.case_id}"
            elif c.state == "skipped":
                detail = "finished earlier, input and outputs unchanged"
            else:
                detail = c.message
            lines.append(f"{c.state:<8} {c.case_id:<{width}}  {detail}")
        lines.append(f"{len(self.cases)} volumes: {self.done} done, {self.skipped} skipped, "
                     f"{self.failed} failed in {self.wall_seconds:.1f} s ({self.backend}, "
                     f"{self.workers} worker{'s' if self.workers != 1 else ''}); manifest: {self.manifest}")
        return "\n".join(lines)


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
            raise BatchInputError(f"{self.path.parent}: another organsam batch run is writing to this "
                                  f"folder; wait for it to finish or choose another output folder") from e
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()


def _clean_stale(outdir: Path, case_dir: Path | None = None) -> None:
    """Remove temporary folders left by a killed run (safe under the lock)."""
    if case_dir is None:
        for p in outdir.iterdir():
            if p.is_dir() and p.name.startswith(_STAGING_PREFIXES):
                shutil.rmtree(p, ignore_errors=True)
    elif case_dir.is_dir():
        for p in case_dir.iterdir():
            if p.is_dir() and p.name.startswith(".organsam-"):
                shutil.rmtree(p, ignore_errors=True)


def install_files(files: dict[str, bytes], case_dir: Path) -> None:
    """Replace ``case_dir`` by the given files (relative path -> bytes), atomically as a folder: the files
    are staged in a hidden sibling folder which is then renamed into place."""
    token = uuid.uuid4().hex[:8]
    stage = case_dir.parent / f".staging-{case_dir.name}-{token}"
    try:
        for rel, data in files.items():
            target = stage / rel
            if ".." in Path(rel).parts or Path(rel).is_absolute():
                raise ValueError(f"refusing to write {rel!r} outside {case_dir}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        old = None
        if case_dir.exists():
            old = case_dir.parent / f".old-{case_dir.name}-{token}"
            os.replace(case_dir, old)
        os.replace(stage, case_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _make_backend(settings: BatchSettings, workers: int | None, ray: str | None) -> tuple[Backend, str]:
    if ray is not None:
        from organsam.inference.ray_backend import RayBackend

        return RayBackend(settings, address=ray, actors=workers), "ray"
    n = 1 if workers is None else int(workers)
    if n < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if n == 1:
        return _InlineBackend(settings), "inline"
    return _PoolBackend(settings, n), "pool"


def run_batch(source: str | os.PathLike[str] | Sequence[BatchCase], organs: str | Sequence[str] | None,
              output: str | os.PathLike[str], *, all_organs: bool = False, workers: int | None = None,
              ray: str | None = None, resume: bool = True, design: str = DEFAULT_DESIGN,
              checkpoint: str | None = None, device: str = "cpu", fast: bool = False,
              modality: str | None = None, progress: bool = True,
              on_case: Callable[[CaseStatus], None] | None = None) -> BatchSummary:
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
        design, checkpoint, device, fast, modality: as in :func:`organsam.inference.segment.segment`.
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
        _unique(cases, Path("<cases>"))
    organ_ids = _resolve_organs(organs, all_organs)
    check_design(design, checkpoint)  # also: the checkpoint file exists
    ck_sha = None if checkpoint is None else _file_sha256(Path(checkpoint))
    if ray is not None:
        from organsam.inference.ray_backend import require_ray

        require_ray()  # fail before creating anything
    ck_path = None if checkpoint is None else str(Path(checkpoint).resolve())
    settings = BatchSettings(organ_ids, design, ck_path, ck_sha, device, bool(fast), modality)
    outdir.mkdir(parents=True, exist_ok=True)
    with _OutdirLock(outdir):
        return _run_locked(cases, settings, outdir, workers, ray, resume, progress, on_case, t_start)


def _run_locked(cases: list[BatchCase], settings: BatchSettings, outdir: Path, workers: int | None,
                ray: str | None, resume: bool, progress: bool, on_case: Callable[[CaseStatus], None] | None,
                t_start: float) -> BatchSummary:
    from tqdm.auto import tqdm

    manifest = BatchManifest(outdir / MANIFEST_NAME)
    _clean_stale(outdir)
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
        manifest.record(case.case_id, {
            "input": str(case.path), "input_sha256": hashes.get(case.case_id), "prompt": settings.prompt,
            "settings": settings.fingerprint(), "status": "done" if outcome.ok else "failed",
            "error": outcome.error, "outputs": outputs or {}, "timings_s": outcome.timings,
            "worker": outcome.worker, "attempts": attempts, "finished_at": _now()})

    def pending() -> Iterator[CaseJob]:
        """Cases to run, hashing each input just before deciding (skipped and unreadable ones reported)."""
        for case in cases:
            case_dir = outdir / case.case_id
            try:
                hashes[case.case_id] = input_sha256(case.path)
            except OSError as e:
                msg = (error_text(e) if isinstance(e, FileNotFoundError)
                       else f"{case.path}: cannot be read ({e})")
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
            _clean_stale(outdir, case_dir)
            yield CaseJob(case.case_id, str(case.path), str(case_dir))

    by_id = {c.case_id: c for c in cases}
    backend, kind = _make_backend(settings, workers, ray)
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
                        install_files(outcome.files, case_dir)
                    outputs = hash_outputs(case_dir)
                except (OSError, ValueError) as e:
                    outcome = CaseOutcome(False, f"{case_dir}: outputs could not be written ({e})",
                                          outcome.timings, outcome.worker)
            outcome.files = None
            record(case, outcome, outputs)
            finish(CaseStatus(case.case_id, "done" if outcome.ok else "failed", str(case.path),
                              outcome.error or "", float(outcome.timings.get("wall", 0.0))))
    finally:
        backend.close()
        bar.close()
    slots = backend.slots
    return BatchSummary(outdir, manifest.path, [statuses[c.case_id] for c in cases],
                        time.perf_counter() - t_start, kind, slots)

