"""organsam: text-prompted organ segmentation of CT and MR volumes on a Segment-Anything core.

Importing the package does no work: the public API is imported lazily on first use, so
``import organsam`` stays fast and does not import torch.

    import organsam
    result = organsam.segment("ct.nii.gz", organs="liver, left kidney", output="out/")
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "segment", "load_volume", "parse_prompt", "list_designs"]


def __getattr__(name: str) -> Any:
    if name == "segment":
        from organsam.inference.segment import segment

        return segment
    if name == "load_volume":
        from organsam.io import load_volume

        return load_volume
    if name == "parse_prompt":
        from organsam.vocabulary import parse_prompt

        return parse_prompt
    if name == "list_designs":
        from organsam.registry import list_designs

        return list_designs
    raise AttributeError(f"module 'organsam' has no attribute {name!r}")
