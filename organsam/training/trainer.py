"""The training loop behind ``organsam train``: one YAML -> a trained design checkpoint.

* **Model**: ``build_design(config.design, [config.model])`` (freezing and LoRA options, e.g.
  ``model.lora_rank: 8``, are design config keys; the feature cache refuses LoRA adapters);
  AdamW over the trainable parameters (no weight decay on 1D tensors), linear warm-up then cosine/poly
  decay (:mod:`organsam.training.schedule`), gradient clipping, gradient accumulation.
* **Precision**: ``auto`` = bf16 autocast on a GPU that supports it (fp16 + GradScaler otherwise), fp32 on
  CPU; ``bf16`` also works on CPU.
* **Processes**: CPU, one GPU, or DDP under ``torchrun`` (gloo on CPU, nccl on GPU). The global batch of a
  step (``batch_size x world size`` per micro-step) is the same whatever the number of processes, so a
  2-process run matches a 1-process run with twice the batch.
* **Data**: see :mod:`organsam.training.sampling` and :mod:`organsam.training.transforms`; organs the
  data does not label are left out of the class loss (their targets are set to the model's own detached
  prediction, so their binary cross-entropy has zero gradient).
* **Memory training** (``data.sequence_length`` T >= 2): a sample is T consecutive slices of one case
  (:mod:`organsam.training.sequence_sampling`, same organ balancing), a step takes ``batch_size`` of them and
  the loss is ``compute_loss`` averaged over the T outputs of ``model.forward_sequence``
  (:mod:`organsam.training.sequence_loss`), so a design's slice memory (crisp_sam2's memory encoder and
  memory attention) learns; designs without a memory see T independent slices. Augmentation stays on and
  applies the same transform to all T slices of a sequence. ``samples_per_s`` then counts sequences.
* **Checkpoints**: ``<out_dir>/checkpoints/step_XXXXXXX.pt`` (model, optimizer, scheduler, scaler, RNG
  states, step; atomic writes, ``keep_checkpoints`` kept) and ``<out_dir>/train_state.pt`` (the latest);
  ``resume: auto`` continues from it. The final model goes through
  :func:`organsam.model.checkpoint.save_checkpoint` to ``<out_dir>/model.safetensors`` (+ ``.json``), the
  best validated one to ``best.safetensors``.
* **Logs**: ``metrics.csv`` / ``val.csv`` (+ TensorBoard if installed), tqdm progress bar (``progress``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from organsam.config import ConfigError, to_dict
from organsam.io.files import atomic_path
from organsam.model.losses import neutral_class_targets
from organsam.training.distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    cleanup_distributed,
    init_distributed,
)
from organsam.training.train_config import TrainConfig
from organsam.training.validation import ValResult, validate

logger = logging.getLogger(__name__)

__all__ = ["Trainer", "TrainResult", "train", "STATE_FORMAT", "load_train_state"]

STATE_FORMAT = "organsam-train-state-v1"
STATE_FILE = "train_state.pt"


@dataclass
class TrainResult:
    """What a run produced.

    Attributes:
        step: optimizer steps done.
        out_dir: the run folder.
        checkpoint: final model checkpoint (``model.safetensors``; ``None`` on non-main ranks).
        history: per optimizer step of this run: ``step``, ``loss`` (total), the loss terms, ``lr``,
            ``grad_norm`` (means over the processes).
        val: last validation result, if any.
    """

    step: int
    out_dir: Path
    checkpoint: Path | None
    history: list[dict[str, float]] = field(default_factory=list)
    val: ValResult | None = None


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


def _atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _config_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _config_diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        a, b = list(a), list(b)
    return [] if a == b else [f"{prefix[:-1]}: {a!r} vs {b!r}"]


class Trainer:
    """Runs one training configuration.

    Args:
        config: the :class:`TrainConfig`.
        quiet: no progress bar (overrides ``config.progress``).
    """

    def __init__(self, config: TrainConfig, quiet: bool = False) -> None:
        config.validate()
        self.cfg = config
        self.quiet = quiet
        self.out_dir = Path(config.out_dir)

    # ------------------------------------------------------------------ set-up
    def _precision(self, device: torch.device) -> tuple[torch.dtype | None, bool]:
        p = self.cfg.precision
        if p == "auto":
            p = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device.type == "cuda" else "fp32"
        if p == "fp16" and device.type != "cuda":
            raise ConfigError("precision fp16 needs a GPU; use bf16 or fp32 on CPU")
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(p)
        return dtype, p == "fp16"

    def _build_model(self, dist_info: DistInfo) -> torch.nn.Module:
        from organsam.registry import build_design

        torch.manual_seed(self.cfg.seed)
        model = build_design(self.cfg.design, [self.cfg.model])
        return model.to(dist_info.device)

    def _check_feature_cache(self, model: torch.nn.Module) -> None:
        """Refuse the feature cache for a design with image-encoder LoRA adapters (before any data is read)."""
        rank = int(getattr(model.config, "lora_rank", 0) or 0)
        if self.cfg.data.feature_cache and rank > 0:
            raise ConfigError(
                f"data.feature_cache cannot be used with model.lora_rank {rank}: cached encoder features bypass "
                f"the image-encoder LoRA adapters, which would never train; set data.feature_cache: false or "
                f"model.lora_rank: 0"
            )

    def _organ_indices(self, model: torch.nn.Module, organs: tuple[str, ...], what: str) -> list[int] | None:
        if not organs:
            return None
        from organsam.model.base import resolve_organ_ids

        ids = resolve_organ_ids(organs)
        missing = [o for o in ids if o not in model.organ_ids]
        if missing:
            raise ConfigError(
                f"{what}: organ(s) {missing} are not in the vocabulary of design {self.cfg.design} "
                f"(its config 'organs' restricts it)"
            )
        return [model.organ_ids.index(o) for o in ids]

    def _build_data(self, model: torch.nn.Module, dist_info: DistInfo) -> dict[str, Any]:
        from organsam.training.case_store import CaseStore
        from organsam.training.datasets import read_dataset
        from organsam.training.manifest import check_patient_split, split_cases
        from organsam.training.sampling import OrganBalancedSampler
        from organsam.training.sequence_dataset import SequenceDataset
        from organsam.training.sequence_sampling import SequenceSampler
        from organsam.training.slice_dataset import SliceDataset
        from organsam.training.transforms import SliceTransform

        d = self.cfg.data
        cases = read_dataset(d.dataset, d.root, **d.options)
        train_cases = split_cases(
            cases,
            d.train_split,
            val_fraction=d.val_fraction,
            seed=d.split_seed,
            use_dataset_splits=d.use_dataset_splits,
        )
        val_cases = (
            split_cases(
                cases,
                d.val_split,
                val_fraction=d.val_fraction,
                seed=d.split_seed,
                use_dataset_splits=d.use_dataset_splits,
            )
            if d.val_split
            else []
        )
        if not train_cases:
            raise ConfigError(f"data: split {d.train_split!r} of dataset {d.dataset!r} has no cases")
        check_patient_split(train_cases, val_cases, (d.train_split, d.val_split or "val"))
        logger.info(
            "data %s: %d train case(s) %s, %d val case(s) %s",
            d.dataset,
            len(train_cases),
            [c.case_id for c in train_cases],
            len(val_cases),
            [c.case_id for c in val_cases],
        )
        prompt = self._organ_indices(model, d.organs, "data.organs")
        store = CaseStore(train_cases, model.organ_ids, window=d.window, cache_dir=d.case_cache_dir)
        sampling = {
            "prompt_organs": prompt,
            "min_area": d.min_area,
            "absent_fraction": d.absent_fraction,
            "balance_power": d.balance_power,
            "seed": self.cfg.seed,
        }
        if d.sequence_length >= 2:
            sampler: OrganBalancedSampler = SequenceSampler.from_store(
                store, length=d.sequence_length, stride=d.sequence_stride, **sampling
            )
        else:
            sampler = OrganBalancedSampler.from_store(store, **sampling)
        augment = d.augment
        if d.feature_cache and augment.enabled:
            logger.warning(
                "data.feature_cache is on: augmentation is turned off (cached features are of the "
                "unaugmented slices)"
            )
            augment = None
        transform = SliceTransform(augment, d.box_jitter, d.box_jitter_rel, d.box_margin)
        if d.sequence_length >= 2:
            logger.info(
                "memory training: sequences of %d slices (stride %d)%s",
                d.sequence_length,
                d.sequence_stride,
                ", one augmentation per sequence" if transform.augment is not None else "",
            )
            dataset: Any = SequenceDataset(store, transform, min_area=d.min_area)
        else:
            dataset = SliceDataset(store, transform, min_area=d.min_area)
        val_store = None
        if val_cases and dist_info.is_main and self.cfg.val.every >= 0:
            val_store = CaseStore(val_cases, model.organ_ids, window=d.window, cache_dir=d.case_cache_dir)
        return {"store": store, "sampler": sampler, "dataset": dataset, "val_store": val_store}

    def _optimizer(self, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, list[torch.nn.Parameter]]:
        o = self.cfg.optim
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError(
                f"design {self.cfg.design}: no trainable parameters with these freezing options"
            )
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        groups = [
            {"params": decay, "weight_decay": o.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=o.lr, betas=tuple(o.betas), eps=o.eps)
        return opt, params

    def _resume_path(self) -> Path | None:
        r = self.cfg.resume
        if r is None or r is False or str(r).lower() in ("", "none", "null", "false", "no"):
            return None
        if str(r).lower() == "auto":
            p = self.out_dir / STATE_FILE
            return p if p.is_file() else None
        return Path(str(r))

    # ------------------------------------------------------------------ run
    def run(self) -> TrainResult:
        """Train; returns the :class:`TrainResult` (checkpoint written by rank 0)."""
        cfg = self.cfg
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        dist_info = init_distributed(cfg.device)
        try:
            return self._run(dist_info)
        finally:
            cleanup_distributed()

    def _run(self, di: DistInfo) -> TrainResult:
        from torch.utils.data import DataLoader

        from organsam.training.metrics_logger import MetricsLogger
        from organsam.training.sampling import StepBatchSampler
        from organsam.training.schedule import build_scheduler
        from organsam.training.slice_dataset import collate_samples

        cfg = self.cfg
        dev = di.device
        amp_dtype, use_scaler = self._precision(dev)
        model = self._build_model(di)
        self._check_feature_cache(model)
        resume = self._resume_path()
        state = self._check_state(resume, model) if resume is not None else None
        data = self._build_data(model, di)
        opt, params = self._optimizer(model)
        sched = build_scheduler(
            opt,
            cfg.steps,
            cfg.optim.warmup_steps,
            cfg.optim.schedule,
            cfg.optim.min_lr_ratio,
            cfg.optim.poly_power,
        )
        scaler = torch.amp.GradScaler("cuda") if use_scaler else None

        start_step, best = 0, -math.inf
        if state is not None:
            start_step, best = self._load_state(state, model, opt, sched, scaler)
            logger.info("resumed from %s at step %d", resume, start_step)
        if start_step >= cfg.steps:
            logger.warning("resumed at step %d >= steps %d: nothing to train", start_step, cfg.steps)
        if di.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        cache = None
        if cfg.data.feature_cache:
            from organsam.training.feature_cache import FeatureCache

            root = cfg.data.feature_cache_dir or str(self.out_dir / "feature_cache")
            cache = FeatureCache(
                root, model, cfg.data.feature_cache_dtype, tag=f"{cfg.data.window}|to_model_input"
            )

        sequences = cfg.data.sequence_length >= 2
        net: torch.nn.Module = model
        if sequences:
            from organsam.training.sequence_loss import SequenceLoss

            net = SequenceLoss(model, cache)  # one module call per micro-step (what DDP wraps)
        if di.distributed:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(
                net,
                device_ids=[dev.index] if dev.type == "cuda" else None,
                find_unused_parameters=cfg.find_unused_parameters,
            )
        batches = StepBatchSampler(
            data["sampler"], cfg.batch_size, start_step, cfg.steps, cfg.grad_accum, di.rank, di.world_size
        )
        loader = DataLoader(
            data["dataset"],
            batch_sampler=batches,
            collate_fn=collate_samples,
            num_workers=cfg.data.num_workers,
            pin_memory=dev.type == "cuda",
        )
        mlog = MetricsLogger(
            self.out_dir,
            cfg.tensorboard,
            enabled=di.is_main,
            resume_step=start_step if resume is not None else None,
        )
        val_organs = self._organ_indices(model, cfg.val.organs, "val.organs")
        autocast = (
            (lambda: torch.autocast(dev.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext
        )
        history: list[dict[str, float]] = []
        last_val: ValResult | None = None
        progress = None
        if di.is_main and cfg.progress and not self.quiet:
            from tqdm.auto import tqdm

            progress = tqdm(total=cfg.steps, initial=start_step, desc=f"train {cfg.design}", unit="step")
        model.train()
        it = iter(loader)
        global_batch = cfg.batch_size * di.world_size * cfg.grad_accum
        try:
            for step in range(start_step, cfg.steps):
                t0 = time.perf_counter()
                box_rng = np.random.default_rng([cfg.seed, step, 7919])
                use_boxes = bool(box_rng.random() < cfg.data.box_prompt_prob)
                sums: dict[str, float] = {}
                for micro in range(cfg.grad_accum):
                    batch = next(it)
                    sync = micro == cfg.grad_accum - 1
                    ctx = net.no_sync() if (di.distributed and not sync) else contextlib.nullcontext()
                    with ctx:
                        with autocast():
                            if sequences:
                                terms = net(batch, use_boxes)
                            else:
                                terms = self._loss(net, model, batch, dev, use_boxes, cache)
                        loss = terms["total"] / cfg.grad_accum
                        (scaler.scale(loss) if scaler is not None else loss).backward()
                    for k, v in terms.items():
                        sums[k] = sums.get(k, 0.0) + float(v.detach()) / cfg.grad_accum
                if scaler is not None:
                    scaler.unscale_(opt)
                clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
                gnorm = torch.nn.utils.clip_grad_norm_(params, clip)
                finite = bool(torch.isfinite(gnorm))
                lr = opt.param_groups[0]["lr"]
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                elif finite:
                    opt.step()
                else:
                    logger.warning("step %d: non-finite gradient norm; update skipped", step + 1)
                opt.zero_grad(set_to_none=True)
                sched.step()
                done = step + 1
                dt = time.perf_counter() - t0
                metrics = {("loss" if k == "total" else f"loss_{k}"): v for k, v in sums.items()}
                metrics = all_reduce_mean(metrics, dev)
                metrics.update(
                    lr=lr,
                    grad_norm=float(gnorm),
                    samples_per_s=global_batch / max(dt, 1e-9),
                    skipped=float(not finite),
                )
                if not math.isfinite(metrics["loss"]):
                    logger.warning("step %d: non-finite loss %s", done, metrics["loss"])
                history.append({"step": float(done), **metrics})
                if done % max(1, cfg.log_every) == 0 or done == cfg.steps or done == start_step + 1:
                    mlog.log(done, metrics)
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{lr:.2e}")
                final = done == cfg.steps
                val_now = cfg.val.every >= 0 and (final or (cfg.val.every > 0 and done % cfg.val.every == 0))
                if val_now and data["val_store"] is not None:
                    last_val = validate(
                        model,
                        data["val_store"],
                        val_organs,
                        max_slices=cfg.val.max_slices,
                        presence_gate=cfg.val.presence_gate,
                        batch_size=cfg.val.batch_size,
                        autocast=autocast(),
                        box_margin=cfg.val.box_margin,
                    )
                    mlog.log_val(done, last_val.rows, last_val.per_organ, last_val.mean_dice)
                    if math.isfinite(last_val.mean_dice) and last_val.mean_dice > best:
                        best = last_val.mean_dice
                        self._save_model(model, self.out_dir / "best.safetensors", done, last_val)
                if val_now:
                    barrier()
                if final or (cfg.ckpt_every > 0 and done % cfg.ckpt_every == 0):
                    if di.is_main:
                        self._save_state(done, model, opt, sched, scaler, best, di)
                    barrier()
        finally:
            if progress is not None:
                progress.close()
            mlog.close()
        ckpt = None
        if di.is_main:
            ckpt = self._save_model(
                model, self.out_dir / "model.safetensors", max(start_step, cfg.steps), last_val
            )
        barrier()
        return TrainResult(
            step=max(start_step, cfg.steps),
            out_dir=self.out_dir,
            checkpoint=ckpt,
            history=history,
            val=last_val,
        )

    # ------------------------------------------------------------------ pieces
    def _loss(
        self,
        net: torch.nn.Module,
        model: torch.nn.Module,
        batch: dict[str, Any],
        dev: torch.device,
        use_boxes: bool,
        cache: Any,
    ) -> dict[str, torch.Tensor]:
        images = batch["image"].to(dev, non_blocking=True)
        organ_index = batch["organ_index"].to(dev)
        boxes = batch["box"].to(dev) if use_boxes else None
        if cache is not None:
            enc = cache.get(model, images, list(zip(batch["case_id"], batch["z"])))
            out = net(None, organ_index, boxes, encoded=enc)
        else:
            out = net(images, organ_index, boxes)
        targets = batch["mask"].to(dev)
        present = batch["present"].to(dev)
        class_targets = neutral_class_targets(
            out, batch["class_targets"].to(dev), batch["class_known"].to(dev)
        )
        if class_targets.shape[1] != model.num_organs:
            class_targets = None
        return model.compute_loss(out, targets, present, class_targets=class_targets)

    def _save_state(
        self,
        step: int,
        model: torch.nn.Module,
        opt: torch.optim.Optimizer,
        sched: Any,
        scaler: Any,
        best: float,
        di: DistInfo,
    ) -> Path:
        state = {
            "format": STATE_FORMAT,
            "step": step,
            "design": self.cfg.design,
            "design_config": to_dict(model.config),
            "train_config": to_dict(self.cfg),
            "world_size": di.world_size,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": _rng_state(),
            "best_val": best,
        }
        ckpt_dir = self.out_dir / "checkpoints"
        path = ckpt_dir / f"step_{step:07d}.pt"
        _atomic_torch_save(state, path)
        latest = self.out_dir / STATE_FILE
        with atomic_path(latest) as tmp:
            shutil.copy2(path, tmp)
        if self.cfg.keep_checkpoints > 0:
            old = sorted(ckpt_dir.glob("step_*.pt"))[: -self.cfg.keep_checkpoints]
            for p in old:
                p.unlink()
        logger.info("saved training state %s", path)
        return path

    def _check_state(self, path: Path, model: torch.nn.Module) -> dict[str, Any]:
        """Read a training state and check that it belongs to this design and design config."""
        state = load_train_state(path)
        if state["design"] != self.cfg.design:
            raise ConfigError(
                f"{path}: training state of design {state['design']!r}, config asks for "
                f"{self.cfg.design!r}; resume with the same design or set resume: null"
            )
        diff = _config_diff(state["design_config"], to_dict(model.config))
        if diff:
            raise ConfigError(
                f"{path}: the design config differs from the one the state was trained with "
                f"({'; '.join(diff[:5])}); resume with the same model settings or set resume: null"
            )
        tdiff = _config_diff(state["train_config"], to_dict(self.cfg))
        if tdiff:
            logger.info("resuming with a changed training config: %s", "; ".join(tdiff))
        return state

    @staticmethod
    def _load_state(
        state: dict[str, Any], model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any, scaler: Any
    ) -> tuple[int, float]:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        return int(state["step"]), float(state.get("best_val", -math.inf))

    def _save_model(self, model: torch.nn.Module, path: Path, step: int, val: ValResult | None) -> Path:
        from organsam.model.checkpoint import save_checkpoint

        extra: dict[str, Any] = {"step": step, "train_config": to_dict(self.cfg)}
        if val is not None:
            extra["val_mean_dice"] = val.mean_dice if math.isfinite(val.mean_dice) else None
            extra["val_dice_per_organ"] = val.per_organ
        return save_checkpoint(model, path, design=self.cfg.design, config=model.config, extra=extra)


def train(config: TrainConfig, quiet: bool = False) -> TrainResult:
    """Run a training configuration (see :class:`Trainer`)."""
    return Trainer(config, quiet=quiet).run()
