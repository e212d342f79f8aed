"""NIfTI-1/NIfTI-2 reader (``.nii``, ``.nii.gz``) on nibabel."""

from __future__ import annotations

import contextlib
import gzip
import logging
import zlib
from collections.abc import Iterator
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
            with _quiet_nibabel():  # its header repairs (a zero voxel size read as 1) are checked and said below
                img = nib.load(str(path))
        except Exception as exc:  # nibabel raises many kinds (ImageFileError, HeaderDataError, EOFError, ...)
            raise VolumeReadError(
                path,
                f"is not a readable NIfTI file ({type(exc).__name__}: {exc}).",
                "check that the download/export finished; re-export the image as .nii.gz.",
            ) from exc
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise VolumeReadError(
                path, f"was read by nibabel as {type(img).__name__}, not NIfTI.", "convert it to NIfTI (.nii.gz)."
            )
        _check_geometry(img, path)
        if np.issubdtype(img.get_data_dtype(), np.complexfloating):
            raise VolumeReadError(path, "holds complex values.", "save the magnitude image instead.")
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
            stored_dtype=img.get_data_dtype(),
        )


@contextlib.contextmanager
def _quiet_nibabel() -> Iterator[None]:
    log = logging.getLogger("nibabel.global")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _raw_pixdim(img: Any, path: Path) -> np.ndarray:
    """The voxel sizes as stored (nibabel replaces zeros by 1 when it loads a header)."""
    try:
        with nib.openers.ImageOpener(str(path)) as f, _quiet_nibabel():
            hdr = type(img.header).from_fileobj(f, check=False)
        return np.asarray(hdr["pixdim"][1:4], dtype=float)
    except Exception:  # the header was readable a moment ago; fall back to nibabel's view of it
        return np.asarray(img.header["pixdim"][1:4], dtype=float)


def _check_geometry(img: Any, path: Path) -> None:
    """Refuse NaN/infinite or degenerate affines and zero voxel sizes; warn when qform and sform disagree."""
    hdr = img.header
    for name, code_key, matrix in (("sform", "sform_code", hdr.get_sform), ("qform", "qform_code", hdr.get_qform)):
        if int(hdr[code_key]) > 0 and not np.isfinite(matrix()).all():
            raise VolumeReadError(
                path,
                f"has NaN or infinite values in its {name} (the voxel-to-world affine).",
                "repair the header (e.g. nibabel: img.set_sform(affine); img.set_qform(affine)) "
                "or re-export the image.",
            )
    zero = [a for a, d in zip("ijk", _raw_pixdim(img, path)) if d == 0]
    affine = np.asarray(img.affine, dtype=float)
    if zero or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        what = f"a zero voxel size along {', '.join(zero)} (pixdim)" if zero else "a degenerate affine"
        raise VolumeReadError(
            path,
            f"has {what}: where its voxels lie in space is unknown.",
            "set the voxel size in the header (nibabel: img.header.set_zooms(...)) or re-export the image.",
        )
    if int(hdr["qform_code"]) > 0 and int(hdr["sform_code"]) > 0:
        q, s_ = hdr.get_qform(), hdr.get_sform()
        gap = float(np.abs(q - s_).max())
        if gap > 1e-2:
            logger.warning(
                "%s: the qform and sform disagree (by up to %.3g mm); organsam uses the sform, as "
                "nibabel does, but tools that read the qform (some ITK-based ones) place it elsewhere",
                path,
                gap,
            )


register_reader(NiftiReader())
