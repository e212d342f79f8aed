"""Which parameters of a design train: whole modules switched on or off, and modules whose own weights are fixed
(LoRA adapters apart)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from torch import nn

from organsam.model.components.lora import TINYVIT_LORA_TARGETS, apply_lora, is_lora_parameter, lora_modules

logger = logging.getLogger(__name__)

__all__ = ["add_lora", "apply_freezing", "base_frozen", "is_frozen", "keep_frozen_in_eval", "set_trainable"]


def set_trainable(module: nn.Module, trainable: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(trainable)


def is_frozen(module: nn.Module) -> bool:
    return not any(p.requires_grad for p in module.parameters())


def base_frozen(module: nn.Module) -> bool:
    """No trainable parameter apart from LoRA adapters (the module's own weights are fixed)."""
    return not any(p.requires_grad for n, p in module.named_parameters() if not is_lora_parameter(n))


def add_lora(core: Any, config: Any) -> list[str]:
    """Put LoRA adapters into the image encoder as the config asks (returns the adapted layer names)."""
    rank = config.lora_rank
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ValueError(f"config lora_rank must be an integer >= 0 (0: no adapters), got {rank!r}")
    if rank == 0:
        return []
    if not config.lora_targets:
        raise ValueError(
            "config lora_targets is empty while lora_rank > 0; name the image-encoder layers to "
            f"adapt, e.g. {list(TINYVIT_LORA_TARGETS)}"
        )
    if not config.freeze_image_encoder:
        logger.warning(
            "lora_rank %d with freeze_image_encoder: false: the adapted layers keep their base "
            "weights frozen, every other encoder weight trains fully",
            rank,
        )
    return apply_lora(
        core.image_encoder,
        rank,
        float(config.lora_alpha),
        tuple(config.lora_targets),
        dropout=float(config.lora_dropout),
    )


def apply_freezing(model: nn.Module, config: Any, unused: Iterable[nn.Module]) -> None:
    """Set ``requires_grad`` from the config: frozen core parts and the ``unused`` core modules off, the rest on.

    LoRA adapters always train; the base weights of the layers they adapt never do.
    """
    set_trainable(model, True)
    set_trainable(model.core.image_encoder, not config.freeze_image_encoder)
    set_trainable(model.core.prompt_encoder, not config.freeze_prompt_encoder)
    set_trainable(model.core.mask_decoder, not config.freeze_mask_decoder)
    for m in unused:
        set_trainable(m, False)
    for lora in lora_modules(model.core.image_encoder):
        lora.weight.requires_grad_(False)
        if lora.bias is not None:
            lora.bias.requires_grad_(False)
        lora.lora_A.requires_grad_(True)
        lora.lora_B.requires_grad_(True)


def keep_frozen_in_eval(core: Any, mode: bool) -> None:
    """Put the core parts whose own weights are frozen back in eval mode (batch-norm statistics kept); only their
    LoRA adapters follow ``mode``."""
    for m in (core.image_encoder, core.prompt_encoder, core.mask_decoder):
        if base_frozen(m):
            m.eval()
            for lora in lora_modules(m):
                lora.train(mode)
