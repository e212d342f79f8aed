"""The registration's image side: volumes checked and turned into SimpleITK images, smoothed and downsampled,
body masks, and the z-level search on slice descriptors (stages 1 and 2 of :mod:`organsam.priors.registration`,
whose module docstring describes them)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the library's conventional alias)
from scipy import ndimage

logger = logging.getLogger(__name__)

HU_RANGE = (-200.0, 400.0)
BODY_HU = -500.0
THIN_SLAB_MM = 120.0
DESCRIPTOR_SIZE = 24


class RegistrationError(ValueError):
    """The inputs cannot be registered (bad shapes or spacing, no body found, no overlap in z)."""


# ----------------------------------------------------------------------------------------------------
# image helpers


def check_volume(name: str, array: np.ndarray, spacing: Sequence[float]) -> tuple[float, float, float]:
    if np.ndim(array) != 3:
        raise RegistrationError(f"{name} must be a 3D (Z, Y, X) array, got shape {np.shape(array)}")
    if min(np.shape(array)) < 1:
        raise RegistrationError(f"{name} is empty: shape {np.shape(array)}")
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise RegistrationError(f"{name} spacing must be three positive numbers (sz, sy, sx) in mm, got {spacing}")
    return sp  # type: ignore[return-value]


def to_sitk(array: np.ndarray, spacing_zyx: Sequence[float], dtype=np.float32) -> sitk.Image:
    """(Z, Y, X) array -> SimpleITK image, identity direction, origin 0, spacing (sx, sy, sz)."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=dtype))
    img.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    img.SetOrigin((0.0, 0.0, 0.0))
    img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return img


def reference_grid(shape_zyx: Sequence[int], spacing_zyx: Sequence[float]) -> sitk.Image:
    """An empty image defining a grid (no pixel data worth mentioning: 1 byte per voxel)."""
    ref = sitk.Image([int(s) for s in shape_zyx[::-1]], sitk.sitkUInt8)
    ref.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    ref.SetOrigin((0.0, 0.0, 0.0))
    ref.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return ref


def downsample(
    array: np.ndarray, spacing: tuple[float, float, float], target_mm: float
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Gaussian-smooth and resample to about ``target_mm`` per axis (never upsampled).

    Returns the (Z', Y', X') float32 array (unclipped HU) and its spacing.
    """
    img = to_sitk(array, spacing)
    new_sp = tuple(max(s, target_mm) for s in spacing)
    if all(abs(a - b) < 1e-6 for a, b in zip(new_sp, spacing)):
        return np.asarray(array, dtype=np.float32), spacing
    shape = [max(int(round(n * s / t)), 1) for n, s, t in zip(array.shape, spacing, new_sp)]
    new_sp = tuple(n * s / m for n, s, m in zip(array.shape, spacing, shape))
    sigmas = [0.5 * np.sqrt(max(t**2 - s**2, 0.0)) for s, t in zip(spacing[::-1], new_sp[::-1])]
    sm = sitk.SmoothingRecursiveGaussian(img, [max(s, 1e-3) for s in sigmas]) if max(sigmas) > 0 else img
    out = sitk.Resample(sm, reference_grid(shape, new_sp), sitk.Transform(), sitk.sitkLinear, -1000.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out), new_sp  # type: ignore[return-value]


def body_mask(
    array_hu: np.ndarray,
    spacing: tuple[float, float, float],
    shape: Sequence[int],
    grid_spacing: tuple[float, float, float],
) -> np.ndarray:
    """Body mask on the working grid, computed at ~2 mm in-plane so that thin gaps (arms beside the
    body, the table) survive: per slice HU > -500, opened, largest 2D component, holes filled.

    Args:
        array_hu: (Z, Y, X) full-resolution HU volume.
        spacing: its (sz, sy, sx).
        shape: (Z', Y', X') of the working grid.
        grid_spacing: (sz', sy', sx') of the working grid.

    Returns:
        (Z', Y', X') bool.
    """
    step = max(1, int(2.0 // min(spacing[1], spacing[2])))
    sub = array_hu[:, ::step, ::step] > BODY_HU
    st2 = ndimage.generate_binary_structure(2, 1)
    fine = np.zeros(sub.shape, np.float32)
    for k in range(sub.shape[0]):
        sl = ndimage.binary_opening(sub[k], structure=st2, iterations=2)
        lab, n = ndimage.label(sl)
        if n == 0:
            continue
        sizes = ndimage.sum_labels(sl, lab, index=np.arange(1, n + 1))
        fine[k] = ndimage.binary_fill_holes(lab == (int(np.argmax(sizes)) + 1))
    fine_sp = (spacing[0], spacing[1] * step, spacing[2] * step)
    img = sitk.Resample(
        to_sitk(fine, fine_sp),
        reference_grid(shape, grid_spacing),
        sitk.Transform(),
        sitk.sitkLinear,
        0.0,
        sitk.sitkFloat32,
    )
    return sitk.GetArrayFromImage(img) > 0.5


def grow_mask(mask: np.ndarray, spacing: tuple[float, float, float], mm: float) -> np.ndarray:
    """Dilate (mm > 0) or erode (mm < 0) a (Z, Y, X) mask in-plane by about ``|mm|``."""
    it = int(round(abs(mm) / min(spacing[1], spacing[2])))
    if it == 0:
        return mask
    st = np.zeros((3, 3, 3), bool)
    st[1] = ndimage.generate_binary_structure(2, 1)
    op = ndimage.binary_dilation if mm > 0 else ndimage.binary_erosion
    out = op(mask, structure=st, iterations=it)
    return out if out.any() else mask


# ----------------------------------------------------------------------------------------------------
# stage 2: z search on slice descriptors


@dataclass
class SliceInfo:
    desc: np.ndarray  # (Z, D*D) normalised descriptors (rows of invalid slices are 0)
    valid: np.ndarray  # (Z,) bool
    centroid: np.ndarray  # (Z, 2) body centroid (y, x) in mm
    extent: np.ndarray  # (Z, 2) body bbox extent (y, x) in mm


def slice_info(clipped: np.ndarray, body: np.ndarray, spacing: tuple[float, float, float]) -> SliceInfo:
    nz, ny, nx = clipped.shape
    d = DESCRIPTOR_SIZE
    desc = np.zeros((nz, d * d), np.float32)
    valid = np.zeros(nz, bool)
    centroid = np.zeros((nz, 2), np.float64)
    extent = np.zeros((nz, 2), np.float64)
    min_px = max(0.01 * ny * nx, 10)
    for k in range(nz):
        m = body[k]
        if m.sum() < min_px:
            continue
        rows = np.flatnonzero(m.any(1))
        cols = np.flatnonzero(m.any(0))
        y0, y1, x0, x1 = rows[0], rows[-1], cols[0], cols[-1]
        yy = np.linspace(y0, y1, d)
        xx = np.linspace(x0, x1, d)
        grid = np.stack(np.meshgrid(yy, xx, indexing="ij"))
        patch = ndimage.map_coordinates(clipped[k], grid, order=1, mode="nearest").ravel()
        sd = patch.std()
        if sd < 1e-3:
            continue
        desc[k] = (patch - patch.mean()) / sd
        valid[k] = True
        cy, cx = ndimage.center_of_mass(m)
        centroid[k] = (cy * spacing[1], cx * spacing[2])
        extent[k] = ((y1 - y0 + 1) * spacing[1], (x1 - x0 + 1) * spacing[2])
    return SliceInfo(desc, valid, centroid, extent)


def interp_rows(values: np.ndarray, valid: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linearly interpolate per-slice rows at fractional slice positions; also returns validity."""
    n = values.shape[0]
    i0 = np.clip(np.floor(pos).astype(int), 0, n - 1)
    i1 = np.clip(i0 + 1, 0, n - 1)
    w = (pos - i0)[:, None]
    inside = (pos >= 0) & (pos <= n - 1)
    ok = inside & valid[i0] & valid[i1]
    return values[i0] * (1 - w) + values[i1] * w, ok


def z_search(
    fix: SliceInfo, fsz: float, mov: SliceInfo, msz: float, step_mm: float, forced: float | None = None
) -> tuple[float, float, np.ndarray]:
    """Best z offset (mm) so that fixed z maps to moving z + offset; returns (offset, score, fixed slices used)."""
    nzf, nzm = fix.desc.shape[0], mov.desc.shape[0]
    zf = np.arange(nzf) * fsz
    ext_f, ext_m = nzf * fsz, nzm * msz
    min_overlap = max(0.6 * min(ext_f, ext_m), min(2.5 * fsz, ext_f))
    offsets = np.arange(-ext_f, ext_m + step_mm, step_mm) if forced is None else np.array([forced])
    best = (-np.inf, 0.0, np.zeros(nzf, bool))
    dd = fix.desc.shape[1]
    for off in offsets:
        dm, ok = interp_rows(mov.desc, mov.valid, (zf + off) / msz)
        ok &= fix.valid
        if ok.sum() * fsz < min_overlap - 1e-6:
            continue
        a = fix.desc[ok]
        b = dm[ok]
        b = (b - b.mean(1, keepdims=True)) / (b.std(1, keepdims=True) + 1e-6)
        score = float((a * b).sum(1).mean() / dd)
        if score > best[0]:
            best = (score, float(off), ok)
    if not np.isfinite(best[0]):
        raise RegistrationError(
            f"z search found no offset with enough overlap (fixed {ext_f:.0f} mm, atlas {ext_m:.0f} mm "
            "along z, or no body found in either volume): check that both are CT volumes in HU"
        )
    return best[1], best[0], best[2]
