"""The text encoder's files: the MiniLM folder found (the pip-installed weight wheel, or a folder given), its
files hash-checked, its spec (:class:`TextEncoderSpec`), and loading kept offline (for
:mod:`organsam.model.components.text_encoder`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = [
    "POOLINGS",
    "TOKENIZER_FILES",
    "TextEncoderError",
    "TextEncoderSpec",
    "offline_loading",
    "read_json",
    "resolve_text_encoder",
    "sha256_file",
]

POOLINGS = ("auto", "mean", "cls", "pooled")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
)
_FILE_HASHES: dict[tuple[str, int, int], str] = {}


class TextEncoderError(FileNotFoundError):
    """A text-encoder folder is missing, incomplete, or its settings are invalid."""


def sha256_file(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        _FILE_HASHES[key] = h.hexdigest()
    return _FILE_HASHES[key]


@dataclass(frozen=True)
class TextEncoderSpec:
    """Resolved description of a local text encoder (reading it does not import transformers).

    Attributes:
        model_dir: folder holding ``config.json``, the tokenizer files and the weights.
        kind: ``"encoder"`` (AutoModel), ``"clip"`` (CLIPTextModel) or ``"clip_projection"``.
        pooling: ``"mean"``, ``"cls"`` or ``"pooled"``.
        normalize: L2-normalise the embeddings.
        max_length: token limit (longer texts are truncated).
        weight_files: the weight files that will be read.
        use_safetensors: the weights are safetensors.
        known_sha256: already verified SHA-256 of the single weight file (the packaged MiniLM), if any.
    """

    model_dir: Path
    kind: str
    pooling: str
    normalize: bool
    max_length: int
    weight_files: tuple[Path, ...]
    use_safetensors: bool
    known_sha256: str | None = None

    def fingerprint(self) -> str:
        """SHA-256 identifying the embeddings this encoder produces (config, tokenizer, weights, settings)."""
        h = hashlib.sha256()
        h.update(f"organsam-text-v1|{self.kind}|{self.pooling}|{self.normalize}|{self.max_length}|".encode())
        h.update((self.model_dir / "config.json").read_bytes())
        for name in TOKENIZER_FILES:
            p = self.model_dir / name
            if p.is_file():
                h.update(name.encode() + b"\0" + p.read_bytes())
        for i, p in enumerate(self.weight_files):
            digest = self.known_sha256 if (self.known_sha256 and i == 0) else sha256_file(p)
            h.update(f"{p.name}:{digest}|".encode())
        return h.hexdigest()


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise TextEncoderError(f"{path}: cannot read JSON ({e}); the model folder is incomplete or corrupt") from e


def resolve_text_encoder(
    model_dir: str | os.PathLike[str] | None = None,
    pooling: str = "auto",
    normalize: bool = True,
    max_length: int | None = None,
) -> TextEncoderSpec:
    """Inspect a local model folder and decide how to load and pool it.

    Args:
        model_dir: folder of a Hugging Face text model; ``None`` = the packaged all-MiniLM-L6-v2.
        pooling: ``"auto"`` (sentence-transformers setting of the folder, else mean for encoders and
            pooled for CLIP), ``"mean"``, ``"cls"`` or ``"pooled"``.
        normalize: L2-normalise the output embeddings.
        max_length: token limit; default from ``sentence_bert_config.json`` or the model's position limit.

    Returns:
        The resolved :class:`TextEncoderSpec`.

    Raises:
        TextEncoderError: folder, ``config.json`` or weights missing, or an invalid pooling.
    """
    known = None
    if model_dir is None:
        from organsam.weights import WEIGHTS, find_weight

        weight = find_weight("minilm")
        model_dir = weight.parent
        known = WEIGHTS["minilm"].sha256
    mdir = Path(model_dir).expanduser()
    if not mdir.is_dir():
        raise TextEncoderError(
            f"{mdir}: text encoder folder not found; pass the folder of a Hugging Face model "
            f"saved with save_pretrained (config.json, tokenizer files, weights)"
        )
    cfg_path = mdir / "config.json"
    if not cfg_path.is_file():
        raise TextEncoderError(f"{cfg_path}: missing; the text encoder folder must hold a Hugging Face config.json")
    cfg = read_json(cfg_path)
    if pooling not in POOLINGS:
        raise ValueError(f"unknown text pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")

    model_type = str(cfg.get("model_type", ""))
    archs = [str(a) for a in cfg.get("architectures") or []]
    if model_type == "clip" or "CLIPModel" in archs or "CLIPTextModelWithProjection" in archs:
        kind = "clip_projection"
    elif model_type == "clip_text_model" or any(a.startswith("CLIPText") for a in archs):
        kind = "clip"
    else:
        kind = "encoder"

    if kind == "encoder":
        if pooling == "auto":
            pooling = "mean"
            st_pool = mdir / "1_Pooling" / "config.json"
            if st_pool.is_file():
                pcfg = read_json(st_pool)
                if pcfg.get("pooling_mode_cls_token") and not pcfg.get("pooling_mode_mean_tokens"):
                    pooling = "cls"
    else:
        if pooling not in ("auto", "pooled"):
            raise ValueError(
                f"{mdir}: a CLIP text tower supports pooling 'pooled' (EOS token"
                f"{', projected' if kind == 'clip_projection' else ''}), got {pooling!r}"
            )
        pooling = "pooled"

    if max_length is None:
        st_cfg = mdir / "sentence_bert_config.json"
        if st_cfg.is_file() and read_json(st_cfg).get("max_seq_length"):
            max_length = int(read_json(st_cfg)["max_seq_length"])
        else:
            text_cfg = (cfg.get("text_config") or {}) if model_type == "clip" else cfg
            max_length = int(text_cfg.get("max_position_embeddings") or (77 if kind != "encoder" else 512))
            max_length = min(max_length, 512)
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")

    single = mdir / "model.safetensors"
    shards = sorted(mdir.glob("model-*-of-*.safetensors"))
    if single.is_file():
        weights, safe = (single,), True
    elif shards:
        weights, safe = tuple(shards), True
    elif (mdir / "pytorch_model.bin").is_file():
        weights, safe = (mdir / "pytorch_model.bin",), False
    elif sorted(mdir.glob("pytorch_model-*-of-*.bin")):
        weights, safe = tuple(sorted(mdir.glob("pytorch_model-*-of-*.bin"))), False
    else:
        raise TextEncoderError(
            f"{mdir}: no model.safetensors (or pytorch_model.bin) found; save the model with "
            f"save_pretrained(..., safe_serialization=True) into this folder"
        )
    return TextEncoderSpec(
        model_dir=mdir,
        kind=kind,
        pooling=pooling,
        normalize=bool(normalize),
        max_length=int(max_length),
        weight_files=weights,
        use_safetensors=safe,
        known_sha256=known if weights == (mdir / "model.safetensors",) else None,
    )


@contextlib.contextmanager
def offline_loading() -> Iterator[None]:
    """Hub offline flags and no progress bars while loading; previous state restored afterwards."""
    import transformers.utils.logging as hf_logging

    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    bar = hf_logging.is_progress_bar_enabled()
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if bar:
            hf_logging.enable_progress_bar()
