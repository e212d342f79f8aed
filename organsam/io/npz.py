"""Reader for CVPR-challenge ``.npz`` files (MedSAM-on-laptop format: ``imgs``, ``gts``, ``spacing``)."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from organsam.io.base import RawImage, VolumeReader, register_reader
from organsam.io.errors import VolumeReadError
from organsam.io.volume import canonical_affine_from_spacing

__all__ = ["NpzReader", "npz_spacing_zyx"]

logger = logging.getLogger(__name__)


def npz_spacing_zyx(spacing: Any, order: str = "xyz") -> tuple[float, float, float]:
    """The (sz, sy, sx) spacing of a challenge npz.

    The challenge preprocessing stored ``spacing=sitk_image.GetSpacing()``, i.e. in ITK order (sx, sy, sz),
    while ``imgs`` is (D, H, W); ``order="zyx"`` reads files that stored it in array order instead.

    Args:
        spacing: The npz ``spacing`` entry (3 numbers).
        order: ``"xyz"`` (challenge files) or ``"zyx"``.

    Returns:
        (sz, sy, sx) in mm.
    """
    s = np.asarray(spacing, dtype=np.float64).ravel()
    if s.shape != (3,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"spacing must be three positive numbers, got {s.tolist()}")
    if order == "xyz":
        return float(s[2]), float(s[1]), float(s[0])
    if order == "zyx":
        return float(s[0]), float(s[1]), float(s[2])
    raise ValueError(f"spacing order must be 'xyz' or 'zyx', got {order!r}")


def _to_zyx(arr: np.ndarray, key: str, path: Path) -> tuple[np.ndarray, bool]:
    """(D, H, W) volumes pass; (H, W) and (H, W, 3) 2D images become (1, H, W)."""
    if arr.ndim == 3 and arr.shape[-1] == 3 and key == "imgs" and arr.shape[0] > 3:
        # (H, W, 3) RGB-stacked 2D image of the challenge's 2D modalities
        if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
            gray = arr[..., 0]
        else:
            gray = arr.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            logger.warning("%s: colour 2D image converted to grayscale", path)
        return gray[None], True
    if arr.ndim == 2:
        return arr[None], True
    if arr.ndim == 3:
        return arr, False
    raise VolumeReadError(
        path,
        f"'{key}' has shape {arr.shape}; expected (D, H, W), (H, W) or (H, W, 3).",
        "save the volume as imgs=(D, H, W) array.",
    )


class NpzReader(VolumeReader):
    """Reads challenge ``.npz`` files: ``imgs`` already in canonical (Z, Y, X) layout, 0..255 values."""

    name = "CVPR-challenge npz"
    suffixes = (".npz",)

    def read(self, path: Path, *, labels: bool = False, spacing_order: str = "xyz", **options: Any) -> RawImage:
        """Read ``imgs`` (or ``gts`` with ``labels=True``).

        Args:
            path: The ``.npz`` file.
            labels: Return the ``gts`` label map instead of the image.
            spacing_order: Order of the stored ``spacing`` (``"xyz"`` as in challenge files, or ``"zyx"``).
            **options: Unused.

        Returns:
            (Z, Y, X) array (Z=1 for 2D images) with an axis-aligned affine built from ``spacing``.
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                keys = list(data.keys())
                if "imgs" not in keys:
                    raise VolumeReadError(
                        path,
                        f"has no 'imgs' array (keys: {keys}).",
                        "save the image as imgs=(D, H, W) (CVPR-challenge npz format).",
                    )
                key = "gts" if labels else "imgs"
                if key not in keys:
                    raise VolumeReadError(
                        path,
                        "has no 'gts' label array.",
                        "give a label file, or an npz saved with gts=(D, H, W) labels.",
                    )
                arr = np.asarray(data[key])
                imgs_shape = data["imgs"].shape if labels else arr.shape
                raw_spacing = np.asarray(data["spacing"]) if "spacing" in keys else None
        except VolumeReadError:
            raise
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise VolumeReadError(
                path,
                f"is not a readable .npz file ({type(exc).__name__}: {exc}).",
                "check that the file is complete; save it again with numpy.savez_compressed.",
            ) from exc
        arr, is_2d = _to_zyx(arr, key, path)
        if labels and arr.shape != _to_zyx(np.empty(imgs_shape, dtype=np.uint8), "imgs", path)[0].shape:
            raise VolumeReadError(
                path,
                f"'gts' shape {arr.shape} does not match 'imgs' shape {imgs_shape}.",
                "save gts on the same grid as imgs.",
            )
        if raw_spacing is not None and raw_spacing.size == 3:
            try:
                spacing = npz_spacing_zyx(raw_spacing, spacing_order)
            except ValueError as exc:
                raise VolumeReadError(
                    path, f"has an invalid 'spacing' ({exc}).", "store spacing=(sx, sy, sz) in mm."
                ) from exc
        else:
            if not is_2d:
                logger.warning("%s: no 'spacing' stored; assuming 1 mm voxels", path)
            spacing = (1.0, 1.0, 1.0)
        if not labels:
            arr = arr.astype(np.float32, copy=False)
        return RawImage(
            array=arr,
            affine=canonical_affine_from_spacing(spacing),
            file_format="npz",
            sources=(path,),
            is_8bit=not labels and _looks_8bit(arr),
            extra={"npz_keys": keys, "is_2d": is_2d},
        )


def _looks_8bit(arr: np.ndarray) -> bool:
    from organsam.preprocessing.intensity import is_prewindowed_8bit

    return is_prewindowed_8bit(arr)


register_reader(NpzReader())
