"""Whole-volume inference: a SAM2-style session predictor, post-processing and the ``segment`` API."""

from __future__ import annotations

__all__ = ["VolumePredictor", "InferenceState", "segment", "SegmentationResult"]


def __getattr__(name: str):  # lazy: importing organsam.inference must not import torch
    if name in ("VolumePredictor",):
        from organsam.inference.volume_predictor import VolumePredictor

        return VolumePredictor
    if name == "InferenceState":
        from organsam.inference.state import InferenceState

        return InferenceState
    if name in ("segment", "SegmentationResult"):
        from organsam.inference import segment as _seg

        return getattr(_seg, name)
    raise AttributeError(name)
