"""Learning-rate schedule: linear warm-up, then cosine or polynomial decay (per optimizer step)."""

from __future__ import annotations

import math

import torch

__all__ = ["lr_factor", "build_scheduler"]


def lr_factor(
    step: int,
    total_steps: int,
    warmup_steps: int = 0,
    kind: str = "cosine",
    min_ratio: float = 0.0,
    poly_power: float = 0.9,
    warmup_start: float = 0.01,
) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    Args:
        step: optimizer steps done so far.
        total_steps: steps of the whole run.
        warmup_steps: linear warm-up from ``warmup_start`` to 1 over these steps.
        kind: ``"cosine"`` (to ``min_ratio``), ``"poly"`` (``(1 - t) ** poly_power`` to ``min_ratio``) or
            ``"constant"``.
        min_ratio: final multiplier.
        poly_power: exponent of the polynomial decay (nnU-Net uses 0.9).
        warmup_start: multiplier at step 0 of the warm-up.

    Returns:
        The multiplier.
    """
    if kind not in ("cosine", "poly", "constant"):
        raise ValueError(f"unknown schedule {kind!r}; use cosine, poly or constant")
    if warmup_steps > 0 and step < warmup_steps:
        return warmup_start + (1.0 - warmup_start) * step / warmup_steps
    if kind == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, max(0.0, (step - warmup_steps) / span))
    if kind == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))
    return min_ratio + (1.0 - min_ratio) * (1.0 - t) ** poly_power


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int = 0,
    kind: str = "cosine",
    min_ratio: float = 0.0,
    poly_power: float = 0.9,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`lr_factor`; call ``scheduler.step()`` after each optimizer step."""
    lr_factor(0, total_steps, warmup_steps, kind, min_ratio, poly_power)  # validate the arguments
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup_steps, kind, min_ratio, poly_power)
    )
