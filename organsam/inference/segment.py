"""``organsam.segment``: one call from a CT/MR (path or Volume) and a prompt to per-organ masks and a report.

The CLI ``organsam segment`` is a thin layer over :func:`segment` and :meth:`SegmentationResult.save`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from organsam import __version__
from organsam.inference.postprocess import merge_labelmap, postprocess_mask
from organsam.inference.predictor_factory import DEFAULT_DESIGN, build_predictor, check_design
from organsam.io import Volume, VolumeMeta, load_volume, write_dicom_seg, write_labelmap, write_masks
from organsam.preprocessing.resample import resample_z
from organsam.vocabulary import load_vocabulary, parse_prompt

logger = logging.getLogger(__name__)

__all__ = ["SegmentationResult", "segment", "DEFAULT_DESIGN"]

#: Thinner slices are segmented on a coarser z grid (see :func:`model_grid`), in mm; 0: every input slice.
#: Off by default: halving the slices of our 2-5 mm CTs cost 0.07-0.11 mean Dice (bench/slice_spacing.py).
DEFAULT_MIN_SLICE_MM = 0.0


@dataclass
class SegmentationResult:
    """Output of :func:`segment`.

    Attributes:
        volume: the input volume (canonical (Z, Y, X)).
        organ_ids: the requested organs, in prompt order (label values 1..N follow this order).
        masks: organ id -> (Z, Y, X) bool, canonical layout; overlaps allowed; empty when absent.
        labelmap: (Z, Y, X) merged label map (smaller organs win overlaps).
        label_table: label value -> organ id.
        report: per-organ facts (present, volume_ml, mean intensity, bbox, confidence, ...).
        timings: seconds per stage.
    """

    volume: Volume
    organ_ids: list[str]
    masks: dict[str, np.ndarray]
    labelmap: np.ndarray
    label_table: dict[int, str]
    report: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    def save(self, outdir: str | os.PathLike[str], overview: bool = True) -> dict[str, Path]:
        """Write ``segmentation.nii.gz``, ``masks/<organ>.nii.gz``, ``report.json``, ``overview.png`` (and
        ``segmentation.dcm`` for DICOM input) on the input's grid and orientation.

        All files are first written to a temporary folder inside ``outdir`` and moved into place only when
        everything succeeded, so a failure leaves no half-written output. Input files are never overwritten.

        Returns:
            name -> written path.
        """
        out = Path(outdir).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        sources = {Path(s).resolve() for s in self.volume.meta.sources}
        tmp = Path(tempfile.mkdtemp(prefix=".organsam-", dir=out))
        written: dict[str, Path] = {}
        try:
            staged = {"segmentation": write_labelmap(self.labelmap, self.volume, tmp / "segmentation.nii.gz")}
            write_masks(self.masks, self.volume, tmp / "masks")
            staged["masks"] = tmp / "masks"
            if self.volume.meta.file_format == "dicom":
                try:
                    staged["dicom_seg"] = write_dicom_seg(
                        {k: v for k, v in self.masks.items() if v.any()}, self.volume, tmp / "segmentation.dcm",
                        organ_names={k: load_vocabulary()[k].name for k in self.masks})
                except Exception as e:  # DICOM-SEG is a bonus next to the NIfTI outputs
                    logger.warning("DICOM-SEG not written: %s", e)
            if overview:
                from organsam.inference.overview import render_overview
                from organsam.preprocessing.intensity import to_uint8_display

                staged["overview"] = render_overview(
                    to_uint8_display(self.volume), self.labelmap,
                    {v: load_vocabulary()[k].name for v, k in self.label_table.items()},
                    tuple(self.volume.spacing), tmp / "overview.png")
            (tmp / "report.json").write_text(json.dumps(self.report, indent=2))
            staged["report"] = tmp / "report.json"
            for name, p in staged.items():
                dest = out / p.name
                if dest.resolve() in sources:
                    raise FileExistsError(f"{dest}: refusing to overwrite the input; choose another output folder")
                if dest.is_dir():
                    shutil.rmtree(dest)
                os.replace(p, dest)
                written[name] = dest
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return written


def _organ_report(organ_id: str, mask: np.ndarray, volume: Volume, res: Any) -> dict[str, Any]:
    voxel_ml = float(np.prod(volume.spacing)) / 1000.0
    entry: dict[str, Any] = {
        "name": load_vocabulary()[organ_id].name,
        "present": bool(mask.any()),
        "voxels": int(mask.sum()),
        "volume_ml": round(int(mask.sum()) * voxel_ml, 2),
        "confidence": round(res.confidence, 4) if res is not None else 0.0,
        "slices": int(mask.reshape(mask.shape[0], -1).any(axis=1).sum()),
        "rejected_slices": len(res.rejected) if res is not None else 0,
        "source": res.source if res is not None else "",
    }
    key = "mean_hu" if volume.modality == "CT" and not volume.meta.is_8bit else "mean_intensity"
    entry[key] = round(float(volume.array[mask].mean()), 1) if mask.any() else None
    if mask.any():
        fmask = volume.to_file_layout(mask)
        idx = np.argwhere(fmask)
        entry["bbox_voxels"] = {"min": idx.min(axis=0).tolist(), "max": idx.max(axis=0).tolist(),
                                "axes": "file array order"}
    else:
        entry["bbox_voxels"] = None
        entry["absent_reason"] = ("no slice passed the predicted-IoU check" if res is not None and res.rejected
                                  else "not located by the prior")
    return entry


def model_grid(volume: Volume, min_slice_mm: float) -> Volume:
    """The volume the model runs on: ``volume`` itself, or, when its slices are thinner than
    ``min_slice_mm`` (> 0), a copy linearly resampled along z to slices about ``min_slice_mm`` apart."""
    sz = float(volume.spacing[0])
    Z = volume.array.shape[0]
    if min_slice_mm <= 0 or sz >= min_slice_mm or Z < 2:
        return volume
    new_z = max(2, int(round(Z * sz / min_slice_mm)))
    if new_z >= Z:
        return volume
    logger.info("%d slices of %.2f mm: segmenting %d slices of %.2f mm, masks interpolated back", Z, sz, new_z,
                Z * sz / new_z)
    spacing = (Z * sz / new_z, float(volume.spacing[1]), float(volume.spacing[2]))
    meta = VolumeMeta(modality_source=volume.meta.modality_source, is_8bit=volume.meta.is_8bit)
    return dataclasses.replace(volume, array=resample_z(volume.array, new_z), spacing=spacing, meta=meta)


def to_input_grid(mask: np.ndarray, volume: Volume) -> np.ndarray:
    """(z, Y, X) bool mask on the model grid -> (Z, Y, X) bool on ``volume``'s slices (linear along z, > 0.5)."""
    Z = volume.array.shape[0]
    if mask.shape[0] == Z:
        return mask
    return resample_z(mask, Z) > 0.5


def segment(input: str | os.PathLike[str] | Volume, organs: str | list[str] | None = None, *,
            all_organs: bool = False, output: str | os.PathLike[str] | None = None,
            design: str = DEFAULT_DESIGN, checkpoint: str | None = None, device: str = "cpu",
            fast: bool = False, quiet: bool = False, modality: str | None = None,
            predictor: Any = None, min_slice_mm: float = DEFAULT_MIN_SLICE_MM,
            organ_prompts: str | os.PathLike[str] | bool = False, design_prompts: str = "prior"
            ) -> SegmentationResult:
    """Segment organs in a CT/MR volume from a text prompt.

    Args:
        input: NIfTI/NRRD/MHA/npz file, DICOM folder, or a loaded :class:`organsam.io.Volume`.
        organs: free text ("liver, left kidney") or a list of texts/ids.
        all_organs: segment the default organ set (``"all organs"``).
        output: folder to write the outputs to (see :meth:`SegmentationResult.save`); None: keep in memory.
        design: model design; ``"organsam"`` (LiteMedSAM core placed by the atlas prior) runs without a
            trained checkpoint; the research designs need ``checkpoint`` (see
            :mod:`organsam.inference.predictor_factory`).
        checkpoint: a design checkpoint written by ``organsam train`` (``model.safetensors`` with its
            ``model.json``; run by :class:`~organsam.inference.design_predictor.DesignPredictor`), or a SAM-family
            ``.pth`` (LiteMedSAM layout) for the shipped pipeline's core.
        device: ``"cpu"`` or ``"cuda"``.
        fast: faster, approximate settings: coarser registration of the location prior, and the image
            encoder in bfloat16 where the hardware runs it natively (about 2x faster encoding on CPUs with
            AVX512-BF16; masks differ slightly from float32, see ``bench/encoder_speed.py``).
        quiet: no progress bar.
        modality: override the modality guess ("CT" or "MR").
        predictor: a ready :class:`VolumePredictor` (reused across calls).
        min_slice_mm: volumes with thinner slices are segmented on slices this far apart (linear
            interpolation along z) and the masks interpolated back onto every input slice (faster on
            sub-millimetre CTs; approximate: see ``bench/slice_spacing.py``); 0 (default) segments every
            input slice. Volumes with slices at least this thick are not touched.
        organ_prompts: learned organ prompt tokens added to the box prompts: ``True`` the packaged table
            (the shipped checkpoint), a path to an exported table, ``False`` (default) plain LiteMedSAM boxes;
            off by default because on the held-out AMOS slab they did not help the full pipeline (README,
            ``bench/quality.py``). See :mod:`organsam.inference.organ_prompt_table`. Ignored with ``predictor``.
        design_prompts: with a design checkpoint, where the text-prompted organs are looked for: ``"prior"``
            (text + the atlas prior's box on each slice where it has the organ) or ``"text"`` (text alone on
            every slice, kept where the design's presence probability is at least 0.5).

    Returns:
        :class:`SegmentationResult`.
    """
    t0 = time.perf_counter()
    if organs is None and not all_organs:
        raise ValueError("say which organs to segment (e.g. organs='liver, spleen') or pass all_organs=True")
    texts = ["all organs"] if all_organs else ([organs] if isinstance(organs, str) else list(organs or []))
    organ_ids: list[str] = []
    for t in texts:
        for oid in (parse_prompt(t) if t not in load_vocabulary() else [t]):
            if oid not in organ_ids:
                organ_ids.append(oid)
    if predictor is None:
        check_design(design, checkpoint)  # before reading the volume: a wrong name or path fails at once
    volume = input if isinstance(input, Volume) else load_volume(input, modality=modality)
    t_load = time.perf_counter()
    if predictor is None:
        predictor = build_predictor(design, checkpoint, device=device, fast=fast, progress=not quiet,
                                    organ_prompts=organ_prompts, design_prompts=design_prompts)
    work = model_grid(volume, min_slice_mm)
    state = predictor.init_state(work)
    for oid in organ_ids:
        predictor.add_text_prompt(state, oid)
    t_prior = time.perf_counter()
    predictor.fit_prior(state)
    t_model = time.perf_counter()
    for _ in predictor.propagate(state):
        pass
    t_post = time.perf_counter()
    hu = volume.array if volume.modality == "CT" and not volume.meta.is_8bit else None
    masks = {oid: postprocess_mask(oid, to_input_grid(state.results[oid].mask, volume), hu) for oid in organ_ids}
    labelmap, table = merge_labelmap(masks, organ_ids)
    t_end = time.perf_counter()
    timings = {"load": t_load - t0, "prior": t_model - t_prior, "model": t_post - t_model,
               "postprocess": t_end - t_post, "total": t_end - t0}
    report = {
        "organsam_version": __version__,
        "input": str(volume.path) if volume.path else None,
        "design": getattr(getattr(predictor, "model", None), "design_name", DEFAULT_DESIGN),
        "modality": volume.modality,
        "shape_zyx": list(volume.array.shape),
        "spacing_zyx_mm": [float(s) for s in volume.spacing],
        "labels": {str(v): k for v, k in table.items()},
        "organs": {oid: _organ_report(oid, masks[oid], volume, state.results.get(oid)) for oid in organ_ids},
        "encoded_slices": len(state.embeddings),
        "model_slices": int(work.array.shape[0]),
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    result = SegmentationResult(volume, organ_ids, masks, labelmap, table, report, timings)
    if output is not None:
        result.save(output)
    return result
