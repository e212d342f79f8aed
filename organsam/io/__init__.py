"""Medical image input/output in organsam's canonical (Z, Y, X) layout.

Readers (one per format) register themselves by file ending or folder content; ``load_volume`` picks one.
Writers put results back on the input's grid, orientation and affine.
"""

from __future__ import annotations

# importing the reader modules registers them (order: later registrations are tried first)
from organsam.io import dicom as _dicom  # noqa: F401
from organsam.io import itk as _itk  # noqa: F401
from organsam.io import nifti as _nifti  # noqa: F401
from organsam.io import npz as _npz  # noqa: F401
from organsam.io import png as _png  # noqa: F401
from organsam.io.base import RawImage, VolumeReader, find_reader, register_reader
from organsam.io.dicom_seg import write_dicom_seg
from organsam.io.errors import VolumeFileNotFoundError, VolumeReadError, VolumeWriteError
from organsam.io.loader import load_labels, load_volume
from organsam.io.volume import Volume, VolumeMeta
from organsam.io.writers import write_labels, write_masks

__all__ = [
    "RawImage",
    "Volume",
    "VolumeFileNotFoundError",
    "VolumeMeta",
    "VolumeReadError",
    "VolumeReader",
    "VolumeWriteError",
    "find_reader",
    "load_labels",
    "load_volume",
    "register_reader",
    "write_dicom_seg",
    "write_labels",
    "write_masks",
]
