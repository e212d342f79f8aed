"""Sessions of ``organsam serve``: one uploaded volume each, in its own temporary folder.

A session holds the loaded :class:`organsam.io.Volume`, the last prompt, the user's corrections, the model's
per-volume state (slice embeddings, reused by re-runs) and the last result with its downloadable files.
Sessions unused for ``session_ttl_s`` are deleted with their folder by a background reaper.
"""

from __future__ import annotations

import functools
import logging
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from organsam.inference.pipeline import check_segmentable
from organsam.io import Volume, load_volume
from organsam.io.loader import normalize_modality
from organsam.preprocessing.intensity import CT_WINDOWS, display_scheme, is_ct_in_hu, normalize_mr, window_ct
from organsam.server.render import extract
from organsam.server.settings import ServerSettings
from organsam.server.uploads import UploadError, UploadTooLargeError, copy_limited, store_upload

logger = logging.getLogger(__name__)

__all__ = ["Correction", "ServerBusyError", "Session", "SessionNotFoundError", "SessionStore"]

CT_WINDOW_PRESETS = ("abdomen", "bone", "lung")
_ID = re.compile(r"^[0-9a-f]{32}$")


class SessionNotFoundError(KeyError):
    """No session with that id (never existed, deleted, or expired)."""


class ServerBusyError(RuntimeError):
    """A limit of concurrent work (sessions, queued jobs) is reached; the client should retry later."""

    def __init__(self, message: str, retry_after_s: int = 30) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass
class Correction:
    """A user correction in canonical voxel coordinates (see :class:`organsam.server.schemas.CorrectionOut`).

    Attributes:
        organ: vocabulary id.
        kind: ``"point"`` or ``"box"``.
        z: axial slice it applies to.
        y: point row (posterior->anterior), canonical.
        x: point column (patient right->left), canonical.
        label: point label, 1 = organ, 0 = not organ.
        box: (x0, y0, x1, y1) on slice z, canonical pixels.
    """

    organ: str
    kind: str
    z: int
    y: float | None = None
    x: float | None = None
    label: int | None = None
    box: tuple[float, float, float, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form (``box`` as ``box_xyxy``)."""
        return {
            "organ": self.organ,
            "kind": self.kind,
            "z": self.z,
            "y": self.y,
            "x": self.x,
            "label": self.label,
            "box_xyxy": list(self.box) if self.box is not None else None,
        }


@dataclass
class Session:
    """One uploaded volume and the work done on it.

    Attributes:
        id: 32 hex digits, made by the server.
        dir: the session's private folder.
        filename: the client's file name, sanitised (display only).
        kind: what the upload was (``nifti``, ``nifti_gz``, ``npz``, ``dicom_zip``).
        volume: the loaded volume, canonical (Z, Y, X).
        prompt: the last prompt text.
        organ_ids: organs of the last prompt.
        corrections: points/boxes to apply on the next run.
        result: the last :class:`organsam.inference.segment.SegmentationResult` (replaced whole).
        files: downloadable files of ``result`` (``labelmap``, ``masks_zip``, ``report``).
        result_version: number of finished segmentations.
        state: the model's :class:`organsam.inference.state.InferenceState` (worker thread only).
        job: the latest job of this session.
    """

    id: str
    dir: Path
    filename: str
    kind: str
    volume: Volume
    created: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    prompt: str | None = None
    organ_ids: list[str] = field(default_factory=list)
    corrections: list[Correction] = field(default_factory=list)
    result: Any = None
    files: dict[str, Path] = field(default_factory=dict)
    result_version: int = 0
    state: Any = None
    job: Any = None
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _raw_display: np.ndarray | None = field(default=None, repr=False)

    def touch(self) -> None:
        """Mark the session as used now (postpones its expiry)."""
        self.last_used = time.time()

    @property
    def windows(self) -> list[str]:
        """Window presets offered for this volume."""
        if is_ct_in_hu(self.volume):
            return [*CT_WINDOW_PRESETS, "raw"]
        return ["raw"]

    @property
    def default_window(self) -> str:
        return self.windows[0]

    @functools.cached_property
    def window_levels(self) -> dict[str, tuple[float, float]]:
        """(level, width) of each preset, in the volume's units; ``raw`` spans its 0.5-99.5 percentiles (computed
        once per session)."""
        out = {w: CT_WINDOWS[w] for w in self.windows if w in CT_WINDOWS}
        sample = self.volume.array.ravel()[:: max(1, self.volume.array.size // 1_000_000)]
        lo, hi = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
        out["raw"] = (round((lo + hi) / 2, 1), round(max(hi - lo, 1.0), 1))
        return out

    @property
    def busy(self) -> bool:
        """Whether a job of this session is queued or running."""
        return self.job is not None and self.job.state in ("queued", "running")

    def _raw(self) -> np.ndarray:
        """(Z, Y, X) uint8 'raw' display: 8-bit data kept, else percentile-normalised (once per session)."""
        if self._raw_display is None:
            arr = self.volume.array
            if display_scheme(self.volume) == "prewindowed":
                disp = np.clip(arr, 0, 255)
            else:
                disp = normalize_mr(arr, foreground_only=self.volume.modality != "CT")
            self._raw_display = np.rint(disp).astype(np.uint8)
        return self._raw_display

    def display_slice(self, view: str, index: int, window: str = "auto") -> np.ndarray:
        """A grey slice image for display.

        Args:
            view: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
            index: slice index along the view's axis.
            window: ``"auto"`` (the volume's default), a CT preset (``abdomen``, ``bone``, ``lung``), ``"raw"``,
                or ``"LEVEL,WIDTH"`` (e.g. ``"40,400"``: any level and width, in the volume's units).

        Returns:
            (H, W) uint8 in display orientation (see :mod:`organsam.server.render`).

        Raises:
            ValueError: a window this volume does not offer. IndexError: slice out of range.
        """
        custom = parse_window(window)
        w = self.default_window if window == "auto" else window
        if custom is None and w not in self.windows:
            raise ValueError(
                f"window {window!r} is not available for this {self.volume.modality} volume; "
                f"use one of {', '.join(['auto', *self.windows])}, or LEVEL,WIDTH (e.g. 40,400)"
            )
        if w == "raw":
            return np.ascontiguousarray(extract(self._raw(), view, index))
        sl = np.ascontiguousarray(extract(self.volume.array, view, index))
        return np.rint(window_ct(sl, custom if custom is not None else w)).astype(np.uint8)

    def voxel_value(self, z: int, y: int, x: int) -> dict[str, Any]:
        """What is under the cursor: the stored value (HU on CT), the input's (i, j, k) voxel index and the organs
        of the current result that hold the voxel."""
        Z, Y, X = self.volume.shape
        if not (0 <= z < Z and 0 <= y < Y and 0 <= x < X):
            raise IndexError(f"voxel (z, y, x) = ({z}, {y}, {x}) is outside the volume's {Z} x {Y} x {X} voxels")
        res = self.result
        organs = [o for o, m in (res.masks.items() if res is not None else ()) if m[z, y, x]]
        return {
            "zyx": [z, y, x],
            "ijk": list(self.volume.ijk_index((z, y, x))),
            "value": round(float(self.volume.array[z, y, x]), 1),
            "unit": self.unit,
            "organs": organs,
        }

    @functools.cached_property
    def unit(self) -> str:
        """ "HU" for a CT in Hounsfield units, else "" (computed once: the readout asks on every cursor move)."""
        return "HU" if is_ct_in_hu(self.volume) else ""

    def expires_in(self, ttl: float) -> float:
        """Seconds left before the reaper may delete this session."""
        return max(0.0, self.last_used + ttl - time.time())


def parse_window(window: str) -> tuple[float, float] | None:
    """(level, width) of a ``"LEVEL,WIDTH"`` window, or None for a preset name.

    Raises:
        ValueError: two numbers whose width is not positive.
    """
    parts = window.split(",")
    if len(parts) != 2:
        return None
    try:
        level, width = float(parts[0]), float(parts[1])
    except ValueError:
        return None
    if not (np.isfinite(level) and np.isfinite(width) and width > 0):
        raise ValueError(f"window {window!r}: the level must be a number and the width a number above 0")
    return level, width


class SessionStore:
    """All live sessions, their folders under one temporary root, and the reaper that expires them.

    Args:
        settings: server limits (``max_sessions``, ``session_ttl_s``, upload caps, ``workdir``).
    """

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        if settings.workdir is not None:
            settings.workdir.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="organsam-serve-", dir=settings.workdir))
        self._sessions: dict[str, Session] = {}
        self._pending = 0
        self._lock = threading.Lock()
        self._loads = threading.BoundedSemaphore(settings.max_concurrent_loads)
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        self.on_close: list[Any] = []  # callbacks(session) run when a session is deleted

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the background reaper."""
        if self._reaper is None:
            self._stop.clear()
            self._reaper = threading.Thread(target=self._reap_loop, name="organsam-reaper", daemon=True)
            self._reaper.start()

    def close(self) -> None:
        """Stop the reaper, delete every session and the root folder."""
        self._stop.set()
        if self._reaper is not None:
            self._reaper.join(timeout=5)
            self._reaper = None
        for sid in list(self._sessions):
            self.delete(sid)
        shutil.rmtree(self.root, ignore_errors=True)

    def _reap_loop(self) -> None:
        while not self._stop.wait(self.settings.reap_interval_s):
            try:
                self.reap()
            except Exception:  # the reaper must survive anything
                logger.exception("session reaper failed")

    def reap(self, now: float | None = None) -> list[str]:
        """Delete sessions idle for longer than ``session_ttl_s`` (not those with a queued/running job).

        Returns:
            The deleted session ids.
        """
        now = time.time() if now is None else now
        with self._lock:
            old = [
                s.id for s in self._sessions.values() if now - s.last_used > self.settings.session_ttl_s and not s.busy
            ]
        for sid in old:
            logger.info("session %s expired", sid)
            self.delete(sid)
        return old

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, sid: str) -> Session:
        """The live session ``sid`` (marked as used).

        Raises:
            SessionNotFoundError: unknown, deleted or expired id.
        """
        s = self._sessions.get(sid) if _ID.match(sid or "") else None
        if s is None or s.closed:
            raise SessionNotFoundError(sid)
        s.touch()
        return s

    def delete(self, sid: str) -> bool:
        """Delete a session and its folder, cancelling its job. Returns whether it existed."""
        with self._lock:
            s = self._sessions.pop(sid, None)
        if s is None:
            return False
        s.closed = True
        for cb in self.on_close:
            try:
                cb(s)
            except Exception:
                logger.exception("session close callback failed")
        shutil.rmtree(s.dir, ignore_errors=True)
        s.state = s.result = s._raw_display = None
        return True

    # ------------------------------------------------------------------ creation
    def _reserve(self) -> None:
        with self._lock:
            full = len(self._sessions) + self._pending >= self.settings.max_sessions
        if full:
            self.reap()
        with self._lock:
            if len(self._sessions) + self._pending >= self.settings.max_sessions:
                raise ServerBusyError(
                    f"the server holds its maximum of {self.settings.max_sessions} sessions; "
                    "delete a finished session (DELETE /api/sessions/{id}) or retry later"
                )
            self._pending += 1

    def create(self, stream: BinaryIO, filename: str, modality: str | None = None) -> Session:
        """Receive an upload, check its type by content, load it and open a session.

        Args:
            stream: the uploaded bytes.
            filename: the client's name for it (sanitised; display only).
            modality: ``"CT"``, ``"MR"``, or None/``"auto"``.

        Returns:
            The new session.

        Raises:
            ServerBusyError: too many sessions.
            UploadError: too large, wrong type, corrupt, or unreadable as a volume (message without server
                paths).
        """
        try:
            wanted = normalize_modality(modality)
        except ValueError as e:
            raise UploadError(str(e), status=422, code="bad_modality") from e
        self._reserve()
        sid = uuid.uuid4().hex
        sdir = self.root / sid
        try:
            sdir.mkdir()
            received = sdir / "received.bin"
            copy_limited(stream, received, self.settings.max_upload_bytes)
            kind, target = store_upload(
                received,
                sdir,
                max_unpacked_bytes=self.settings.max_unpacked_bytes,
                max_dicom_files=self.settings.max_dicom_files,
            )
            with self._loads:
                volume = self._load(target, filename, wanted, sdir)
            session = Session(id=sid, dir=sdir, filename=filename, kind=kind, volume=volume)
            with self._lock:
                self._sessions[sid] = session
            logger.info("session %s: %s (%s) %s %s", sid, filename, kind, volume.modality, volume.shape)
            return session
        except BaseException:
            shutil.rmtree(sdir, ignore_errors=True)
            raise
        finally:
            with self._lock:
                self._pending -= 1

    @staticmethod
    def _load(target: Path, filename: str, modality: str | None, sdir: Path) -> Volume:
        try:
            volume = load_volume(target, modality=modality)
            check_segmentable(volume)  # refused now, not as an internal error once a job runs
        except UploadError:
            raise
        except MemoryError as e:
            raise UploadTooLargeError("the volume is too large to load into the server's memory") from e
        except (ValueError, FileNotFoundError) as e:
            # never show server paths: name the upload as the client knows it
            msg = str(e).replace(str(target), filename).replace(str(sdir), filename)
            raise UploadError(
                f"the upload could not be read as a volume: {msg}", status=422, code="unreadable_volume"
            ) from e
        return volume
