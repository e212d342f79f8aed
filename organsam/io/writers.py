"""Write label volumes and per-organ masks on exactly the input image's grid and orientation.

For NIfTI input the written header is a copy of the input header (only the data type, scaling and intent
change), so the affine, qform and sform are bit-for-bit those of the input. Files are written atomically:
to a temporary file in the destination folder, then renamed over the destination.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from organsam.io.base import suffix_of
from organsam.io.errors import VolumeWriteError
from organsam.io.files import atomic_path
from organsam.io.label_files import LabelTable, nifti_label_extension, write_seg_nrrd
from organsam.io.volume import Volume
from organsam.preprocessing.orientation import LPS_TO_RAS

__all__ = ["atomic_output", "label_dtype", "write_labels", "write_masks"]

logger = logging.getLogger(__name__)

_NIFTI = (".nii.gz", ".nii")
_ITK = (".nrrd", ".mha")
_ORGAN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@contextlib.contextmanager
def atomic_output(path: Path, like: Volume | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path`` (atomic on one filesystem).

    Args:
        path: The final output file.
        like: The input volume; writing over any of its source files is refused.

    Yields:
        The temporary path to write to (same folder, same file ending).

    Raises:
        VolumeWriteError: ``path`` is one of the input files or a folder.
    """
    path = Path(path).expanduser()
    if like is not None:
        inputs = {Path(s).resolve() for s in like.meta.sources}
        if like.path is not None:
            inputs.add(Path(like.path).resolve())
        if path.resolve() in inputs:
            raise VolumeWriteError(
                path,
                "is the input image; organsam never overwrites its input.",
                "choose another output path (e.g. an output folder).",
            )
    if path.is_dir():
        raise VolumeWriteError(path, "is a folder, not a file name.", "give a file name such as labels.nii.gz.")
    with atomic_path(path, suffix=".tmp" + suffix_of(path)) as tmp:  # the writers pick the format by ending
        yield tmp


def label_dtype(labels: np.ndarray) -> np.dtype:
    """Smallest unsigned type for a label map: uint8 up to 255, uint16 up to 65535.

    Args:
        labels: Integer or boolean array.

    Returns:
        ``np.uint8`` or ``np.uint16``.
    """
    a = np.asarray(labels)
    if a.dtype == bool or a.size == 0:
        return np.dtype(np.uint8)
    if not np.issubdtype(a.dtype, np.integer) and not (np.all(np.isfinite(a)) and np.array_equal(a, np.rint(a))):
        raise ValueError("labels must be whole numbers (an integer label map), got fractional/NaN values")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0:
        raise ValueError(f"labels must be >= 0, got minimum {lo:g}")
    if hi <= 255:
        return np.dtype(np.uint8)
    if hi <= 65535:
        return np.dtype(np.uint16)
    raise ValueError(f"labels above 65535 cannot be written (maximum {hi:g})")


def _check_labels(labels_zyx: np.ndarray, like: Volume, path: Path) -> np.ndarray:
    arr = np.asarray(labels_zyx)
    if tuple(arr.shape) != like.shape:
        raise VolumeWriteError(
            path,
            f"label shape {arr.shape} differs from the image's canonical shape {like.shape} ({like.path}).",
            "pass labels on the grid of the image they belong to.",
        )
    try:
        dtype = label_dtype(arr)
    except ValueError as exc:
        raise VolumeWriteError(path, f"cannot write these labels: {exc}.", "pass an integer label map.") from exc
    return arr.astype(dtype, copy=False)


def _write_nifti(arr_zyx: np.ndarray, like: Volume, tmp: Path, table: LabelTable | None = None) -> None:
    import nibabel as nib

    data, affine = like.to_ijk_layout(arr_zyx), like.ijk_affine  # NIfTI inputs keep their array order
    data = np.ascontiguousarray(data)
    header = like.meta.nifti_header
    if header is not None:
        cls = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        hdr = header.copy()
        hdr.set_data_dtype(data.dtype)
        # affine=None: nibabel keeps the header's qform/sform fields untouched (bit-for-bit)
        img = cls(data, None, hdr)
    else:
        img = nib.Nifti1Image(data, affine)
        img.header.set_qform(affine, code=1)
        img.header.set_sform(affine, code=1)
        img.header.set_xyzt_units("mm")
    img.header.set_data_dtype(data.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    img.header.set_intent("label")
    img.header["cal_min"] = 0
    img.header["cal_max"] = float(data.max()) if data.size else 0.0
    img.header["descrip"] = b"organsam labels"
    img.header.extensions.clear()  # the input's extensions describe the image, not these labels
    if table:
        img.header.extensions.append(nifti_label_extension(table))
    nib.save(img, str(tmp))


def _write_itk(arr_zyx: np.ndarray, like: Volume, tmp: Path) -> None:
    import SimpleITK as sitk  # noqa: N813

    data, affine_ijk = like.to_ijk_layout(arr_zyx), like.ijk_affine  # (i, j, k)-ordered array and affine
    lps = LPS_TO_RAS @ affine_ijk
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data, (2, 1, 0))))
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(v) for v in lps[:3, 3]])
    img.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    sitk.WriteImage(img, str(tmp), True)


def _write_png(labels_zyx: np.ndarray, tmp: Path) -> None:
    from PIL import Image

    if labels_zyx.shape[0] != 1:
        raise ValueError("PNG output holds one slice only")
    arr = labels_zyx[0]
    im = Image.fromarray(arr.astype(np.uint8)) if arr.dtype == np.uint8 else Image.fromarray(arr.astype(np.uint16))
    im.save(tmp, format="PNG")


def write_labels(labels_zyx: np.ndarray, like: Volume, path: str | Path, table: LabelTable | None = None) -> Path:
    """Write a (Z, Y, X) label volume on the input's grid, orientation and affine.

    Args:
        labels_zyx: (Z, Y, X) integer labels on ``like``'s canonical grid (0 = background).
        like: The volume the labels were computed on.
        path: Output file; the ending selects the format: ``.nii.gz``/``.nii`` (NIfTI, uint8 or uint16),
            ``.seg.nrrd`` (3D Slicer segmentation), ``.nrrd``/``.mha`` (SimpleITK), ``.npz`` (challenge format,
            key ``segs``) or ``.png`` (Z=1 only).
        table: label value -> (name, RGB): written into NIfTI (a header extension) and ``.seg.nrrd`` files
            (:mod:`organsam.io.label_files`).

    Returns:
        The written path.

    Raises:
        VolumeWriteError: Wrong shape, non-integer labels, unknown ending or ``path`` is the input file.
    """
    out = Path(path).expanduser()
    arr = _check_labels(labels_zyx, like, out)
    suffix = suffix_of(out)
    with atomic_output(out, like) as tmp:
        if suffix in _NIFTI:
            _write_nifti(arr, like, tmp, table)
        elif out.name.lower().endswith(".seg.nrrd"):
            write_seg_nrrd(like.to_ijk_layout(arr), like.ijk_affine, table or {}, tmp)
        elif suffix in _ITK:
            _write_itk(arr, like, tmp)
        elif suffix == ".npz":
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, segs=arr)
        elif suffix == ".png":
            if like.shape[0] != 1:
                raise VolumeWriteError(
                    out, f"PNG holds one slice but the labels have {like.shape[0]}.", "write a .nii.gz instead."
                )
            _write_png(arr, tmp)
        else:
            raise VolumeWriteError(
                out, f"unknown output type {suffix!r}.", "use .nii.gz, .nii, .nrrd, .mha, .npz or .png."
            )
    logger.info("wrote label map %s (%s, max label %d)", out, arr.dtype, int(arr.max()) if arr.size else 0)
    return out


def write_masks(
    masks: Mapping[str, np.ndarray], like: Volume, outdir: str | Path, suffix: str = ".nii.gz"
) -> dict[str, Path]:
    """Write one binary mask file per organ: ``outdir/<organ_id><suffix>`` (uint8 0/1).

    Args:
        masks: organ id -> (Z, Y, X) boolean mask on ``like``'s canonical grid.
        like: The volume the masks were computed on.
        outdir: Output folder (created if needed); callers conventionally pass ``<output>/masks``.
        suffix: File ending (see :func:`write_labels`).

    Returns:
        organ id -> written path.

    Raises:
        VolumeWriteError: An organ id is not a safe file name, or a mask has the wrong shape.
    """
    folder = Path(outdir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise VolumeWriteError(folder, "exists and is not a folder.", "give a folder for the per-organ masks.")
    written: dict[str, Path] = {}
    for organ_id, mask in masks.items():
        if not _ORGAN_ID.match(organ_id):
            raise VolumeWriteError(
                folder / organ_id,
                f"organ id {organ_id!r} is not a safe file name.",
                "use snake_case organ ids such as 'kidney_left'.",
            )
        m = np.asarray(mask)
        if m.dtype != bool:
            m = m != 0
        written[organ_id] = write_labels(m.astype(np.uint8), like, folder / f"{organ_id}{suffix}")
    return written
