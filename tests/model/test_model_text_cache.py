"""TextEmbeddingCache (disk + memory) and embed_vocabulary, with the real MiniLM weights."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from organsam.model.components.text_cache import (
    TextEmbeddingCache,
    VocabularyEmbeddings,
    default_cache_dir,
    embed_vocabulary,
)
from organsam.model.components.text_encoder import TextEncoder
from organsam.weights import WeightsError, find_weight

TEXTS = ["liver", "spleen", "left kidney", "the right kidney"]


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    try:
        find_weight("minilm")
    except WeightsError as e:
        pytest.skip(f"MiniLM weights not installed: {e}")
    return TextEncoder()


def test_cache_roundtrip_and_lazy_warm_start(minilm: TextEncoder, tmp_path: Path) -> None:
    cache = TextEmbeddingCache(minilm, cache_dir=tmp_path)
    got = cache.get(TEXTS)
    assert got.shape == (4, 384) and got.device.type == "cpu"
    torch.testing.assert_close(got, minilm.encode(TEXTS).cpu(), atol=0, rtol=0)
    files = list(tmp_path.rglob("*.safetensors"))
    assert len(files) == 1 and files[0] == cache.path_for(TEXTS)
    assert not list(tmp_path.rglob(".tmp-*")), "temporary file left behind"
    assert cache.encoded_count == 4
    cache.get(TEXTS[::-1])  # memory hit
    assert cache.encoded_count == 4

    # A fresh cache for the packaged model reads the file without loading the encoder.
    warm = TextEmbeddingCache(None, cache_dir=tmp_path)
    assert warm.fingerprint() == minilm.fingerprint()
    again = warm.get(TEXTS)
    assert not warm.encoder_loaded and warm.encoded_count == 0
    torch.testing.assert_close(again, got, atol=0, rtol=0)


def test_cache_duplicates_order_and_new_texts(minilm: TextEncoder, tmp_path: Path) -> None:
    cache = TextEmbeddingCache(minilm, cache_dir=tmp_path)
    base = cache.get(TEXTS)
    dup = cache.get(["spleen", "liver", "spleen"])
    torch.testing.assert_close(dup, base[[1, 0, 1]], atol=0, rtol=0)
    more = cache.get(TEXTS + ["pancreas"])
    assert cache.encoded_count == 5  # only the new text went through the encoder
    torch.testing.assert_close(more[4], minilm.encode(["pancreas"])[0].cpu(), atol=1e-6, rtol=0)
    assert cache.get([]).shape == (0, 384)


def test_corrupt_file_is_recomputed(minilm: TextEncoder, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = TextEmbeddingCache(minilm, cache_dir=tmp_path)
    ref = cache.get(TEXTS)
    path = cache.path_for(TEXTS)
    path.write_bytes(b"not a safetensors file")
    fresh = TextEmbeddingCache(minilm, cache_dir=tmp_path)
    with caplog.at_level(logging.WARNING):
        got = fresh.get(TEXTS)
    assert "unreadable" in caplog.text and fresh.encoded_count == 4
    torch.testing.assert_close(got, ref, atol=0, rtol=0)
    assert TextEmbeddingCache(None, cache_dir=tmp_path).get(TEXTS).shape == (4, 384)  # file was rewritten


def test_changed_weights_do_not_reuse_vectors(minilm: TextEncoder, tmp_path: Path) -> None:
    cache = TextEmbeddingCache(minilm, cache_dir=tmp_path)
    before = cache.get(["liver"])
    w = minilm.model.embeddings.word_embeddings.weight
    saved = w.detach().clone()
    with torch.no_grad():
        w.mul_(1.5)
    try:
        after = cache.get(["liver"])
        assert cache.encoded_count == 2 and not torch.allclose(before, after)
        assert len({p.parent for p in tmp_path.rglob("*.safetensors")}) == 2  # one folder per fingerprint
    finally:
        with torch.no_grad():
            w.copy_(saved)


def test_memory_only_and_default_dir(minilm: TextEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORGANSAM_HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / "cache"
    monkeypatch.delenv("ORGANSAM_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "organsam"
    cache = TextEmbeddingCache(minilm, cache_dir=False)
    assert cache.get(["liver"]).shape == (1, 384) and cache.path_for(["liver"]) is None


@dataclass
class _Organ:
    id: str
    name: str
    knowledge: list[str] = field(default_factory=list)


@dataclass
class _Vocab:
    organs: list[_Organ]

    def prompt_text(self, organ_id: str) -> str:
        return f"A computerized tomography of a {next(o.name for o in self.organs if o.id == organ_id)}."


def _check_vocab_embeddings(ve: VocabularyEmbeddings, vocab, minilm: TextEncoder) -> None:
    organs = {o.id: o for o in (vocab.organs.values() if isinstance(vocab.organs, dict) else vocab.organs)}
    K, S = len(ve.ids), max(len(organs[i].knowledge) for i in ve.ids)
    assert ve.name_emb.shape == (K, 384) and ve.knowledge_emb.shape == (K, S, 384)
    assert ve.knowledge_mask.shape == (K, S) and ve.knowledge_mask.dtype == torch.bool
    for k, oid in enumerate(ve.ids):
        n = len(organs[oid].knowledge)
        assert ve.knowledge_mask[k].sum() == n
        assert torch.all(ve.knowledge_emb[k, n:] == 0)
    k0 = 0
    oid = ve.ids[k0]
    torch.testing.assert_close(ve.name_emb[k0], minilm.encode([vocab.prompt_text(oid)])[0].cpu(), atol=1e-5, rtol=0)
    if organs[oid].knowledge:
        torch.testing.assert_close(
            ve.knowledge_emb[k0, 0], minilm.encode([organs[oid].knowledge[0]])[0].cpu(), atol=1e-5, rtol=0
        )


def test_embed_inline_vocabulary(minilm: TextEncoder, tmp_path: Path) -> None:
    vocab = _Vocab(
        [
            _Organ(
                "liver",
                "liver",
                [
                    "The liver is the largest solid organ of the abdomen.",
                    "It lies in the right upper quadrant under the diaphragm.",
                ],
            ),
            _Organ("kidney_left", "left kidney", ["A bean-shaped retroperitoneal organ on the left side."]),
            _Organ("aorta", "aorta", []),
        ]
    )
    cache = TextEmbeddingCache(minilm, cache_dir=tmp_path)
    ve = embed_vocabulary(cache, vocab)
    assert ve.ids == ["liver", "kidney_left", "aorta"] and ve.fingerprint == minilm.fingerprint()
    _check_vocab_embeddings(ve, vocab, minilm)
    assert not ve.knowledge_mask[2].any()
    direct = embed_vocabulary(minilm, vocab, ids=["kidney_left", "liver"])
    assert direct.ids == ["kidney_left", "liver"]
    torch.testing.assert_close(direct.name_emb.cpu(), ve.name_emb[[1, 0]], atol=1e-5, rtol=0)
    assert ve.index("aorta") == 2
    with pytest.raises(ValueError, match="not in the embedded vocabulary"):
        ve.index("brain")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        embed_vocabulary(minilm, vocab, ids=["brain"])


def test_embed_real_vocabulary(minilm: TextEncoder, tmp_path: Path) -> None:
    vocabulary = pytest.importorskip("organsam.vocabulary", reason="organsam.vocabulary not written yet")
    if not hasattr(vocabulary, "load_vocabulary"):
        pytest.skip("organsam.vocabulary.load_vocabulary not written yet")
    vocab = vocabulary.load_vocabulary()
    ids = ["liver", "spleen", "kidney_right", "kidney_left", "pancreas", "aorta"]  # all organs take ~15 s on CPU
    ve = embed_vocabulary(TextEmbeddingCache(minilm, cache_dir=tmp_path), vocab, ids=ids)
    assert ve.ids == ids
    _check_vocab_embeddings(ve, vocab, minilm)
    assert ve.knowledge_mask.sum(1).min() >= 3  # 3-6 knowledge sentences per organ
    # each organ's prompt embedding is closest to its own knowledge sentences (averaged), kidneys aside
    know = torch.nn.functional.normalize((ve.knowledge_emb * ve.knowledge_mask[..., None]).sum(1), dim=-1)
    best = (ve.name_emb @ know.t()).argmax(dim=1).tolist()
    for oid in ("liver", "spleen", "pancreas", "aorta"):
        assert best[ve.index(oid)] == ve.index(oid), oid
