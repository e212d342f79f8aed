"""NIfTI-1/NIfTI-2 reader (``.nii``, ``.nii.gz``) on nibabel."""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from organsam.io.base import RawImage, VolumeReader, register_reader
from organsam.io.errors import VolumeReadError

__all__ = ["NiftiReader"]

logger = logging.getLogger(__name__)

_CORRUPT = (EOFError, zlib.error, gzip.BadGzipFile, OSError, ValueError)


class NiftiReader(VolumeReader):
    """Reads NIfTI files, applying ``scl_slope``/``scl_inter``; keeps the header for writing results."""

    name = "NIfTI"
    suffixes = (".nii.gz", ".nii")

    def read(self, path: Path, *, labels: bool = False, **options: Any) -> RawImage:
        """Read a NIfTI file.

        Args:
            path: ``.nii`` or ``.nii.gz`` file.
            labels: Keep the stored values (integer label maps) instead of converting to float32.
            **options: Unused.

        Returns:
            File-layout array (I, J, K[, ...]) as nibabel orders it, with the file's affine (sform if its
            code is set, else qform) as float64.
        """
        try:
            img = nib.load(str(path))
        except Exception as exc:  # nibabel raises many kinds (ImageFileError, HeaderDataError, EOFError, ...)
            raise VolumeReadError(
                path, f"is not a readable NIfTI file ({type(exc).__name__}: {exc}).",
                "check that the download/export finished; re-export the image as .nii.gz.",
            ) from exc
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise VolumeReadError(path, f"was read by nibabel as {type(img).__name__}, not NIfTI.",
                                  "convert it to NIfTI (.nii.gz).")
        try:
            data = np.asanyarray(img.dataobj) if labels else img.get_fdata(dtype=np.float32)
        except _CORRUPT as exc:
            raise VolumeReadError(
                path,
                f"is truncated or corrupt: the header is fine but the image data cannot be read "
                f"({type(exc).__name__}: {exc}).",
                "the file was probably cut off while copying or downloading; copy or export it again.",
            ) from exc
        return RawImage(
            array=np.asarray(data),
            affine=np.array(img.affine, dtype=np.float64),
            file_format="nifti",
            sources=(path,),
            nifti_header=img.header.copy(),
            extra={"axcodes": "".join(nib.aff2axcodes(img.affine))},
        )


register_reader(NiftiReader())
