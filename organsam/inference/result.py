"""What a segmentation run returns (:class:`SegmentationResult`) and how it is written to disk."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from organsam import __version__
from organsam.io import Volume, write_dicom_seg, write_labels, write_masks
from organsam.io.label_files import write_itksnap_labels
from organsam.io.output_folder import check_output_folder, write_output_folder
from organsam.vocabulary import load_vocabulary
from organsam.vocabulary.palette import organ_color

logger = logging.getLogger(__name__)

__all__ = ["SegmentationResult", "check_output", "input_paths"]


def input_paths(volume: Volume) -> list[Path]:
    """The files and folder a volume was read from (never written over or into)."""
    paths = [Path(s) for s in volume.meta.sources]
    if volume.path is not None:
        paths.append(Path(volume.path))
    return paths


def check_output(output: str | os.PathLike[str], input: Any) -> Path:
    """Check an output folder against an input (a path or a :class:`Volume`) before any compute.

    Raises:
        organsam.io.output_folder.OutputFolderError: the folder cannot be used (one line with the fix).
    """
    inputs = input_paths(input) if isinstance(input, Volume) else [Path(input)]
    return check_output_folder(output, inputs)


@dataclass
class SegmentationResult:
    """Output of a segmentation run (:func:`organsam.inference.pipeline.run_segmentation`).

    Attributes:
        volume: the input volume (canonical (Z, Y, X)).
        organ_ids: the segmented organs, in prompt order.
        masks: organ id -> (Z, Y, X) bool, canonical layout; overlaps allowed; empty when absent.
        labels: (Z, Y, X) merged label volume, values from ``label_table`` (smaller organs win overlaps).
        label_table: label value -> organ id (each organ's fixed value, :mod:`organsam.vocabulary.palette`).
        report: per-organ facts (present, volume_ml, mean intensity, bbox, confidence, ...).
        timings: seconds per stage.
    """

    volume: Volume
    organ_ids: list[str]
    masks: dict[str, np.ndarray]
    labels: np.ndarray
    label_table: dict[int, str]
    report: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    def write_files(self, folder: Path, overview: bool = True) -> dict[str, Path]:
        """Write every output file into ``folder`` (an empty folder; not atomic: see :meth:`save`).

        Returns:
            ``segmentation`` / ``slicer`` / ``itksnap_labels`` / ``masks`` / ``report`` (/ ``overview``,
            ``dicom_seg``) -> path in ``folder``.
        """
        vocab = load_vocabulary()
        table = {v: (vocab[k].name, organ_color(k)) for v, k in self.label_table.items()}
        written = {"segmentation": write_labels(self.labels, self.volume, folder / "segmentation.nii.gz", table)}
        written["slicer"] = write_labels(self.labels, self.volume, folder / "segmentation.seg.nrrd", table)
        written["itksnap_labels"] = write_itksnap_labels(table, folder / "segmentation.label.txt")
        write_masks(self.masks, self.volume, folder / "masks")
        written["masks"] = folder / "masks"
        if self.volume.meta.file_format == "dicom":
            try:
                ordered = {k: self.masks[k] for k in self.label_table.values() if self.masks[k].any()}
                written["dicom_seg"] = write_dicom_seg(
                    ordered,
                    self.volume,
                    folder / "segmentation.dcm",
                    organ_names={k: vocab[k].name for k in ordered},
                    organ_colors={k: organ_color(k) for k in ordered},
                    software_version=__version__,
                )
            except Exception as e:  # DICOM-SEG is a bonus next to the NIfTI outputs
                logger.warning("DICOM-SEG not written: %s", e)
        if overview:
            from organsam.inference.overview import render_overview
            from organsam.preprocessing.intensity import to_uint8_display

            written["overview"] = render_overview(
                to_uint8_display(self.volume),
                self.labels,
                table,
                tuple(self.volume.spacing),
                folder / "overview.png",
                ijk_axis=self.volume.ijk_axis,
            )
        (folder / "report.json").write_text(json.dumps(self.report, indent=2))
        written["report"] = folder / "report.json"
        return written

    def save(self, outdir: str | os.PathLike[str], overview: bool = True) -> dict[str, Path]:
        """Write ``segmentation.nii.gz`` (organ names in a header extension), ``segmentation.seg.nrrd`` (3D Slicer),
        ``segmentation.label.txt`` (ITK-SNAP label descriptions), ``masks/<organ>.nii.gz``, ``report.json``,
        ``overview.png`` (and ``segmentation.dcm`` for DICOM input) on the input's grid and orientation into
        ``outdir``.

        The whole folder is built beside ``outdir`` and switched into place in one step
        (:func:`organsam.io.output_folder.write_output_folder`): ``outdir`` shows the previous result or this
        one, never a mix. A folder that holds files organsam did not write, or that holds the input, is refused.

        Returns:
            name -> written path.
        """
        return write_output_folder(outdir, lambda folder: self.write_files(folder, overview), input_paths(self.volume))
