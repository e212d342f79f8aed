"""2D image reader (PNG, JPEG, BMP, TIFF slices) on Pillow: one slice, a (1, H, W) volume."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from organsam.io.base import RawImage, VolumeReader, register_reader
from organsam.io.errors import VolumeReadError
from organsam.io.volume import canonical_affine_from_spacing

__all__ = ["ImageReader"]

logger = logging.getLogger(__name__)


class ImageReader(VolumeReader):
    """Reads a 2D image as a single-slice volume, taken as already in display orientation.

    Row 0 of the image is taken as posterior-most/top and column 0 as the patient's right (the usual
    radiological display), so the slice is used as it is. 8-bit images are flagged as pre-windowed.
    """

    name = "2D image"
    suffixes = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
    is_2d = True

    def read(self, path: Path, *, labels: bool = False, **options: Any) -> RawImage:
        """Read the image.

        Args:
            path: The image file.
            labels: Keep integer values (mask PNGs).
            **options: Unused.

        Returns:
            (1, H, W) array with 1 mm spacing; colour images converted to grayscale.
        """
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                im.load()
                mode = im.mode
                if mode in ("RGB", "RGBA", "P", "LA", "CMYK", "YCbCr"):
                    rgb = np.asarray(im.convert("RGB"))
                    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
                        arr = rgb[..., 0]
                    else:
                        logger.info("%s: colour image converted to grayscale", path)
                        arr = np.asarray(im.convert("L"))
                elif mode == "1":
                    arr = np.asarray(im.convert("L"))
                else:
                    arr = np.asarray(im)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise VolumeReadError(
                path,
                f"is not a readable image ({type(exc).__name__}: {exc}).",
                "check that the file is a complete PNG/JPEG; save it again.",
            ) from exc
        if arr.ndim != 2:
            raise VolumeReadError(
                path,
                f"decoded to an array of shape {arr.shape}, not a 2D grayscale image.",
                "save the slice as a grayscale or RGB PNG.",
            )
        is_8bit = arr.dtype == np.uint8
        out = arr[None]
        if not labels:
            out = out.astype(np.float32)
        return RawImage(
            array=out,
            affine=canonical_affine_from_spacing((1.0, 1.0, 1.0)),
            file_format="image",
            sources=(path,),
            is_8bit=is_8bit and not labels,
            extra={"image_mode": mode, "is_2d": True},
        )


register_reader(ImageReader())
