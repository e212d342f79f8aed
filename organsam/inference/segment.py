"""``organsam.segment``: one call from a CT/MR (path or Volume) and a prompt to per-organ masks and a report.

It resolves the prompt and the settings (:mod:`organsam.inference.options`), checks the output folder before
any compute, and runs the one pipeline (:func:`organsam.inference.pipeline.run_segmentation`). The CLI
``organsam segment`` and the batch workers call it; the server calls the pipeline directly.
"""

from __future__ import annotations

import os
import time
from typing import Any

from organsam.inference.options import DEFAULT_MIN_SLICE_MM, OrganRequest, SegmentOptions, resolve_organs
from organsam.inference.pipeline import run_segmentation
from organsam.inference.predictor_factory import DEFAULT_DESIGN
from organsam.inference.result import SegmentationResult, check_output
from organsam.io import Volume, load_volume

__all__ = ["SegmentationResult", "segment", "DEFAULT_DESIGN"]


def segment(
    input: str | os.PathLike[str] | Volume,
    organs: str | list[str] | OrganRequest | None = None,
    *,
    all_organs: bool = False,
    output: str | os.PathLike[str] | None = None,
    design: str = DEFAULT_DESIGN,
    checkpoint: str | None = None,
    device: str = "auto",
    fast: bool = False,
    quiet: bool = False,
    modality: str | None = None,
    predictor: Any = None,
    min_slice_mm: float = DEFAULT_MIN_SLICE_MM,
    organ_prompts: str | os.PathLike[str] | bool = False,
    design_prompts: str | None = None,
    options: SegmentOptions | None = None,
    series_uid: str | None = None,
    runtime: str = "auto",
) -> SegmentationResult:
    """Segment organs in a CT/MR volume from a text prompt.

    Args:
        input: NIfTI/NRRD/MHA/npz file, DICOM folder, or a loaded :class:`organsam.io.Volume`.
        organs: free text ("liver, left kidney") or a list of texts/ids.
        all_organs: segment the default organ set (``"all organs"``).
        output: folder to write the outputs to (see :meth:`SegmentationResult.save`); None: keep in memory. It is
            checked before any compute: a folder holding the input or files organsam did not write is refused.
        design: model design; ``"litemedsam"`` (LiteMedSAM core placed by the atlas prior) runs without a
            trained checkpoint; the research designs need ``checkpoint`` (see
            :mod:`organsam.inference.predictor_factory`).
        checkpoint: a design checkpoint written by ``organsam train`` (``model.safetensors`` with its
            ``model.json``; run by :func:`~organsam.inference.design_predictor.design_predictor`), or a SAM-family
            ``.pth`` (LiteMedSAM layout) for the shipped pipeline's core.
        device: ``"auto"`` (default: a CUDA GPU when there is one, else the CPU), ``"cpu"`` or ``"cuda"``.
        fast: faster, approximate settings: coarser registration of the location prior, and the image
            encoder and mask decoder in bfloat16 where the hardware runs it natively (about 2x faster encoding on
            CPUs with AVX512-BF16; lower Dice on our validation, see the README's "Speed").
        quiet: no progress bar.
        modality: override the modality guess ("CT" or "MR").
        predictor: a ready :class:`VolumePredictor` (reused across calls; it then decides the design, device,
            precision and organ prompts).
        options: all settings at once (instead of the keyword arguments above, which build one).
        min_slice_mm: volumes with thinner slices are segmented on slices this far apart (linear
            interpolation along z) and the masks interpolated back onto every input slice (faster on
            sub-millimetre CTs; approximate: see ``bench/slice_spacing.py``); 0 (default) segments every
            input slice. Volumes with slices at least this thick are not touched.
        organ_prompts: learned organ prompt tokens added to the box prompts: ``True`` the packaged table
            (the shipped checkpoint), a path to an exported table, ``False`` (default) plain LiteMedSAM boxes;
            off by default because on the held-out AMOS slab they did not help the full pipeline (README,
            ``bench/quality.py``). See :mod:`organsam.inference.organ_prompt_table`. Ignored with ``predictor``.
        series_uid: the DICOM series to read from a folder that holds several (SeriesInstanceUID).
        runtime: what runs the LiteMedSAM core: ``"auto"`` (OpenVINO on the CPU where installed, else PyTorch),
            ``"torch"`` or ``"openvino"``. Ignored with ``predictor``.
        design_prompts: with a design checkpoint, where the text-prompted organs are looked for: ``"prior"``
            (text + the atlas prior's box on each slice where it has the organ) or ``"text"`` (text alone on
            every slice, kept where the design's presence probability is at least 0.5).

    Returns:
        :class:`SegmentationResult`.
    """
    t0 = time.perf_counter()
    if options is None:
        options = SegmentOptions(
            design=design,
            checkpoint=checkpoint,
            device=device,
            fast=fast,
            modality=modality,
            min_slice_mm=min_slice_mm,
            organ_prompts=organ_prompts,
            design_prompts=design_prompts,
            runtime=runtime,
        )
    request = resolve_organs(organs, all_organs)
    if predictor is None:
        options.check()  # before reading the volume: a wrong name, path or device fails at once
    if output is not None:
        check_output(output, input)  # before any compute
    reader_options = {} if series_uid is None else {"series_uid": series_uid}
    volume = input if isinstance(input, Volume) else load_volume(input, modality=options.modality, **reader_options)
    if output is not None and not isinstance(input, Volume):
        check_output(output, volume)  # the files the volume was read from (a DICOM series' folder)
    t_load = time.perf_counter()
    if predictor is None:
        predictor = options.build_predictor(progress=not quiet)
    result = run_segmentation(predictor, volume, request, options=options)
    result.timings["load"] = t_load - t0
    if output is not None:
        result.save(output)
    return result
