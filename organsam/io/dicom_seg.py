"""DICOM Segmentation (SEG) output for DICOM input, with highdicom."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from organsam.io.base import RawImage, VolumeReader, register_reader
from organsam.io.dicom import is_dicom_file
from organsam.io.errors import VolumeReadError, VolumeWriteError
from organsam.io.volume import Volume
from organsam.io.writers import atomic_output
from organsam.preprocessing.orientation import LPS_TO_RAS

__all__ = ["DicomSegReader", "organ_code", "write_dicom_seg"]

logger = logging.getLogger(__name__)

_SIDES = ("_left", "_right")
# organ ids whose SNOMED CT concept name differs from the CamelCase of the id
_CODE_ALIASES = {
    "urinary_bladder": "Bladder",
    "small_bowel": "SmallIntestine",
    "prostate_uterus": "Prostate",
    "postcava": "InferiorVenaCava",
}


def organ_code(organ_id: str) -> Any:
    """SNOMED CT code for an organ id from the DICOM code dictionary (``"Organ"`` when none matches).

    A side suffix (``_left``/``_right``) is dropped: laterality goes into the segment label.

    Args:
        organ_id: snake_case organ id, e.g. ``"kidney_left"``.

    Returns:
        A ``pydicom.sr.coding.Code``.
    """
    from pydicom.sr.codedict import codes

    base = organ_id
    for side in _SIDES:
        base = base.removesuffix(side)
    candidates = [_CODE_ALIASES.get(base, ""), "".join(w.capitalize() for w in base.split("_"))]
    candidates += [w.capitalize() for w in reversed(base.split("_"))]
    for name in candidates:
        if not name:
            continue
        try:
            return getattr(codes.SCT, name)
        except AttributeError:
            continue
    return codes.SCT.Organ


def _source_datasets(like: Volume) -> list[Any]:
    """Copies of the input's DICOM headers with the identifiers highdicom needs filled in."""
    from pydicom.uid import generate_uid

    datasets = like.meta.dicom_datasets
    if not datasets:
        raise VolumeWriteError(
            None,
            f"DICOM-SEG needs DICOM input, but {like.path} was read as {like.meta.file_format}.",
            "write NIfTI instead (e.g. labels.nii.gz).",
        )
    out = []
    filled: set[str] = set()
    seed = str(datasets[0].get("FrameOfReferenceUID", "") or like.path)
    study_uid = str(datasets[0].get("StudyInstanceUID", "") or "") or generate_uid(entropy_srcs=["study", seed])
    series_uid = str(datasets[0].get("SeriesInstanceUID", "") or "") or generate_uid(entropy_srcs=["series", seed])
    for ds in datasets:
        d = copy.deepcopy(ds)
        meta = getattr(d, "file_meta", None)
        for keyword, fallback in (
            ("SOPClassUID", getattr(meta, "MediaStorageSOPClassUID", None)),
            ("SOPInstanceUID", getattr(meta, "MediaStorageSOPInstanceUID", None)),
            ("StudyInstanceUID", study_uid),
            ("SeriesInstanceUID", series_uid),
        ):
            if not str(d.get(keyword, "") or ""):
                if not fallback:
                    raise VolumeWriteError(
                        None, f"the DICOM input {like.path} lacks {keyword}.", "write NIfTI output instead."
                    )
                setattr(d, keyword, fallback)
                filled.add(keyword)
        for keyword in (
            "PatientID",
            "PatientName",
            "PatientBirthDate",
            "PatientSex",
            "StudyID",
            "AccessionNumber",
            "ReferringPhysicianName",
            "StudyDate",
            "StudyTime",
        ):
            if keyword not in d:
                setattr(d, keyword, "")
        out.append(d)
    if filled:
        logger.warning(
            "%s: the DICOM headers lack %s (anonymised?); the SEG references the files' media-storage "
            "UIDs and derived study/series UIDs",
            like.path,
            ", ".join(sorted(filled)),
        )
    return out


def write_dicom_seg(
    masks: Mapping[str, np.ndarray],
    like: Volume,
    path: str | Path,
    organ_names: Mapping[str, str] | None = None,
    *,
    organ_colors: Mapping[str, tuple[int, int, int]] | None = None,
    series_description: str = "organsam segmentation",
    software_version: str = "unknown",
) -> Path:
    """Write a binary DICOM SEG referencing the input DICOM series, one segment per organ.

    Args:
        masks: organ id -> (Z, Y, X) boolean mask on ``like``'s canonical grid, in segment order (segment numbers
            1, 2, ... follow it). Empty masks are skipped.
        like: The volume read from a DICOM series (its headers are in ``like.meta.dicom_datasets``).
        path: Output ``.dcm`` file.
        organ_names: organ id -> human-readable segment label (default: the id with spaces).
        organ_colors: organ id -> RGB, written as each segment's recommended display colour (CIELab).
        series_description: SeriesDescription of the SEG.
        software_version: SoftwareVersions and the algorithm version.

    Returns:
        The written path.

    Raises:
        VolumeWriteError: The input was not DICOM, a mask has the wrong shape, or there is nothing to write.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    out = Path(path).expanduser()
    sources = _source_datasets(like)
    names = dict(organ_names or {})
    colors = dict(organ_colors or {})
    descriptions = []
    planes = []
    for organ_id, mask in masks.items():
        m = np.asarray(mask)
        if tuple(m.shape) != like.shape:
            raise VolumeWriteError(
                out,
                f"mask {organ_id!r} has shape {m.shape}, the image {like.shape}.",
                "pass masks on the image's canonical grid.",
            )
        m = m != 0 if m.dtype != bool else m
        if not m.any():
            logger.info("%s: mask %r is empty; left out of the SEG", out, organ_id)
            continue
        number = len(descriptions) + 1
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=names.get(organ_id, organ_id.replace("_", " "))[:64],
                segmented_property_category=codes.SCT.AnatomicalStructure,
                segmented_property_type=organ_code(organ_id),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=hd.AlgorithmIdentificationSequence(
                    name="organsam", version=software_version, family=codes.cid7162.ArtificialIntelligence
                ),
                tracking_id=organ_id,
                tracking_uid=generate_uid(),
                display_color=(hd.color.CIELabColor.from_rgb(*colors[organ_id]) if organ_id in colors else None),
            )
        )
        planes.append(np.ascontiguousarray(like.to_file_layout(m)))  # (slices, rows, columns)
    if not descriptions:
        raise VolumeWriteError(
            out,
            "all masks are empty; there is nothing to write to a DICOM SEG.",
            "check the prompt/organ list; empty results are not written as SEG.",
        )
    pixel_array = np.stack(planes, axis=-1).astype(bool)  # (frames, rows, columns, segments)
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=int(sources[0].get("SeriesNumber") or 0) + 1000,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="organsam",
        manufacturer_model_name="organsam",
        software_versions=software_version,
        device_serial_number="0",
        series_description=series_description,
    )
    with atomic_output(out, like) as tmp:
        seg.save_as(str(tmp))
    logger.info("wrote DICOM SEG %s with %d segment(s)", out, len(descriptions))
    return out


class DicomSegReader(VolumeReader):
    """Reads a DICOM SEG file as a label map (segment numbers as label values); not an image."""

    name = "DICOM SEG"
    suffixes = (".dcm",)

    def can_read(self, path: Path) -> bool:
        """DICOM files whose SOP class is Segmentation Storage."""
        if not path.is_file() or not is_dicom_file(path):
            return False
        import pydicom

        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"])
        except Exception:
            return False
        return str(ds.get("SOPClassUID", "")) == "1.2.840.10008.5.1.4.1.1.66.4" or ds.get("Modality") == "SEG"

    def read(self, path: Path, *, labels: bool = False, **options: Any) -> RawImage:
        """Read the segments as one label map.

        Args:
            path: The SEG file.
            labels: Must be True: a SEG holds labels, not an image.
            **options: Unused.

        Returns:
            (frames, rows, columns) labels (segment number per voxel; later segments win where they
            overlap) with the RAS affine of the SEG's frames.
        """
        if not labels:
            raise VolumeReadError(
                path,
                "is a DICOM SEG (a segmentation), not an image.",
                "give the CT/MR series folder the SEG refers to; read the SEG with load_labels.",
            )
        import highdicom as hd

        try:
            seg = hd.seg.segread(str(path))
            vol = seg.get_volume(combine_segments=True, skip_overlap_checks=True)
        except Exception as exc:
            raise VolumeReadError(
                path,
                f"cannot be read as a DICOM SEG volume ({type(exc).__name__}: {exc}).",
                "check that the SEG holds parallel, evenly spaced frames; re-export it.",
            ) from exc
        return RawImage(
            array=np.asarray(vol.array),
            affine=LPS_TO_RAS @ np.asarray(vol.affine, dtype=np.float64),
            file_format="dicom_seg",
            sources=(path,),
            extra={"segments": {int(n): seg.get_segment_description(n).segment_label for n in seg.segment_numbers}},
        )


register_reader(DicomSegReader())
