"""Orientation helpers: from a file's voxel order to organsam's canonical (Z, Y, X) layout and back.

The canonical layout (shared contract): axis 0 runs inferior->superior, axis 1 posterior->anterior and
axis 2 from the patient's right to the left. In nibabel terms the (X, Y, Z) order has axis codes
``("L", "A", "S")``; organsam keeps the array transposed to (Z, Y, X).

A file's array (any axis order, any flips) is mapped to the canonical one by a permutation of axes followed
by flips::

    canonical = flip(transpose(file_array, perm), axes=[c for c in range(3) if flips[c]])

``perm[c]`` is the file axis that becomes canonical axis ``c``. Axes are matched to the world (RAS) axis they
are closest to, so slightly oblique acquisitions are handled as well (the exact, oblique geometry stays in the
affine).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CANONICAL_AXCODES_ZYX",
    "DISPLAY_VIEWS",
    "LPS_TO_RAS",
    "axcodes",
    "canonical_index_affine",
    "canonical_transform",
    "display_slice",
    "from_canonical",
    "spacing_from_affine",
    "to_canonical",
]

#: Axis codes of the canonical (Z, Y, X) array: each axis runs towards this patient direction.
CANONICAL_AXCODES_ZYX: tuple[str, str, str] = ("S", "A", "L")

#: Multiply an LPS (DICOM/ITK) world matrix from the left by this to get RAS (NIfTI) coordinates.
LPS_TO_RAS: np.ndarray = np.diag([-1.0, -1.0, 1.0, 1.0])

# canonical axis -> (RAS world axis it follows, +1 if the index grows with the world coordinate)
_CANONICAL_WORLD = {0: (2, 1.0), 1: (1, 1.0), 2: (0, -1.0)}
_POS_CODES = ("R", "A", "S")
_NEG_CODES = ("L", "P", "I")


def _check_affine(affine: np.ndarray) -> np.ndarray:
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise ValueError(f"expected a 4x4 affine, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"the affine contains NaN or infinite values:\n{a}")
    return a


def _axis_world(affine: np.ndarray) -> list[tuple[int, float]]:
    """For each voxel axis of a 3D affine: (closest RAS world axis, sign of the direction along it).

    Args:
        affine: (4, 4) voxel index -> RAS mm.

    Returns:
        Three (world_axis, sign) pairs, one per voxel axis, with distinct world axes.
    """
    a = _check_affine(affine)
    rz = a[:3, :3]
    norms = np.linalg.norm(rz, axis=0)
    if np.any(norms == 0) or abs(np.linalg.det(rz)) < 1e-12 * float(np.prod(norms)):
        raise ValueError(f"the affine's direction matrix is singular (degenerate voxel axes):\n{a}")
    cosines = np.abs(rz / norms)  # [world, voxel]
    result: list[tuple[int, float] | None] = [None, None, None]
    used_world: set[int] = set()
    # assign greedily, strongest alignment first, so each voxel axis gets a distinct world axis
    order = np.dstack(np.unravel_index(np.argsort(-cosines, axis=None), cosines.shape))[0]
    for world, voxel in order:
        if result[voxel] is None and world not in used_world:
            result[voxel] = (int(world), 1.0 if rz[world, voxel] > 0 else -1.0)
            used_world.add(int(world))
    return [r for r in result if r is not None]


def axcodes(affine: np.ndarray) -> tuple[str, str, str]:
    """nibabel-style axis codes of a 3D affine, e.g. ``("R", "A", "S")``.

    Args:
        affine: (4, 4) voxel index -> RAS mm.

    Returns:
        For each voxel axis, the patient direction towards which its index grows.
    """
    codes = []
    for world, sign in _axis_world(affine):
        codes.append(_POS_CODES[world] if sign > 0 else _NEG_CODES[world])
    return tuple(codes)  # type: ignore[return-value]


def canonical_transform(affine: np.ndarray) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """Axis permutation and flips taking a file array with this affine to the canonical (Z, Y, X) layout.

    Args:
        affine: (4, 4) mapping the file array's voxel indices (in the file array's axis order) to RAS mm.

    Returns:
        ``(perm, flips)``: ``perm[c]`` is the file axis that becomes canonical axis ``c``; ``flips[c]`` tells
        whether canonical axis ``c`` must be reversed after the transpose.
    """
    per_voxel = _axis_world(affine)
    perm = [0, 0, 0]
    flips = [False, False, False]
    for voxel_axis, (world, sign) in enumerate(per_voxel):
        for c, (w, wanted) in _CANONICAL_WORLD.items():
            if w == world:
                perm[c] = voxel_axis
                flips[c] = sign != wanted
    return (perm[0], perm[1], perm[2]), (flips[0], flips[1], flips[2])


def to_canonical(arr: np.ndarray, perm: tuple[int, int, int], flips: tuple[bool, bool, bool]) -> np.ndarray:
    """Reorder a file-layout array to the canonical layout (a view, no copy).

    Args:
        arr: (A0, A1, A2) array in the file's axis order.
        perm: From :func:`canonical_transform`.
        flips: From :func:`canonical_transform`.

    Returns:
        (Z, Y, X) view of ``arr``.
    """
    out = np.transpose(arr, perm)
    for c in range(3):
        if flips[c]:
            out = np.flip(out, axis=c)
    return out


def from_canonical(arr: np.ndarray, perm: tuple[int, int, int], flips: tuple[bool, bool, bool]) -> np.ndarray:
    """Inverse of :func:`to_canonical` (a view, no copy).

    Args:
        arr: (Z, Y, X) canonical array.
        perm: From :func:`canonical_transform`.
        flips: From :func:`canonical_transform`.

    Returns:
        (A0, A1, A2) view in the file's axis order.
    """
    out = arr
    for c in range(3):
        if flips[c]:
            out = np.flip(out, axis=c)
    return np.transpose(out, tuple(int(i) for i in np.argsort(perm)))


def canonical_index_affine(
    affine: np.ndarray,
    file_shape: tuple[int, ...],
    perm: tuple[int, int, int],
    flips: tuple[bool, bool, bool],
) -> np.ndarray:
    """The affine of the canonical array: canonical (z, y, x) voxel indices -> RAS mm.

    Args:
        affine: (4, 4) file voxel indices -> RAS mm.
        file_shape: Shape of the file-layout array (3 entries).
        perm: From :func:`canonical_transform`.
        flips: From :func:`canonical_transform`.

    Returns:
        (4, 4) float64 affine.
    """
    a = _check_affine(affine)
    t = np.zeros((4, 4), dtype=np.float64)
    t[3, 3] = 1.0
    for c in range(3):
        f = perm[c]
        if flips[c]:
            t[f, c] = -1.0
            t[f, 3] = float(file_shape[f] - 1)
        else:
            t[f, c] = 1.0
    return a @ t


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size along each voxel axis of an affine (the column norms of its 3x3 part).

    Args:
        affine: (4, 4) voxel index -> world mm.

    Returns:
        One spacing in mm per voxel axis, in the affine's axis order.
    """
    a = _check_affine(affine)
    n = np.linalg.norm(a[:3, :3], axis=0)
    return float(n[0]), float(n[1]), float(n[2])


#: The three display planes, in the order of the canonical axis each one cuts (z, y, x).
DISPLAY_VIEWS: tuple[str, str, str] = ("axial", "coronal", "sagittal")


def display_slice(array: np.ndarray, view: str, index: int) -> np.ndarray:
    """One slice of a canonical (Z, Y, X[, C]) array in radiological display orientation.

    * axial slice ``z``: rows anterior (top) -> posterior, columns patient right (image left) -> left:
      ``image[r, c] = array[z, Y-1-r, c]``;
    * coronal slice ``y``: rows superior (top) -> inferior, columns patient right -> left:
      ``image[r, c] = array[Z-1-r, y, c]``;
    * sagittal slice ``x``: rows superior -> inferior, columns anterior (image left) -> posterior:
      ``image[r, c] = array[Z-1-r, Y-1-c, x]``.

    Args:
        array: canonical (Z, Y, X) or (Z, Y, X, C) array.
        view: one of :data:`DISPLAY_VIEWS`.
        index: slice index along the view's canonical axis (z, y or x).

    Returns:
        (H, W[, C]) view (no copy): axial (Y, X), coronal (Z, X), sagittal (Z, Y).

    Raises:
        ValueError: unknown view.
    """
    if view == "axial":
        return array[index, ::-1, :]
    if view == "coronal":
        return array[::-1, index, :]
    if view == "sagittal":
        return array[::-1, ::-1, index]
    raise ValueError(f"unknown view {view!r}; use one of {', '.join(DISPLAY_VIEWS)}")
