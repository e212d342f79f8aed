"""DICOM series reader: a folder of single-frame CT/MR slices -> one 3D volume (pydicom)."""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from organsam.io.base import RawImage, VolumeReader, register_reader
from organsam.io.errors import VolumeReadError
from organsam.preprocessing.orientation import LPS_TO_RAS

__all__ = ["DicomReader", "is_dicom_file"]

logger = logging.getLogger(__name__)

# objects that live beside images in a series folder but are not image slices
_NON_IMAGE_MODALITIES = {"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "SR", "PR", "KO", "REG", "DOC"}
_SNIFF_FILES = 64
_CONVERT_HINT = "or convert the series to NIfTI first (e.g. `dcm2niix -z y -o OUT SERIES_FOLDER`)"


def is_dicom_file(path: Path) -> bool:
    """Whether a file starts with the DICOM preamble (``DICM`` at byte 128).

    Args:
        path: A file.

    Returns:
        True for DICOM Part 10 files.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _candidate_files(folder: Path) -> list[Path]:
    return sorted(
        f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".") and f.name.upper() != "DICOMDIR"
    )


def _floats(ds: Any, keyword: str, n: int) -> np.ndarray | None:
    value = ds.get(keyword)
    if value is None:
        return None
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) else None


class DicomReader(VolumeReader):
    """Reads one DICOM image series from a folder (or the series of a given ``.dcm`` file).

    Slices are sorted by their ImagePositionPatient projected on the slice normal; RescaleSlope and
    RescaleIntercept are applied per slice; the affine is built from ImageOrientationPatient, PixelSpacing
    and the positions, converted from DICOM's LPS to RAS.

    The file layout is (slice, row, column), slices in ascending position along the normal
    ``row_direction x column_direction``.
    """

    name = "DICOM series"
    suffixes = (".dcm", ".ima", ".dicom")

    def can_read(self, path: Path) -> bool:
        """Folders holding DICOM files, ``.dcm`` files and files with the DICOM preamble."""
        if path.is_dir():
            return any(is_dicom_file(f) for f in _candidate_files(path)[:_SNIFF_FILES])
        if path.is_file():
            return path.suffix.lower() in self.suffixes or is_dicom_file(path)
        return False

    def read(self, path: Path, *, labels: bool = False, series_uid: str | None = None, **options: Any) -> RawImage:
        """Read a DICOM series.

        Args:
            path: A folder with one image series, or one file of the series (its folder is scanned).
            labels: The series holds integer labels: values are kept after rescaling, not converted later.
            series_uid: SeriesInstanceUID to pick when the folder holds several series.
            **options: Unused.

        Returns:
            (S, R, C) array with the series' RAS affine; headers (pixel data dropped) in slice order.
        """
        import pydicom

        folder = path if path.is_dir() else path.parent
        if path.is_file():
            try:
                ds0 = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception as exc:
                raise VolumeReadError(
                    path, f"is not a readable DICOM file ({exc}).", "check the file or give the series folder."
                ) from exc
            if series_uid is None:
                series_uid = str(ds0.get("SeriesInstanceUID", "") or "")

        headers: list[tuple[Path, Any]] = []
        skipped: list[str] = []
        unreadable: list[str] = []
        for f in _candidate_files(folder):
            if not is_dicom_file(f) and f.suffix.lower() not in self.suffixes:
                continue
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True)
            except Exception as exc:  # pydicom raises InvalidDicomError, EOFError, ...
                unreadable.append(f"{f.name} ({type(exc).__name__})")
                continue
            modality = str(ds.get("Modality", "") or "").upper()
            if modality in _NON_IMAGE_MODALITIES or "Rows" not in ds or "Columns" not in ds:
                skipped.append(f"{f.name} (not an image: Modality {modality or '?'})")
                continue
            headers.append((f, ds))
        if skipped:  # SEG, SR, presentation states beside the images: expected
            logger.info(
                "%s: skipped %d non-image file(s): %s",
                folder,
                len(skipped),
                ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""),
            )
        if unreadable:  # a slice may be missing from the volume: say so
            logger.warning(
                "%s: %d file(s) could not be read as DICOM and were left out: %s",
                folder,
                len(unreadable),
                ", ".join(unreadable[:5]) + (" ..." if len(unreadable) > 5 else ""),
            )
        if not headers:
            raise VolumeReadError(
                folder,
                "contains no readable DICOM image files.",
                "give the folder that holds the CT/MR slices of one series.",
            )

        groups: dict[str, list[tuple[Path, Any]]] = defaultdict(list)
        for f, ds in headers:
            groups[str(ds.get("SeriesInstanceUID", "") or "")].append((f, ds))
        if series_uid is not None:
            if series_uid not in groups:
                raise VolumeReadError(
                    folder,
                    f"holds no series with SeriesInstanceUID {series_uid!r}.",
                    f"pick one of: {', '.join(repr(u) for u in groups)}.",
                )
            chosen = groups[series_uid]
        elif len(groups) > 1:
            listing = "; ".join(
                f"{uid or '(empty UID)'}: {len(items)} file(s), '{items[0][1].get('SeriesDescription', '') or ''}'"
                for uid, items in groups.items()
            )
            raise VolumeReadError(
                folder,
                f"holds {len(groups)} DICOM series ({listing}); organsam reads one series at a time.",
                "pick one with --series-uid UID (organsam segment) or series_uid=... (load_volume), or move each "
                "series into its own folder.",
            )
        else:
            series_uid, chosen = next(iter(groups.items()))

        sorted_items, affine, extra = self._geometry(folder, chosen)
        array, datasets = self._pixels(folder, sorted_items, labels=labels)
        modality = str(datasets[0].get("Modality", "") or "").upper() or None
        extra.update(
            {"series_uid": series_uid, "series_description": str(datasets[0].get("SeriesDescription", "") or "")}
        )
        return RawImage(
            array=array,
            affine=affine,
            file_format="dicom",
            sources=tuple(f for f, _ in sorted_items),
            modality=modality,
            dicom_datasets=datasets,
            extra=extra,
        )

    @staticmethod
    def _geometry(
        folder: Path, items: list[tuple[Path, Any]]
    ) -> tuple[list[tuple[Path, Any]], np.ndarray, dict[str, Any]]:
        """Sort slices along the normal and build the RAS affine of the (slice, row, column) array."""
        if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for _, ds in items):
            raise VolumeReadError(
                folder,
                "holds multi-frame (enhanced) DICOM, which organsam does not read.",
                _CONVERT_HINT.removeprefix("or ") + ".",
            )
        first = items[0][1]
        iop = _floats(first, "ImageOrientationPatient", 6)
        spacing = _floats(first, "PixelSpacing", 2)
        if iop is None or spacing is None:
            missing = "ImageOrientationPatient" if iop is None else "PixelSpacing"
            raise VolumeReadError(
                folder,
                f"the DICOM images lack {missing}, so they are not a cross-sectional CT/MR series "
                "(e.g. a scout, screenshot or secondary capture).",
                "give the folder of the axial CT/MR series.",
            )
        row_dir, col_dir = iop[:3], iop[3:]
        normal = np.cross(row_dir, col_dir)
        if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
            raise VolumeReadError(
                folder,
                f"has an invalid ImageOrientationPatient {iop.tolist()}.",
                "the headers are damaged; re-export the series.",
            )
        rows, cols = int(first.Rows), int(first.Columns)
        positions = []
        for f, ds in items:
            ipp = _floats(ds, "ImagePositionPatient", 3)
            if ipp is None:
                raise VolumeReadError(
                    f,
                    "lacks ImagePositionPatient, so the slice cannot be placed.",
                    "give a complete CT/MR series " + _CONVERT_HINT + ".",
                )
            other = _floats(ds, "ImageOrientationPatient", 6)
            if other is None or not np.allclose(other, iop, atol=1e-4):
                raise VolumeReadError(
                    folder,
                    f"mixes slice orientations ({f.name} has {None if other is None else other.tolist()}, "
                    f"{items[0][0].name} has {iop.tolist()}).",
                    "keep only the slices of one stack in the folder (e.g. remove localizer images).",
                )
            if int(ds.Rows) != rows or int(ds.Columns) != cols:
                raise VolumeReadError(
                    folder,
                    f"mixes image sizes ({f.name} is {ds.Rows}x{ds.Columns}, others {rows}x{cols}).",
                    "keep only one series in the folder.",
                )
            positions.append(ipp)
        pos = np.array(positions)
        dist = pos @ normal
        order = np.argsort(dist, kind="stable")
        items = [items[i] for i in order]
        pos, dist = pos[order], dist[order]
        n = len(items)
        if n > 1:
            gaps = np.diff(dist)
            if np.any(gaps < 1e-3):
                dup = int(np.sum(gaps < 1e-3))
                raise VolumeReadError(
                    folder,
                    f"has {dup} slice(s) at the same position as another: the series holds several "
                    "acquisitions (e.g. phases, echoes or repeated scans).",
                    "split the series into one folder per acquisition " + _CONVERT_HINT + ".",
                )
            step = (pos[-1] - pos[0]) / (n - 1)
            if gaps.max() - gaps.min() > 0.01 * max(float(np.median(gaps)), 1e-6) + 1e-3:
                logger.warning(
                    "%s: slice spacing is not uniform (%.3f..%.3f mm, %d slices); using the mean "
                    "%.3f mm: missing slices would distort the geometry",
                    folder,
                    gaps.min(),
                    gaps.max(),
                    n,
                    float(np.linalg.norm(step)),
                )
        else:
            thick = first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0
            step = normal * float(thick)
        lps = np.eye(4, dtype=np.float64)
        lps[:3, 0] = step
        lps[:3, 1] = col_dir * spacing[0]  # moving down one row
        lps[:3, 2] = row_dir * spacing[1]  # moving right one column
        lps[:3, 3] = pos[0]
        affine = LPS_TO_RAS @ lps
        return items, affine, {"slice_positions_mm": dist.tolist()}

    @staticmethod
    def _pixels(folder: Path, items: list[tuple[Path, Any]], *, labels: bool) -> tuple[np.ndarray, list[Any]]:
        """Decode and rescale all slices, in the given order."""
        import pydicom

        first = items[0][1]
        rows, cols = int(first.Rows), int(first.Columns)
        out = np.empty((len(items), rows, cols), dtype=np.float64 if labels else np.float32)
        datasets = []
        for k, (f, _) in enumerate(items):
            ds = pydicom.dcmread(f)
            try:
                pix = ds.pixel_array
            except Exception as exc:
                ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
                name = getattr(ts, "name", ts)
                raise VolumeReadError(
                    f,
                    f"pixel data cannot be decoded (transfer syntax {name}: {exc}).",
                    "install a decoder (`pip install pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg`) "
                    + _CONVERT_HINT
                    + ".",
                ) from exc
            if pix.ndim != 2:
                raise VolumeReadError(
                    f,
                    f"is not a single grayscale slice (pixel array shape {pix.shape}).",
                    "give a CT/MR series " + _CONVERT_HINT + ".",
                )
            slope = float(ds.get("RescaleSlope", 1) or 1)
            inter = float(ds.get("RescaleIntercept", 0) or 0)
            values = pix.astype(np.float64) * slope + inter
            out[k] = values
            if "PixelData" in ds:
                del ds.PixelData
            datasets.append(ds)
        return out, datasets


register_reader(DicomReader())
