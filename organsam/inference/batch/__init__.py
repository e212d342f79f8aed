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
on a Ray cluster (see :mod:`organsam.inference.batch.ray_backend`). One failing volume is recorded as failed
and does not stop the others.

Modules: :mod:`.cases` (inputs), :mod:`.records` (hashes, manifest, summary), :mod:`.worker` (settings and the case
runner), :mod:`.backends` (in-process and process pool), :mod:`.ray_backend` (Ray), :mod:`.driver` (``run_batch``).
"""

from organsam.inference.batch.cases import (
    MANIFEST_NAME,
    VOLUME_SUFFIXES,
    BatchCase,
    BatchInputError,
    discover_cases,
    is_batch_input,
)
from organsam.inference.batch.driver import install_files, run_batch
from organsam.inference.batch.records import BatchManifest, BatchSummary, CaseStatus, hash_outputs, input_sha256
from organsam.inference.batch.worker import BatchSettings, CaseJob, CaseOutcome, CaseRunner, available_cores

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
