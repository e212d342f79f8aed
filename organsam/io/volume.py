"""The in-memory CT/MR volume used everywhere in organsam, in one canonical orientation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from organsam.preprocessing.orientation import (
    canonical_index_affine,
    from_canonical,
    spacing_from_affine,
    to_canonical,
)

__all__ = ["MODALITIES", "Volume", "VolumeMeta", "canonical_affine_from_spacing"]

#: The modality values a :class:`Volume` may carry.
MODALITIES: tuple[str, ...] = ("CT", "MR", "unknown")


def canonical_affine_from_spacing(spacing: tuple[float, float, float]) -> np.ndarray:
    """Affine of a canonical (Z, Y, X) array with no known position: index -> RAS mm, origin at 0.

    Args:
        spacing: (sz, sy, sx) in mm.

    Returns:
        (4, 4) float64: z -> superior, y -> anterior, x -> patient's left (RAS x decreasing).
    """
    sz, sy, sx = (float(s) for s in spacing)
    a = np.zeros((4, 4), dtype=np.float64)
    a[0, 2] = -sx
    a[1, 1] = sy
    a[2, 0] = sz
    a[3, 3] = 1.0
    return a


@dataclass(eq=False)
class VolumeMeta:
    """What is needed to go back from the canonical array to the file it came from.

    Attributes:
        file_format: ``"nifti"``, ``"dicom"``, ``"itk"`` (NRRD/MHA/MHD), ``"npz"``, ``"image"`` (PNG/JPEG)
            or ``"array"`` (built in memory).
        affine: (4, 4) float64 mapping file-layout voxel indices (in the file array's axis order) to RAS mm;
            for NIfTI exactly the file's affine (sform, else qform), as nibabel reads it.
        file_shape: Shape of the spatial file-layout array.
        perm: ``perm[c]`` is the file axis that becomes canonical axis ``c``.
        flips: Whether canonical axis ``c`` is reversed after the transpose.
        sources: Every file that was read (used to refuse overwriting the input).
        nifti_header: The NIfTI header of the input (``nibabel.Nifti1Header``), for writing results.
        dicom_datasets: The DICOM headers of the series (pixel data removed), in file-layout slice order.
        modality_source: ``"dicom"``, ``"heuristic"``, ``"user"`` or ``"default"``.
        is_8bit: The intensities are already 0..255 display values (PNG/JPEG, challenge npz, windowed data).
        extra: Reader-specific details (e.g. the DICOM series UID, the npz keys).
    """

    file_format: str = "array"
    affine: np.ndarray | None = None
    file_shape: tuple[int, ...] = ()
    perm: tuple[int, int, int] = (0, 1, 2)
    flips: tuple[bool, bool, bool] = (False, False, False)
    sources: tuple[Path, ...] = ()
    nifti_header: Any = None
    dicom_datasets: list[Any] | None = None
    modality_source: str = "default"
    is_8bit: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class Volume:
    """A CT/MR volume in organsam's canonical orientation.

    ``array[k]`` is an axial slice whose row 0 is posterior and column 0 the patient's right.

    Attributes:
        array: (Z, Y, X) float32; axis 0 inferior->superior, axis 1 posterior->anterior, axis 2 the
            patient's right->left.
        spacing: (sz, sy, sx) voxel size in mm.
        modality: ``"CT"``, ``"MR"`` or ``"unknown"``.
        path: The file or folder it was read from (``None`` when built in memory).
        meta: How to map results back onto the input file (see :class:`VolumeMeta`). Left out, the canonical
            array itself is taken as the file layout with an axis-aligned affine built from ``spacing``.
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    modality: str = "unknown"
    path: Path | None = None
    meta: VolumeMeta = field(default_factory=VolumeMeta)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array, dtype=np.float32)
        if self.array.ndim != 3:
            raise ValueError(f"Volume.array must be 3D (Z, Y, X), got shape {self.array.shape}")
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        if len(self.spacing) != 3 or any(not np.isfinite(s) or s <= 0 for s in self.spacing):
            raise ValueError(f"Volume.spacing must be three positive numbers (sz, sy, sx), got {self.spacing}")
        if self.modality not in MODALITIES:
            raise ValueError(f"Volume.modality must be one of {MODALITIES}, got {self.modality!r}")
        if self.path is not None:
            self.path = Path(self.path)
        if self.meta.affine is None:
            self.meta.affine = canonical_affine_from_spacing(self.spacing)
            self.meta.file_shape = tuple(self.array.shape)
            self.meta.perm = (0, 1, 2)
            self.meta.flips = (False, False, False)
        expected = tuple(self.meta.file_shape[p] for p in self.meta.perm)
        if expected != tuple(self.array.shape):
            raise ValueError(
                f"Volume.meta.file_shape {self.meta.file_shape} with perm {self.meta.perm} does not match the "
                f"array shape {self.array.shape}"
            )

    @classmethod
    def from_array(
        cls, array: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0), modality: str = "unknown"
    ) -> Volume:
        """Build a volume from an array that is already in canonical (Z, Y, X) layout.

        Args:
            array: (Z, Y, X) intensities.
            spacing: (sz, sy, sx) in mm.
            modality: ``"CT"``, ``"MR"`` or ``"unknown"``.

        Returns:
            A :class:`Volume` whose file layout is the canonical layout.
        """
        return cls(array=array, spacing=spacing, modality=modality)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(Z, Y, X) shape of the canonical array."""
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def world_affine_canonical(self) -> np.ndarray:
        """(4, 4) float64 mapping canonical (z, y, x) voxel indices to RAS mm."""
        assert self.meta.affine is not None
        return canonical_index_affine(self.meta.affine, self.meta.file_shape, self.meta.perm, self.meta.flips)

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in mL: |det| of the affine (the product of the voxel sizes is wrong for a sheared
        grid, such as a CT reconstructed with gantry tilt)."""
        return float(abs(np.linalg.det(self.world_affine_canonical[:3, :3]))) / 1000.0

    @property
    def spacing_from_affine(self) -> tuple[float, float, float]:
        """(sz, sy, sx) derived from the affine (equals ``spacing`` for volumes read from files)."""
        return spacing_from_affine(self.world_affine_canonical)

    def to_file_layout(self, arr_zyx: np.ndarray) -> np.ndarray:
        """Map a canonical (Z, Y, X) array (e.g. a mask) back to the input file's axis order and direction.

        Args:
            arr_zyx: (Z, Y, X) array on this volume's canonical grid, any dtype.

        Returns:
            Array (a view) with the file layout's shape ``meta.file_shape``.
        """
        arr = np.asarray(arr_zyx)
        if tuple(arr.shape) != self.shape:
            raise ValueError(
                f"array shape {arr.shape} does not match the volume's canonical shape {self.shape}"
                + (f" (volume read from {self.path})" if self.path else "")
            )
        return from_canonical(arr, self.meta.perm, self.meta.flips)

    @property
    def _ijk_order(self) -> tuple[int, int, int]:
        """The file axes in (i, j, k) order: the one rule behind the ``ijk`` methods. NIfTI arrays already are;
        DICOM, NRRD/MHA and npz arrays are stored (slice, row, column)."""
        return (0, 1, 2) if self.meta.file_format == "nifti" else (2, 1, 0)

    def to_ijk_layout(self, arr_zyx: np.ndarray) -> np.ndarray:
        """Map a canonical (Z, Y, X) array to the input's voxel indices in (i, j, k) order: column, row, slice of the
        input's own grid, the order of NIfTI arrays and of ITK, 3D Slicer and ITK-SNAP voxel indices. NIfTI input
        keeps its array order; DICOM, NRRD/MHA and npz arrays, stored (slice, row, column), are reversed."""
        file_arr = self.to_file_layout(arr_zyx)
        return np.transpose(file_arr, self._ijk_order)

    def ijk_index(self, zyx: tuple[int, int, int]) -> tuple[int, int, int]:
        """The (i, j, k) voxel index (:meth:`to_ijk_layout`) of the canonical voxel ``zyx``."""
        file_index = [0, 0, 0]
        for c, (v, n) in enumerate(zip(zyx, self.shape)):
            file_index[self.meta.perm[c]] = n - 1 - int(v) if self.meta.flips[c] else int(v)
        return tuple(file_index[a] for a in self._ijk_order)  # type: ignore[return-value]

    def ijk_axis(self, axis: int) -> tuple[str, bool]:
        """Which of the input's voxel axes ("i", "j" or "k") canonical axis ``axis`` (0 z, 1 y, 2 x) runs along,
        and whether it runs the other way (file index = count - 1 - canonical index)."""
        return "ijk"[self._ijk_order.index(self.meta.perm[axis])], bool(self.meta.flips[axis])

    @property
    def ijk_affine(self) -> np.ndarray:
        """(4, 4) voxel (i, j, k) of :meth:`to_ijk_layout` -> RAS mm (the affine of the NIfTI files written)."""
        assert self.meta.affine is not None
        return self.meta.affine[:, [*self._ijk_order, 3]]

    def from_file_layout(self, arr: np.ndarray) -> np.ndarray:
        """Map an array in the input file's layout (e.g. a label map read alongside) to canonical (Z, Y, X).

        Args:
            arr: Array of shape ``meta.file_shape``.

        Returns:
            (Z, Y, X) view.
        """
        a = np.asarray(arr)
        if tuple(a.shape) != tuple(self.meta.file_shape):
            raise ValueError(
                f"array shape {a.shape} does not match the file layout shape {self.meta.file_shape}"
                + (f" of {self.path}" if self.path else "")
            )
        return to_canonical(a, self.meta.perm, self.meta.flips)

    def __repr__(self) -> str:
        return (
            f"Volume(shape={self.shape}, spacing={tuple(round(s, 4) for s in self.spacing)}, "
            f"modality={self.modality!r}, format={self.meta.file_format!r}, path={str(self.path)!r})"
        )
