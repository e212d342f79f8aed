"""Models: the LiteMedSAM-compatible Segment-Anything core and the text-prompted designs built on it."""

from __future__ import annotations

from organsam.model.base import DesignOutput, OrganSegmenter, SegmenterConfig
from organsam.model.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint
from organsam.model.components.image_encoder import EncoderOutput, LevelResidualFn
from organsam.model.sam_core import (
    EMBED_DIM,
    EMBED_SIZE,
    IMAGE_SIZE,
    CheckpointError,
    SamCore,
    build_lite_medsam,
    load_checkpoint_state,
)

__all__ = [
    "EMBED_DIM",
    "EMBED_SIZE",
    "IMAGE_SIZE",
    "CheckpointError",
    "DesignOutput",
    "OrganSegmenter",
    "SegmenterConfig",
    "load_checkpoint",
    "read_checkpoint_info",
    "save_checkpoint",
    "EncoderOutput",
    "LevelResidualFn",
    "SamCore",
    "build_lite_medsam",
    "load_checkpoint_state",
]
