"""``SliceDataset``: a map-style torch dataset indexed by :class:`~organsam.training.sampling.SampleSpec`.

Use it with ``DataLoader(dataset, batch_sampler=StepBatchSampler(...), collate_fn=collate_samples)``; each
item is one (slice, prompted organ) sample in model space with the class targets of the slice.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from organsam.training.case_store import CaseStore
from organsam.training.sampling import SampleSpec
from organsam.training.transforms import SliceTransform

__all__ = ["SliceDataset", "collate_samples"]


class SliceDataset(Dataset):
    """Training samples of a :class:`CaseStore`.

    Args:
        store: the loaded cases.
        transform: slice -> model space (augmentation inside).
        min_area: smallest organ area (model pixels) counted as present in the class targets; organs
            between 0 and this are left out of the class loss (``class_known`` False).

    Each item: ``image`` (3, 256, 256), ``mask`` (1, 256, 256), ``box`` (4,), ``organ_index`` () long,
    ``present`` () float, ``class_targets`` (K,) float, ``class_known`` (K,) bool (organs the case labels),
    ``case`` and ``z`` (ints, for the feature cache), ``case_id`` (str); with ``all_organs``, also
    ``all_masks`` (K, 256, 256) int8: every vocabulary organ's mask, ``-1`` in the channel of an organ the case
    does not label (:data:`organsam.model.losses.UNKNOWN`).
    """

    def __init__(
        self, store: CaseStore, transform: SliceTransform, min_area: float = 4.0, all_organs: bool = False
    ) -> None:
        self.store = store
        self.transform = transform
        self.min_area = float(min_area)
        self.all_organs = bool(all_organs)

    def __len__(self) -> int:  # the dataset is indexed by SampleSpec, not by position
        return sum(int(a.shape[0]) for a in self.store.areas)

    def slice_item(
        self, case: int, z: int, organ: int, present: bool, seed: int, box_seed: int | None = None
    ) -> dict[str, torch.Tensor]:
        """One slice in model space with its targets for one prompted organ.

        Args:
            case: case index in the store.
            z: slice index.
            organ: prompted organ (vocabulary index).
            present: whether the organ is on the slice (False: an empty target without reading its mask).
            seed: augmentation seed (and box-jitter seed unless ``box_seed`` is given).
            box_seed: seed of the box jitter alone.

        Returns:
            ``image`` (3, 256, 256), ``mask`` (1, 256, 256), ``box`` (4,), ``present`` () float (the organ is on
            the transformed slice), ``class_targets`` (K,) float, ``class_known`` (K,) bool (and ``all_masks``,
            see the class).
        """
        st = self.store
        image = st.image_slice(case, z)
        mask = st.organ_mask(case, z, organ) if present else np.zeros(image.shape, bool)
        on_slice = np.flatnonzero(st.areas[case][z] > 0) if self.all_organs else np.zeros(0, int)
        others = np.stack([st.organ_mask(case, z, k) for k in on_slice]) if len(on_slice) else None
        out = self.transform(image, mask, seed, box_seed=box_seed, others=others)
        if self.all_organs:
            every = torch.zeros((len(st.organ_ids), *out["mask"].shape[1:]), dtype=torch.int8)
            every[~torch.from_numpy(st.known[case])] = -1
            if others is not None:
                every[torch.from_numpy(on_slice)] = out.pop("others").to(torch.int8)
            out["all_masks"] = every
        model_area = st.areas[case][z] * st.model_scale(case) ** 2
        known = st.known[case] & ((model_area >= self.min_area) | (model_area == 0))
        out.update(
            present=torch.tensor(float(bool(present) and bool(out["mask"].any()))),
            class_targets=torch.from_numpy((model_area >= self.min_area).astype(np.float32)),
            class_known=torch.from_numpy(known),
        )
        return out

    def __getitem__(self, spec: SampleSpec) -> dict[str, Any]:
        out: dict[str, Any] = self.slice_item(spec.case, spec.z, spec.organ, spec.present, spec.seed)
        out.update(
            organ_index=torch.tensor(spec.organ, dtype=torch.long),
            case=spec.case,
            z=spec.z,
            case_id=self.store.cases[spec.case].case_id,
        )
        return out


def collate_samples(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, keep ints/strings as lists."""
    out: dict[str, Any] = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        out[key] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
    return out
