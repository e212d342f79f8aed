"""What a batch records: input and output hashes, the per-run manifest (``batch_manifest.json``) and the summary."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from organsam.inference.batch.cases import BatchInputError
from organsam.inference.batch.worker import BatchSettings
from organsam.io.files import atomic_write_text, file_sha256

logger = logging.getLogger(__name__)


_MANIFEST_FORMAT = "organsam-batch-manifest"


# --------------------------------------------------------------------------------------------- hashing
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
            h.update(f.name.encode() + b"\0" + file_sha256(f).encode() + b"\n")
        return h.hexdigest()
    if not p.exists():
        raise FileNotFoundError(f"{p}: does not exist; fix the path in the batch input")
    return file_sha256(p)


def hash_outputs(case_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Relative POSIX path -> SHA-256 of every file under ``case_dir`` (hidden entries left out)."""
    root = Path(case_dir)
    out: dict[str, str] = {}
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root)
        if f.is_file() and not any(part.startswith(".") for part in rel.parts):
            out[rel.as_posix()] = file_sha256(f)
    return out


# --------------------------------------------------------------------------------------------- manifest
def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


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
        data = {"format": _MANIFEST_FORMAT, "version": 1, "updated_at": now_iso(), "cases": self.cases}
        atomic_write_text(self.path, json.dumps(data, indent=2, sort_keys=False) + "\n")

    def record(self, case_id: str, entry: dict[str, Any]) -> None:
        """Set a case's record and save."""
        self.cases[case_id] = entry
        self.save()

    def is_current(self, case_id: str, input_sha: str, settings: BatchSettings, case_dir: Path) -> tuple[bool, str]:
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
            if not f.is_file() or file_sha256(f) != sha:
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
        lines.append(
            f"{len(self.cases)} volumes: {self.done} done, {self.skipped} skipped, "
            f"{self.failed} failed in {self.wall_seconds:.1f} s ({self.backend}, "
            f"{self.workers} worker{'s' if self.workers != 1 else ''}); manifest: {self.manifest}"
        )
        return "\n".join(lines)
