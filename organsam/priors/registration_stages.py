"""The registration's optimisation stages: the affine (Mattes mutual information, averaged over sampling seeds)
and the diffeomorphic Demons (stages 3 and 4 of :mod:`organsam.priors.registration`, whose module docstring
describes them)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the library's conventional alias)

from organsam.priors.registration_prep import grow_mask, to_sitk

if TYPE_CHECKING:
    from organsam.priors.registration import RegistrationSettings

logger = logging.getLogger(__name__)

__all__ = ["affine_stage", "demons_stage", "mean_affine"]


def affine_stage(
    f_img: sitk.Image,
    m_img: sitk.Image,
    f_body: np.ndarray,
    f_sp: tuple[float, float, float],
    init: sitk.AffineTransform,
    cfg: RegistrationSettings,
    thin: bool,
) -> tuple[sitk.AffineTransform, float]:
    """Mattes-MI affine registration from ``init``; returns the transform and the final metric."""
    if cfg.affine_iterations <= 0:
        return sitk.AffineTransform(init), float("nan")
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=cfg.affine_bins)
    mask = grow_mask(f_body, f_sp, cfg.affine_mask_mm).astype(np.uint8)
    fraction = min(cfg.affine_sampling, cfg.affine_max_samples / max(int(mask.sum()), 1))
    if fraction >= 1.0:
        reg.SetMetricSamplingStrategy(reg.NONE)
    else:
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(fraction, cfg.seed)
    reg.SetMetricFixedMask(to_sitk(mask, f_sp, dtype=np.uint8))
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=cfg.affine_learning_rate,
        minStep=1e-3,
        numberOfIterations=cfg.affine_iterations,
        relaxationFactor=0.6,
        gradientMagnitudeTolerance=1e-6,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    if thin:
        # matrix is row-major over (x, y, z): freeze the tilts out of the axial plane and the z scale
        reg.SetOptimizerWeights([1, 1, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1])
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1.0, 0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    affine = sitk.AffineTransform(init)
    reg.SetInitialTransform(affine, inPlace=True)
    try:
        reg.Execute(f_img, m_img)
    except RuntimeError as exc:  # e.g. too little overlap: keep the z-search alignment
        logger.warning("affine registration failed (%s); keeping the z-search alignment", exc)
        return sitk.AffineTransform(init), float("nan")
    metric = float(reg.GetMetricValue())
    logger.info(
        "affine: %d iterations, MI %.4f, stop: %s",
        reg.GetOptimizerIteration(),
        metric,
        reg.GetOptimizerStopConditionDescription(),
    )
    return affine, metric


def mean_affine(affines: list[sitk.AffineTransform], init: sitk.AffineTransform) -> sitk.AffineTransform:
    """Average of affine transforms sharing one centre (parameter-wise mean: matrices and translations)."""
    if len(affines) == 1:
        return affines[0]
    params = np.mean([np.asarray(a.GetParameters()) for a in affines], axis=0)
    out = sitk.AffineTransform(3)
    out.SetCenter(init.GetCenter())
    out.SetParameters(tuple(float(p) for p in params))
    return out


def demons_stage(
    f_img: sitk.Image, m_img: sitk.Image, affine: sitk.AffineTransform, cfg: RegistrationSettings
) -> sitk.Transform:
    """Multi-level diffeomorphic Demons after the affine; returns affine o displacement (composite)."""
    warped = sitk.Resample(m_img, f_img, affine, sitk.sitkLinear, cfg.hu_range[0], sitk.sitkFloat32)
    # Demons assumes equal intensities: match the atlas histogram to the target (contrast phases differ)
    matched = sitk.HistogramMatching(
        warped, f_img, numberOfHistogramLevels=64, numberOfMatchPoints=7, thresholdAtMeanIntensity=False
    )
    field_img: sitk.Image | None = None
    for shrink in cfg.demons_levels:
        if shrink > 1:
            sh = [shrink, shrink, 1 if f_img.GetSize()[2] < 4 * shrink else shrink]
            f_lvl = sitk.Shrink(sitk.SmoothingRecursiveGaussian(f_img, shrink * f_img.GetSpacing()[0] / 2), sh)
            m_lvl = sitk.Shrink(sitk.SmoothingRecursiveGaussian(matched, shrink * f_img.GetSpacing()[0] / 2), sh)
        else:
            f_lvl, m_lvl = f_img, matched
        demons = sitk.DiffeomorphicDemonsRegistrationFilter()
        demons.SetMaximumUpdateStepLength(2.0)
        demons.SetUseGradientType(demons.Symmetric)
        demons.SetNumberOfIterations(cfg.demons_iterations)
        demons.SetStandardDeviations(cfg.demons_sigma)
        demons.SetSmoothDisplacementField(True)
        demons.SetSmoothUpdateField(cfg.demons_update_sigma > 0)
        if cfg.demons_update_sigma > 0:
            demons.SetUpdateFieldStandardDeviations(cfg.demons_update_sigma)
        if field_img is None:
            field_img = demons.Execute(f_lvl, m_lvl)
        else:
            init_field = sitk.Resample(field_img, f_lvl, sitk.Transform(), sitk.sitkLinear, 0.0, field_img.GetPixelID())
            field_img = demons.Execute(f_lvl, m_lvl, init_field)
    assert field_img is not None
    if field_img.GetSize() != f_img.GetSize():
        field_img = sitk.Resample(field_img, f_img, sitk.Transform(), sitk.sitkLinear, 0.0, field_img.GetPixelID())
    disp = sitk.DisplacementFieldTransform(sitk.Cast(field_img, sitk.sitkVectorFloat64))
    return sitk.CompositeTransform([sitk.AffineTransform(affine), disp])
