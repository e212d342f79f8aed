"""LoRA adapters in the TinyViT image encoder: no-op at init, only adapters train, merge, checkpoint round trip.

Unit tests of :mod:`organsam.model.components.lora` on small layers, then the real pretrained LiteMedSAM core in
the ``organ_prompts`` design (everything frozen but its organ prompt tokens) on a real CT slice: AMOS 0013
slice 10 (abdomen window, 256x256 model space) with its manual liver label and the liver's box.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import amos_liver_slice
from torch import nn

from organsam.model.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
    sidecar_path,
)
from organsam.model.components.lora import (
    TINYVIT_LINEAR_NAMES,
    TINYVIT_LORA_TARGETS,
    LoRALinear,
    apply_lora,
    is_lora_parameter,
    lora_modules,
    lora_parameters,
    merge_lora,
)
from organsam.registry import build_design

DESIGN = "organ_prompts"
RANK = 4
SLICE = 10


# ------------------------------------------------------------------------------------------ unit: the layer
def test_lora_linear_shares_the_base_weights_and_starts_as_identity():
    torch.manual_seed(0)
    base = nn.Linear(16, 8)
    x = torch.randn(5, 3, 16)
    ref = base(x)
    lora = LoRALinear(base, rank=2, alpha=4.0, dropout=0.1)
    assert lora.weight is base.weight and lora.bias is base.bias
    assert not lora.weight.requires_grad and not lora.bias.requires_grad
    assert lora.lora_A.shape == (2, 16) and lora.lora_B.shape == (8, 2)
    assert lora.lora_A.requires_grad and lora.lora_B.requires_grad
    assert lora.lora_A.abs().sum() > 0 and torch.count_nonzero(lora.lora_B) == 0
    assert lora.scaling == 2.0
    assert sorted(lora.state_dict()) == ["bias", "lora_A", "lora_B", "weight"]
    lora.eval()
    assert torch.equal(lora(x), ref)
    # The update is scaling * B A; merge() folds it into a plain layer without touching the adapter.
    with torch.no_grad():
        lora.lora_B.normal_()
    expected = ref + 2.0 * (x @ lora.lora_A.T @ lora.lora_B.T)
    torch.testing.assert_close(lora(x), expected, rtol=1e-5, atol=1e-5)
    merged = lora.merge()
    assert type(merged) is nn.Linear and not merged.weight.requires_grad
    torch.testing.assert_close(merged(x), lora(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(lora.weight, base.weight)


def test_lora_linear_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rank must be an integer >= 1, got 0"):
        LoRALinear(nn.Linear(4, 4), rank=0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        LoRALinear(nn.Linear(4, 4), rank=1, dropout=1.0)
    with pytest.raises(TypeError, match="wraps an nn.Linear, got Conv2d"):
        LoRALinear(nn.Conv2d(4, 4, 1), rank=1)  # type: ignore[arg-type]


def test_apply_lora_on_tinyvit_names_and_errors():
    from organsam.model import build_lite_medsam

    encoder = build_lite_medsam(pretrained=False).image_encoder
    keys_before = set(encoder.state_dict())
    names = apply_lora(encoder, 2, 2.0, TINYVIT_LINEAR_NAMES)
    # 10 attention blocks in stages 1-3 (2 + 6 + 2), four linear layers each.
    assert len(names) == 40 and len(lora_modules(encoder)) == 40
    assert names[:4] == [
        "layers.1.blocks.0.attn.qkv",
        "layers.1.blocks.0.attn.proj",
        "layers.1.blocks.0.mlp.fc1",
        "layers.1.blocks.0.mlp.fc2",
    ]
    keys_after = set(encoder.state_dict())
    assert keys_before <= keys_after  # the base weights keep their LiteMedSAM keys
    assert all(is_lora_parameter(k) for k in keys_after - keys_before)
    assert len(lora_parameters(encoder)) == 80
    assert apply_lora(encoder, 2, 2.0, TINYVIT_LORA_TARGETS) == []  # already adapted layers are left alone
    with pytest.raises(ValueError, match=r"target\(s\) \['attn.q'\] match no nn.Linear.*attn.qkv"):
        apply_lora(encoder, 2, 2.0, ("attn.q",))
    with pytest.raises(ValueError, match="target_names is empty"):
        apply_lora(encoder, 2, 2.0, ())
    assert len(merge_lora(encoder)) == 40
    assert set(encoder.state_dict()) == keys_before


# ------------------------------------------------------------------------------------------ real core, real CT
@pytest.fixture(scope="module")
def real() -> dict[str, torch.Tensor]:
    """Model input (1, 3, 256, 256), liver mask (1, 1, 256, 256) and its box (1, 4) of AMOS 0013 slice 10."""
    return amos_liver_slice(SLICE, margin=4.0)


def _build(rank: int):
    torch.manual_seed(0)
    return build_design(DESIGN, [{"lora_rank": rank}])


@pytest.fixture(scope="module")
def plain():
    """The design without adapters (seed 0)."""
    return _build(0)


@pytest.fixture(scope="module")
def adapted():
    """The same design (seed 0) with rank-4 adapters on the attention qkv/proj layers."""
    return _build(RANK)


def _run(model, real, encoded=None):
    liver = model.organ_index_of(["liver"])
    if encoded is not None:
        return model(None, liver, real["box"], encoded=encoded)
    return model(real["image"], liver, real["box"])


@pytest.fixture(scope="module")
def plain_out(plain, real):
    """The plain design's encoder output and prediction on the slice (computed once)."""
    with torch.no_grad():
        enc = plain.encode_plain(real["image"])
        return enc, _run(plain, real, enc)


def test_adapters_are_an_exact_no_op_at_init(plain, adapted, plain_out, real):
    assert plain.lora_layers == [] and len(adapted.lora_layers) == 20
    assert adapted.config.lora_targets == TINYVIT_LORA_TARGETS
    sd_plain, sd_lora = plain.state_dict(), adapted.state_dict()
    extra = set(sd_lora) - set(sd_plain)
    assert extra and all(is_lora_parameter(k) and k.startswith("core.image_encoder.") for k in extra)
    assert set(sd_plain) <= set(sd_lora)
    assert all(torch.equal(v, sd_lora[k]) for k, v in sd_plain.items())  # same seed: same design weights
    with torch.no_grad():
        b = _run(adapted, real)
    a = plain_out[1]
    for key in ("masks", "iou", "presence_logit"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    # The pretrained core segments the liver in its box (sanity check of the real-data path).
    pred, gt = a.masks[0, 0] > 0, real["mask"][0, 0] > 0
    assert 2 * (pred & gt).sum() / (pred.sum() + gt.sum()) > 0.8


@pytest.fixture(scope="module")
def trained(adapted, real):
    """A copy of ``adapted`` after one AdamW step on the focal+Dice loss: its state before, the gradients of the
    step and of the next one, and its prediction after the step."""
    model = copy.deepcopy(adapted)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    modes = {
        "encoder": model.core.image_encoder.training,
        "decoder": model.core.mask_decoder.training,
        "adapters": [m.training for m in lora_modules(model.core.image_encoder)],
    }
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    present = torch.ones(1)
    out = _run(model, real)
    embedding_grad = out.masks.requires_grad
    model.compute_loss(out, real["mask"], present)["total"].backward()
    first = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    opt.step()
    opt.zero_grad(set_to_none=True)
    model.compute_loss(_run(model, real), real["mask"], present)["total"].backward()
    second = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad():
        after = _run(model, real)
    return {
        "model": model,
        "before": before,
        "first": first,
        "second": second,
        "modes": modes,
        "embedding_grad": embedding_grad,
        "out": after,
    }


def test_frozen_encoder_with_adapters_trains_only_the_adapters(adapted, trained):
    model = trained["model"]
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    lora = {n for n in trainable if is_lora_parameter(n)}
    assert len(lora) == 2 * len(adapted.lora_layers)
    # Trainable: the adapters and the design's own prompt tokens (encoder, prompt encoder, decoder frozen).
    assert trainable - lora and all(n.startswith("prompt_tokens.") for n in trainable - lora)
    # Training mode: the frozen encoder stayed in eval (batch-norm statistics kept), its adapters followed.
    modes = trained["modes"]
    assert not modes["encoder"] and not modes["decoder"] and all(modes["adapters"])
    assert trained["embedding_grad"]
    first, second = trained["first"], trained["second"]
    assert all(first[n] is None for n in first if n not in trainable)
    # Step 1: B = 0, so the gradient reaches B only (dL/dA = B^T ...); every B gets a non-zero one.
    assert all(first[n].abs().sum() > 0 for n in lora if n.endswith("lora_B"))
    assert all(torch.count_nonzero(first[n]) == 0 for n in lora if n.endswith("lora_A"))
    # After one step every adapter tensor gets a non-zero, finite gradient.
    for n in lora:
        assert second[n] is not None and torch.isfinite(second[n]).all() and second[n].abs().sum() > 0, n
    before, after = trained["before"], model.state_dict()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert {n for n in lora if n.endswith("lora_B")} <= changed
    assert changed <= trainable, sorted(changed - trainable)[:5]
    # Every base encoder tensor (weights, biases, batch-norm statistics) is unchanged.
    base_keys = [k for k in after if k.startswith("core.") and not is_lora_parameter(k)]
    assert base_keys and all(torch.equal(before[k], after[k]) for k in base_keys)


def test_merge_gives_the_unmerged_outputs(trained, plain, plain_out, real):
    model = copy.deepcopy(trained["model"]).eval()
    torch.manual_seed(3)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("lora_B"):  # a random perturbation on top of the trained step
                p.add_(0.02 * torch.randn_like(p))
        enc = model.encode_plain(real["image"])
        out = _run(model, real, enc)
        merged_names = merge_lora(model.core.image_encoder)
        enc_m = model.encode_plain(real["image"])
        out_m = _run(model, real, enc_m)
    assert (enc.embedding - plain_out[0].embedding).abs().max() > 1e-3  # the adapters do change the features
    assert len(merged_names) == len(trained["model"].lora_layers)
    assert not lora_modules(model) and set(model.state_dict()) == set(plain.state_dict())
    torch.testing.assert_close(enc_m.embedding, enc.embedding, rtol=0, atol=1e-5)
    torch.testing.assert_close(out_m.masks, out.masks, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out_m.iou, out.iou, rtol=0, atol=1e-5)


def test_checkpoint_round_trip_recreates_the_adapters(trained, real, tmp_path):
    from safetensors.torch import load_file, save_file

    from organsam.io.files import file_sha256

    model = trained["model"]
    path = save_checkpoint(model, tmp_path / "lora.safetensors", extra={"step": 1})
    info = read_checkpoint_info(path)
    n_lora = 2 * len(model.lora_layers)
    assert info["config"]["lora_rank"] == RANK and info["config"]["lora_targets"] == list(TINYVIT_LORA_TARGETS)
    assert info["lora_tensors_saved"] == n_lora
    assert info["core_tensors_saved"] == 0  # the base encoder is unchanged: only the adapters are stored
    n_design = sum(1 for k in model.state_dict() if not k.startswith("core."))
    assert info["num_tensors"] == n_design + n_lora
    loaded = load_checkpoint(path, design=DESIGN)
    assert loaded.lora_layers == model.lora_layers and not loaded.training
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if p.requires_grad
    }
    with torch.no_grad():
        a, b = trained["out"], _run(loaded, real)
    for key in ("masks", "iou", "presence_logit"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    # A checkpoint that lost an adapter tensor is refused (not silently left at its fresh init).
    tensors = load_file(str(path))
    dropped = sorted(k for k in tensors if is_lora_parameter(k))[0]
    tensors.pop(dropped)
    bad = tmp_path / "no_adapter.safetensors"
    save_file(tensors, str(bad))
    side = json.loads(sidecar_path(path).read_text())
    side["tensor_sha256"] = file_sha256(bad)
    sidecar_path(bad).write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match=f"missing tensors: {dropped.replace('.', '[.]')}"):
        load_checkpoint(bad)


def test_bad_lora_config_is_refused():
    with pytest.raises(ValueError, match="lora_rank must be an integer >= 0"):
        build_design(DESIGN, [{"lora_rank": -1, "pretrained": False}])
    with pytest.raises(ValueError, match="lora_targets is empty"):
        build_design(DESIGN, [{"lora_rank": 2, "lora_targets": [], "pretrained": False}])
    with pytest.raises(ValueError, match="match no nn.Linear"):
        build_design(DESIGN, [{"lora_rank": 2, "lora_targets": ["attn.nope"], "pretrained": False}])


def test_apply_lora_adapts_the_text_encoder_too():
    """The designs use precomputed text embeddings; fine-tuning the text encoder on its own can use adapters."""
    from organsam.model.components.text_encoder import TextEncoder
    from organsam.weights import WeightsError, find_weight

    try:
        find_weight("minilm")
    except WeightsError as e:
        pytest.skip(f"MiniLM weights not installed: {e}")
    encoder = TextEncoder(freeze=True)
    texts = ["liver", "left kidney"]
    ref = encoder.encode(texts)
    names = apply_lora(encoder.model, 2, 2.0, ("query", "value"))
    assert len(names) == 12 and names[0] == "encoder.layer.0.attention.self.query"  # 6 BERT layers
    assert torch.equal(encoder.encode(texts), ref)
    assert encoder.trainable_parameters == sum(p.numel() for p in lora_parameters(encoder.model))
    encoder.model.train()
    encoder(texts).pow(2).sum().backward()
    assert all(p.grad is not None for p in lora_parameters(encoder.model))
