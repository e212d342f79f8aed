"""A design's vocabulary: the organ ids its config names, and their name and knowledge embeddings (MiniLM,
cached on disk and memoised)."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence

from organsam.model.components.text_cache import TextEmbeddingCache, VocabularyEmbeddings, embed_vocabulary

logger = logging.getLogger(__name__)

__all__ = ["resolve_organ_ids", "vocabulary_embeddings"]

_TEXT_MEMO: dict[tuple, VocabularyEmbeddings] = {}


def resolve_organ_ids(organs: Sequence[str] = ()) -> list[str]:
    """Organ ids of a design vocabulary: ids and/or group names of ``organs.json`` (empty = every organ).

    Raises:
        ValueError: an entry is neither an organ id nor a group name (with a suggestion).
    """
    from organsam.vocabulary import load_vocabulary

    vocab = load_vocabulary()
    if not organs:
        return vocab.ids()
    out: list[str] = []
    for entry in organs:
        if entry in vocab:
            ids = [entry]
        elif entry in vocab.groups:
            ids = vocab.group(entry)
        else:
            close = difflib.get_close_matches(entry, vocab.ids() + vocab.group_names(), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(
                f"config 'organs': {entry!r} is neither an organ id nor a group of organs.json{hint} "
                f"(run 'organsam organs' to list them)"
            )
        out.extend(i for i in ids if i not in out)
    return out


def vocabulary_embeddings(
    organs: Sequence[str] = (), text_model: str | None = None, cache_dir: str | None = None
) -> VocabularyEmbeddings:
    """Name and knowledge embeddings of a design vocabulary (memoised per encoder fingerprint and organ set).

    Args:
        organs: see :func:`resolve_organ_ids`.
        text_model: local text-encoder folder (``None`` = packaged MiniLM).
        cache_dir: on-disk text-embedding cache (``None`` = default).

    Returns:
        :class:`~organsam.model.components.text_cache.VocabularyEmbeddings` on CPU.
    """
    from organsam.vocabulary import load_vocabulary

    ids = resolve_organ_ids(organs)
    cache = TextEmbeddingCache(text_model, cache_dir=cache_dir)
    key = (cache.fingerprint(), str(cache.cache_dir), tuple(ids))
    if key not in _TEXT_MEMO:
        _TEXT_MEMO[key] = embed_vocabulary(cache, load_vocabulary(), ids)
        logger.info(
            "embedded %d organs (%d knowledge sentences) for the design text table",
            len(ids),
            int(_TEXT_MEMO[key].knowledge_mask.sum()),
        )
    return _TEXT_MEMO[key]
