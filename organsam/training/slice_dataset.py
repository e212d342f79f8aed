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
    ``case`` and ``z`` (ints, for the feature cache), ``case_id`` (str).
    """

    def __init__(self, store: CaseStore, transform: SliceTransform, min_area: float = 4.0) -> None:
        self.store = store
        self.transform = transform
        self.min_area = float(min_area)

    def __len__(self) -> int:  # the dataset is indexed by SampleSpec, not by position
        return sum(int(a.shape[0]) for a in self.store.areas)

    def __getitem__(self, spec: SampleSpec) -> dict[str, Any]:
        st = self.store
        image = st.image_slice(spec.case, spec.z)
        mask = st.organ_mask(spec.case, spec.z, spec.organ) if spec.present else np.zeros(image.shape, bool)
        out = self.transform(image, mask, spec.seed)
        model_area = st.areas[spec.case][spec.z] * st.model_scale(spec.case) ** 2
        known = st.known[spec.case] & ((model_area >= self.min_area) | (model_area == 0))
        present = bool(spec.present) and bool(out["mask"].any())
        out.update(
            organ_index=torch.tensor(spec.organ, dtype=torch.long),
            present=torch.tensor(float(present)),
            class_targets=torch.from_numpy((model_area >= self.min_area).astype(np.float32)),
            class_known=torch.from_numpy(known),
            case=spec.case,
            z=spec.z,
            case_id=st.cases[spec.case].case_id,
        )
        return out


def collate_samples(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, keep ints/strings as lists."""
    out: dict[str, Any] = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        out[key] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
    return out
