"""Organ prompt tokens and the organ_prompts design on a real CT slice (AMOS 0013 slab, slice 10, liver).

Checks behaviour: an untrained module leaves LiteMedSAM's box mask nearly unchanged (zero-initialised last
layer), gradients reach the token MLP and nothing of the frozen core, the design's presence logit follows the
predicted IoU, and the exported inference table round-trips (and refuses bad files).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import amos_liver_slice

from organsam.model.components.organ_prompt import OrganPromptTokens
from organsam.registry import build_design

SLICE = 10


@pytest.fixture(scope="module")
def liver_slice() -> dict[str, torch.Tensor]:
    """Model input (1, 3, 256, 256), liver mask (1, 1, 256, 256) and a loose liver box (1, 4) of slice 10."""
    return amos_liver_slice(SLICE, margin=6.0)


@pytest.fixture(scope="module")
def design():
    torch.manual_seed(0)
    return build_design("organ_prompts")


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.bool(), b.bool()
    return float(2 * (a & b).sum() / (a.sum() + b.sum()).clamp(min=1))


def test_tokens_shape_and_zero_start() -> None:
    tok = OrganPromptTokens(384, 256, num_tokens=3)
    out = tok(torch.randn(5, 384))
    assert out.shape == (5, 3, 256)
    assert torch.count_nonzero(out) == 0  # zero-initialised last layer
    with pytest.raises(ValueError, match=r"\(B, 384\)"):
        tok(torch.randn(5, 100))


def test_untrained_design_keeps_litemedsam_box_mask(design, liver_slice) -> None:
    with torch.no_grad():
        enc = design.encode_plain(liver_slice["image"])
        plain, _ = design.core.decode(enc.embedding, boxes=liver_slice["box"])
        out = design(None, design.organ_index_of(["liver"]), liver_slice["box"], encoded=enc)
    assert out.masks.shape == (1, 1, 256, 256) and out.iou.shape == (1, 1) and out.presence_logit.shape == (1,)
    assert _dice(plain > 0, liver_slice["mask"] > 0) > 0.85  # LiteMedSAM with a loose box finds the liver
    assert _dice(out.masks > 0, plain > 0) > 0.95  # zero tokens barely change it
    # presence logit is logit(predicted IoU): positive exactly where the IoU passes 0.5
    assert bool(out.presence_logit[0] > 0) == bool(out.iou[0, 0] > 0.5)


def test_gradients_reach_only_the_token_mlp(design, liver_slice) -> None:
    trainable = {n for n, p in design.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("prompt_tokens.") for n in trainable)
    with torch.no_grad():
        enc = design.encode_plain(liver_slice["image"])
    design.train()
    try:
        out = design(None, design.organ_index_of(["liver"]), liver_slice["box"], encoded=enc)
        terms = design.compute_loss(out, liver_slice["mask"], torch.ones(1))
        assert torch.isfinite(terms["total"]) and set(terms) == {"mask", "iou", "total"}
        terms["total"].backward()
    finally:
        design.eval()
    grads = {n: p.grad for n, p in design.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values())
    assert float(grads["prompt_tokens.mlp.2.weight"].abs().sum()) > 0  # the zero layer gets a gradient
    design.zero_grad(set_to_none=True)


def test_text_only_forward_uses_the_whole_slice(design, liver_slice) -> None:
    """The text-alone pass decodes the whole slice as the box (the box round after it,
    ``text_box_rounds``, is off here)."""
    config = design.config
    design.config = dataclasses.replace(config, text_box_rounds=0)
    try:
        with torch.no_grad():
            enc = design.encode_plain(liver_slice["image"])
            a = design(None, design.organ_index_of(["liver"]), encoded=enc)
            b = design(None, design.organ_index_of(["liver"]), torch.tensor([[0.0, 0.0, 255.0, 255.0]]), encoded=enc)
    finally:
        design.config = config
    assert torch.equal(a.masks, b.masks)


def test_prompt_table_round_trip_and_bad_files(design, tmp_path) -> None:
    from organsam.inference.organ_prompt_table import export_prompt_table, load_prompt_table
    from organsam.model.checkpoint import save_checkpoint

    with torch.no_grad():
        design.prompt_tokens.mlp[2].bias.fill_(0.25)  # non-zero tokens, so the round trip is meaningful
    try:
        ckpt = save_checkpoint(design, tmp_path / "model.safetensors")
        with pytest.raises(ValueError, match="overwrite"):
            export_prompt_table(ckpt, ckpt)
        out = export_prompt_table(ckpt, tmp_path / "table.safetensors", command="test")
        table = load_prompt_table(out)
        assert table.num_tokens == 2 and "liver" in table and table.metadata["command"] == "test"
        expect = design.prompt_table()
        got = table.lookup(["liver", "pancreas"])
        assert got.shape == (2, 2, 256)
        assert torch.allclose(got[0], expect["liver"]) and torch.allclose(got[1], expect["pancreas"])
        with pytest.raises(KeyError, match="no tokens"):
            table.lookup(["not_an_organ"])
    finally:
        with torch.no_grad():
            design.prompt_tokens.mlp[2].bias.zero_()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="bad.safetensors"):
        load_prompt_table(bad)
    with pytest.raises(ValueError, match="not an organ prompt table"):
        load_prompt_table(ckpt)
