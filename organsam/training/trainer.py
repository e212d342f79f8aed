"""The training loop behind ``organsam train``: one YAML -> a trained design checkpoint.

The loop is a sequence of hooks, as in nnU-Net's trainer: :meth:`Trainer.on_train_start` (model, resumed state,
data, optimizer, loader, logger), then per step :meth:`~Trainer.train_step`, :meth:`~Trainer.log_step`,
:meth:`~Trainer.validation_step` and :meth:`~Trainer.checkpoint`, and :meth:`~Trainer.on_train_end` (the final
model). A variant overrides a hook. The data is built by :mod:`organsam.training.train_data`, the losses by
:mod:`organsam.training.slice_loss` and :mod:`organsam.training.sequence_loss`, the state on disk by
:mod:`organsam.training.train_state`.

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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from organsam.config import ConfigError
from organsam.training.distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    cleanup_distributed,
    init_distributed,
)
from organsam.training.fine_tune import design_from_checkpoint
from organsam.training.slice_loss import slice_loss
from organsam.training.train_config import TrainConfig
from organsam.training.train_data import build_train_data, organ_indices
from organsam.training.train_state import (
    STATE_FILE,
    STATE_FORMAT,
    check_train_state,
    load_train_state,
    restore_train_state,
    save_model,
    save_train_state,
)
from organsam.training.validation import ValResult, validate

logger = logging.getLogger(__name__)

__all__ = ["Trainer", "TrainResult", "TrainRun", "train", "STATE_FORMAT", "load_train_state"]


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


@dataclass
class TrainRun:
    """What one run holds between hooks (set up by :meth:`Trainer.on_train_start`, passed to every other hook)."""

    di: DistInfo
    model: torch.nn.Module
    net: torch.nn.Module
    opt: torch.optim.Optimizer
    params: list[torch.nn.Parameter]
    sched: Any
    scaler: Any
    batches: Iterator[dict[str, Any]]
    val_store: Any
    cache: Any
    mlog: Any
    progress: Any
    autocast: Callable[[], Any]
    val_organs: list[int] | None
    start_step: int
    best: float
    history: list[dict[str, float]] = field(default_factory=list)
    last_val: ValResult | None = None

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
        self.mlog.close()


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
        cfg = self.cfg
        if cfg.init_from is not None:
            return design_from_checkpoint(cfg.design, cfg.init_from, cfg.model).to(dist_info.device)
        return build_design(cfg.design, [cfg.model]).to(dist_info.device)

    def _check_feature_cache(self, model: torch.nn.Module) -> None:
        """Refuse the feature cache for a design with image-encoder LoRA adapters (before any data is read)."""
        rank = int(getattr(model.config, "lora_rank", 0) or 0)
        if self.cfg.data.feature_cache and rank > 0:
            raise ConfigError(
                f"data.feature_cache cannot be used with model.lora_rank {rank}: cached encoder features bypass "
                f"the image-encoder LoRA adapters, which would never train; set data.feature_cache: false or "
                f"model.lora_rank: 0"
            )

    def _optimizer(self, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, list[torch.nn.Parameter]]:
        o = self.cfg.optim
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError(f"design {self.cfg.design}: no trainable parameters with these freezing options")
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

    # ------------------------------------------------------------------ hooks
    def _run(self, di: DistInfo) -> TrainResult:
        """The loop: set-up, then per step the train step, logging, validation and checkpoint hooks."""
        cfg = self.cfg
        run = self.on_train_start(di)
        try:
            for step in range(run.start_step, cfg.steps):
                done = step + 1
                self.log_step(run, done, self.train_step(run, step))
                final = done == cfg.steps
                if cfg.val.every >= 0 and (final or (cfg.val.every > 0 and done % cfg.val.every == 0)):
                    self.validation_step(run, done)
                if final or (cfg.ckpt_every > 0 and done % cfg.ckpt_every == 0):
                    self.checkpoint(run, done)
        finally:
            run.close()
        return self.on_train_end(run)

    def on_train_start(self, di: DistInfo) -> TrainRun:
        """Set-up: the model, the resumed state, the data, optimizer, schedule, loader, logger and progress bar."""
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
        state = check_train_state(resume, cfg, model) if resume is not None else None
        data = build_train_data(cfg, model, di.is_main)
        opt, params = self._optimizer(model)
        o = cfg.optim
        sched = build_scheduler(opt, cfg.steps, o.warmup_steps, o.schedule, o.min_lr_ratio, o.poly_power)
        scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        start_step, best = 0, -math.inf
        if state is not None:
            start_step, best = restore_train_state(state, model, opt, sched, scaler)
            logger.info("resumed from %s at step %d", resume, start_step)
        if start_step >= cfg.steps:
            logger.warning("resumed at step %d >= steps %d: nothing to train", start_step, cfg.steps)
        if di.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        cache = None
        if cfg.data.feature_cache:
            from organsam.training.feature_cache import FeatureCache

            root = cfg.data.feature_cache_dir or str(self.out_dir / "feature_cache")
            cache = FeatureCache(root, model, cfg.data.feature_cache_dtype, tag=f"{cfg.data.window}|to_model_input")
        net: torch.nn.Module = model
        if cfg.data.sequence_length >= 2:
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
            self.out_dir, cfg.tensorboard, enabled=di.is_main, resume_step=start_step if resume is not None else None
        )
        val_organs = organ_indices(model, cfg.val.organs, "val.organs", cfg.design)
        autocast = (lambda: torch.autocast(dev.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext
        progress = None
        if di.is_main and cfg.progress and not self.quiet:
            from tqdm.auto import tqdm

            progress = tqdm(total=cfg.steps, initial=start_step, desc=f"train {cfg.design}", unit="step")
        model.train()
        return TrainRun(
            di=di,
            model=model,
            net=net,
            opt=opt,
            params=params,
            sched=sched,
            scaler=scaler,
            batches=iter(loader),
            val_store=data["val_store"],
            cache=cache,
            mlog=mlog,
            progress=progress,
            autocast=autocast,
            val_organs=val_organs,
            start_step=start_step,
            best=best,
        )

    def train_step(self, run: TrainRun, step: int) -> dict[str, float]:
        """One optimizer step over ``grad_accum`` micro-batches; returns its metrics (means over the processes).
        ``step`` counts the steps done before this one (0-based); the other hooks get ``done`` = ``step + 1``."""
        cfg, di, dev = self.cfg, run.di, run.di.device
        t0 = time.perf_counter()
        box_rng = np.random.default_rng([cfg.seed, step, 7919])
        use_boxes = bool(box_rng.random() < cfg.data.box_prompt_prob)
        sums: dict[str, float] = {}
        for micro in range(cfg.grad_accum):
            batch = next(run.batches)
            sync = micro == cfg.grad_accum - 1
            ctx = run.net.no_sync() if (di.distributed and not sync) else contextlib.nullcontext()
            with ctx:
                with run.autocast():
                    if cfg.data.sequence_length >= 2:
                        terms = run.net(batch, use_boxes)
                    else:
                        terms = slice_loss(run.net, run.model, batch, dev, use_boxes, run.cache)
                loss = terms["total"] / cfg.grad_accum
                (run.scaler.scale(loss) if run.scaler is not None else loss).backward()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / cfg.grad_accum
        if run.scaler is not None:
            run.scaler.unscale_(run.opt)
        clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
        gnorm = torch.nn.utils.clip_grad_norm_(run.params, clip)
        finite = bool(torch.isfinite(gnorm))
        lr = run.opt.param_groups[0]["lr"]
        if run.scaler is not None:
            run.scaler.step(run.opt)
            run.scaler.update()
        elif finite:
            run.opt.step()
        else:
            logger.warning("step %d: non-finite gradient norm; update skipped", step + 1)
        run.opt.zero_grad(set_to_none=True)
        run.sched.step()
        dt = time.perf_counter() - t0
        metrics = {("loss" if k == "total" else f"loss_{k}"): v for k, v in sums.items()}
        metrics = all_reduce_mean(metrics, dev)
        global_batch = cfg.batch_size * di.world_size * cfg.grad_accum
        metrics.update(
            lr=lr, grad_norm=float(gnorm), samples_per_s=global_batch / max(dt, 1e-9), skipped=float(not finite)
        )
        return metrics

    def log_step(self, run: TrainRun, done: int, metrics: dict[str, float]) -> None:
        """Record a step's metrics: the history, ``metrics.csv``/TensorBoard every ``log_every`` steps, the bar."""
        if not math.isfinite(metrics["loss"]):
            logger.warning("step %d: non-finite loss %s", done, metrics["loss"])
        run.history.append({"step": float(done), **metrics})
        if done % max(1, self.cfg.log_every) == 0 or done == self.cfg.steps or done == run.start_step + 1:
            run.mlog.log(done, metrics)
        if run.progress is not None:
            run.progress.update(1)
            run.progress.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}")

    def validation_step(self, run: TrainRun, done: int) -> None:
        """Validate on the held-out cases (main process); a better mean Dice writes ``best.safetensors``. Every
        process reaches the closing ``barrier()`` (an override must keep it, or a DDP run hangs)."""
        v = self.cfg.val
        if run.val_store is not None:
            run.last_val = validate(
                run.model,
                run.val_store,
                run.val_organs,
                max_slices=v.max_slices,
                presence_gate=v.presence_gate,
                batch_size=v.batch_size,
                autocast=run.autocast(),
                box_margin=v.box_margin,
            )
            run.mlog.log_val(done, run.last_val.rows, run.last_val.per_organ, run.last_val.mean_dice)
            if math.isfinite(run.last_val.mean_dice) and run.last_val.mean_dice > run.best:
                run.best = run.last_val.mean_dice
                save_model(run.model, self.out_dir / "best.safetensors", self.cfg, done, run.last_val)
        barrier()

    def checkpoint(self, run: TrainRun, done: int) -> None:
        """Write the training state (main process), for ``resume``. Every process reaches the closing ``barrier()``
        (an override must keep it, or a DDP run hangs)."""
        if run.di.is_main:
            save_train_state(
                self.out_dir, self.cfg, done, run.model, run.opt, run.sched, run.scaler, run.best, run.di.world_size
            )
        barrier()

    def on_train_end(self, run: TrainRun) -> TrainResult:
        """The final model checkpoint (main process) and the run's result."""
        step = max(run.start_step, self.cfg.steps)
        ckpt = None
        if run.di.is_main:
            ckpt = save_model(run.model, self.out_dir / "model.safetensors", self.cfg, step, run.last_val)
        barrier()
        return TrainResult(step=step, out_dir=self.out_dir, checkpoint=ckpt, history=run.history, val=run.last_val)


def train(config: TrainConfig, quiet: bool = False) -> TrainResult:
    """Run a training configuration (see :class:`Trainer`)."""
    return Trainer(config, quiet=quiet).run()
