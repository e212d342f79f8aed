"""Checkpoints of the designs: learned weights in safetensors plus a JSON sidecar that makes them checkable.

``save_checkpoint(model, "run/model.safetensors", design=..., config=...)`` writes

* ``model.safetensors``: the design's state dict **without** what can be rebuilt exactly:
  the organ text table is a non-persistent buffer (never saved; the sidecar records the text encoder's
  fingerprint instead), and of the SAM core only the tensors that differ from the LiteMedSAM weights
  the design was built on are kept (all core tensors when it was built with ``pretrained: false``).
  Every non-core tensor is saved, and so is every LoRA adapter tensor (``...lora_A``/``...lora_B`` inside
  the image encoder; the adapted layers keep their base keys, which match the LiteMedSAM weights).
* ``model.json`` (same stem): format, design name, the resolved config, vocabulary version and organ ids,
  text-encoder fingerprint, package and torch versions, the SHA-256 of the tensor file and of the base
  LiteMedSAM weights, and ``extra`` (caller metadata: epoch, metrics, ...).

Both files are written atomically (temporary file in the same folder, then ``os.replace``), tensors
first. ``load_checkpoint(path)`` rebuilds the design from the stored config (loading the same base
weights; ``lora_rank`` & co. recreate the adapters) and checks everything, failing with a message that names
the file and the mismatch (a missing adapter tensor included).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from organsam.io.files import atomic_path
from organsam.model.components.lora import is_lora_parameter
from organsam.model.sam_core import CheckpointError

logger = logging.getLogger(__name__)

__all__ = [
    "PACKAGED",
    "packaged_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint_info",
    "resave_checkpoint",
    "sidecar_path",
    "CheckpointError",
    "CHECKPOINT_FORMAT",
]

CHECKPOINT_FORMAT = "organsam-checkpoint-v1"
_CORE = "core."


#: Names accepted for ``save_checkpoint(stored_dtype=...)``.
_STORED_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The JSON sidecar of a tensor file: same folder and stem, ``.json`` suffix."""
    p = Path(path)
    if p.suffix == ".json":
        raise ValueError(
            f"{p}: a checkpoint's tensor file cannot end in .json (that is the sidecar's name); "
            f"use e.g. model.safetensors"
        )
    return p.with_suffix(".json")


def _atomic_write(path: Path, write: Any) -> None:
    with atomic_path(path) as tmp:
        write(str(tmp))


def _base_weights(config: Any) -> tuple[Path, str] | None:
    """Path and SHA-256 of the LiteMedSAM weights a pretrained design starts from (None if not pretrained)."""
    if not getattr(config, "pretrained", False):
        return None
    from organsam.io.files import file_sha256
    from organsam.weights import WEIGHTS, find_weight

    ckpt = getattr(config, "sam_checkpoint", None)
    path = find_weight("lite_medsam", ckpt, check_hash=ckpt is None)
    sha = WEIGHTS["lite_medsam"].sha256 if ckpt is None else file_sha256(path)
    return path, str(sha)


def save_checkpoint(
    model: torch.nn.Module,
    path: str | os.PathLike[str],
    *,
    design: str | None = None,
    config: Any = None,
    extra: dict[str, Any] | None = None,
    stored_dtype: str = "float32",
) -> Path:
    """Save a design's learned weights and its sidecar.

    Args:
        model: an :class:`~organsam.model.base.OrganSegmenter` design.
        path: tensor file to write (``.safetensors`` recommended); the sidecar goes beside it.
        design: registry name (default and required to match: ``model.design_name``).
        config: the resolved config (default: ``model.config``); must be the design's config class.
        extra: JSON-serialisable metadata stored under ``"extra"``.
        stored_dtype: ``"float32"``, or ``"float16"`` to store floating-point tensors at half the size (a shipped
            checkpoint may take 25 MB); loading casts them back to the model's float32.

    Returns:
        The tensor file's path.

    Raises:
        ValueError: the design name or config does not match the model, ``extra`` is not JSON, or an unknown
            ``stored_dtype``.
    """
    from safetensors.torch import save_file

    import organsam
    from organsam.config import to_dict
    from organsam.io.files import file_sha256
    from organsam.registry import get_design
    from organsam.vocabulary import VOCAB_VERSION

    p = Path(path)
    side = sidecar_path(p)
    name = getattr(model, "design_name", None)
    design = design or name
    if design != name:
        raise ValueError(f"save_checkpoint: design={design!r} but the model is a {name!r} design")
    entry = get_design(design)
    config = config if config is not None else model.config
    if not isinstance(config, entry.config_cls):
        raise ValueError(
            f"save_checkpoint: config is a {type(config).__name__}, design {design!r} needs {entry.config_cls.__name__}"
        )
    if stored_dtype not in _STORED_DTYPES:
        raise ValueError(f"save_checkpoint: stored_dtype must be one of {sorted(_STORED_DTYPES)}, got {stored_dtype!r}")
    extra = dict(extra or {})
    try:
        json.dumps(extra)
    except TypeError as e:
        raise ValueError(f"save_checkpoint: extra metadata is not JSON-serialisable ({e})") from e

    state = model.state_dict()
    base = _base_weights(config)
    reference: dict[str, torch.Tensor] = {}
    if base is not None:
        from organsam.model.sam_core import load_checkpoint_state

        reference = load_checkpoint_state(base[0])
    tensors: dict[str, torch.Tensor] = {}
    n_core = 0
    n_lora = sum(1 for key in state if is_lora_parameter(key))
    for key, value in state.items():
        if key.startswith(_CORE) and base is not None and not is_lora_parameter(key):
            ref = reference.get(key[len(_CORE) :])
            same = ref is not None and ref.shape == value.shape and ref.dtype == value.dtype
            if same and torch.equal(ref, value.cpu()):
                continue
            n_core += 1
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.to(_STORED_DTYPES[stored_dtype])
        tensors[key] = value.contiguous().clone()

    _atomic_write(p, lambda tmp: save_file(tensors, tmp, metadata={"format": CHECKPOINT_FORMAT, "design": design}))
    info = {
        "format": CHECKPOINT_FORMAT,
        "design": design,
        "config": to_dict(config),
        "vocabulary_version": VOCAB_VERSION,
        "organ_ids": list(model.organ_ids),
        "text_fingerprint": model.text_fingerprint,
        "package_version": organsam.__version__,
        "torch_version": torch.__version__,
        "tensor_file": p.name,
        "tensor_sha256": file_sha256(p),
        "num_tensors": len(tensors),
        "stored_dtype": stored_dtype,
        "core_tensors_saved": n_core,
        "lora_tensors_saved": n_lora,
        "base_weights": None if base is None else {"name": "lite_medsam", "sha256": base[1]},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "extra": extra,
    }
    text = json.dumps(info, indent=2)

    def write_json(tmp: str) -> None:
        Path(tmp).write_text(text + "\n", encoding="utf-8")

    _atomic_write(side, write_json)
    logger.info(
        "saved %s checkpoint %s (%d tensors, %d changed core tensors, %d LoRA tensors) + %s",
        design,
        p,
        len(tensors),
        n_core,
        n_lora,
        side.name,
    )
    return p


def resave_checkpoint(src: str | os.PathLike[str], dst: str | os.PathLike[str], stored_dtype: str) -> Path:
    """Load the checkpoint ``src`` (with every check) and save it again as ``dst`` with ``stored_dtype``; its
    config and ``extra`` metadata are kept."""
    info = read_checkpoint_info(src)
    model = load_checkpoint(src)
    return save_checkpoint(model, dst, extra=info.get("extra"), stored_dtype=stored_dtype)


def read_checkpoint_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The sidecar of a checkpoint, after basic format checks (no hashing, no model building).

    Raises:
        FileNotFoundError: the tensor file or the sidecar is missing.
        CheckpointError: the sidecar is not a valid organsam checkpoint description.
    """
    p = Path(path)
    side = sidecar_path(p)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: checkpoint file not found")
    if not side.is_file():
        raise FileNotFoundError(
            f"{side}: sidecar of checkpoint {p.name} not found; a checkpoint is the tensor "
            f"file plus its .json written by organsam.model.checkpoint.save_checkpoint"
        )
    try:
        info = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{side}: cannot read the checkpoint sidecar as JSON ({e})") from e
    if not isinstance(info, dict) or info.get("format") != CHECKPOINT_FORMAT:
        fmt = info.get("format") if isinstance(info, dict) else None
        raise CheckpointError(
            f"{side}: not an organsam checkpoint sidecar (format {fmt!r}, expected {CHECKPOINT_FORMAT!r})"
        )
    missing = [k for k in ("design", "config", "vocabulary_version", "organ_ids", "tensor_sha256") if k not in info]
    if missing:
        raise CheckpointError(f"{side}: sidecar lacks {', '.join(missing)}; re-save the checkpoint")
    return info


def _listing(keys: list[str], n: int = 8) -> str:
    shown = ", ".join(keys[:n])
    return f"{shown}{f', ... ({len(keys)} in all)' if len(keys) > n else ''}"


def load_checkpoint(
    path: str | os.PathLike[str], *, design: str | None = None, strict_text: bool = True
) -> torch.nn.Module:
    """Rebuild a design from a checkpoint and load its weights, checking everything.

    Args:
        path: the tensor file written by :func:`save_checkpoint`.
        design: expected design name (error when the checkpoint holds another one).
        strict_text: fail (instead of warning) when the text encoder's fingerprint differs from the one
            the checkpoint was trained with.

    Returns:
        The design on CPU, in eval mode.

    Raises:
        FileNotFoundError: tensor file or sidecar missing.
        CheckpointError: wrong design, vocabulary version or organ list mismatch, text encoder mismatch,
            tensor file modified (SHA-256), base weights differ, missing/unexpected/mis-shaped tensors.
    """
    from safetensors.torch import load_file

    from organsam.config import ConfigError, from_dict
    from organsam.io.files import file_sha256
    from organsam.registry import RENAMED_DESIGNS, build_design, get_design
    from organsam.vocabulary import VOCAB_VERSION

    p = Path(path)
    info = read_checkpoint_info(p)
    side = sidecar_path(p)
    stored = RENAMED_DESIGNS.get(info["design"], info["design"])
    if design is not None and design != stored:
        raise CheckpointError(
            f"{p}: holds a {stored!r} checkpoint, not {design!r}; load it as {stored!r} or pick a {design!r} checkpoint"
        )
    try:
        entry = get_design(stored)
    except KeyError as e:
        raise CheckpointError(f"{side}: unknown design {stored!r} ({e.args[0] if e.args else e})") from e
    if info["vocabulary_version"] != VOCAB_VERSION:
        raise CheckpointError(
            f"{p}: trained with organ vocabulary version {info['vocabulary_version']}, this "
            f"organsam has vocabulary version {VOCAB_VERSION}; use the organsam release the "
            f"checkpoint was made with, or fine-tune it again"
        )
    digest = file_sha256(p)
    if digest != info["tensor_sha256"]:
        raise CheckpointError(
            f"{p}: SHA-256 {digest[:16]}... does not match {info['tensor_sha256'][:16]}... "
            f"recorded in {side.name}; the tensor file was modified or is corrupt"
        )
    try:
        config = from_dict(entry.config_cls, info["config"], where=f"{side} config")
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{side}: stored config does not fit design {stored!r} ({e})") from e
    base = info.get("base_weights")
    if base is not None:
        now = _base_weights(config)
        if now is None or now[1] != base.get("sha256"):
            raise CheckpointError(
                f"{p}: was trained on LiteMedSAM weights with SHA-256 "
                f"{str(base.get('sha256'))[:16]}..., but the weights found now differ; pass the "
                f"same base weights (config sam_checkpoint)"
            )

    model = build_design(stored, config=config)
    if list(model.organ_ids) != list(info["organ_ids"]):
        ours, theirs = set(model.organ_ids), set(info["organ_ids"])
        diff = sorted(ours ^ theirs) or ["(same ids, different order)"]
        raise CheckpointError(
            f"{p}: organ list differs from this vocabulary ({_listing(diff)}); the checkpoint "
            f"needs the vocabulary it was trained with"
        )
    fp = info.get("text_fingerprint")
    if fp != model.text_fingerprint:
        msg = (
            f"{p}: trained with text encoder {str(fp)[:16]}..., this build uses {model.text_fingerprint[:16]}...; "
            f"set config text_model to the encoder it was trained with"
        )
        if strict_text:
            raise CheckpointError(msg)
        logger.warning("%s", msg)

    try:
        tensors = load_file(str(p))
    except Exception as e:
        raise CheckpointError(f"{p}: cannot read as safetensors ({e})") from e
    expected = model.state_dict()
    unexpected = sorted(k for k in tensors if k not in expected)
    required = [k for k in expected if not k.startswith(_CORE) or base is None or is_lora_parameter(k)]
    missing = sorted(k for k in required if k not in tensors)
    shapes = sorted(
        f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in tensors.items()
        if k in expected and v.shape != expected[k].shape
    )
    problems = []
    if missing:
        problems.append(f"missing tensors: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {_listing(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches: {_listing(shapes)}")
    if problems:
        raise CheckpointError(f"{p}: does not fit design {stored!r} as built from its config: {'; '.join(problems)}")
    model.load_state_dict(tensors, strict=False)
    logger.info("loaded %s checkpoint %s (%d tensors)", stored, p, len(tensors))
    return model.eval()


#: ``--checkpoint packaged``: the trained checkpoint of the design that ships in the package.
PACKAGED = "packaged"


def packaged_checkpoint(design: str) -> Path:
    """The shipped checkpoint of ``design`` (its tensor file and its sidecar SHA-256 checked).

    Raises:
        ValueError: no checkpoint of this design ships.
        organsam.weights.WeightsError: the files are missing or differ from the recorded hashes.
    """
    from organsam.weights import ASSET_SUMS, SHIPPED_DESIGNS, WEIGHTS, asset_sha256, find_weight, verify

    if design not in SHIPPED_DESIGNS:
        shipped = ", ".join(SHIPPED_DESIGNS) or "none yet"
        raise ValueError(
            f"--checkpoint {PACKAGED}: no checkpoint of design {design!r} ships (shipped: {shipped}); pass a "
            f"checkpoint written by `organsam train`, or train one with scripts/train_design.sh"
        )
    path = find_weight(f"design_{design}")
    side = sidecar_path(path)  # the config the design is rebuilt from: checked too
    spec = WEIGHTS[f"design_{design}"]
    verify(side, dataclasses.replace(spec, relpath=f"assets/{side.name}", sha256=asset_sha256(side.name)))
    logger.debug("packaged %s checkpoint %s (hashes in %s)", design, path, ASSET_SUMS)
    return path
