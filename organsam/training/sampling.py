"""Which (slice, organ) pairs a training step sees: organ-balanced, deterministic per step, DDP-consistent.

A training sample is one axial slice of one case with one prompted organ (:class:`SampleSpec`).

* **Positive** pairs: the organ covers at least ``min_area`` pixels of the slice in model space (256x256).
  Each is drawn with weight ``count(organ) ** -balance_power``, where ``count`` is the number of positive
  pairs of that organ in the split, so with the default power 1 every organ is prompted equally often
  and small organs (adrenal glands, gallbladder: few pairs) are oversampled relative to large ones
  (liver). Power 0 samples pairs uniformly.
* **Absent** pairs (``absent_fraction`` of the samples): an organ the case's dataset labels but that is
  not on the slice; target mask empty, ``present = 0``. Organs the dataset does not label are never
  prompted. Slivers between 0 and ``min_area`` model pixels are neither positive nor absent.

Draws depend only on ``(seed, step, micro-step)``: the global batch of a step is the same whatever the
number of processes (rank ``r`` of ``W`` takes items ``r*B .. r*B+B-1``) and a resumed run sees exactly
the batches the uninterrupted run would have seen. Each sample carries its own augmentation seed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["SampleSpec", "OrganBalancedSampler", "StepBatchSampler"]


@dataclass(frozen=True)
class SampleSpec:
    """One training sample.

    Attributes:
        case: index of the case in the store.
        z: axial slice index.
        organ: index of the prompted organ in the design vocabulary.
        present: whether the organ is on the slice.
        seed: augmentation seed of this sample.
    """

    case: int
    z: int
    organ: int
    present: bool
    seed: int


class OrganBalancedSampler:
    """Draws :class:`SampleSpec` batches with organ-balanced weights (see the module docstring).

    Args:
        areas: per case, (Z, K) pixel counts of each vocabulary organ on each slice (original pixels).
        known: per case, (K,) bool: organ labelled by the case's dataset.
        pixel_scales: per case, model pixels per original pixel (area scales with its square).
        prompt_organs: indices of organs that may be prompted (default: all K).
        min_area: smallest organ area in model pixels for a positive pair.
        absent_fraction: share of absent-organ samples.
        balance_power: exponent of the inverse organ frequency (1: balanced organs, 0: uniform pairs).
        seed: sampling seed.

    Raises:
        ValueError: no positive pair (nothing to train on).
    """

    def __init__(
        self,
        areas: Sequence[np.ndarray],
        known: Sequence[np.ndarray],
        pixel_scales: Sequence[float],
        *,
        prompt_organs: Sequence[int] | None = None,
        min_area: float = 4.0,
        absent_fraction: float = 0.1,
        balance_power: float = 1.0,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= absent_fraction < 1.0:
            raise ValueError(f"absent_fraction must be in [0, 1), got {absent_fraction}")
        self.seed = int(seed)
        self.absent_fraction = float(absent_fraction)
        K = areas[0].shape[1] if len(areas) else 0
        allowed = np.zeros(K, dtype=bool)
        allowed[list(prompt_organs) if prompt_organs is not None else slice(None)] = True
        self.allowed = allowed
        self.areas = [np.asarray(a) for a in areas]
        self.known = [np.asarray(k, dtype=bool) & allowed for k in known]
        self.model_areas = [a * float(s) ** 2 for a, s in zip(self.areas, pixel_scales)]
        cases, zs, organs = [], [], []
        for ci, ma in enumerate(self.model_areas):
            z, k = np.nonzero((ma >= min_area) & self.known[ci][None, :])
            cases.append(np.full(z.shape, ci))
            zs.append(z)
            organs.append(k)
        self.pair_case = np.concatenate(cases) if cases else np.zeros(0, int)
        self.pair_z = np.concatenate(zs) if zs else np.zeros(0, int)
        self.pair_organ = np.concatenate(organs) if organs else np.zeros(0, int)
        if self.pair_case.size == 0:
            raise ValueError(
                "no (slice, organ) pair with the organ on the slice: the training cases label none of "
                "the prompted organs (check data.organs and the label maps)"
            )
        self.organ_counts = np.bincount(self.pair_organ, minlength=K)
        w = self.organ_counts[self.pair_organ].astype(np.float64) ** (-float(balance_power))
        self.pair_prob = w / w.sum()
        self._cum = np.cumsum(self.pair_prob)
        self._slice_cum = np.cumsum([a.shape[0] for a in self.areas])
        self.min_area = float(min_area)

    @classmethod
    def from_store(cls, store: object, **kwargs: object) -> OrganBalancedSampler:
        """Build from a :class:`~organsam.training.case_store.CaseStore`."""
        return cls(
            store.areas,
            store.known,
            [store.model_scale(i) for i in range(len(store))],  # type: ignore[attr-defined]
            **kwargs,
        )  # type: ignore[arg-type]

    def organ_probabilities(self) -> np.ndarray:
        """(K,) probability that a positive draw prompts each organ."""
        return np.bincount(self.pair_organ, weights=self.pair_prob, minlength=self.organ_counts.size)

    def _positive(self, rng: np.random.Generator, seed: int) -> SampleSpec:
        i = int(np.searchsorted(self._cum, rng.random() * self._cum[-1], side="right"))
        i = min(i, self.pair_case.size - 1)
        return SampleSpec(int(self.pair_case[i]), int(self.pair_z[i]), int(self.pair_organ[i]), True, seed)

    def _absent(self, rng: np.random.Generator, seed: int) -> SampleSpec | None:
        total = int(self._slice_cum[-1])
        for _ in range(20):
            flat = int(rng.integers(total))
            ci = int(np.searchsorted(self._slice_cum, flat, side="right"))
            z = flat - (int(self._slice_cum[ci - 1]) if ci else 0)
            cand = np.nonzero(self.known[ci] & (self.areas[ci][z] == 0))[0]
            if cand.size:
                return SampleSpec(ci, z, int(cand[rng.integers(cand.size)]), False, seed)
        return None

    def _draw_one(self, rng: np.random.Generator) -> SampleSpec:
        """One (slice, organ) sample: absent for ``absent_fraction`` of the draws (when one exists), else positive."""
        absent = rng.random() < self.absent_fraction
        seed = int(rng.integers(2**31 - 1))
        spec = self._absent(rng, seed) if absent else None
        return spec if spec is not None else self._positive(rng, seed)

    def draw(self, step: int, micro: int, n: int) -> list[SampleSpec]:
        """The ``n`` samples of (``step``, ``micro``): a pure function of the seed, step and micro-step."""
        rng = np.random.default_rng([self.seed, int(step), int(micro)])
        return [self._draw_one(rng) for _ in range(n)]


class StepBatchSampler:
    """Batch sampler for ``torch.utils.data.DataLoader``: the rank's share of each (step, micro-step) batch.

    Args:
        sampler: the :class:`OrganBalancedSampler`.
        batch_size: samples per process and micro-step.
        start_step: first optimizer step (resume).
        total_steps: last step (exclusive).
        accumulation: micro-steps per optimizer step.
        rank: this process's rank.
        world_size: number of processes.
    """

    def __init__(
        self,
        sampler: OrganBalancedSampler,
        batch_size: int,
        start_step: int,
        total_steps: int,
        accumulation: int = 1,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.start_step = int(start_step)
        self.total_steps = int(total_steps)
        self.accumulation = int(accumulation)
        self.rank = int(rank)
        self.world_size = int(world_size)

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step) * self.accumulation

    def __iter__(self) -> Iterator[list[SampleSpec]]:
        B, r = self.batch_size, self.rank
        for step in range(self.start_step, self.total_steps):
            for micro in range(self.accumulation):
                specs = self.sampler.draw(step, micro, B * self.world_size)
                yield specs[r * B : (r + 1) * B]
