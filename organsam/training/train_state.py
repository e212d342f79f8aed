"""Training state on disk: what ``resume`` reads back, and the model checkpoints a run writes.

A state file (``<out_dir>/checkpoints/step_XXXXXXX.pt``, the latest copied to ``<out_dir>/train_state.pt``) holds
the model, optimizer, scheduler and scaler states, the RNG states, the step, the best validation Dice and both
configs; it is written atomically and read with ``weights_only`` unpickling. Resuming checks that the state
belongs to the same design and design config. The models themselves go through
:func:`organsam.model.checkpoint.save_checkpoint` (safetensors + json).
"""

from __future__ import annotations

import logging
import math
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from organsam.config import ConfigError, to_dict
from organsam.io.files import atomic_path
from organsam.training.train_config import TrainConfig

if TYPE_CHECKING:
    from organsam.training.validation import ValResult

logger = logging.getLogger(__name__)

__all__ = [
    "STATE_FILE",
    "STATE_FORMAT",
    "check_train_state",
    "load_train_state",
    "restore_train_state",
    "save_model",
    "save_train_state",
]

STATE_FORMAT = "organsam-train-state-v1"
STATE_FILE = "train_state.pt"


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [
            np_state[0],
            torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def load_train_state(path: str | Path) -> dict[str, Any]:
    """Read a training state file (``weights_only`` unpickling).

    Raises:
        FileNotFoundError: no such file.
        ConfigError: not an organsam training state.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"{p}: training state to resume from not found (set resume: auto, null or a "
            f"checkpoints/step_XXXXXXX.pt file)"
        )
    state = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ConfigError(
            f"{p}: not an organsam training state (format {STATE_FORMAT}); model checkpoints "
            f"(.safetensors) cannot be resumed, only fine-tuned through model.sam_checkpoint"
        )
    return state


def _config_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _config_diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        a, b = list(a), list(b)
    return [] if a == b else [f"{prefix[:-1]}: {a!r} vs {b!r}"]


def save_train_state(
    out_dir: Path,
    cfg: TrainConfig,
    step: int,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    scaler: Any,
    best: float,
    world_size: int,
) -> Path:
    """Write the state after ``step`` to ``checkpoints/`` and ``train_state.pt``, keeping the newest
    ``cfg.keep_checkpoints`` step files; returns the step file."""
    state = {
        "format": STATE_FORMAT,
        "step": step,
        "design": cfg.design,
        "design_config": to_dict(model.config),
        "train_config": to_dict(cfg),
        "world_size": world_size,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": _rng_state(),
        "best_val": best,
    }
    ckpt_dir = out_dir / "checkpoints"
    path = ckpt_dir / f"step_{step:07d}.pt"
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    with atomic_path(out_dir / STATE_FILE) as tmp:
        shutil.copy2(path, tmp)
    if cfg.keep_checkpoints > 0:
        for old in sorted(ckpt_dir.glob("step_*.pt"))[: -cfg.keep_checkpoints]:
            old.unlink()
    logger.info("saved training state %s", path)
    return path


def check_train_state(path: Path, cfg: TrainConfig, model: torch.nn.Module) -> dict[str, Any]:
    """Read a training state and check that it belongs to this design and design config."""
    from organsam.registry import RENAMED_DESIGNS

    state = load_train_state(path)
    state["design"] = RENAMED_DESIGNS.get(state["design"], state["design"])
    if state["design"] != cfg.design:
        raise ConfigError(
            f"{path}: training state of design {state['design']!r}, config asks for "
            f"{cfg.design!r}; resume with the same design or set resume: null"
        )
    diff = _config_diff(state["design_config"], to_dict(model.config))
    if diff:
        raise ConfigError(
            f"{path}: the design config differs from the one the state was trained with "
            f"({'; '.join(diff[:5])}); resume with the same model settings or set resume: null"
        )
    tdiff = _config_diff(state["train_config"], to_dict(cfg))
    if tdiff:
        logger.info("resuming with a changed training config: %s", "; ".join(tdiff))
    return state


def restore_train_state(
    state: dict[str, Any], model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any, scaler: Any
) -> tuple[int, float]:
    """Load a checked state into the run's objects and the RNGs; returns (step, best validation Dice)."""
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    _set_rng_state(state["rng"])
    return int(state["step"]), float(state.get("best_val", -math.inf))


def save_model(model: torch.nn.Module, path: Path, cfg: TrainConfig, step: int, val: ValResult | None) -> Path:
    """The model as a checkpoint (:func:`organsam.model.checkpoint.save_checkpoint`) with the run's facts."""
    from organsam.model.checkpoint import save_checkpoint

    extra: dict[str, Any] = {"step": step, "train_config": to_dict(cfg)}
    if val is not None:
        extra["val_mean_dice"] = val.mean_dice if math.isfinite(val.mean_dice) else None
        extra["val_dice_per_organ"] = val.per_organ
    return save_checkpoint(model, path, design=cfg.design, config=model.config, extra=extra)
