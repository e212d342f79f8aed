"""Memory bank of encoded slices for slice-by-slice propagation through a volume.

Stores, per slice, the memory features from :class:`~organsam.model.components.memory_encoder.MemoryEncoder`,
the optional object pointer and a quality score. Two kinds of entries:

* **conditioning** slices (the ones that had a user/text prompt): never evicted;
* **propagated** slices: evicted when the bank holds more than ``max_slices`` entries, by policy:

  - ``"recent"`` (SAM2): drop the propagated slice that was added longest ago, so the bank keeps the
    conditioning slices plus the last ``max_slices - n_conditioning`` propagated ones;
  - ``"similarity"`` (CRISP-SAM2's similarity-sorted self-updating memory): pool every stored memory to
    a small grid, compute for each stored slice the sum of its cosine similarities to all the *other*
    stored slices, and drop the propagated slice with the lowest sum, i.e. the outlier; the bank keeps
    the most mutually similar set.

:meth:`MemoryBank.select` returns the stored memories stacked for
:class:`~organsam.model.components.memory_attention.MemoryAttention`, with their signed distances to
the slice being segmented.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = ["MemoryBank", "MemoryEntry", "MemorySelection", "POLICIES"]

POLICIES = ("similarity", "recent")


@dataclass
class MemoryEntry:
    """One stored slice.

    Attributes:
        index: slice index in the volume (axis 0 of the canonical ``(Z, Y, X)`` array).
        features: ``(B, mem_dim, h, w)`` memory features (B objects tracked together, usually 1).
        pointer: ``(B, mem_dim)`` object pointer, or ``None``.
        score: quality score given by the caller (e.g. predicted IoU).
        conditioning: True for prompted slices, which are never evicted.
        order: insertion counter (larger = added later).
        pooled: flattened pooled features used for the similarity policy.
    """

    index: int
    features: Tensor
    pointer: Tensor | None
    score: float
    conditioning: bool
    order: int
    pooled: Tensor = field(repr=False)


@dataclass
class MemorySelection:
    """Memories to attend to from one current slice, in increasing slice order.

    Attributes:
        indices: slice indices of the M selected memories.
        features: ``(B, M, mem_dim, h, w)``.
        pointers: ``(B, M, mem_dim)``, or ``None`` unless every selected entry has a pointer.
        distances: ``(M,)`` float32 signed distances (memory index minus current index, times the
            spacing when one was given).
        conditioning: ``(M,)`` bool.
        scores: ``(M,)`` float32.
    """

    indices: list[int]
    features: Tensor
    pointers: Tensor | None
    distances: Tensor
    conditioning: Tensor
    scores: Tensor


class MemoryBank:
    """Bounded store of slice memories with a SAM2 ("recent") or CRISP-SAM2 ("similarity") policy.

    Args:
        max_slices: capacity for conditioning plus propagated entries (conditioning entries are kept even
            beyond it).
        policy: ``"similarity"`` or ``"recent"``.
        pool_size: grid side the features are pooled to for the similarity policy.
        min_score: propagated slices whose score is below this are not stored (``None``: store all).
        detach: store detached tensors (inference); ``False`` keeps the graph for training through memory.
        storage_device: move stored tensors there (e.g. ``"cpu"`` to save accelerator memory).
    """

    def __init__(
        self,
        max_slices: int = 7,
        policy: str = "similarity",
        pool_size: int = 8,
        min_score: float | None = None,
        detach: bool = True,
        storage_device: torch.device | str | None = None,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown memory policy {policy!r}; choose one of {', '.join(POLICIES)}")
        if max_slices < 1:
            raise ValueError(f"max_slices must be >= 1, got {max_slices}")
        self.max_slices = max_slices
        self.policy = policy
        self.pool_size = pool_size
        self.min_score = min_score
        self.detach = detach
        self.storage_device = storage_device
        self._entries: dict[int, MemoryEntry] = {}
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, index: object) -> bool:
        return index in self._entries

    @property
    def indices(self) -> list[int]:
        """Stored slice indices, sorted."""
        return sorted(self._entries)

    @property
    def entries(self) -> list[MemoryEntry]:
        """Stored entries in slice order."""
        return [self._entries[i] for i in self.indices]

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()

    def remove(self, index: int) -> None:
        """Forget the entry of slice ``index`` (no error if absent)."""
        self._entries.pop(index, None)

    def _prepare(self, t: Tensor) -> Tensor:
        if self.detach:
            t = t.detach()
        if self.storage_device is not None:
            t = t.to(self.storage_device)
        return t

    def add(
        self,
        index: int,
        features: Tensor,
        pointer: Tensor | None = None,
        score: float = 1.0,
        conditioning: bool = False,
    ) -> bool:
        """Store (or replace) the memory of slice ``index``, then evict by policy if over capacity.

        Args:
            index: slice index.
            features: ``(B, mem_dim, h, w)`` or ``(mem_dim, h, w)`` memory features.
            pointer: optional ``(B, mem_dim)`` or ``(mem_dim,)`` object pointer.
            score: quality score of the slice's prediction.
            conditioning: the slice was prompted; it is never evicted.

        Returns:
            True if the entry is in the bank afterwards (it may be rejected by ``min_score`` or be the
            one evicted by the similarity policy).
        """
        if features.dim() == 3:
            features = features.unsqueeze(0)
        if features.dim() != 4:
            raise ValueError(f"memory features must be (B, mem_dim, h, w), got {tuple(features.shape)}")
        if pointer is not None:
            if pointer.dim() == 1:
                pointer = pointer.unsqueeze(0)
            if pointer.dim() != 2 or pointer.shape[0] != features.shape[0]:
                raise ValueError(f"pointer must be (B={features.shape[0]}, mem_dim), got {tuple(pointer.shape)}")
        others = [e for i, e in self._entries.items() if i != index]
        if others and tuple(others[0].features.shape) != tuple(features.shape):
            raise ValueError(
                f"memory features of slice {index} have shape {tuple(features.shape)}, the bank "
                f"holds {tuple(others[0].features.shape)}; all entries must match"
            )
        if not conditioning and self.min_score is not None and score < self.min_score:
            logger.debug("slice %d not stored: score %.3f < min_score %.3f", index, score, self.min_score)
            return False
        features = self._prepare(features)
        pooled = F.adaptive_avg_pool2d(features.detach().float(), self.pool_size).flatten()
        self._entries[index] = MemoryEntry(
            index=int(index),
            features=features,
            pointer=self._prepare(pointer) if pointer is not None else None,
            score=float(score),
            conditioning=bool(conditioning),
            order=next(self._counter),
            pooled=pooled,
        )
        self._evict()
        return index in self._entries

    def similarity_sums(self) -> dict[int, float]:
        """For every stored slice, the sum of cosine similarities of its pooled features to the others."""
        entries = self.entries
        if len(entries) < 2:
            return {e.index: 0.0 for e in entries}
        vecs = F.normalize(torch.stack([e.pooled.to(entries[0].pooled.device) for e in entries]), dim=1)
        sim = vecs @ vecs.t()
        sums = sim.sum(dim=1) - sim.diagonal()
        return {e.index: float(s) for e, s in zip(entries, sums)}

    def _evict(self) -> None:
        while len(self._entries) > self.max_slices:
            candidates = [e for e in self._entries.values() if not e.conditioning]
            if not candidates:
                return
            if self.policy == "recent":
                victim = min(candidates, key=lambda e: e.order)
            else:
                sums = self.similarity_sums()
                victim = min(candidates, key=lambda e: (sums[e.index], e.order))
            logger.debug("memory bank (%s) evicts slice %d", self.policy, victim.index)
            del self._entries[victim.index]

    def select(
        self,
        current_index: int,
        spacing: float | None = None,
        max_conditioning: int | None = None,
        device: torch.device | str | None = None,
    ) -> MemorySelection | None:
        """Memories to attend to when segmenting slice ``current_index``.

        Args:
            current_index: slice being segmented; its own entry, if stored, is left out.
            spacing: slice spacing in mm; distances are then in mm instead of slices.
            max_conditioning: keep only the this many conditioning slices nearest to ``current_index``.
            device: move the stacked tensors there.

        Returns:
            A :class:`MemorySelection`, or ``None`` when nothing is stored (use the no-memory path).
        """
        chosen = [e for e in self.entries if e.index != current_index]
        if max_conditioning is not None:
            cond = sorted((e for e in chosen if e.conditioning), key=lambda e: abs(e.index - current_index))
            dropped = {e.index for e in cond[max_conditioning:]}
            chosen = [e for e in chosen if e.index not in dropped]
        if not chosen:
            return None
        features = torch.stack([e.features for e in chosen], dim=1)
        pointers = None
        if all(e.pointer is not None for e in chosen):
            pointers = torch.stack([e.pointer for e in chosen], dim=1)  # type: ignore[misc]
        step = 1.0 if spacing is None else float(spacing)
        distances = torch.tensor([(e.index - current_index) * step for e in chosen], dtype=torch.float32)
        conditioning = torch.tensor([e.conditioning for e in chosen], dtype=torch.bool)
        scores = torch.tensor([e.score for e in chosen], dtype=torch.float32)
        if device is not None:
            features = features.to(device)
            pointers = pointers.to(device) if pointers is not None else None
            distances, conditioning, scores = distances.to(device), conditioning.to(device), scores.to(device)
        return MemorySelection(
            indices=[e.index for e in chosen],
            features=features,
            pointers=pointers,
            distances=distances,
            conditioning=conditioning,
            scores=scores,
        )
