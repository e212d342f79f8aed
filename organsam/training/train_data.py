"""The data of a training run: cases read and split by patient, the organ-balanced sampler, the slice (or
slice-sequence) dataset with its transforms, and the validation cases (see :mod:`organsam.training.sampling`,
:mod:`organsam.training.transforms`)."""

from __future__ import annotations

import logging
from typing import Any

import torch

from organsam.config import ConfigError
from organsam.training.train_config import TrainConfig

logger = logging.getLogger(__name__)

__all__ = ["build_train_data", "organ_indices"]


def organ_indices(model: torch.nn.Module, organs: tuple[str, ...], what: str, design: str) -> list[int] | None:
    """Indices in the design's vocabulary of the organs a config names (None: no restriction)."""
    if not organs:
        return None
    from organsam.model.base import resolve_organ_ids

    ids = resolve_organ_ids(organs)
    missing = [o for o in ids if o not in model.organ_ids]
    if missing:
        raise ConfigError(
            f"{what}: organ(s) {missing} are not in the vocabulary of design {design} "
            f"(its config 'organs' restricts it)"
        )
    return [model.organ_ids.index(o) for o in ids]


def build_train_data(cfg: TrainConfig, model: torch.nn.Module, is_main: bool) -> dict[str, Any]:
    """The run's data: the training cases' store, sampler and dataset, and the validation store (main process
    only; None without validation cases)."""
    from organsam.training.case_store import CaseStore
    from organsam.training.datasets import read_dataset
    from organsam.training.manifest import check_patient_split, split_cases
    from organsam.training.sampling import OrganBalancedSampler
    from organsam.training.sequence_dataset import SequenceDataset
    from organsam.training.sequence_sampling import SequenceSampler
    from organsam.training.slice_dataset import SliceDataset
    from organsam.training.transforms import SliceTransform

    d = cfg.data
    cases = read_dataset(d.dataset, d.root, **d.options)
    train_cases = split_cases(
        cases,
        d.train_split,
        val_fraction=d.val_fraction,
        seed=d.split_seed,
        use_dataset_splits=d.use_dataset_splits,
    )
    val_cases = (
        split_cases(
            cases,
            d.val_split,
            val_fraction=d.val_fraction,
            seed=d.split_seed,
            use_dataset_splits=d.use_dataset_splits,
        )
        if d.val_split
        else []
    )
    if not train_cases:
        raise ConfigError(f"data: split {d.train_split!r} of dataset {d.dataset!r} has no cases")
    check_patient_split(train_cases, val_cases, (d.train_split, d.val_split or "val"))
    if d.contrast_phases:
        from organsam.training.contrast_phases import contrast_phase_cases

        train_cases = [*train_cases, *contrast_phase_cases(train_cases, d.contrast_phases, cfg.seed)]
    logger.info(
        "data %s: %d train case(s) %s, %d val case(s) %s",
        d.dataset,
        len(train_cases),
        [c.case_id for c in train_cases],
        len(val_cases),
        [c.case_id for c in val_cases],
    )
    prompt = organ_indices(model, d.organs, "data.organs", cfg.design)
    store = CaseStore(train_cases, model.organ_ids, window=d.window, cache_dir=d.case_cache_dir)
    sampling = {
        "prompt_organs": prompt,
        "min_area": d.min_area,
        "absent_fraction": d.absent_fraction,
        "balance_power": d.balance_power,
        "seed": cfg.seed,
    }
    if d.sequence_length >= 2:
        sampler: OrganBalancedSampler = SequenceSampler.from_store(
            store, length=d.sequence_length, stride=d.sequence_stride, **sampling
        )
    else:
        sampler = OrganBalancedSampler.from_store(store, **sampling)
    augment = d.augment
    if d.feature_cache and augment.enabled:
        logger.warning(
            "data.feature_cache is on: augmentation is turned off (cached features are of the unaugmented slices)"
        )
        augment = None
    transform = SliceTransform(augment, d.box_jitter, d.box_jitter_rel, d.box_margin)
    if d.sequence_length >= 2:
        logger.info(
            "memory training: sequences of %d slices (stride %d)%s",
            d.sequence_length,
            d.sequence_stride,
            ", one augmentation per sequence" if transform.augment is not None else "",
        )
        dataset: Any = SequenceDataset(store, transform, min_area=d.min_area)
    else:
        # designs that segment every organ learn from every organ's mask of each slice
        all_organs = bool(getattr(model, "uses_all_targets", False))
        dataset = SliceDataset(store, transform, min_area=d.min_area, all_organs=all_organs)
    val_store = None
    if val_cases and is_main and cfg.val.every >= 0:
        val_store = CaseStore(val_cases, model.organ_ids, window=d.window, cache_dir=d.case_cache_dir)
    return {"store": store, "sampler": sampler, "dataset": dataset, "val_store": val_store}
