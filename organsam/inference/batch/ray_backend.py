"""Batch inference on a Ray cluster: one :class:`SegmentActor` per GPU/CPU slot holds the model; the driver
streams volumes to free actors and writes the outputs they send back.

Volumes travel as bytes (the input file, or the files of a DICOM series folder) and outputs come back as
bytes, so the nodes need no shared file system; they need ``organsam`` (and its weights) installed. Used
by :func:`organsam.inference.batch.run_batch` with ``ray=ADDRESS``; Ray is an optional extra
(``pip install 'organsam[ray]'``).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from organsam.inference.batch.worker import BatchSettings, CaseJob, CaseOutcome, CaseRunner, error_text, worker_name

logger = logging.getLogger(__name__)

__all__ = ["RayBackend", "RayUnavailableError", "SegmentActor", "read_input_files", "require_ray"]


class RayUnavailableError(ValueError):
    """Ray was asked for but cannot be used (not installed, or no cluster at the address)."""


def require_ray() -> Any:
    """Import and return the ``ray`` module.

    Raises:
        RayUnavailableError: Ray is not installed.
    """
    try:
        import ray
    except ImportError as e:
        raise RayUnavailableError(
            "Ray is not installed; install it with `pip install 'organsam[ray]'` (or "
            "`pip install ray`), or run without --ray to use local workers"
        ) from e
    return ray


def read_input_files(path: Path) -> tuple[str, dict[str, bytes]]:
    """The bytes of an input, to send to a remote worker.

    Args:
        path: a volume file, or a DICOM series folder (its non-hidden files, not recursing).

    Returns:
        (top-level name, relative path -> bytes); a folder's files are under ``<folder name>/``.
    """
    if path.is_dir():
        files = {
            f"{path.name}/{f.name}": f.read_bytes()
            for f in sorted(path.iterdir())
            if f.is_file() and not f.name.startswith(".")
        }
        return path.name, files
    return path.name, {path.name: path.read_bytes()}


class SegmentActor:
    """A Ray actor holding one predictor; segments the volumes it is sent, one at a time.

    Wrapped with ``ray.remote(...)`` by :class:`RayBackend` (so that this module imports without Ray).

    Args:
        settings: the batch settings.
        threads: torch threads (the actor's CPU share).
    """

    def __init__(self, settings: BatchSettings, threads: int = 1) -> None:
        import torch

        torch.set_num_threads(max(1, int(threads)))
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        self.runner = CaseRunner(settings)
        self.name = f"ray:{worker_name()}"

    def ready(self) -> str:
        """Build the predictor now (once); returns this actor's name."""
        try:
            self.runner.predictor()
        except Exception:  # reported per case by CaseRunner.run
            logger.debug("predictor build failed", exc_info=True)
        return self.name

    def process(self, job: CaseJob, root: str, files: dict[str, bytes]) -> CaseOutcome:
        """Segment one volume sent as bytes.

        Args:
            job: the case (``job.input`` is recorded in the report; ``job.case_dir`` is not used here).
            root: the input's top-level name among ``files``.
            files: relative path -> bytes, as made by :func:`read_input_files`.

        Returns:
            The outcome with the output files' bytes in ``files``.
        """
        tmp = Path(tempfile.mkdtemp(prefix="organsam-ray-"))
        try:
            for rel, data in files.items():
                target = tmp / "in" / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            out = tmp / "out"
            local_input = tmp / "in" / root
            outcome = self.runner.run(local_input, out, report_input=job.input)
            outcome.worker = self.name
            if outcome.error:  # name the user's input, not this actor's temporary copy
                outcome.error = outcome.error.replace(str(local_input), job.input)
            if outcome.ok:
                rels = [f.relative_to(out) for f in sorted(out.rglob("*")) if f.is_file()]
                outcome.files = {
                    r.as_posix(): (out / r).read_bytes() for r in rels if not any(p.startswith(".") for p in r.parts)
                }
            return outcome
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class RayBackend:
    """Runs batch cases on Ray actors (the ``Backend`` interface of :mod:`organsam.inference.batch`).

    Args:
        settings: the batch settings.
        address: ``"local"`` (start a private local Ray instance), ``"auto"`` (a running cluster found by
            Ray) or a cluster address (``"host:6379"``, ``"ray://host:10001"``). Ignored when Ray is
            already initialised in this process (that session is used and left running).
        actors: number of actors; None: one per GPU with a CUDA device, else one per CPU of the cluster.
            CPU actors get ``cluster CPUs // actors`` CPUs and as many torch threads.

    Raises:
        RayUnavailableError: Ray missing, the cluster cannot be reached, or it lacks the asked resources.
    """

    def __init__(self, settings: BatchSettings, address: str = "local", actors: int | None = None) -> None:
        ray = require_ray()
        self._ray = ray
        self._owns = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
            try:
                if address == "local":
                    ray.init(include_dashboard=False, **kwargs)
                else:
                    ray.init(address=address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise RayUnavailableError(
                    f"cannot connect to the Ray cluster at {address!r} ({e}); start "
                    f"one (`ray start --head`), check the address, or use --ray local"
                ) from e
            self._owns = True
        res = ray.cluster_resources()
        cpus, gpus = int(res.get("CPU", 1)), int(res.get("GPU", 0))
        use_gpu = settings.device != "cpu"
        if use_gpu and gpus < 1:
            self.close()
            raise RayUnavailableError(
                f"device {settings.device!r} asked for but the Ray cluster has no GPU; use --device cpu"
            )
        limit = gpus if use_gpu else cpus
        n = int(actors) if actors is not None else limit
        if n < 1:
            self.close()
            raise ValueError(f"the number of Ray actors must be >= 1, got {actors}")
        if n > limit:
            logger.warning(
                "%d actors asked for but the cluster has %d %s; using %d",
                n,
                limit,
                "GPUs" if use_gpu else "CPUs",
                limit,
            )
            n = limit
        cpu_share = 1 if use_gpu else max(1, cpus // n)
        actor_cls = ray.remote(SegmentActor).options(num_cpus=cpu_share, num_gpus=1 if use_gpu else 0, max_restarts=1)
        self.actors = [actor_cls.remote(settings, cpu_share) for _ in range(n)]
        self.slots = n
        self._ready_refs = [a.ready.remote() for a in self.actors]  # build the models in parallel
        self._free = list(range(n))
        self._refs: dict[Any, tuple[int, CaseJob]] = {}
        self._immediate: list[tuple[CaseJob, CaseOutcome]] = []
        logger.info(
            "Ray: %d actors (%d CPU%s%s each)",
            n,
            cpu_share,
            "" if cpu_share == 1 else "s",
            ", 1 GPU" if use_gpu else "",
        )

    def submit(self, job: CaseJob) -> None:
        """Send a case to a free actor."""
        try:
            root, files = read_input_files(Path(job.input))
        except OSError as e:
            failed = CaseOutcome(False, f"{job.input}: cannot be read ({e})", worker="driver")
            self._immediate.append((job, failed))
            return
        idx = self._free.pop(0)
        ref = self.actors[idx].process.remote(job, root, files)
        self._refs[ref] = (idx, job)

    def wait_one(self) -> tuple[CaseJob, CaseOutcome]:
        """Wait for the next finished case."""
        if self._immediate:
            return self._immediate.pop(0)
        ray = self._ray
        ready, _ = ray.wait(list(self._refs), num_returns=1)
        ref = ready[0]
        idx, job = self._refs.pop(ref)
        self._free.append(idx)
        try:
            return job, ray.get(ref)
        except ray.exceptions.RayActorError as e:
            why = " ".join(str(e).split())[:300]
            return job, CaseOutcome(
                False, f"the Ray actor died while segmenting this volume ({why}); re-run to retry it", worker="ray"
            )
        except ray.exceptions.RayError as e:
            return job, CaseOutcome(False, error_text(e)[:500], worker="ray")

    def close(self) -> None:
        """Stop the actors; shut Ray down if this backend started it."""
        ray = self._ray
        for a in getattr(self, "actors", []):
            try:
                ray.kill(a)
            except Exception:  # already gone
                logger.debug("ray.kill failed", exc_info=True)
        self.actors = []
        if self._owns and ray.is_initialized():
            ray.shutdown()
            self._owns = False
