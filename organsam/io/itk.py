"""NRRD / MetaImage (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``) reader on SimpleITK."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from organsam.io.base import RawImage, VolumeReader, register_reader
from organsam.io.errors import VolumeReadError
from organsam.preprocessing.orientation import LPS_TO_RAS

__all__ = ["ItkReader", "itk_affine_zyx"]

logger = logging.getLogger(__name__)


def itk_affine_zyx(origin: tuple[float, ...], spacing: tuple[float, ...], direction: tuple[float, ...]) -> np.ndarray:
    """RAS affine of a SimpleITK array (``GetArrayFromImage`` order (z, y, x)) from ITK's LPS geometry.

    Args:
        origin: ITK origin (x, y, z) in LPS mm.
        spacing: ITK spacing (sx, sy, sz).
        direction: ITK direction, 9 values row-major (world axis x index axis).

    Returns:
        (4, 4) float64 mapping (z, y, x) array indices to RAS mm.
    """
    d = np.array(direction, dtype=np.float64).reshape(3, 3)
    lps_xyz = np.eye(4, dtype=np.float64)
    lps_xyz[:3, :3] = d * np.asarray(spacing, dtype=np.float64)[None, :]
    lps_xyz[:3, 3] = np.asarray(origin, dtype=np.float64)
    lps_zyx = lps_xyz[:, [2, 1, 0, 3]]
    return LPS_TO_RAS @ lps_zyx


class ItkReader(VolumeReader):
    """Reads NRRD and MetaImage volumes; the ITK direction matrix becomes the affine."""

    name = "NRRD/MetaImage"
    suffixes = (".nrrd", ".nhdr", ".mha", ".mhd")

    def read(self, path: Path, *, labels: bool = False, **options: Any) -> RawImage:
        """Read with SimpleITK.

        Args:
            path: The image file.
            labels: Keep stored (integer) values.
            **options: Unused.

        Returns:
            (Z, Y, X) array in SimpleITK's order with its RAS affine.
        """
        import SimpleITK as sitk  # noqa: N813

        try:
            img = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            raise VolumeReadError(
                path,
                f"cannot be read as {self.name} ({first[-1] if first else exc}).",
                "check that the file (and, for .nhdr/.mhd, its data file) is complete; re-export it.",
            ) from exc
        if img.GetNumberOfComponentsPerPixel() != 1:
            raise VolumeReadError(
                path,
                f"has {img.GetNumberOfComponentsPerPixel()} components per voxel (vector/RGB image).",
                "give a single-channel (grayscale) CT/MR volume.",
            )
        dim = img.GetDimension()
        arr = sitk.GetArrayFromImage(img)
        if dim != 3:
            # leave the 2D/4D check (and its message) to the loader
            return RawImage(array=arr, affine=np.eye(4), file_format="itk", sources=(path,))
        affine = itk_affine_zyx(img.GetOrigin(), img.GetSpacing(), img.GetDirection())
        if not labels:
            arr = arr.astype(np.float32, copy=False)
        keys = {k: img.GetMetaData(k) for k in img.GetMetaDataKeys()}
        modality = None
        mod = keys.get("Modality", keys.get("modality", ""))
        if isinstance(mod, str) and mod.upper().startswith("MET_"):
            mod = mod[4:]
        if str(mod).upper() in ("CT", "MR"):
            modality = str(mod).upper()
        return RawImage(
            array=arr,
            affine=affine,
            file_format="itk",
            sources=(path,),
            modality=modality,
            extra={"itk_metadata": keys},
        )


register_reader(ItkReader())
