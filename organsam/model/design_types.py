"""The data types every design shares: its config's common settings, its output, and one decoder run (see
:mod:`organsam.model.base` for the design contract)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from organsam.model.components.lora import TINYVIT_LORA_TARGETS

__all__ = ["DecoderRun", "DesignOutput", "SegmenterConfig", "cat_outputs"]


@dataclass
class SegmenterConfig:
    """Settings shared by every design.

    Attributes:
        pretrained: load the LiteMedSAM weights into the core (``False``: random core, for quick tests).
        sam_checkpoint: a LiteMedSAM-layout .pth to load instead of the released weights.
        text_model: folder of a local Hugging Face text encoder; ``None`` = packaged all-MiniLM-L6-v2.
        text_cache_dir: text-embedding cache folder; ``None`` = default (``$ORGANSAM_HOME/cache``).
        organs: the design's vocabulary: organ ids and/or group names of ``organs.json``; empty = all.
        freeze_image_encoder: keep the TinyViT encoder fixed.
        freeze_prompt_encoder: keep SAM's prompt encoder fixed.
        freeze_mask_decoder: keep SAM's mask decoder fixed.
        lora_rank: rank of the LoRA adapters in the image encoder (0: no adapters).
        lora_alpha: adapter scale numerator (the low-rank update is scaled by ``lora_alpha / lora_rank``).
        lora_targets: image-encoder linear layers to adapt, as name suffixes (``attn.qkv``, ``attn.proj``,
            ``mlp.fc1``, ``mlp.fc2`` of the TinyViT attention blocks, or a full name such as
            ``layers.3.blocks.1.attn.qkv``).
        lora_dropout: dropout on the adapters' inputs while training.
        text_box_rounds: at inference (eval mode) with text alone, decode the organ again this many times from
            its text and a box around the largest piece of the previous mask
            (:mod:`organsam.model.text_box_refinement`); 0: one text-alone pass.

    The organ text table is precomputed by the text encoder (through its on-disk cache), so the designs hold no
    text encoder to adapt; :func:`organsam.model.components.lora.apply_lora` also adapts a
    :class:`~organsam.model.components.text_encoder.TextEncoder`'s Hugging Face model when fine-tuning it on
    its own (e.g. targets ``("query", "value")`` for BERT-like encoders).
    """

    pretrained: bool = True
    sam_checkpoint: str | None = None
    text_model: str | None = None
    text_cache_dir: str | None = None
    organs: tuple[str, ...] = ()
    freeze_image_encoder: bool = True
    freeze_prompt_encoder: bool = True
    freeze_mask_decoder: bool = False
    lora_rank: int = 0
    lora_alpha: float = 8.0
    lora_targets: tuple[str, ...] = TINYVIT_LORA_TARGETS
    lora_dropout: float = 0.0
    text_box_rounds: int = 1


@dataclass
class DesignOutput:
    """What every design's ``forward`` returns.

    Attributes:
        masks: (B, 1, 256, 256) final mask logits of the prompted organ in model space.
        iou: (B, 1) predicted IoU of ``masks``.
        presence_logit: (B,) logit that the prompted organ is on the slice.
        aux: design-specific tensors, e.g. ``sam_mask`` (B, 1, 256, 256), ``class_logits`` (B, K),
            ``all_masks`` (B, K, 256, 256), ``coarse_mask`` (B, 1, 256, 256).
    """

    masks: Tensor
    iou: Tensor
    presence_logit: Tensor
    aux: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class DecoderRun:
    """Outputs of one pass through SAM's mask decoder with optional extra output tokens.

    Attributes:
        image_tokens: (P, 256, 64, 64) image tokens after the two-way transformer.
        masks: (P, 1, 256, 256) single-mask output (mask token 0), or None without SAM tokens/upscaling.
        iou: (P, 1) its predicted IoU, or None.
        mask_token: (P, 256) mask token 0 after the transformer, or None.
        extra: (P, E, 256) the extra tokens after the transformer, or None.
        upscaled: (P, 32, 256, 256) upscaled pixel features, or None.
    """

    image_tokens: Tensor
    masks: Tensor | None = None
    iou: Tensor | None = None
    mask_token: Tensor | None = None
    extra: Tensor | None = None
    upscaled: Tensor | None = None


def cat_outputs(outs: list[DesignOutput], aux_keys: tuple[str, ...] | None = None) -> DesignOutput:
    """The outputs of consecutive row groups as one output (rows in order); ``aux_keys``: the aux tensors joined
    (default: the first output's)."""
    keys = tuple(outs[0].aux) if aux_keys is None else aux_keys
    return DesignOutput(
        masks=torch.cat([o.masks for o in outs]),
        iou=torch.cat([o.iou for o in outs]),
        presence_logit=torch.cat([o.presence_logit for o in outs]),
        aux={k: torch.cat([o.aux[k] for o in outs]) for k in keys},
    )
