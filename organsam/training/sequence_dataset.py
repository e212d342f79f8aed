"""``SequenceDataset``: a map-style torch dataset indexed by :class:`~organsam.training.sequence_sampling.
SequenceSpec` (memory training over short slice sequences, ``data.sequence_length >= 2``).

Use it with ``DataLoader(dataset, batch_sampler=StepBatchSampler(SequenceSampler(...), ...),
collate_fn=collate_samples)``; each item is one sequence of T slices of one case with one prompted organ.

Augmentation: every slice of a sequence goes through the :class:`~organsam.training.transforms.SliceTransform`
with the sequence's seed, so all T slices get the *same* spatial (rotation, scaling, shift) and intensity
transform, as neighbouring slices of one rotated or rescaled volume would; only the box jitter differs
from slice to slice.
"""

from __future__ import annotations

from typing import Any

import torch

from organsam.training.sequence_sampling import SequenceSpec
from organsam.training.slice_dataset import SliceDataset

__all__ = ["SequenceDataset"]


class SequenceDataset(SliceDataset):
    """Training sequences of a :class:`CaseStore`.

    Args:
        store: the loaded cases.
        transform: slice -> model space (augmentation inside).
        min_area: smallest organ area (model pixels) counted as present in the class targets; organs
            between 0 and this are left out of the class loss (``class_known`` False).

    Each item (T slices, in the order of ``spec.zs``): ``image`` (T, 3, 256, 256), ``mask`` (T, 1, 256, 256)
    (the prompted organ; empty where it is not on the slice), ``box`` (T, 4), ``present`` (T,) float,
    ``class_targets`` (T, K) float, ``class_known`` (T, K) bool, ``organ_index`` () long, ``case`` (int),
    ``zs`` (tuple of T ints), ``case_id`` (str), ``spacing`` (float: the volume's slice spacing in mm; memory
    distances are ``(z_memory - z) * spacing``, so a stride is accounted for).
    """

    def __getitem__(self, spec: SequenceSpec) -> dict[str, Any]:  # type: ignore[override]
        keys = ("image", "mask", "box", "present", "class_targets", "class_known")
        rows: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
        for t, z in enumerate(spec.zs):
            out = self.slice_item(
                spec.case, z, spec.organ, spec.present[t], spec.seed, box_seed=spec.seed + 7919 * (t + 1)
            )
            for k in keys:
                rows[k].append(out[k])
        item: dict[str, Any] = {k: torch.stack(v) for k, v in rows.items()}
        item.update(
            organ_index=torch.tensor(spec.organ, dtype=torch.long),
            case=spec.case,
            zs=tuple(spec.zs),
            case_id=self.store.cases[spec.case].case_id,
            spacing=float(self.store.data[spec.case].spacing[0]),
        )
        return item
