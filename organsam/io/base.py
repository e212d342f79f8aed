"""Reader interface and the registry that picks a reader by file ending or folder content."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from organsam.io.errors import VolumeReadError

__all__ = ["RawImage", "VolumeReader", "find_reader", "register_reader", "suffix_of"]

logger = logging.getLogger(__name__)

_READERS: list[VolumeReader] = []


@dataclass
class RawImage:
    """What a reader returns: the array exactly in the file's layout plus its geometry.

    Attributes:
        array: Spatial array in the file's axis order, as stored (scaling such as NIfTI scl_slope or DICOM
            RescaleSlope already applied). 3D for volumes; 2D or 4D arrays are rejected by the loader.
        affine: (4, 4) float64 mapping the array's voxel indices (in its own axis order) to RAS mm.
        file_format: Short name of the format (``"nifti"``, ``"dicom"``, ...).
        sources: Every file read.
        modality: Modality stated by the file (DICOM), else ``None``.
        is_8bit: The intensities are display values 0..255 (PNG/JPEG, challenge npz).
        nifti_header: NIfTI header, for NIfTI inputs.
        dicom_datasets: DICOM headers in the array's slice order, for DICOM inputs.
        extra: Anything else worth keeping in ``Volume.meta.extra``.
        stored_dtype: The data type in the file where ``array`` was converted (NIfTI scaled to float32).
    """

    array: np.ndarray
    affine: np.ndarray
    file_format: str
    sources: tuple[Path, ...] = ()
    modality: str | None = None
    is_8bit: bool = False
    nifti_header: Any = None
    dicom_datasets: list[Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    stored_dtype: Any = None


class VolumeReader(ABC):
    """A reader for one file format.

    Subclasses set ``name`` and ``suffixes`` (lower-case file endings, longest first where they overlap,
    e.g. ``.nii.gz`` before ``.gz``) and implement :meth:`read`. Override :meth:`can_read` for formats
    recognised by content (DICOM folders, files without an ending).
    """

    #: Human-readable format name used in messages.
    name: str = ""
    #: File endings this reader handles, lower case, with the dot.
    suffixes: tuple[str, ...] = ()
    #: Whether the format holds a single 2D image (a Z=1 volume is then expected, not an error).
    is_2d: bool = False

    def can_read(self, path: Path) -> bool:
        """Whether this reader handles ``path`` (by default: by its file ending).

        Args:
            path: An existing file or folder.

        Returns:
            True when the reader should be used.
        """
        return path.is_file() and suffix_of(path) in self.suffixes

    @abstractmethod
    def read(self, path: Path, *, labels: bool = False, **options: Any) -> RawImage:
        """Read ``path``.

        Args:
            path: The file or folder.
            labels: Read a label map: keep integer values, no intensity conversion.
            **options: Reader-specific options (e.g. ``series_uid`` for DICOM).

        Returns:
            The file-layout array and its geometry.

        Raises:
            VolumeReadError: The file is unreadable, corrupt or not a volume.
        """


def suffix_of(path: Path) -> str:
    """Lower-case file ending including double endings such as ``.nii.gz``.

    Args:
        path: Any path.

    Returns:
        e.g. ``".nii.gz"``, ``".nrrd"``, or ``""``.
    """
    name = path.name.lower()
    for double in (".nii.gz", ".nii.bz2"):
        if name.endswith(double):
            return double
    return path.suffix.lower()


def register_reader(reader: VolumeReader) -> VolumeReader:
    """Add a reader to the registry (later registrations take precedence over earlier ones).

    Args:
        reader: A reader instance.

    Returns:
        The same reader.
    """
    _READERS.insert(0, reader)
    return reader


def find_reader(path: Path) -> VolumeReader:
    """The reader for an existing file or folder.

    Args:
        path: Existing file or folder.

    Returns:
        The first registered reader whose :meth:`VolumeReader.can_read` accepts ``path``.

    Raises:
        VolumeReadError: No reader handles it.
    """
    for reader in _READERS:
        try:
            if reader.can_read(path):
                return reader
        except OSError as exc:  # unreadable file while sniffing the content
            raise VolumeReadError(path, f"cannot be opened ({exc}).", "check the file permissions.") from exc
    endings = sorted({s for r in _READERS for s in r.suffixes})
    what = "folder contains no DICOM image files" if path.is_dir() else f"file type {suffix_of(path)!r} is unknown"
    raise VolumeReadError(
        path,
        f"{what}.",
        f"give a NIfTI, NRRD/MHA, CVPR-challenge .npz or PNG/JPEG file (endings: {', '.join(endings)}) "
        "or a folder holding one DICOM series.",
    )
