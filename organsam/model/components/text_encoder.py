"""Text encoder: sentence embeddings of organ prompts and knowledge sentences, from a local HF model.

Any Hugging Face text encoder saved in a local folder loads, offline only (``local_files_only=True``):

* BERT-like encoders (``AutoModel``: BERT, BiomedBERT, RoBERTa, ...): mean pooling over the attention
  mask (default; or the folder's sentence-transformers pooling setting), ``"cls"`` or ``"pooled"``
  (the model's pooler output);
* CLIP text towers: ``CLIPTextModel`` (pooled EOS state), ``CLIPTextModelWithProjection`` or a full
  ``CLIPModel`` checkpoint (projected text embedding).

The kind is read from ``config.json`` (``model_type`` / ``architectures``). The default is
all-MiniLM-L6-v2 from the ``minilm`` weight package (hash-checked by :func:`organsam.weights.find_weight`)
with mean pooling and L2 normalisation, as sentence-transformers computes it (384-d).

Only safetensors weights are read when the folder has them (``use_safetensors=True``); otherwise
transformers reads ``pytorch_model.bin`` with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = ["TextEncoder", "TextEncoderSpec", "TextEncoderError", "resolve_text_encoder", "POOLINGS"]

POOLINGS = ("auto", "mean", "cls", "pooled")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                    "vocab.json", "merges.txt", "sentencepiece.bpe.model", "spiece.model")
_FILE_HASHES: dict[tuple[str, int, int], str] = {}


class TextEncoderError(FileNotFoundError):
    """A text-encoder folder is missing, incomplete, or its settings are invalid."""


def _sha256_file(path: Path) -> str:
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
        for name in _TOKENIZER_FILES:
            p = self.model_dir / name
            if p.is_file():
                h.update(name.encode() + b"\0" + p.read_bytes())
        for i, p in enumerate(self.weight_files):
            digest = self.known_sha256 if (self.known_sha256 and i == 0) else _sha256_file(p)
            h.update(f"{p.name}:{digest}|".encode())
        return h.hexdigest()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise TextEncoderError(f"{path}: cannot read JSON ({e}); the model folder is incomplete or corrupt") from e


def resolve_text_encoder(model_dir: str | os.PathLike[str] | None = None, pooling: str = "auto",
                         normalize: bool = True, max_length: int | None = None) -> TextEncoderSpec:
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
        raise TextEncoderError(f"{mdir}: text encoder folder not found; pass the folder of a Hugging Face model "
                               f"saved with save_pretrained (config.json, tokenizer files, weights)")
    cfg_path = mdir / "config.json"
    if not cfg_path.is_file():
        raise TextEncoderError(f"{cfg_path}: missing; the text encoder folder must hold a Hugging Face config.json")
    cfg = _read_json(cfg_path)
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
                pcfg = _read_json(st_pool)
                if pcfg.get("pooling_mode_cls_token") and not pcfg.get("pooling_mode_mean_tokens"):
                    pooling = "cls"
    else:
        if pooling not in ("auto", "pooled"):
            raise ValueError(f"{mdir}: a CLIP text tower supports pooling 'pooled' (EOS token"
                             f"{', projected' if kind == 'clip_projection' else ''}), got {pooling!r}")
        pooling = "pooled"

    if max_length is None:
        st_cfg = mdir / "sentence_bert_config.json"
        if st_cfg.is_file() and _read_json(st_cfg).get("max_seq_length"):
            max_length = int(_read_json(st_cfg)["max_seq_length"])
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
        raise TextEncoderError(f"{mdir}: no model.safetensors (or pytorch_model.bin) found; save the model with "
                               f"save_pretrained(..., safe_serialization=True) into this folder")
    return TextEncoderSpec(model_dir=mdir, kind=kind, pooling=pooling, normalize=bool(normalize),
                           max_length=int(max_length), weight_files=weights, use_safetensors=safe,
                           known_sha256=known if weights == (mdir / "model.safetensors",) else None)


@contextlib.contextmanager
def _offline_loading() -> Iterator[None]:
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


class TextEncoder(nn.Module):
    """Sentence embeddings from a local Hugging Face text model.

    Args:
        model_dir: local model folder; ``None`` = packaged all-MiniLM-L6-v2 (384-d).
        pooling: see :func:`resolve_text_encoder`.
        normalize: L2-normalise the embeddings.
        max_length: token limit (truncation).
        freeze: freeze the weights (no gradient, kept in eval mode even when the parent trains).
        batch_size: default batch size of :meth:`encode`.

    Attributes:
        dim: embedding width.
        spec: the resolved :class:`TextEncoderSpec`.
        tokenizer: the Hugging Face tokenizer.
        model: the Hugging Face model.
    """

    def __init__(self, model_dir: str | os.PathLike[str] | None = None, pooling: str = "auto",
                 normalize: bool = True, max_length: int | None = None, freeze: bool = True,
                 batch_size: int = 64) -> None:
        super().__init__()
        import transformers
        from transformers import AutoModel, AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection

        self.spec = resolve_text_encoder(model_dir, pooling=pooling, normalize=normalize, max_length=max_length)
        cls = {"encoder": AutoModel, "clip": CLIPTextModel, "clip_projection": CLIPTextModelWithProjection}[
            self.spec.kind]
        major_minor = tuple(int(x) for x in transformers.__version__.split(".")[:2])
        dtype_kw = "dtype" if major_minor >= (4, 56) else "torch_dtype"
        path = str(self.spec.model_dir)
        with _offline_loading():
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            except (OSError, ValueError) as e:
                raise TextEncoderError(f"{path}: cannot load the tokenizer ({e}); the folder needs the tokenizer "
                                       f"files saved by tokenizer.save_pretrained") from e
            try:
                self.model = cls.from_pretrained(path, local_files_only=True,
                                                 use_safetensors=self.spec.use_safetensors,
                                                 **{dtype_kw: torch.float32})
            except (OSError, ValueError) as e:
                raise TextEncoderError(f"{path}: cannot load the {cls.__name__} weights ({e})") from e
        self.model.eval()
        cfg = self.model.config
        if self.spec.kind == "clip_projection":
            self.dim = int(cfg.projection_dim)
        else:
            self.dim = int(cfg.hidden_size)
        tok_max = getattr(self.tokenizer, "model_max_length", None) or self.spec.max_length
        self.max_length = int(min(self.spec.max_length, tok_max)) if tok_max < 1_000_000 else self.spec.max_length
        self.batch_size = batch_size
        params = inspect.signature(self.model.forward).parameters
        self._model_inputs = {"input_ids", "attention_mask"} | (
            {"token_type_ids"} if "token_type_ids" in params else set())
        self.set_trainable(not freeze)
        self._load_versions = self._versions()
        self._state_hash: tuple[tuple, str] | None = None
        logger.info("text encoder %s (%s, %s pooling, %d-d) loaded from %s", type(self.model).__name__,
                    self.spec.kind, self.spec.pooling, self.dim, path)

    # -- training helpers -------------------------------------------------------------------------
    @property
    def frozen(self) -> bool:
        """True when no weight requires a gradient."""
        return not any(p.requires_grad for p in self.model.parameters())

    @property
    def trainable_parameters(self) -> int:
        """Number of weights that require a gradient."""
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def set_trainable(self, trainable: bool) -> None:
        """Freeze (``False``) or unfreeze (``True``) all weights of the text model."""
        for p in self.model.parameters():
            p.requires_grad_(trainable)
        if not trainable:
            self.model.eval()
        logger.info("text encoder: %d trainable parameters", self.trainable_parameters)

    def train(self, mode: bool = True) -> TextEncoder:
        """Like ``nn.Module.train``, but a frozen text model stays in eval mode (no dropout)."""
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- encoding ----------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Tokenize with padding and truncation, on the model's device.

        Returns:
            dict of ``(N, L)`` tensors (``input_ids``, ``attention_mask`` and, for BERT, ``token_type_ids``).
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, got a single str; wrap it in a list")
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items() if k in self._model_inputs}

    def forward(self, texts: Sequence[str]) -> Tensor:
        """Embed texts with autograd (for fine-tuning when not frozen).

        Args:
            texts: N strings.

        Returns:
            ``(N, dim)`` float32 embeddings (unit norm when ``normalize``).
        """
        batch = self.tokenize(texts)
        out = self.model(**batch)
        if self.spec.kind == "clip_projection":
            emb = out.text_embeds
        elif self.spec.pooling == "pooled":
            emb = out.pooler_output
            if emb is None:
                raise ValueError(f"{self.spec.model_dir}: this model has no pooler output; use pooling='mean' or 'cls'")
        elif self.spec.pooling == "cls":
            emb = out.last_hidden_state[:, 0]
        else:
            hidden = out.last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        emb = emb.float()
        if self.spec.normalize:
            emb = F.normalize(emb, dim=-1)
        return emb

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> Tensor:
        """Embed texts without gradients, in eval mode, in batches.

        Args:
            texts: N strings.
            batch_size: texts per forward pass (default: ``self.batch_size``).

        Returns:
            ``(N, dim)`` float32 embeddings on the model's device.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, got a single str; wrap it in a list")
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.dim, device=self.device)
        bs = batch_size or self.batch_size
        # Batch texts of similar length together (less padding), then restore the input order.
        order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
        ordered = [texts[i] for i in order]
        was_training = self.model.training
        self.model.eval()
        try:
            chunks = [self.forward(ordered[i:i + bs]) for i in range(0, len(ordered), bs)]
        finally:
            self.model.train(was_training)
        out = torch.cat(chunks, dim=0)
        return out[torch.argsort(torch.tensor(order, device=out.device))]

    # -- identity for caching ----------------------------------------------------------------------
    def _versions(self) -> tuple:
        return tuple((p._version, p.dtype) for p in self.model.state_dict(keep_vars=True).values())

    def fingerprint(self) -> str:
        """SHA-256 identifying what :meth:`encode` returns.

        While the weights are the ones loaded from disk (no in-place update since loading, float32), this
        is :meth:`TextEncoderSpec.fingerprint` (config, tokenizer and weight-file hashes). After fine-tuning
        or loading another state dict, it hashes the weights in memory (memoised until they change again).
        """
        versions = self._versions()
        if versions == self._load_versions:
            return self.spec.fingerprint()
        if self._state_hash is not None and self._state_hash[0] == versions:
            return self._state_hash[1]
        h = hashlib.sha256(f"organsam-text-state-v1|{self.spec.fingerprint()}|".encode())
        for name, t in sorted(self.model.state_dict().items()):
            h.update(name.encode() + str(t.dtype).encode() + str(tuple(t.shape)).encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                     if t.numel() else b"")
        digest = h.hexdigest()
        self._state_hash = (versions, digest)
        return digest
