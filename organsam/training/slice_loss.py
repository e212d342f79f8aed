"""The loss of a batch of single slices (the default, ``data.sequence_length < 2``).

The slices' encoder outputs come from the feature cache when one is given (``encoded=``), else the design encodes
them; the design's own ``compute_loss`` gives the terms. Class targets of organs the dataset does not label are
neutralised (:func:`organsam.model.losses.neutral_class_targets`); designs that segment every organ
(``uses_all_targets``) also get every organ's mask of each slice (``all_targets``, the organs the dataset does not
label marked unknown). Sequences of slices: :mod:`.sequence_loss`.
"""

from __future__ import annotations

from typing import Any

import torch

from organsam.model.losses import neutral_class_targets

__all__ = ["design_loss", "slice_loss"]


def slice_loss(
    net: torch.nn.Module, model: torch.nn.Module, batch: dict[str, Any], dev: torch.device, use_boxes: bool, cache: Any
) -> dict[str, torch.Tensor]:
    """Loss terms (``"total"`` among them) of one micro-batch.

    Args:
        net: what is called forward (the design, or its DDP wrapper).
        model: the design itself (its ``compute_loss``, ``num_organs``).
        batch: collated samples (``image``, ``organ_index``, ``box``, ``mask``, ``present``, ``class_targets``,
            ``class_known``, ``case_id``, ``z``).
        dev: the device.
        use_boxes: prompt with the samples' boxes (else the text alone).
        cache: a :class:`~organsam.training.feature_cache.FeatureCache`, or ``None``.
    """
    images = batch["image"].to(dev, non_blocking=True)
    organ_index = batch["organ_index"].to(dev)
    boxes = batch["box"].to(dev) if use_boxes else None
    if cache is not None:
        enc = cache.get(model, images, list(zip(batch["case_id"], batch["z"])))
        out = net(None, organ_index, boxes, encoded=enc)
    else:
        out = net(images, organ_index, boxes)
    every = batch.get("all_masks")
    return design_loss(
        model,
        out,
        batch["mask"].to(dev),
        batch["present"].to(dev),
        batch["class_targets"].to(dev),
        batch["class_known"].to(dev),
        None if every is None else every.to(dev).float(),
    )


def design_loss(
    model: torch.nn.Module,
    out: Any,
    masks: torch.Tensor,
    present: torch.Tensor,
    class_targets: torch.Tensor,
    class_known: torch.Tensor,
    all_targets: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """``model.compute_loss`` of one output, the class targets of organs the dataset does not label neutralised
    (no class targets at all when the batch's do not cover the design's K organs); ``all_targets`` (B, K, 256,
    256), ``-1`` in the channels of organs the dataset does not label, go to designs that read them."""
    targets = neutral_class_targets(out, class_targets, class_known)
    return model.compute_loss(
        out,
        masks,
        present,
        class_targets=targets if targets.shape[1] == model.num_organs else None,
        all_targets=all_targets,
    )
