"""Register an atlas CT onto a target CT: z-level search, affine (Mattes MI), then Demons.

Both volumes are numpy arrays in the canonical (Z, Y, X) layout (axis 0 inferior->superior, axis 1
posterior->anterior, axis 2 right->left) with spacing ``(sz, sy, sx)`` in mm. Because both share that
frame, they are turned into SimpleITK images with identity direction and origin 0: a physical point
is ``(x, y, z) = (col * sx, row * sy, k * sz)`` mm. The result maps physical points of the *fixed*
(target) grid to physical points of the *moving* (atlas) grid, which is what is needed to pull atlas
labels onto the target grid (``warp_labels``).

Pipeline (``register_atlas``):

1. Both volumes are smoothed and resampled to ~4 mm (``fast``: ~5 mm), HU clipped to [-200, 400];
   body masks (HU > -500, largest component per slice, computed at ~2 mm) are put on the same grid.
2. z-level search: every axial slice gets a scale-free descriptor (the clipped HU inside the body's
   bounding box, resampled to a small square grid and normalised); the moving volume is slid along
   z over the fixed one and the offset with the highest mean normalised cross-correlation of
   corresponding slices wins. This handles thin slabs (e.g. 11 slices x 5 mm) and scans of different
   body level. In-plane the body-mask centroids are aligned and the body extents give a scale.
3. Affine registration, Mattes mutual information inside the (slightly eroded) target body, two
   resolution levels; several runs with different sampling seeds are averaged (a single run on a
   thin slab moves by up to ~25 mm in z from seed to seed). For thin targets (< ``THIN_SLAB_MM`` in
   z) the out-of-plane parameters (tilts and z scale) are frozen.
4. Diffeomorphic Demons on the affinely aligned, histogram-matched images (skipped when ``fast``).

Timing (2 shared CPU cores): ~3-5 s for an 11-slice AMOS slab, ~15 s for a 100 x 390 x 470 target,
under 1 s with ``fast``. Validation (bench/atlas_prior.py): mean Dice of the warped ts_a masks over
the 8 Synapse organs 0.57 (amos_0013_slab) and 0.56 (amos_0001_slab).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the library's conventional alias)

from organsam.priors.registration_prep import (
    BODY_HU,
    HU_RANGE,
    THIN_SLAB_MM,
    RegistrationError,
    body_mask,
    check_volume,
    downsample,
    interp_rows,
    reference_grid,
    slice_info,
    to_sitk,
    z_search,
)
from organsam.priors.registration_stages import affine_stage, demons_stage, mean_affine

logger = logging.getLogger(__name__)

__all__ = [
    "AtlasTransform",
    "RegistrationError",
    "RegistrationSettings",
    "register_atlas",
    "warp_labels",
    "THIN_SLAB_MM",
]


@dataclass
class AtlasTransform:
    """Result of ``register_atlas``: a SimpleITK transform from fixed to moving physical space.

    Attributes:
        transform: maps a fixed physical point ``(x, y, z)`` mm (canonical frame, origin 0) to the
            corresponding moving (atlas) physical point. Composite of the affine and, unless
            ``fast``, a Demons displacement field.
        affine: the affine stage alone (after the initial z search and affine optimisation).
        z_offset_mm: the z offset chosen by the slice search: fixed z maps to ``z + z_offset_mm``.
        z_score: mean normalised cross-correlation of slice descriptors at that offset (-1..1).
        stages: names of the stages that ran, e.g. ``("zsearch", "affine", "demons")``.
        timings: seconds per stage (and ``"total"``).
        metric: final Mattes MI value of the affine stage (lower is better; ITK sign convention).
        initial: the initial affine from the z search and body centring (before optimisation).
    """

    transform: sitk.Transform
    affine: sitk.AffineTransform
    z_offset_mm: float
    z_score: float
    stages: tuple[str, ...]
    timings: dict[str, float] = field(default_factory=dict)
    metric: float = float("nan")
    initial: sitk.AffineTransform | None = None

    def transform_point(self, point_xyz_mm: Sequence[float]) -> tuple[float, float, float]:
        """Map one fixed physical point ``(x, y, z)`` mm to moving physical space."""
        return tuple(self.transform.TransformPoint(tuple(float(v) for v in point_xyz_mm)))


# ----------------------------------------------------------------------------------------------------
# public API


@dataclass(frozen=True)
class RegistrationSettings:
    """Knobs of ``register_atlas``; the defaults were chosen on two AMOS slabs with the ts_a atlas.

    Attributes:
        grid_mm: working resolution: both volumes are smoothed and resampled to at least this spacing.
        hu_range: HU window the intensities are clipped to before every stage.
        affine_iterations: maximum optimiser iterations per resolution level (0: keep the initial
            alignment from the z search).
        affine_sampling: fraction of the metric-mask voxels sampled by Mattes MI (>= 1: all of them).
        affine_max_samples: cap on the number of sampled voxels (keeps large volumes fast).
        affine_bins: histogram bins of the Mattes MI metric.
        affine_learning_rate: initial step of the regular-step gradient descent (physical-shift scaled).
        affine_mask_mm: the MI metric is evaluated inside the fixed body mask grown (> 0) or shrunk
            (< 0) in-plane by this many mm; shrinking leaves out the subcutaneous fat, whose thickness
            varies most between patients.
        affine_runs: independent affine optimisations (random sampling seeds ``seed``, ``seed + 1``,
            ...) whose parameters are averaged; this damps the large run-to-run spread of a single
            optimisation on thin slabs.
        demons_levels: Demons pyramid shrink factors, coarse to fine; ``()`` = no Demons stage.
        demons_iterations: Demons iterations per level.
        demons_sigma: Gaussian smoothing of the displacement field, in voxels of the working grid.
        demons_update_sigma: Gaussian smoothing of each update field, in voxels (0: none).
        seed: seed of the random metric sampling (> 0, so that results are reproducible).
        z_offset_mm: force the z offset (fixed z maps to atlas z + offset) instead of searching it.
    """

    grid_mm: float = 4.0
    hu_range: tuple[float, float] = HU_RANGE
    affine_iterations: int = 120
    affine_sampling: float = 0.25
    affine_max_samples: int = 40000
    affine_bins: int = 32
    affine_learning_rate: float = 2.0
    affine_mask_mm: float = -8.0
    affine_runs: int = 5
    demons_levels: tuple[int, ...] = (1,)
    demons_iterations: int = 50
    demons_sigma: float = 1.5
    demons_update_sigma: float = 1.0
    seed: int = 1234
    z_offset_mm: float | None = None

    @classmethod
    def default(cls, fast: bool = False) -> RegistrationSettings:
        """The settings ``register_atlas`` uses without explicit ones: :meth:`fast_settings` or the full ones."""
        return cls.fast_settings() if fast else cls()

    @classmethod
    def fast_settings(cls) -> RegistrationSettings:
        """Coarser grid, fewer affine runs and iterations, no Demons: about a second per volume."""
        return cls(grid_mm=5.0, affine_iterations=60, affine_sampling=0.15, affine_runs=2, demons_levels=())


def register_atlas(
    fixed: np.ndarray,
    fixed_spacing: Sequence[float],
    moving: np.ndarray,
    moving_spacing: Sequence[float],
    *,
    fast: bool = False,
    settings: RegistrationSettings | None = None,
) -> AtlasTransform:
    """Register an atlas CT (``moving``) onto a target CT (``fixed``).

    Args:
        fixed: (Z, Y, X) target volume in HU, canonical layout.
        fixed_spacing: (sz, sy, sx) of ``fixed`` in mm.
        moving: (Z', Y', X') atlas volume in HU, canonical layout.
        moving_spacing: (sz, sy, sx) of ``moving`` in mm.
        fast: use ``RegistrationSettings.fast_settings()`` (coarser grid, no Demons stage).
        settings: explicit settings (override ``fast``).

    Returns:
        An ``AtlasTransform`` mapping fixed physical points to atlas physical points.

    Raises:
        RegistrationError: bad shapes or spacing, no body found, or no z overlap possible.
    """
    # ITK's multi-threaded metric sampling makes results vary from run to run; one thread makes them
    # reproducible at about the same speed on this small working grid.
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        return _register(fixed, fixed_spacing, moving, moving_spacing, fast, settings)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _register(
    fixed: np.ndarray,
    fixed_spacing: Sequence[float],
    moving: np.ndarray,
    moving_spacing: Sequence[float],
    fast: bool,
    settings: RegistrationSettings | None,
) -> AtlasTransform:
    fsp = check_volume("fixed", fixed, fixed_spacing)
    msp = check_volume("moving", moving, moving_spacing)
    cfg = settings or RegistrationSettings.default(fast)
    if cfg.seed <= 0:
        raise RegistrationError(f"settings.seed must be > 0 (0 means 'wall clock' in SimpleITK), got {cfg.seed}")
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    # 1. downsample + clip
    t0 = time.perf_counter()
    f_hu, f_sp = downsample(np.asarray(fixed, np.float32), fsp, cfg.grid_mm)
    m_hu, m_sp = downsample(np.asarray(moving, np.float32), msp, cfg.grid_mm)
    f_cl = np.clip(f_hu, *cfg.hu_range)
    m_cl = np.clip(m_hu, *cfg.hu_range)
    f_body = body_mask(np.asarray(fixed), fsp, f_hu.shape, f_sp)
    m_body = body_mask(np.asarray(moving), msp, m_hu.shape, m_sp)
    if not f_body.any() or not m_body.any():
        which = "fixed" if not f_body.any() else "moving"
        raise RegistrationError(f"no body (HU > {BODY_HU:.0f}) found in the {which} volume: is it a CT in HU?")
    timings["downsample"] = time.perf_counter() - t0

    # 2. z search + in-plane centring
    t0 = time.perf_counter()
    f_info = slice_info(f_cl, f_body, f_sp)
    m_info = slice_info(m_cl, m_body, m_sp)
    z_off, z_score, used = z_search(
        f_info, f_sp[0], m_info, m_sp[0], step_mm=min(f_sp[0], m_sp[0]) / 2, forced=cfg.z_offset_mm
    )
    zf = np.flatnonzero(used)
    mpos = (zf * f_sp[0] + z_off) / m_sp[0]
    m_cent, _ = interp_rows(m_info.centroid, m_info.valid, mpos)
    m_ext, _ = interp_rows(m_info.extent, m_info.valid, mpos)
    f_cent = f_info.centroid[zf].mean(0)
    m_cent = m_cent.mean(0)
    scale_yx = np.median(m_ext, axis=0) / np.median(f_info.extent[zf], axis=0)
    scale_yx = np.clip(scale_yx, 0.5, 2.0)
    center = (float(f_cent[1]), float(f_cent[0]), float(zf.mean() * f_sp[0]))
    init = sitk.AffineTransform(3)
    init.SetCenter(center)
    init.SetMatrix((float(scale_yx[1]), 0.0, 0.0, 0.0, float(scale_yx[0]), 0.0, 0.0, 0.0, 1.0))
    init.SetTranslation((float(m_cent[1] - f_cent[1]), float(m_cent[0] - f_cent[0]), float(z_off)))
    timings["zsearch"] = time.perf_counter() - t0
    logger.info(
        "z search: offset %.1f mm (score %.3f, %d fixed slices), in-plane scale y %.2f x %.2f",
        z_off,
        z_score,
        zf.size,
        scale_yx[0],
        scale_yx[1],
    )

    # 3. affine, Mattes MI
    t0 = time.perf_counter()
    f_img = to_sitk(f_cl, f_sp)
    m_img = to_sitk(m_cl, m_sp)
    thin = fixed.shape[0] * fsp[0] < THIN_SLAB_MM
    runs = [
        affine_stage(f_img, m_img, f_body, f_sp, init, replace(cfg, seed=cfg.seed + i), thin)
        for i in range(max(cfg.affine_runs, 1))
    ]
    affine, metric = mean_affine([r[0] for r in runs], init), float(np.nanmean([r[1] for r in runs]))
    timings["affine"] = time.perf_counter() - t0
    stages = ["zsearch", "affine"]
    transform: sitk.Transform = sitk.AffineTransform(affine)

    # 4. Demons
    if cfg.demons_levels:
        t0 = time.perf_counter()
        transform = demons_stage(f_img, m_img, affine, cfg)
        stages.append("demons")
        timings["demons"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    logger.info(
        "atlas registration (%s) took %.1f s: %s",
        "+".join(stages),
        timings["total"],
        ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()),
    )
    return AtlasTransform(
        transform=transform,
        affine=sitk.AffineTransform(affine),
        z_offset_mm=z_off,
        z_score=z_score,
        stages=tuple(stages),
        timings=timings,
        metric=metric,
        initial=init,
    )


def warp_labels(
    labels: np.ndarray,
    transform: AtlasTransform | sitk.Transform,
    fixed_shape: Sequence[int],
    fixed_spacing: Sequence[float],
    moving_spacing: Sequence[float],
) -> np.ndarray:
    """Pull an atlas label map onto the fixed grid (nearest neighbour).

    Args:
        labels: (Z', Y', X') integer label map on the moving (atlas) grid, canonical layout.
        transform: result of ``register_atlas`` (or any SimpleITK transform fixed -> moving).
        fixed_shape: (Z, Y, X) of the fixed grid.
        fixed_spacing: (sz, sy, sx) of the fixed grid in mm.
        moving_spacing: (sz, sy, sx) of ``labels`` in mm.

    Returns:
        (Z, Y, X) label map on the fixed grid, same dtype as ``labels`` (0 outside the atlas).

    Raises:
        RegistrationError: bad shapes or spacings.
    """
    check_volume("labels", labels, moving_spacing)
    if len(fixed_shape) != 3:
        raise RegistrationError(f"fixed_shape must be (Z, Y, X), got {fixed_shape}")
    check_volume("fixed grid", np.empty((1, 1, 1)), fixed_spacing)
    tx = transform.transform if isinstance(transform, AtlasTransform) else transform
    lab = np.asarray(labels)
    src_dtype = lab.dtype
    work = np.uint8 if lab.max(initial=0) < 256 and lab.min(initial=0) >= 0 else np.int32
    img = to_sitk(lab, moving_spacing, dtype=work)
    out = sitk.Resample(img, reference_grid(fixed_shape, fixed_spacing), tx, sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(out).astype(src_dtype, copy=False)
