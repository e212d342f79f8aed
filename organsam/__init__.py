"""organsam: text-prompted organ segmentation of CT and MR volumes on a Segment-Anything core.

Importing the package does no work: submodules are imported lazily by the functions that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
