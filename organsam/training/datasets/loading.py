"""Reading one case into organsam's canonical layout: a loader per case kind, registered by name."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from organsam.preprocessing.intensity import model_intensities
from organsam.training.datasets.base import (
    IMAGE_SUFFIXES,
    DatasetError,
    strip_suffix,
)
from organsam.training.manifest import Case

logger = logging.getLogger(__name__)


@dataclass
class LoadedCase:
    """One case in memory, canonical layout.

    Attributes:
        case: the :class:`Case`.
        image: (Z, Y, X) float32 display intensities in [0, 255] (model input before ``to_model_input``).
        labels: (Z, Y, X) integer label volume on the same grid.
        spacing: (sz, sy, sx) in mm.
        modality: ``"CT"``, ``"MR"`` or ``"unknown"``.
        labelmap: label value -> vocabulary organ id (``None`` = not in the vocabulary).
    """

    case: Case
    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    modality: str
    labelmap: dict[int, str | None]


INPLANE_TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda a: a,
    "transpose": lambda a: np.swapaxes(a, -1, -2),
    "flipud": lambda a: a[..., ::-1, :],
    "fliplr": lambda a: a[..., :, ::-1],
    "rot90": lambda a: np.rot90(a, 1, axes=(-2, -1)),
    "rot270": lambda a: np.rot90(a, -1, axes=(-2, -1)),
}

_LOADERS: dict[str, Callable[[Case, str], LoadedCase]] = {}


def register_loader(
    name: str,
) -> Callable[[Callable[[Case, str], LoadedCase]], Callable[[Case, str], LoadedCase]]:
    """Decorator registering ``loader(case, window) -> LoadedCase`` under ``Case.loader`` name."""

    def deco(fn: Callable[[Case, str], LoadedCase]) -> Callable[[Case, str], LoadedCase]:
        _LOADERS[name] = fn
        return fn

    return deco


def resolve_labelmap(labelmap: Any) -> dict[int, str | None]:
    """``{value: organ id | None}`` from a packaged name, a json file, or a ready mapping."""
    from organsam.vocabulary import load_labelmap

    if isinstance(labelmap, dict):
        return {int(k): v for k, v in labelmap.items()}
    return load_labelmap(str(labelmap))


def load_case(case: Case, window: str = "abdomen") -> LoadedCase:
    """Read a case: image as display intensities, labels on its grid, label map resolved.

    Raises:
        FileNotFoundError / organsam.io.VolumeReadError: unreadable files (naming them).
        DatasetError: unknown loader, or image and labels of different shapes.
    """
    if case.loader not in _LOADERS:
        raise DatasetError(f"case {case.case_id}: unknown loader {case.loader!r}; known: {sorted(_LOADERS)}")
    loaded = _LOADERS[case.loader](case, window)
    if loaded.image.shape != loaded.labels.shape:
        raise DatasetError(
            f"case {case.describe()}: image {loaded.image.shape} and labels {loaded.labels.shape} differ"
        )
    return loaded


@register_loader("volume")
def _load_volume_case(case: Case, window: str) -> LoadedCase:
    from organsam.io import Volume, load_labels, load_volume

    if isinstance(case.image, np.ndarray):
        vol = Volume.from_array(case.image, case.options.get("spacing", (1.0, 1.0, 1.0)), case.modality or "unknown")
        labels = np.asarray(case.label)
        if labels.shape != vol.shape:
            raise DatasetError(f"case {case.case_id}: label array {labels.shape} != image {vol.shape}")
    else:
        vol = load_volume(case.image, modality=case.modality)
        labels = load_labels(case.label, vol)
    return LoadedCase(
        case,
        model_intensities(vol, window),
        np.ascontiguousarray(labels),
        tuple(vol.spacing),
        vol.modality,
        resolve_labelmap(case.labelmap),
    )


@register_loader("npz_slices")
def _load_npz_slices(case: Case, window: str) -> LoadedCase:
    files = case.options.get("files") or [case.image]
    imgs, labs = [], []
    for f in files:
        with np.load(f) as d:
            if "image" not in d or "label" not in d:
                raise DatasetError(f"{f}: expected keys 'image' and 'label' (TransUNet Synapse slice), got {list(d)}")
            imgs.append(np.asarray(d["image"], dtype=np.float32))
            labs.append(np.rint(np.asarray(d["label"])).astype(np.int32))
    return _synapse_arrays(case, np.stack(imgs), np.stack(labs))


@register_loader("h5_volume")
def _load_h5(case: Case, window: str) -> LoadedCase:
    try:
        import h5py
    except ImportError as e:
        raise DatasetError(
            f"{case.image}: reading TransUNet .h5 volumes needs h5py, which is not installed "
            f"(pip install h5py, or the organsam[train] extra), or use the train_npz slices"
        ) from e
    with h5py.File(case.image, "r") as f:
        image = np.asarray(f["image"], dtype=np.float32)
        label = np.rint(np.asarray(f["label"])).astype(np.int32)
    return _synapse_arrays(case, image, label)


def _synapse_arrays(case: Case, image: np.ndarray, label: np.ndarray) -> LoadedCase:
    fn = INPLANE_TRANSFORMS[case.options.get("inplane", "none")]
    image, label = np.ascontiguousarray(fn(image)), np.ascontiguousarray(fn(label))
    hi = float(image.max()) if image.size else 0.0
    display = np.clip(image * 255.0 if hi <= 1.0 + 1e-6 else image, 0, 255).astype(np.float32)
    spacing = tuple(float(s) for s in case.options.get("spacing", (1.0, 1.0, 1.0)))
    return LoadedCase(case, display, label, spacing, "CT", resolve_labelmap(case.labelmap))  # type: ignore[arg-type]


@register_loader("ts_subject")
def _load_ts_subject(case: Case, window: str) -> LoadedCase:
    from organsam.io import load_labels, load_volume
    from organsam.vocabulary import labelmap_info

    vol = load_volume(case.image, modality=case.modality or "CT")
    lm = labelmap_info(str(case.labelmap))
    value_of = {name: v for v, name in lm.labels.items()}
    labels = np.zeros(vol.shape, dtype=np.int16)
    unknown = []
    for f in sorted(Path(case.label).iterdir()):
        name = strip_suffix(f.name)
        if name not in value_of:
            if f.name.endswith(IMAGE_SUFFIXES):
                unknown.append(name)
            continue
        mask = load_labels(f, vol) > 0
        labels[mask] = value_of[name]
    if unknown:
        logger.info(
            "%s: %d mask file(s) not in label map %s ignored (e.g. %s)",
            case.label,
            len(unknown),
            lm.name,
            unknown[0],
        )
    return LoadedCase(case, model_intensities(vol, window), labels, tuple(vol.spacing), vol.modality, dict(lm.organs))
