"""On-disk cache of text embeddings, and the embedding of the organ vocabulary.

Embeddings of a set of texts are stored as one safetensors file per (encoder, text set), under
``<cache_dir>/text_embeddings/<encoder fingerprint[:16]>/<text-set hash>.safetensors``. The encoder
fingerprint (:meth:`TextEncoder.fingerprint`) hashes the config, tokenizer, weights and pooling settings,
so a changed or fine-tuned encoder never reads stale vectors. Files are written atomically (temporary
file in the same folder, then ``os.replace``); an unreadable or mismatching file is recomputed.

The default cache folder is ``$ORGANSAM_HOME/cache``, else ``~/.cache/organsam``. Given a model folder
instead of a loaded encoder, the cache computes the fingerprint from the files and loads the encoder
(and transformers) only when something is missing, so a warm start never loads the text model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from organsam.io.files import atomic_path
from organsam.model.components.text_encoder import TextEncoder, TextEncoderSpec, resolve_text_encoder

logger = logging.getLogger(__name__)

__all__ = ["TextEmbeddingCache", "VocabularyEmbeddings", "embed_vocabulary", "default_cache_dir"]

_FORMAT = "organsam-text-cache-v1"


def default_cache_dir() -> Path:
    """``$ORGANSAM_HOME/cache`` when ``ORGANSAM_HOME`` is set, else ``~/.cache/organsam``."""
    home = os.environ.get("ORGANSAM_HOME")
    if home:
        return Path(home).expanduser() / "cache"
    return Path.home() / ".cache" / "organsam"


def _texts_key(texts: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(sorted(set(texts)), ensure_ascii=False).encode("utf-8")).hexdigest()[:32]


class TextEmbeddingCache:
    """Embeddings of texts, computed once per encoder and kept in memory and on disk.

    Args:
        encoder: a loaded :class:`TextEncoder`, or a model folder / ``None`` (packaged MiniLM) to load
            lazily on the first cache miss.
        cache_dir: folder of the cache (default :func:`default_cache_dir`); ``False`` = memory only.
        **encoder_kwargs: ``pooling``, ``normalize``, ``max_length`` for a lazily loaded encoder.
    """

    def __init__(
        self,
        encoder: TextEncoder | str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None | bool = None,
        **encoder_kwargs: Any,
    ) -> None:
        self._encoder: TextEncoder | None = encoder if isinstance(encoder, TextEncoder) else None
        self._spec: TextEncoderSpec = (
            self._encoder.spec if self._encoder is not None else resolve_text_encoder(encoder, **encoder_kwargs)
        )
        self._source = None if isinstance(encoder, TextEncoder) else encoder
        if cache_dir is False:
            self.cache_dir: Path | None = None
        elif cache_dir is None or cache_dir is True:
            self.cache_dir = default_cache_dir()
        else:
            self.cache_dir = Path(cache_dir).expanduser()
        self._memory: dict[str, dict[str, Tensor]] = {}
        self.encoded_count = 0  # texts run through the encoder by this cache (for diagnostics and tests)

    @property
    def encoder(self) -> TextEncoder:
        """The text encoder, loaded on first use."""
        if self._encoder is None:
            logger.info("text cache miss: loading the text encoder from %s", self._spec.model_dir)
            self._encoder = TextEncoder(
                self._source,
                pooling=self._spec.pooling,
                normalize=self._spec.normalize,
                max_length=self._spec.max_length,
            )
        return self._encoder

    @property
    def encoder_loaded(self) -> bool:
        return self._encoder is not None

    def fingerprint(self) -> str:
        """Fingerprint of the encoder the embeddings come from."""
        return self._encoder.fingerprint() if self._encoder is not None else self._spec.fingerprint()

    def path_for(self, texts: Sequence[str], fingerprint: str | None = None) -> Path | None:
        """Cache file of this text set (order and duplicates do not matter); ``None`` without a cache dir."""
        if self.cache_dir is None:
            return None
        fp = fingerprint or self.fingerprint()
        return self.cache_dir / "text_embeddings" / fp[:16] / f"{_texts_key(texts)}.safetensors"

    def _load(self, path: Path, fp: str) -> dict[str, Tensor] | None:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                emb = f.get_tensor("embeddings")
            texts = json.loads(meta.get("texts", "null"))
        except Exception as e:  # any unreadable file is simply recomputed
            logger.warning("%s: unreadable text-embedding cache file (%s); recomputing it", path, e)
            return None
        if (
            meta.get("format") != _FORMAT
            or meta.get("fingerprint") != fp
            or not isinstance(texts, list)
            or emb.dim() != 2
            or emb.shape[0] != len(texts)
        ):
            logger.warning("%s: text-embedding cache file does not match this encoder/text set; recomputing", path)
            return None
        return {t: emb[i].float() for i, t in enumerate(texts)}

    def _save(self, path: Path, fp: str, texts: list[str], emb: Tensor) -> None:
        from safetensors.torch import save_file

        meta = {
            "format": _FORMAT,
            "fingerprint": fp,
            "texts": json.dumps(texts, ensure_ascii=False),
            "model_dir": str(self._spec.model_dir),
        }
        try:
            with atomic_path(path, suffix=".safetensors") as tmp:
                save_file({"embeddings": emb.detach().cpu().float().contiguous()}, str(tmp), metadata=meta)
            logger.debug("wrote %d text embeddings to %s", len(texts), path)
        except OSError as e:
            logger.warning("cannot write the text-embedding cache %s (%s); keeping it in memory only", path, e)

    def get(self, texts: Sequence[str]) -> Tensor:
        """Embeddings of ``texts``, from memory, disk or the encoder (then stored).

        Args:
            texts: N strings (duplicates allowed).

        Returns:
            ``(N, dim)`` float32 CPU tensor, row i for ``texts[i]``.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, got a single str; wrap it in a list")
        texts = list(texts)
        fp = self.fingerprint()
        mem = self._memory.setdefault(fp, {})
        unique = list(dict.fromkeys(texts))
        if any(t not in mem for t in unique):
            path = self.path_for(unique, fp)
            if path is not None and path.is_file():
                loaded = self._load(path, fp)
                if loaded is not None:
                    mem.update(loaded)
            missing = [t for t in unique if t not in mem]
            if missing:
                emb = self.encoder.encode(missing).detach().cpu().float()
                self.encoded_count += len(missing)
                mem.update(zip(missing, emb))
                if path is not None:
                    self._save(path, fp, unique, torch.stack([mem[t] for t in unique]))
        if not texts:
            dim = next(iter(mem.values())).shape[0] if mem else self.encoder.dim
            return torch.zeros(0, dim)
        return torch.stack([mem[t] for t in texts])


@dataclass
class VocabularyEmbeddings:
    """Text embeddings of the organ vocabulary.

    Attributes:
        ids: K organ ids, in row order.
        name_emb: ``(K, D)`` embedding of each organ's prompt text.
        knowledge_emb: ``(K, S, D)`` embeddings of the knowledge sentences, zero-padded to S sentences.
        knowledge_mask: ``(K, S)`` bool, True where a real sentence is.
        fingerprint: encoder fingerprint the embeddings come from.
    """

    ids: list[str]
    name_emb: Tensor
    knowledge_emb: Tensor
    knowledge_mask: Tensor
    fingerprint: str = ""

    @property
    def dim(self) -> int:
        return int(self.name_emb.shape[-1])

    def index(self, organ_id: str) -> int:
        """Row of ``organ_id``; ValueError naming the known ids otherwise."""
        try:
            return self.ids.index(organ_id)
        except ValueError:
            raise ValueError(
                f"organ {organ_id!r} is not in the embedded vocabulary ({len(self.ids)} organs: "
                f"{', '.join(self.ids[:8])}{', ...' if len(self.ids) > 8 else ''})"
            ) from None

    def to(self, device: torch.device | str) -> VocabularyEmbeddings:
        """Copy onto ``device``."""
        return VocabularyEmbeddings(
            self.ids,
            self.name_emb.to(device),
            self.knowledge_emb.to(device),
            self.knowledge_mask.to(device),
            self.fingerprint,
        )


def _organ_list(vocabulary: Any) -> list[Any]:
    organs = getattr(vocabulary, "organs", vocabulary)
    if isinstance(organs, dict):
        organs = list(organs.values())
    return list(organs)


def embed_vocabulary(
    encoder: TextEncoder | TextEmbeddingCache, vocabulary: Any, ids: Sequence[str] | None = None
) -> VocabularyEmbeddings:
    """Embed each organ's prompt text and knowledge sentences.

    Args:
        encoder: a :class:`TextEmbeddingCache` (cached) or a :class:`TextEncoder` (computed directly).
        vocabulary: an ``organsam.vocabulary`` Vocabulary: ``.organs`` (list or dict) of organs with
            ``id``, ``name`` and ``knowledge`` (list of sentences); its ``prompt_text(id)`` gives the text
            embedded for the name (the organ's ``name`` when it has no such method).
        ids: embed only these organ ids, in this order (default: all, in vocabulary order).

    Returns:
        :class:`VocabularyEmbeddings` with ``name_emb (K, D)``, ``knowledge_emb (K, S, D)`` and
        ``knowledge_mask (K, S)``, on CPU (cache) or the encoder's device.
    """
    organs = {str(o.id): o for o in _organ_list(vocabulary)}
    order = list(ids) if ids is not None else list(organs)
    unknown = [i for i in order if i not in organs]
    if unknown:
        raise ValueError(f"organ ids not in the vocabulary: {', '.join(unknown)}")
    prompt = getattr(vocabulary, "prompt_text", None)
    names = [str(prompt(i)) if callable(prompt) else str(organs[i].name) for i in order]
    knowledge = [[str(s) for s in (getattr(organs[i], "knowledge", None) or [])] for i in order]
    flat = [s for sents in knowledge for s in sents]
    if isinstance(encoder, TextEmbeddingCache):
        emb, fp = encoder.get(names + flat), encoder.fingerprint()
    else:
        emb, fp = encoder.encode(names + flat), encoder.fingerprint()
    K, D = len(order), emb.shape[-1]
    S = max([len(k) for k in knowledge] + [1])
    knowledge_emb = emb.new_zeros(K, S, D)
    knowledge_mask = torch.zeros(K, S, dtype=torch.bool, device=emb.device)
    pos = K
    for k, sents in enumerate(knowledge):
        n = len(sents)
        knowledge_emb[k, :n] = emb[pos : pos + n]
        knowledge_mask[k, :n] = True
        pos += n
    return VocabularyEmbeddings(
        ids=order, name_emb=emb[:K].clone(), knowledge_emb=knowledge_emb, knowledge_mask=knowledge_mask, fingerprint=fp
    )
