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

import hashlib
import inspect
import logging
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from organsam.model.components.text_encoder_files import (
    POOLINGS,
    TextEncoderError,
    TextEncoderSpec,
    offline_loading,
    resolve_text_encoder,
)

logger = logging.getLogger(__name__)

__all__ = ["TextEncoder", "TextEncoderSpec", "TextEncoderError", "resolve_text_encoder", "POOLINGS"]


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

    def __init__(
        self,
        model_dir: str | os.PathLike[str] | None = None,
        pooling: str = "auto",
        normalize: bool = True,
        max_length: int | None = None,
        freeze: bool = True,
        batch_size: int = 64,
    ) -> None:
        super().__init__()
        import transformers
        from transformers import AutoModel, AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection

        self.spec = resolve_text_encoder(model_dir, pooling=pooling, normalize=normalize, max_length=max_length)
        cls = {"encoder": AutoModel, "clip": CLIPTextModel, "clip_projection": CLIPTextModelWithProjection}[
            self.spec.kind
        ]
        major_minor = tuple(int(x) for x in transformers.__version__.split(".")[:2])
        dtype_kw = "dtype" if major_minor >= (4, 56) else "torch_dtype"
        path = str(self.spec.model_dir)
        with offline_loading():
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            except (OSError, ValueError) as e:
                raise TextEncoderError(
                    f"{path}: cannot load the tokenizer ({e}); the folder needs the tokenizer "
                    f"files saved by tokenizer.save_pretrained"
                ) from e
            try:
                self.model = cls.from_pretrained(
                    path, local_files_only=True, use_safetensors=self.spec.use_safetensors, **{dtype_kw: torch.float32}
                )
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
            {"token_type_ids"} if "token_type_ids" in params else set()
        )
        self.set_trainable(not freeze)
        self._load_versions = self._versions()
        self._state_hash: tuple[tuple, str] | None = None
        logger.info(
            "text encoder %s (%s, %s pooling, %d-d) loaded from %s",
            type(self.model).__name__,
            self.spec.kind,
            self.spec.pooling,
            self.dim,
            path,
        )

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
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
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
            chunks = [self.forward(ordered[i : i + bs]) for i in range(0, len(ordered), bs)]
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
            h.update(
                t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
            )
        digest = h.hexdigest()
        self._state_hash = (versions, digest)
        return digest
