"""Fine-tuning: a design to train that starts from a checkpoint's weights (``init_from`` in the training YAML).

``init_from: packaged`` starts from the design's shipped checkpoint (``organsam/assets/design_<name>.safetensors``),
a path from any checkpoint ``organsam train`` wrote. The architecture is the one stored with the checkpoint; the
run's ``model`` keys (freezing, LoRA, loss weights, ...) apply on top (modules they add start untrained; keys that
reshape a layer fail), so a user can fine-tune the shipped SEG-SAM on their own labelled CTs:

    organsam train --config train_seg_sam init_from=packaged data.dataset=amos22 data.root=/data/AMOS22
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any

import torch

from organsam.config import ConfigError, apply_overrides, from_dict

logger = logging.getLogger(__name__)

__all__ = ["design_from_checkpoint"]


def design_from_checkpoint(
    design: str, checkpoint: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None
) -> torch.nn.Module:
    """Design ``design`` with the weights of ``checkpoint`` (``packaged``: its shipped one), in train mode.

    Args:
        design: registry name; the checkpoint must hold this design.
        checkpoint: a checkpoint written by ``organsam train`` (safetensors + JSON sidecar) or ``packaged``.
        overrides: design config keys applied on top of the checkpoint's stored config.

    Raises:
        CheckpointError: the checkpoint is missing, of another design, or does not load (from ``load_checkpoint``).
        ConfigError: an override names an unknown key, or changes the architecture so the weights no longer fit.
    """
    from organsam.model.checkpoint import PACKAGED, load_checkpoint, packaged_checkpoint
    from organsam.registry import build_design, get_design

    try:
        path = packaged_checkpoint(design) if str(checkpoint) == PACKAGED else checkpoint
    except ValueError as e:  # ``packaged`` for a design that ships none
        raise ConfigError(f"init_from: {e}") from e
    source = load_checkpoint(path, design=design)
    stored = dataclasses.asdict(source.config)
    config = from_dict(get_design(design).config_cls, apply_overrides(stored, [dict(overrides or {})]), where="model")
    if config == source.config:  # the run changes nothing of the design: train the loaded one
        logger.info("fine-tuning %s from %s", design, path)
        return source.train()
    model = build_design(design, config=config)

    def unfit(problem: str) -> ConfigError:
        return ConfigError(
            f"init_from {path}: the model keys {sorted(overrides or {})} change the architecture, so its weights do "
            f"not fit ({problem}); leave out the keys that change layers"
        )

    try:
        result = model.load_state_dict(source.state_dict(), strict=False)
    except RuntimeError as e:  # a tensor of another shape
        raise unfit(str(e).splitlines()[-1].strip()) from e
    if result.unexpected_keys:
        raise unfit(f"unexpected tensors: {', '.join(result.unexpected_keys[:4])}")
    if result.missing_keys:  # modules the overrides add (e.g. image-encoder LoRA adapters) start untrained
        logger.info(
            "init_from %s: %d tensors start untrained (%s ...)", path, len(result.missing_keys), result.missing_keys[0]
        )
    logger.info("fine-tuning %s from %s", design, path)
    return model.train()
