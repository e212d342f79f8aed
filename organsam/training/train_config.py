"""Training configuration: one YAML (design, model overrides, data, optimizer/schedule, validation, run).

Schema (defaults in brackets); every key can be overridden on the command line as ``a.b=value``::

    design: unified              # registry name (organsam designs)
    init_from: null              # fine-tune: start from this design checkpoint (organsam train output, or
                                 # `packaged` for the shipped one of the design); its stored config is the
                                 # architecture, `model` keys (freezing, ...) apply on top
    model: {}                    # overrides of the design preset (organsam/configs/<design>.yaml),
                                 # e.g. freeze_image_encoder: true, optimizer_iterations: 0; LoRA adapters
                                 # in the image encoder: lora_rank: 8 (0: off), lora_alpha: 8.0,
                                 # lora_targets: [attn.qkv, attn.proj], lora_dropout: 0.0 (not with
                                 # data.feature_cache: cached features would bypass the adapters)
    data: {dataset: shared, root: null, options: {}, organs: [], ...}     (DataConfig; memory training over
                                 # short slice sequences: sequence_length: 3, sequence_stride: 1)
    optim: {lr: 1.0e-4, weight_decay: 0.01, schedule: cosine, warmup_steps: 100, ...}  (OptimConfig)
    val: {every: 500, max_slices: 0, organs: [], presence_gate: true}     (ValConfig)
    steps: 1000, batch_size: 4, grad_accum: 1, precision: auto, device: auto, seed: 0,
    out_dir: runs/organsam, log_every: 10, ckpt_every: 500, resume: auto, tensorboard: true, progress: true,
    find_unused_parameters: true   # DDP: tolerate trainable parameters a step does not use (e.g. a mask
                                   # optimizer with 0 iterations); false is a little faster when all are used

``load_train_config(["train_default.yaml", "data/amos22.yaml"], ["data.root=/data/AMOS22", "steps=20000"])``
merges the files in order (a name without a folder that is not a file is looked up among the packaged
presets in ``organsam/configs``) and then the overrides.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from organsam.config import ConfigError, apply_overrides, from_dict, load_yaml
from organsam.training.transforms import AugmentConfig

__all__ = ["DataConfig", "OptimConfig", "ValConfig", "TrainConfig", "load_train_config", "find_config_file"]


@dataclass
class DataConfig:
    """Data settings.

    Attributes:
        dataset: layout name (``organsam.training.datasets.list_datasets()``).
        root: dataset folder (manifest file for ``manifest``; ``null`` for ``shared`` = ``../shared/data``).
        options: reader options (e.g. ``labelmap``, ``patient_regex``, ``cases``).
        train_split: split trained on.
        val_split: split validated on (``""``: no validation).
        val_fraction: share of patients held out when the dataset has no val split.
        split_seed: seed of that patient split.
        use_dataset_splits: honour the dataset's own splits.
        organs: organs that may be prompted (ids and/or group names; empty: every organ of the design's
            vocabulary the data labels).
        window: CT window of the display intensities.
        case_cache_dir: ``.npy`` cache of decoded cases (``null``: in memory only).
        min_area: smallest organ area (model pixels, 256x256) for a positive slice.
        absent_fraction: share of samples prompting an organ absent from the slice.
        balance_power: inverse organ-frequency exponent of the sampler (1 = balanced organs).
        box_prompt_prob: probability that a step's batch gets box prompts (from the label, jittered).
        box_jitter: largest box side shift, model pixels.
        box_jitter_rel: atlas-like box jitter: centre shift and log-size change relative to the box size (0: off;
            ``organsam.training.transforms.box_from_mask``).
        box_margin: margin added around jittered boxes, model pixels (with ``box_jitter_rel``).
        augment: augmentation (MONAI; no flips).
        num_workers: DataLoader worker processes.
        feature_cache: train from cached frozen-encoder features (turns augmentation off; not with
            ``model.lora_rank > 0``).
        feature_cache_dir: cache folder (``null``: ``<out_dir>/feature_cache``).
        feature_cache_dtype: float32, float16 or bfloat16.
        sequence_length: 0: every sample is one independent slice. T >= 2: memory training: every sample
            is T consecutive slices of one case (``sequence_stride`` apart) with one prompted organ, centred
            on an organ-balanced (slice, organ) pair and shifted inwards at the volume's ends (slices without
            the organ get empty targets, ``present = 0``); a step takes ``batch_size`` sequences through
            ``model.forward_sequence`` and averages the loss over the T slices, so a design's slice memory
            (crisp_sam2) trains; designs without a memory see T independent slices. Half of the sequences
            run from the last slice to the first. Augmentation, when on, applies the same spatial and
            intensity transform to all T slices of a sequence (box jitter differs per slice). 1 is refused.
        sequence_stride: slice step inside a sequence (>= 1; with ``sequence_length >= 2``).
        contrast_phases: add to the training split, for every unenhanced CT, a copy per phase with its organs
            brought to that phase's attenuation (``arterial``, ``portal``; :mod:`organsam.training.contrast_phases`).
    """

    dataset: str = "shared"
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    train_split: str = "train"
    val_split: str = "val"
    val_fraction: float = 0.2
    split_seed: int = 0
    use_dataset_splits: bool = True
    organs: tuple[str, ...] = ()
    window: str = "abdomen"
    case_cache_dir: str | None = None
    min_area: float = 4.0
    absent_fraction: float = 0.1
    balance_power: float = 1.0
    box_prompt_prob: float = 0.0
    box_jitter: float = 5.0
    box_jitter_rel: float = 0.0
    box_margin: float = 0.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    num_workers: int = 0
    feature_cache: bool = False
    feature_cache_dir: str | None = None
    feature_cache_dtype: str = "float32"
    sequence_length: int = 0
    sequence_stride: int = 1
    contrast_phases: tuple[str, ...] = ()


@dataclass
class OptimConfig:
    """AdamW and the learning-rate schedule.

    Attributes:
        lr: peak learning rate.
        weight_decay: AdamW weight decay (not applied to biases, norms and embeddings-like 1D tensors).
        betas: Adam betas.
        eps: Adam epsilon.
        schedule: ``cosine``, ``poly`` or ``constant`` after the warm-up.
        warmup_steps: linear warm-up steps.
        min_lr_ratio: final learning rate / ``lr``.
        poly_power: exponent of the poly schedule.
        grad_clip: gradient-norm clipping (0: off).
    """

    lr: float = 1.0e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1.0e-8
    schedule: str = "cosine"
    warmup_steps: int = 100
    min_lr_ratio: float = 0.01
    poly_power: float = 0.9
    grad_clip: float = 1.0


@dataclass
class ValConfig:
    """Validation (Dice per organ on the val split, rank 0).

    Attributes:
        every: validate every N optimizer steps (0: only at the end; -1: never).
        max_slices: at most this many slices per case, evenly spaced among those with labelled organs
            (0: all).
        organs: organs to score (empty: every prompted organ present in the case).
        presence_gate: count a mask only where the design's presence logit is > 0.
        batch_size: slices encoded together.
        box_margin: validate with box prompts: each organ's tight box on each slice where it is present, grown by
            this many model pixels (``null``: text prompts only; designs that need boxes set it).
    """

    every: int = 500
    max_slices: int = 0
    organs: tuple[str, ...] = ()
    presence_gate: bool = True
    batch_size: int = 4
    box_margin: float | None = None


@dataclass
class TrainConfig:
    """A whole training run (see the module docstring)."""

    design: str = "unified"
    init_from: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    val: ValConfig = field(default_factory=ValConfig)
    steps: int = 1000
    batch_size: int = 4
    grad_accum: int = 1
    precision: str = "auto"
    device: str = "auto"
    seed: int = 0
    threads: int = 0
    out_dir: str = "runs/organsam"
    log_every: int = 10
    ckpt_every: int = 500
    keep_checkpoints: int = 2
    resume: str | None = "auto"
    tensorboard: bool = True
    progress: bool = True
    find_unused_parameters: bool = True

    def validate(self) -> None:
        """Check values that the dataclass types cannot.

        Raises:
            ConfigError: naming the key and the allowed values.
        """
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        for key in ("steps", "batch_size", "grad_accum"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.optim.schedule not in ("cosine", "poly", "constant"):
            raise ConfigError(f"optim.schedule must be cosine, poly or constant, got {self.optim.schedule!r}")
        seq = self.data.sequence_length
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or seq == 1:
            raise ConfigError(
                f"data.sequence_length must be 0 (independent slices) or an integer >= 2 (slices per training "
                f"sequence, memory training), got {seq!r}"
            )
        stride = self.data.sequence_stride
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ConfigError(
                f"data.sequence_stride must be an integer >= 1 (slice step in a sequence), got {stride!r}"
            )
        from organsam.training.contrast_phases import PHASES

        bad = [p for p in self.data.contrast_phases if p not in PHASES]
        if bad:
            raise ConfigError(f"data.contrast_phases: unknown phase(s) {bad}; known: {sorted(PHASES)}")
        if not 0.0 <= self.data.box_prompt_prob <= 1.0:
            raise ConfigError(f"data.box_prompt_prob must be in [0, 1], got {self.data.box_prompt_prob}")
        if not isinstance(self.model, dict):
            raise ConfigError(f"model must be a mapping of design config overrides, got {type(self.model).__name__}")
        rank = self.model.get("lora_rank", 0)
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise ConfigError(f"model.lora_rank must be an integer >= 0 (0: no LoRA adapters), got {rank!r}")
        if rank > 0 and self.data.feature_cache:
            raise ConfigError(
                f"model.lora_rank {rank} needs data.feature_cache: false (cached encoder features would bypass "
                f"the image-encoder LoRA adapters)"
            )


def find_config_file(name: str | Path) -> Path:
    """A config file path, or a packaged preset (``train_default``, ``data/amos22``; ``.yaml`` optional).

    Raises:
        FileNotFoundError: neither exists (the packaged presets listed).
    """
    p = Path(name).expanduser()
    if p.is_file():
        return p
    stem = str(name)[:-5] if str(name).endswith(".yaml") else str(name)
    base = resources.files("organsam") / "configs"
    cand = base.joinpath(*f"{stem}.yaml".split("/"))
    if cand.is_file():
        return Path(str(cand))
    known = sorted(str(x.name)[:-5] for x in base.iterdir() if x.name.startswith("train_"))
    data = base / "data"
    if data.is_dir():
        known += sorted(f"data/{x.name[:-5]}" for x in data.iterdir() if x.name.endswith(".yaml"))
    raise FileNotFoundError(
        f"{p}: training config not found (not a file, not a packaged preset; presets: {', '.join(known)})"
    )


def load_train_config(files: str | Path | Sequence[str | Path] = (), overrides: Iterable[str] = ()) -> TrainConfig:
    """Merge YAML files (in order) and ``key=value`` overrides into a :class:`TrainConfig`.

    Raises:
        FileNotFoundError: a config file is missing.
        ConfigError: invalid YAML, unknown keys, invalid values.
    """
    if isinstance(files, (str, Path)):
        files = [files]
    data: dict[str, Any] = {}
    for f in files:
        data = apply_overrides(data, [load_yaml(find_config_file(f))])
    data = apply_overrides(data, list(overrides))
    cfg = from_dict(TrainConfig, data, where="train config")
    if isinstance(cfg.data.augment, dict):
        cfg.data.augment = from_dict(AugmentConfig, cfg.data.augment, where="train config data.augment")
    _coerce_numbers(cfg, "")
    cfg.validate()
    return cfg


def _coerce_numbers(obj: Any, where: str) -> None:
    """Turn numbers YAML read as strings (``lr=3e-4``: YAML 1.1 needs ``3.0e-4``) into floats/ints, in place.

    Raises:
        ConfigError: a numeric key holds something that is not a number.
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{where}{f.name}"
        if dataclasses.is_dataclass(value):
            _coerce_numbers(value, key + ".")
        elif hints[f.name] in (float, int) and not isinstance(value, bool):
            kind = hints[f.name]
            try:
                number = float(value) if kind is float else int(value)
            except (TypeError, ValueError):
                raise ConfigError(f"train config {key}: expected a number, got {value!r}") from None
            if kind is int and isinstance(value, float) and not value.is_integer():
                raise ConfigError(f"train config {key}: expected a whole number, got {value!r}")
            setattr(obj, f.name, number)
