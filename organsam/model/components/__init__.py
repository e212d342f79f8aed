"""Building blocks of the Segment-Anything core: TinyViT image encoder, prompt encoder, mask decoder."""

from __future__ import annotations

from organsam.model.components.image_encoder import EncoderOutput, LevelResidualFn, TinyViT
from organsam.model.components.lora import LoRALinear, apply_lora, merge_lora
from organsam.model.components.mask_decoder import MaskDecoder
from organsam.model.components.position_encoding import RandomFourierPositionEncoding
from organsam.model.components.prompt_encoder import PromptEncoder
from organsam.model.components.two_way_transformer import TwoWayTransformer

__all__ = [
    "EncoderOutput",
    "LevelResidualFn",
    "LoRALinear",
    "MaskDecoder",
    "PromptEncoder",
    "RandomFourierPositionEncoding",
    "TinyViT",
    "TwoWayTransformer",
    "apply_lora",
    "merge_lora",
]
