"""Which short slice sequences a memory-training step sees (``data.sequence_length >= 2``).

A sequence sample is ``T`` slices of one case, ``stride`` apart, with one prompted organ
(:class:`SequenceSpec`). It is drawn with the same organ balancing as :class:`~organsam.training.
sampling.OrganBalancedSampler` (which it extends):

1. an (anchor slice, organ) pair: a positive pair with weight ``count(organ) ** -balance_power``, or, for
   ``absent_fraction`` of the samples, an organ the case labels that is not on the anchor slice;
2. the window of ``T`` slices centred on the anchor (``stride`` apart), shifted inwards where it would
   leave the volume (cases with fewer than ``(T - 1) * stride + 1`` slices are never drawn; with a stride
   > 1 near a volume end the anchor becomes the nearest window slice). Slices of the window without the
   organ stay in the sequence with an empty target and ``present = 0``, so the memory also learns where an
   organ starts and ends;
3. the direction: half of the sequences run from the last slice to the first (propagation through a
   volume goes both ways from a prompted slice).

As with the slice sampler, draws depend only on ``(seed, step, micro-step)``: DDP ranks split one global
batch, and a resumed run sees exactly the sequences the uninterrupted run would have seen. Each sequence
carries one augmentation seed, shared by its slices (see :class:`~organsam.training.sequence_dataset.
SequenceDataset`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from organsam.training.sampling import OrganBalancedSampler, SampleSpec

__all__ = ["SequenceSpec", "SequenceSampler"]


@dataclass(frozen=True)
class SequenceSpec:
    """One training sequence.

    Attributes:
        case: index of the case in the store.
        zs: the T axial slice indices, in the order the model sees them (consecutive, ``stride`` apart,
            ascending or descending).
        organ: index of the prompted organ in the design vocabulary.
        present: per slice of ``zs``: the organ covers at least one pixel of it.
        anchor: position in ``zs`` of the slice the (slice, organ) pair was drawn for.
        seed: augmentation seed of the sequence.
    """

    case: int
    zs: tuple[int, ...]
    organ: int
    present: tuple[bool, ...]
    anchor: int
    seed: int

    @property
    def anchor_z(self) -> int:
        """The slice index the (slice, organ) pair was drawn for."""
        return self.zs[self.anchor]


class SequenceSampler(OrganBalancedSampler):
    """Draws :class:`SequenceSpec` batches: organ-balanced anchors, then windows (see the module docstring).

    Args:
        areas: per case, (Z, K) pixel counts of each vocabulary organ on each slice (original pixels).
        known: per case, (K,) bool: organ labelled by the case's dataset.
        pixel_scales: per case, model pixels per original pixel.
        length: slices per sequence (T >= 2).
        stride: slice step inside a sequence (>= 1).
        **sampling: the :class:`OrganBalancedSampler` options (``prompt_organs``, ``min_area``,
            ``absent_fraction``: share of sequences anchored on a slice without the organ, ``balance_power``,
            ``seed``).

    Raises:
        ValueError: ``length`` < 2 or ``stride`` < 1; no case is long enough; no positive pair.
    """

    def __init__(
        self,
        areas: Sequence[np.ndarray],
        known: Sequence[np.ndarray],
        pixel_scales: Sequence[float],
        *,
        length: int,
        stride: int = 1,
        **sampling: Any,
    ) -> None:
        if int(length) < 2:
            raise ValueError(f"sequence length must be >= 2, got {length}")
        if int(stride) < 1:
            raise ValueError(f"sequence stride must be >= 1, got {stride}")
        self.length = int(length)
        self.stride = int(stride)
        span = (self.length - 1) * self.stride + 1
        long_enough = [a.shape[0] >= span for a in areas]
        if areas and not any(long_enough):
            raise ValueError(
                f"no case has the {span} slices a sequence of {self.length} slices with stride {self.stride} "
                f"spans (slices per case: {[int(a.shape[0]) for a in areas]}); lower data.sequence_length or "
                f"data.sequence_stride"
            )
        # cases too short for a window are left out: their organs and slices are never drawn
        known = [np.asarray(k, dtype=bool) & ok for k, ok in zip(known, long_enough)]
        super().__init__(areas, known, pixel_scales, **sampling)

    def window(self, case: int, z: int) -> tuple[list[int], int]:
        """The ascending window of ``length`` slices around slice ``z`` of ``case``, and the anchor's position.

        The window is centred on ``z`` (``z`` at position ``(length - 1) // 2``) and shifted inwards where it
        would leave the volume. The anchor is the window slice nearest to ``z``: ``z`` itself, except with a
        stride > 1 close to the volume's ends, where ``z`` can fall between two window slices.
        """
        Z = int(self.areas[case].shape[0])
        span = (self.length - 1) * self.stride
        start = min(max(z - ((self.length - 1) // 2) * self.stride, 0), Z - 1 - span)
        zs = [start + j * self.stride for j in range(self.length)]
        return zs, int(np.argmin([abs(zz - z) for zz in zs]))

    def _sequence(self, spec: SampleSpec, rng: np.random.Generator) -> SequenceSpec:
        zs, anchor = self.window(spec.case, spec.z)
        present = [bool(self.areas[spec.case][z, spec.organ] > 0) for z in zs]
        if rng.random() < 0.5:
            zs, present, anchor = zs[::-1], present[::-1], len(zs) - 1 - anchor
        return SequenceSpec(spec.case, tuple(zs), spec.organ, tuple(present), anchor, spec.seed)

    def draw(self, step: int, micro: int, n: int) -> list[SequenceSpec]:  # type: ignore[override]
        """The ``n`` sequences of (``step``, ``micro``): a pure function of the seed, step and micro-step."""
        rng = np.random.default_rng([self.seed, int(step), int(micro), self.length])
        return [self._sequence(self._draw_one(rng), rng) for _ in range(n)]
