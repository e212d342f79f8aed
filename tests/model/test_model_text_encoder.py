"""TextEncoder: the packaged MiniLM (real weights) and tiny random BERT / CLIP text models saved locally."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from organsam.model.components.text_encoder import TextEncoder, TextEncoderError, resolve_text_encoder
from organsam.weights import WeightsError, find_weight

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def minilm_dir() -> Path:
    try:
        return find_weight("minilm").parent
    except WeightsError as e:
        pytest.skip(f"MiniLM weights not installed: {e}")


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    minilm_dir()
    return TextEncoder()


def _save_model(model: torch.nn.Module, folder: Path) -> None:
    kw = (
        {"safe_serialization": True}
        if "safe_serialization" in inspect.signature(model.save_pretrained).parameters
        else {}
    )
    model.save_pretrained(str(folder), **kw)
    for name in TOKENIZER_FILES:  # reuse MiniLM's (BERT uncased) tokenizer
        shutil.copy(minilm_dir() / name, folder / name)
    assert (folder / "model.safetensors").is_file()


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    folder = tmp_path_factory.mktemp("tiny_bert")
    _save_model(BertModel(cfg).eval(), folder)
    return folder


def _clip_text_config():
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=30522,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=16,
        bos_token_id=101,
        eos_token_id=102,
        pad_token_id=0,
    )


def test_minilm_semantics_shape_and_norm(minilm: TextEncoder) -> None:
    assert minilm.dim == 384 and minilm.spec.pooling == "mean" and minilm.spec.kind == "encoder"
    emb = minilm.encode(["liver", "hepatic organ", "the liver", "left kidney"])
    assert emb.shape == (4, 384) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(4), atol=1e-5, rtol=0)
    cos = emb @ emb[0]
    assert cos[1] > cos[3] + 0.1, f"liver~hepatic organ {cos[1]:.3f} vs liver~left kidney {cos[3]:.3f}"
    assert cos[2] > cos[3] + 0.1, f"liver~the liver {cos[2]:.3f} vs liver~left kidney {cos[3]:.3f}"


def test_minilm_deterministic_and_batch_independent(minilm: TextEncoder) -> None:
    texts = ["spleen", "the right adrenal gland, a small gland on top of the right kidney", "aorta"]
    a = minilm.encode(texts)
    assert torch.equal(a, minilm.encode(texts))
    one_by_one = minilm.encode(texts, batch_size=1)  # no padding: pooling must ignore padded tokens
    torch.testing.assert_close(a, one_by_one, atol=1e-5, rtol=1e-4)
    assert minilm.encode([]).shape == (0, 384)
    with pytest.raises(TypeError, match="list of strings"):
        minilm.encode("liver")


def test_minilm_frozen_by_default_stays_eval(minilm: TextEncoder) -> None:
    assert minilm.frozen and minilm.trainable_parameters == 0
    minilm.train()
    assert not minilm.model.training  # no dropout in a frozen text tower
    minilm.eval()


def test_tiny_bert_mean_and_cls_pooling_match_manual(tiny_bert_dir: Path) -> None:
    from transformers import AutoTokenizer, BertModel

    texts = ["liver", "left kidney and spleen"]
    tok = AutoTokenizer.from_pretrained(str(tiny_bert_dir), local_files_only=True)
    ref_model = BertModel.from_pretrained(str(tiny_bert_dir), local_files_only=True).eval()
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = ref_model(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    mean_ref = F.normalize((hidden * m).sum(1) / m.sum(1), dim=-1)
    cls_ref = hidden[:, 0]

    mean_enc = TextEncoder(tiny_bert_dir)
    assert mean_enc.dim == 32 and mean_enc.spec.pooling == "mean" and mean_enc.max_length == 64
    torch.testing.assert_close(mean_enc.encode(texts), mean_ref, atol=1e-5, rtol=1e-5)
    cls_enc = TextEncoder(tiny_bert_dir, pooling="cls", normalize=False)
    torch.testing.assert_close(cls_enc.encode(texts), cls_ref, atol=1e-5, rtol=1e-5)
    assert mean_enc.fingerprint() != cls_enc.fingerprint()


def test_tiny_bert_trainable_forward_has_gradients(tiny_bert_dir: Path) -> None:
    enc = TextEncoder(tiny_bert_dir, freeze=False)
    total = sum(p.numel() for p in enc.model.parameters())
    assert enc.trainable_parameters == total > 0
    enc.train()
    out = enc(["liver", "stomach"])
    assert out.requires_grad and out.shape == (2, 32)
    out.sum().backward()
    word_emb = enc.model.embeddings.word_embeddings.weight
    assert word_emb.grad is not None and word_emb.grad.abs().sum() > 0
    enc.set_trainable(False)
    assert enc.trainable_parameters == 0 and enc.frozen


def test_fingerprint_tracks_weight_changes(tiny_bert_dir: Path) -> None:
    enc = TextEncoder(tiny_bert_dir)
    fp0 = enc.fingerprint()
    assert fp0 == TextEncoder(tiny_bert_dir).fingerprint() == resolve_text_encoder(tiny_bert_dir).fingerprint()
    with torch.no_grad():
        enc.model.embeddings.word_embeddings.weight[0, 0] += 1.0
    fp1 = enc.fingerprint()
    assert fp1 != fp0 and enc.fingerprint() == fp1


@pytest.mark.parametrize("projection", [False, True])
def test_tiny_clip_text_tower(tmp_path: Path, projection: bool) -> None:
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(1)
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    model = cls(_clip_text_config()).eval()
    _save_model(model, tmp_path)
    enc = TextEncoder(tmp_path)
    assert enc.spec.kind == ("clip_projection" if projection else "clip")
    assert enc.dim == (16 if projection else 32) and enc.max_length == 77
    texts = ["the liver", "a computerized tomography of a spleen"]
    batch = enc.tokenize(texts)
    assert set(batch) == {"input_ids", "attention_mask"}  # CLIP takes no token_type_ids
    with torch.no_grad():
        out = model(**batch)
    ref = out.text_embeds if projection else out.pooler_output
    torch.testing.assert_close(enc.encode(texts), F.normalize(ref, dim=-1), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="pooled"):
        TextEncoder(tmp_path, pooling="mean")


def test_full_clip_checkpoint_uses_text_projection(tmp_path: Path) -> None:
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

    torch.manual_seed(2)
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=16,
        projection_dim=16,
    )
    model = CLIPModel(
        CLIPConfig(text_config=_clip_text_config().to_dict(), vision_config=vision.to_dict(), projection_dim=16)
    ).eval()
    _save_model(model, tmp_path)
    enc = TextEncoder(tmp_path)
    assert enc.spec.kind == "clip_projection" and enc.dim == 16
    texts = ["kidney", "pancreas head"]
    batch = enc.tokenize(texts)
    with torch.no_grad():
        ref = model.text_projection(model.text_model(**batch).pooler_output)
    torch.testing.assert_close(enc.encode(texts), F.normalize(ref, dim=-1), atol=1e-5, rtol=1e-5)


def test_errors_name_the_folder(tmp_path: Path, tiny_bert_dir: Path) -> None:
    with pytest.raises(TextEncoderError, match="not found"):
        TextEncoder(tmp_path / "nope")
    with pytest.raises(TextEncoderError, match="config.json"):
        TextEncoder(tmp_path)
    shutil.copy(tiny_bert_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(TextEncoderError, match="no model.safetensors"):
        TextEncoder(tmp_path)
    with pytest.raises(ValueError, match="unknown text pooling"):
        TextEncoder(tiny_bert_dir, pooling="max")


def test_pytorch_bin_checkpoint_loads_weights_only(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    for name in ("config.json", *TOKENIZER_FILES):
        shutil.copy(tiny_bert_dir / name, tmp_path / name)
    torch.save(load_file(str(tiny_bert_dir / "model.safetensors")), tmp_path / "pytorch_model.bin")
    enc = TextEncoder(tmp_path)
    assert not enc.spec.use_safetensors and enc.spec.weight_files == (tmp_path / "pytorch_model.bin",)
    texts = ["liver", "left kidney"]
    torch.testing.assert_close(enc.encode(texts), TextEncoder(tiny_bert_dir).encode(texts), atol=0, rtol=0)
