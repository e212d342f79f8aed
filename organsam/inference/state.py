"""State of one inference session over a volume (see :class:`organsam.inference.VolumePredictor`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

from organsam.io import Volume
from organsam.preprocessing.slices import SliceGeometry

__all__ = [
    "Box",
    "Candidate",
    "DecodeJob",
    "FittedPrior",
    "InferenceState",
    "LocationPrior",
    "OrganPrompt",
    "OrganResult",
    "Points",
    "copy_mask",
]

#: (x0, y0, x1, y1) in a slice's pixels (x = column of the canonical slice)
Box = tuple[float, float, float, float]
#: (coords (N, 2) xy pixels, labels (N,) 1 = inside, 0 = outside)
Points = tuple[np.ndarray, np.ndarray]


class DecodeJob(NamedTuple):
    """One decode: an organ on a slice, prompted by a box and/or points (neither: the organ's text alone, for
    designs that read text)."""

    z: int
    organ_id: str
    box: Box | None
    points: Points | None


class Candidate(NamedTuple):
    """A decoded mask and its score (LiteMedSAM's predicted IoU, or a design's presence probability)."""

    mask: np.ndarray
    score: float


class FittedPrior(Protocol):
    """A location prior fitted on one volume: where each organ is."""

    def present(self, organ_id: str) -> bool:
        """Whether the prior places the organ anywhere in this volume."""
        ...

    def boxes(self, organ_id: str, margin_px: int = 0) -> dict[int, Any]:
        """slice index -> (x0, y0, x1, y1) box in the slice's pixels grown by ``margin_px`` (or ``None``: look on
        that slice without a box)."""
        ...


class LocationPrior(Protocol):
    """Something that, fitted on a volume, says where each organ is (per-slice boxes)."""

    def fit(self, volume: Volume, spacing: tuple[float, float, float]) -> FittedPrior:
        """Fit on a volume (canonical (Z, Y, X) ``array``: HU for CT; ``modality`` says whether it is an MR)."""
        ...


def copy_mask(mask: np.ndarray) -> np.ndarray:
    """An independent copy of a (Z, Y, X) bool mask that touches only the slices holding foreground.

    ``np.zeros`` of a large array is mapped lazily by the OS: pages never written cost no memory. A plain
    ``mask.copy()`` writes every page (79 MB per organ for a 512x512x300 CT), so copying the organs' results
    during propagation would hold the whole volume once per organ and per copy.
    """
    out = np.zeros(mask.shape, dtype=bool)
    drawn = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    out[drawn] = mask[drawn]
    return out


@dataclass
class OrganPrompt:
    """Everything the user said about one organ.

    Attributes:
        organ_id: vocabulary id.
        text: the prompt text it came from (``None`` for a pure box/point prompt).
        boxes: slice index -> (x0, y0, x1, y1) in the slice's pixels (x = column), given by the user.
        points: slice index -> (coords (N, 2) xy pixels, labels (N,) 1 = foreground, 0 = background).
    """

    organ_id: str
    text: str | None = None
    boxes: dict[int, Box] = field(default_factory=dict)
    points: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@dataclass
class OrganResult:
    """Per-organ output of a propagation.

    Attributes:
        mask: (Z, Y, X) bool in the canonical layout.
        slice_scores: slice index -> predicted IoU of the accepted mask on that slice.
        rejected: slice index -> predicted IoU of a mask that was rejected as "organ not here".
        source: where the prompts came from: ``"prior"`` (the location prior's boxes), ``"prior+box"`` (with the
            user's boxes on some slices) or ``"track"`` (tracked from the user's boxes or points only).
    """

    mask: np.ndarray
    slice_scores: dict[int, float] = field(default_factory=dict)
    rejected: dict[int, float] = field(default_factory=dict)
    source: str = ""

    @property
    def confidence(self) -> float:
        """Mean predicted IoU over accepted slices (0 when none)."""
        return float(np.mean(list(self.slice_scores.values()))) if self.slice_scores else 0.0

    @property
    def present(self) -> bool:
        return bool(self.mask.any())

    def copy(self) -> OrganResult:
        """An independent copy (the mask and the score tables are copied)."""
        return OrganResult(copy_mask(self.mask), dict(self.slice_scores), dict(self.rejected), self.source)


@dataclass
class InferenceState:
    """A volume prepared for the model, its prompts and its results.

    Attributes:
        volume: the input volume (canonical (Z, Y, X)).
        intensities: (Z, Y, X) float32 in [0, 255] (CT window / MR normalisation / 8-bit kept).
        geometry: how each (Y, X) slice maps onto the 256x256 model input.
        embeddings: slice index -> (256, 64, 64) image embedding, filled lazily and kept for re-runs.
        prompts: organ id -> :class:`OrganPrompt`, in the order given.
        prior: the fitted location prior (e.g. an atlas result), computed on first need.
        results: organ id -> :class:`OrganResult` after :meth:`VolumePredictor.propagate`.
        reassignments: slices of the last propagation where an organ had been drawn on an anchor organ
            (:class:`organsam.inference.redraw.Reassignment`).
        prior_moves: how the fitted prior was moved onto the anchor organs (``{"step", "offset_mm"}`` each,
            :mod:`organsam.inference.anchor_refit`); the in-plane search runs once per session.
        memories: organ id -> slice memory of a design with one (crisp_sam2's bounded bank), filled slice by
            slice as the organ is segmented; emptied at the start of every propagation.
    """

    volume: Volume
    intensities: np.ndarray
    geometry: SliceGeometry
    embeddings: dict[int, torch.Tensor] = field(default_factory=dict)
    prompts: dict[str, OrganPrompt] = field(default_factory=dict)
    prior: Any = None
    results: dict[str, OrganResult] = field(default_factory=dict)
    reassignments: list[Any] = field(default_factory=list)
    prior_moves: list[dict[str, Any]] = field(default_factory=list)
    memories: dict[str, Any] = field(default_factory=dict)

    @property
    def num_slices(self) -> int:
        return int(self.volume.array.shape[0])
