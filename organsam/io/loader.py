"""``load_volume`` and ``load_labels``: any supported file -> canonical (Z, Y, X) arrays."""

from __future__ import annotations

import logging
import stat
from pathlib import Path
from typing import Any

import numpy as np

from organsam.io.base import RawImage, VolumeReader, find_reader
from organsam.io.errors import VolumeFileNotFoundError, VolumeReadError
from organsam.io.image_checks import check_image_values, repair_non_finite
from organsam.io.volume import MODALITIES, Volume, VolumeMeta
from organsam.preprocessing.intensity import IntensityError, check_ct_intensities, guess_modality
from organsam.preprocessing.orientation import (
    axcodes,
    canonical_index_affine,
    canonical_transform,
    to_canonical,
)

__all__ = ["load_labels", "load_volume", "normalize_modality"]

logger = logging.getLogger(__name__)

_MODALITY_ALIASES = {"ct": "CT", "mr": "MR", "mri": "MR", "unknown": "unknown", "auto": None}


def normalize_modality(modality: str | None) -> str | None:
    """Canonical spelling of a user modality (``"ct"`` -> ``"CT"``, ``"mri"`` -> ``"MR"``).

    Args:
        modality: User input, or ``None``/``"auto"`` for automatic detection.

    Returns:
        ``"CT"``, ``"MR"``, ``"unknown"`` or ``None``.
    """
    if modality is None:
        return None
    key = str(modality).strip().lower()
    if key not in _MODALITY_ALIASES:
        raise ValueError(f"unknown modality {modality!r}; use one of {MODALITIES} (or 'auto')")
    return _MODALITY_ALIASES[key]


def _resolve(path: str | Path) -> Path:
    if not str(path).strip():
        raise VolumeFileNotFoundError(None, "the input path is empty.", "give the image file or DICOM folder to read.")
    p = Path(path).expanduser()
    if p.is_symlink() and not p.exists():
        raise VolumeReadError(
            p,
            "is a symbolic link that leads nowhere (a loop, or its target was removed).",
            "give the image file itself, or fix the link.",
        )
    if p.exists() and not (p.is_file() or p.is_dir()):
        kind = "a named pipe (FIFO)" if stat.S_ISFIFO(p.stat().st_mode) else "not a regular file or folder"
        raise VolumeReadError(
            p, f"is {kind}, which cannot be read as an image.", "save the image to a file first and give that file."
        )
    if not p.exists():
        hint = "check the spelling and the working directory"
        if p.parent.is_dir():
            close = sorted(x.name for x in p.parent.iterdir() if x.name.lower().startswith(p.name[:3].lower()))
            if close:
                hint += f" (in {p.parent} there is: {', '.join(close[:5])})"
        raise VolumeFileNotFoundError(p, "does not exist.", hint + ".")
    return p


def _read(path: Path, labels: bool, options: dict[str, Any]) -> tuple[RawImage, VolumeReader]:
    reader = find_reader(path)
    try:
        raw = reader.read(path, labels=labels, **options)
    except VolumeReadError:
        raise
    except MemoryError as exc:
        raise VolumeReadError(path, "is too large to load into memory.", "crop or downsample it first.") from exc
    except Exception as exc:  # library errors are turned into one user-facing error type
        raise VolumeReadError(
            path,
            f"could not be read as {reader.name} ({type(exc).__name__}: {exc}).",
            "check that the file is complete and of the type its name says.",
        ) from exc
    return raw, reader


def _spatial_3d(raw: RawImage, path: Path, reader: VolumeReader) -> np.ndarray:
    """Check the dimensionality; drop trailing singleton axes of 4D+ files."""
    arr = raw.array
    if arr.size == 0:
        raise VolumeReadError(path, f"holds an empty image (shape {arr.shape}).", "give a non-empty volume.")
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim <= 2:
        raise VolumeReadError(
            path,
            f"is a 2D image (shape {arr.shape}); organsam segments 3D CT/MR volumes.",
            "give the whole 3D volume (all slices), or save this slice as a PNG to segment it as one slice.",
        )
    if arr.ndim > 3:
        raise VolumeReadError(
            path,
            f"is {arr.ndim}D (shape {arr.shape}): a time series or multi-channel image with "
            f"{int(np.prod(arr.shape[3:]))} volumes.",
            "extract one 3D volume first (e.g. nibabel `img.slicer[..., 0]` or `fslroi in out 0 1`).",
        )
    if arr.ndim != 3:
        raise VolumeReadError(path, f"has unsupported shape {arr.shape}.", "give a 3D volume.")
    if np.iscomplexobj(arr):
        raise VolumeReadError(path, "holds complex values.", "save the magnitude image instead.")
    return arr


def load_volume(path: str | Path, modality: str | None = None, *, check_values: bool = True, **options: Any) -> Volume:
    """Read a CT/MR volume into organsam's canonical (Z, Y, X) layout.

    Supported: NIfTI (``.nii``, ``.nii.gz``), a DICOM series folder (or one of its files), NRRD/MetaImage
    (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``), CVPR-challenge ``.npz`` (``imgs``, ``spacing``) and 2D
    PNG/JPEG slices (a Z=1 volume flagged as 8-bit).

    Args:
        path: File or DICOM folder.
        modality: ``"CT"``, ``"MR"``, ``"unknown"`` or ``None`` (from the DICOM header, else guessed from
            the intensity range). Asking for ``"CT"`` checks that the values are Hounsfield units.
        check_values: refuse values that cannot be a CT/MR image (:mod:`organsam.io.image_checks`: a label map,
            a blank volume, absurd magnitudes); ``False`` reads any array, e.g. a label map for its grid.
        **options: Reader options, e.g. ``series_uid=`` (DICOM folder with several series) or
            ``spacing_order="zyx"`` (npz).

    Returns:
        The :class:`Volume` (array float32 (Z, Y, X): inferior->superior, posterior->anterior,
        right->left), with what is needed to write results back in ``meta``.

    Raises:
        VolumeFileNotFoundError: ``path`` does not exist.
        VolumeReadError: Unknown type, corrupt file, 2D/4D/empty/all-NaN data, several DICOM series, or
            non-HU values when CT was asked for.
    """
    p = _resolve(path)
    wanted = normalize_modality(modality)
    raw, reader = _read(p, labels=False, options=options)
    arr = _spatial_3d(raw, p, reader)
    stored = raw.stored_dtype if raw.stored_dtype is not None else arr.dtype
    arr = repair_non_finite(np.asarray(arr, dtype=np.float32), p)
    if check_values:
        check_image_values(arr, stored, p, is_8bit=raw.is_8bit)
    try:
        perm, flips = canonical_transform(raw.affine)
    except ValueError as exc:
        raise VolumeReadError(
            p, f"has an unusable orientation ({exc}).", "fix the file's affine/direction (e.g. re-export it)."
        ) from exc
    meta = VolumeMeta(
        file_format=raw.file_format,
        affine=np.asarray(raw.affine, dtype=np.float64),
        file_shape=tuple(int(s) for s in arr.shape),
        perm=perm,
        flips=flips,
        sources=tuple(Path(s) for s in raw.sources) or (p,),
        nifti_header=raw.nifti_header,
        dicom_datasets=raw.dicom_datasets,
        is_8bit=raw.is_8bit,
        extra=dict(raw.extra),
    )
    canonical = np.ascontiguousarray(to_canonical(arr, perm, flips))
    world = canonical_index_affine(meta.affine, meta.file_shape, perm, flips)
    spacing = tuple(float(s) for s in np.linalg.norm(world[:3, :3], axis=0))

    if wanted is not None:
        mod, source = wanted, "user"
        if wanted == "CT":
            try:
                check_ct_intensities(canonical, p)
            except IntensityError as exc:
                raise VolumeReadError(None, str(exc)) from exc
        elif wanted == "MR" and guess_modality(canonical) == "CT":
            logger.warning(
                "%s: read as MR as asked, but its values look like CT Hounsfield units (air at about "
                "-1000); if it is a CT, leave --modality out or pass CT",
                p,
            )
    elif raw.modality in ("CT", "MR"):
        mod, source = raw.modality, "dicom" if raw.file_format == "dicom" else "file"
    else:
        mod, source = guess_modality(canonical), "heuristic"
        if raw.modality:
            logger.info("%s: file modality %r is neither CT nor MR; intensity heuristic says %s", p, raw.modality, mod)
    meta.modality_source = source
    vol = Volume(array=canonical, spacing=spacing, modality=mod, path=p, meta=meta)  # type: ignore[arg-type]
    logger.info("loaded %r (file axes %s -> canonical, modality from %s)", vol, "".join(axcodes(raw.affine)), source)
    return vol


def _grid_mismatch(world_a: np.ndarray, world_b: np.ndarray, shape: tuple[int, ...]) -> float:
    """Largest distance in mm between where the two affines put the corner voxels of the grid."""
    corners = np.array(
        [[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]
    ).T
    return float(np.max(np.linalg.norm((world_a @ corners - world_b @ corners)[:3], axis=0)))


def load_labels(path: str | Path, like: Volume, *, tolerance_mm: float | None = None, **options: Any) -> np.ndarray:
    """Read a label map onto the canonical grid of ``like``.

    The label file is reoriented with its own affine, then its grid must equal ``like``'s (same canonical
    shape, same voxel-to-world mapping within ``tolerance_mm``). For a challenge ``.npz`` this returns its
    ``gts`` array.

    Args:
        path: Label file (NIfTI, NRRD/MHA, DICOM folder, npz with ``gts``, or a PNG mask).
        like: The image the labels belong to.
        tolerance_mm: Allowed difference of the affines in mm (default: 1 % of the smallest voxel size,
            at least 0.01 mm).
        **options: Reader options.

    Returns:
        (Z, Y, X) integer labels: uint8 when every value is in 0..255, else int32.

    Raises:
        VolumeReadError: Unreadable file, non-integer values, or a grid that differs from ``like``'s.
    """
    p = _resolve(path)
    raw, reader = _read(p, labels=True, options=options)
    arr = _spatial_3d(raw, p, reader)
    arr = repair_non_finite(np.asarray(arr), p)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        rounded = np.rint(arr)
        if not np.allclose(arr, rounded, atol=1e-3):
            raise VolumeReadError(
                p,
                "holds non-integer values, so it is not a label map "
                f"(e.g. {float(arr[np.abs(arr - rounded) > 1e-3].flat[0]):g}).",
                "give an integer label map (one value per organ).",
            )
        arr = rounded
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if lo < 0:
        raise VolumeReadError(
            p,
            f"has negative label values (minimum {lo:g}).",
            "label values must be 0 (background) or positive organ ids.",
        )
    arr = arr.astype(np.uint8 if hi <= 255 else np.int32, copy=False)
    try:
        perm, flips = canonical_transform(raw.affine)
    except ValueError as exc:
        raise VolumeReadError(p, f"has an unusable orientation ({exc}).", "fix the file's affine.") from exc
    canonical = np.ascontiguousarray(to_canonical(arr, perm, flips))
    positioned = raw.file_format not in ("npz", "image") and like.meta.file_format not in ("npz", "image")
    world = canonical_index_affine(raw.affine, arr.shape, perm, flips)
    tol = tolerance_mm if tolerance_mm is not None else max(0.01, 0.01 * min(like.spacing))
    if tuple(canonical.shape) != like.shape:
        embedded = _embed_subgrid(canonical, world, like, tol) if positioned else None
        if embedded is None:
            raise VolumeReadError(
                p,
                f"the label grid {canonical.shape} (canonical Z, Y, X) differs from the image grid {like.shape} "
                f"of {like.path} and is not a block of it.",
                "give the label map that belongs to this image, or resample it onto the image grid.",
            )
        logger.info("%s: label grid %s is a block of the image grid %s; embedded", p, canonical.shape, like.shape)
        return embedded
    if not positioned:
        # these formats carry no position: only the shape can be checked
        return canonical
    diff = _grid_mismatch(world, like.world_affine_canonical, like.shape)
    if diff > tol:
        raise VolumeReadError(
            p,
            f"the label map is not on the image grid of {like.path}: its corner voxels lie "
            f"up to {diff:.3g} mm away from the image's (tolerance {tol:.3g} mm).\n"
            f"labels:\n{np.round(world, 4)}\nimage:\n{np.round(like.world_affine_canonical, 4)}",
            "give the label map made for this image, or resample it onto the image grid first.",
        )
    return canonical


def _embed_subgrid(canonical: np.ndarray, world: np.ndarray, like: Volume, tol: float) -> np.ndarray | None:
    """Place a label block into ``like``'s grid when it has the same voxels at an integer offset.

    Args:
        canonical: (z, y, x) label block.
        world: Its canonical affine.
        like: The image.
        tol: Allowed misplacement in mm.

    Returns:
        (Z, Y, X) labels on ``like``'s grid (zero outside the block), or ``None`` when the block is not
        aligned with the image voxels or sticks out of the image.
    """
    to_like = np.linalg.solve(like.world_affine_canonical, world)  # label index -> image index
    if not np.allclose(to_like[:3, :3], np.eye(3), atol=1e-3):
        return None
    offset = to_like[:3, 3]
    start = np.rint(offset).astype(int)
    if np.max(np.abs(offset - start) * np.asarray(like.spacing)) > tol:
        return None
    stop = start + np.asarray(canonical.shape)
    if np.any(start < 0) or np.any(stop > np.asarray(like.shape)):
        return None
    out = np.zeros(like.shape, dtype=canonical.dtype)
    out[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]] = canonical
    return out
