"""Slices of a canonical (Z, Y, X) volume as display images, and display pixels back to voxels.

Display conventions (radiological, as the viewer shows them):

* axial slice ``z``: rows anterior (top) -> posterior, columns patient right (left of the image) -> left;
  ``image[r, c] = array[z, Y-1-r, c]``.
* coronal slice ``y``: rows superior (top) -> inferior, columns patient right -> left;
  ``image[r, c] = array[Z-1-r, y, c]``.
* sagittal slice ``x``: rows superior -> inferior, columns anterior (left of the image) -> posterior;
  ``image[r, c] = array[Z-1-r, Y-1-c, x]``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from organsam.preprocessing.orientation import DISPLAY_VIEWS, display_slice

__all__ = [
    "VIEWS",
    "display_to_voxel",
    "extract",
    "overlay_rgba",
    "png_bytes",
    "view_info",
]

VIEWS = DISPLAY_VIEWS


def _check_view(view: str) -> None:
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; use one of {', '.join(VIEWS)}")


def view_info(shape_zyx: Sequence[int], spacing_zyx: Sequence[float]) -> dict[str, dict[str, float]]:
    """Size of each view's images.

    Args:
        shape_zyx: (Z, Y, X) of the canonical volume.
        spacing_zyx: (sz, sy, sx) in mm.

    Returns:
        view -> {"count": slices, "width"/"height": image pixels, "pixel_w_mm"/"pixel_h_mm": pixel size}.
    """
    Z, Y, X = (int(s) for s in shape_zyx)
    sz, sy, sx = (float(s) for s in spacing_zyx)
    return {
        "axial": {"count": Z, "width": X, "height": Y, "pixel_w_mm": sx, "pixel_h_mm": sy},
        "coronal": {"count": Y, "width": X, "height": Z, "pixel_w_mm": sx, "pixel_h_mm": sz},
        "sagittal": {"count": X, "width": Y, "height": Z, "pixel_w_mm": sy, "pixel_h_mm": sz},
    }


def _check_index(shape_zyx: Sequence[int], view: str, index: int) -> None:
    _check_view(view)
    n = int(shape_zyx[VIEWS.index(view)])
    if not 0 <= index < n:
        raise IndexError(f"{view} slice {index} is out of range: the volume has {n} {view} slices (0..{n - 1})")


def extract(array: np.ndarray, view: str, index: int) -> np.ndarray:
    """One slice of a (Z, Y, X) array (or (Z, Y, X, C)) in display orientation.

    Args:
        array: canonical (Z, Y, X[, C]) array.
        view: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
        index: slice index along that view's axis (z, y or x).

    Returns:
        (H, W[, C]) view of the slice: axial (Y, X), coronal (Z, X), sagittal (Z, Y), flipped as in the module
        docstring.

    Raises:
        ValueError: unknown view. IndexError: index out of range.
    """
    _check_index(array.shape, view, index)
    return display_slice(array, view, index)


def display_to_voxel(
    shape_zyx: Sequence[int], view: str, index: int, col: float, row: float
) -> tuple[float, float, float]:
    """Where a display pixel (column, row) of a view's slice lies in the canonical volume.

    Args:
        shape_zyx: (Z, Y, X).
        view: the view clicked.
        index: its slice index.
        col: column in the slice image (may be fractional: pixel centres at .5 are not assumed).
        row: row in the slice image.

    Returns:
        (z, y, x) canonical voxel coordinates (fractional where the input was).
    """
    _check_index(shape_zyx, view, index)
    Z, Y, _ = (int(s) for s in shape_zyx)
    if view == "axial":
        return float(index), Y - 1 - row, col
    if view == "coronal":
        return Z - 1 - row, float(index), col
    return Z - 1 - row, Y - 1 - col, float(index)


def overlay_rgba(
    masks: Mapping[str, np.ndarray],
    colors: Mapping[str, tuple[int, int, int]],
    shape_zyx: Sequence[int],
    view: str,
    index: int,
    visible: Sequence[str] | None = None,
    outline: bool = True,
) -> np.ndarray:
    """Coloured organ overlay of one slice.

    Larger organs are painted first so a small organ inside or over a large one stays visible; an outline
    (the mask's border pixels) is drawn fully opaque, the inside at alpha 160 so the client's opacity
    slider scales both.

    Args:
        masks: organ id -> (Z, Y, X) bool canonical mask.
        colors: organ id -> RGB.
        shape_zyx: (Z, Y, X) of the volume.
        view: view name.
        index: slice index.
        visible: organ ids to draw (default: all).
        outline: draw borders opaque.

    Returns:
        (H, W, 4) uint8 RGBA in display orientation (transparent where no organ is shown).
    """
    _check_index(shape_zyx, view, index)
    info = view_info(shape_zyx, (1.0, 1.0, 1.0))[view]
    out = np.zeros((int(info["height"]), int(info["width"]), 4), dtype=np.uint8)
    ids = [o for o in masks if visible is None or o in visible]
    slices = {o: np.asarray(extract(masks[o], view, index), dtype=bool) for o in ids}
    for oid in sorted(ids, key=lambda o: -int(masks[o].sum())):
        m = slices[oid]
        if not m.any():
            continue
        rgb = colors.get(oid, (255, 255, 0))
        out[m, :3] = rgb
        out[m, 3] = 160
        if outline:
            inner = m.copy()
            inner[1:, :] &= m[:-1, :]
            inner[:-1, :] &= m[1:, :]
            inner[:, 1:] &= m[:, :-1]
            inner[:, :-1] &= m[:, 1:]
            out[m & ~inner, 3] = 255
    return out


def png_bytes(image: np.ndarray, compress_level: int = 1) -> bytes:
    """Encode a (H, W) uint8 grey or (H, W, 4) uint8 RGBA image as PNG."""
    arr = np.ascontiguousarray(image)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise ValueError(f"expected a (H, W) or (H, W, 4) uint8 image, got {arr.dtype} {arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()
