"""The loss of a batch of slice sequences (memory training, ``data.sequence_length >= 2``).

:class:`SequenceLoss` wraps the design so that a whole micro-batch of sequences is *one* module call: under
DDP the wrapper is what ``DistributedDataParallel`` wraps, so each micro-step has exactly one forward
(several forwards before one backward would confuse its unused-parameter search). For every sequence it
gets the T slices' encoder outputs (from the feature cache when one is given, else by encoding), runs
``model.forward_sequence(encoded=[...], organ_index, boxes (T, 1, 4), slice_indices=zs, spacing=...)`` and
averages ``model.compute_loss`` over the B x T slice outputs. Designs with a slice memory (crisp_sam2)
condition each slice on the earlier ones, with the memories' graph kept, so their memory encoder and memory
attention get gradients; designs without one see T independent slices.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from organsam.training.slice_loss import design_loss

__all__ = ["SequenceLoss"]


class SequenceLoss(nn.Module):
    """Design + sequence loss in one module (see the module docstring).

    Args:
        model: the design (an ``OrganSegmenter``).
        cache: a :class:`~organsam.training.feature_cache.FeatureCache`, or ``None`` to encode the slices.
    """

    def __init__(self, model: nn.Module, cache: Any = None) -> None:
        super().__init__()
        self.model = model
        self.cache = cache

    def forward(self, batch: dict[str, Any], use_boxes: bool = False) -> dict[str, Tensor]:
        """Mean loss terms over the batch's sequences and slices.

        Args:
            batch: collated :class:`~organsam.training.sequence_dataset.SequenceDataset` items: ``image``
                (B, T, 3, 256, 256), ``mask`` (B, T, 1, 256, 256), ``box`` (B, T, 4), ``present`` (B, T),
                ``class_targets`` / ``class_known`` (B, T, K), ``organ_index`` (B,), ``zs``, ``case_id`` and
                ``spacing`` (lists of B).
            use_boxes: prompt every slice with its (jittered) label box as well as the text.

        Returns:
            dict of scalar terms (``compute_loss``'s keys, ``"total"`` among them), each the mean over the
            B x T slices.
        """
        model = self.model
        dev = model.name_emb.device
        images = batch["image"].to(dev, non_blocking=True)
        B, T = images.shape[:2]
        sums: dict[str, Tensor] = {}
        for i in range(B):
            zs = [int(z) for z in batch["zs"][i]]
            if self.cache is not None:
                enc = self.cache.get(model, images[i], [(batch["case_id"][i], z) for z in zs])
            else:
                enc = model.encode_plain(images[i])
            encoded = [enc.select(t) for t in range(T)]
            boxes = batch["box"][i].to(dev)[:, None] if use_boxes else None
            outputs = model.forward_sequence(
                None,
                batch["organ_index"][i : i + 1].to(dev),
                boxes,
                encoded=encoded,
                slice_indices=zs,
                spacing=float(batch["spacing"][i]),
            )
            for t, out in enumerate(outputs):
                terms = design_loss(
                    model,
                    out,
                    batch["mask"][i, t : t + 1].to(dev),
                    batch["present"][i, t : t + 1].to(dev),
                    batch["class_targets"][i, t : t + 1].to(dev),
                    batch["class_known"][i, t : t + 1].to(dev),
                )
                for k, v in terms.items():
                    sums[k] = sums[k] + v / (B * T) if k in sums else v / (B * T)
        return sums
