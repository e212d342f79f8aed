"""What a worker runs: the batch settings, one case job and its outcome, and the case runner (one predictor per
worker, every case through :func:`organsam.inference.segment.segment`)."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from organsam.inference.options import OrganRequest, SegmentOptions
from organsam.inference.predictor_factory import DEFAULT_DESIGN

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class BatchSettings:
    """What every case is segmented with.

    Attributes:
        organ_ids: resolved organ ids, in prompt order.
        design, checkpoint, device, fast, modality, runtime: as in :class:`organsam.inference.options.SegmentOptions`.
        checkpoint_sha256: hash of ``checkpoint`` (outputs depend on the weights, not the file name).
        prompt_text: the user's prompt as given (recorded in each ``report.json``; resume compares ``prompt``).
    """

    organ_ids: tuple[str, ...]
    design: str = DEFAULT_DESIGN
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    device: str = "cpu"
    fast: bool = False
    modality: str | None = None
    prompt_text: str = ""
    runtime: str = "auto"

    @property
    def options(self) -> SegmentOptions:
        """The settings each case is segmented with."""
        return SegmentOptions(
            design=self.design,
            checkpoint=self.checkpoint,
            device=self.device,
            fast=self.fast,
            modality=self.modality,
            runtime=self.runtime,
        )

    @property
    def request(self) -> OrganRequest:
        """The organs each case is segmented for, with the user's prompt."""
        return OrganRequest(self.prompt_text or self.prompt, self.organ_ids)

    @property
    def prompt(self) -> str:
        """The canonical organ prompt recorded in the manifest (ids joined by ``", "``)."""
        return ", ".join(self.organ_ids)

    def fingerprint(self) -> dict[str, Any]:
        """The settings besides the prompt that change the outputs (compared on resume; the device is not)."""
        return {
            "design": self.design,
            "checkpoint_sha256": self.checkpoint_sha256,
            "fast": self.fast,
            "modality": self.modality,
            "runtime": self.runtime,
        }


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
            self._predictor = self.settings.options.build_predictor(progress=self.progress)
        return self._predictor

    def run(
        self, input_path: str | os.PathLike[str], case_dir: str | os.PathLike[str], report_input: str | None = None
    ) -> CaseOutcome:
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
            result = segment(
                volume, self.settings.request, options=self.settings.options, quiet=True, predictor=self.predictor()
            )
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


def pool_init(settings: BatchSettings, threads: int) -> None:
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


def pool_run(job: CaseJob) -> CaseOutcome:
    assert _POOL_RUNNER is not None, "worker initializer did not run"
    return _POOL_RUNNER.run(job.input, job.case_dir, job.input)


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
