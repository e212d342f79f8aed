"""Slice position encoding, MemoryEncoder and MemoryAttention: shapes, gradients, dtypes, semantics."""

from __future__ import annotations

import pytest
import torch

from organsam.model.components.memory_attention import MemoryAttention
from organsam.model.components.memory_encoder import MemoryEncoder
from organsam.model.components.slice_position_encoding import (
    SlicePositionEncoding,
    sine_encoding_2d,
    sinusoid_1d,
)

GRID = 16  # small grid keeps the tests fast; the modules are size-agnostic (64x64 in the product)


def test_slice_distance_encoding_is_signed() -> None:
    enc = SlicePositionEncoding(64)
    d = torch.tensor([-3.0, 0.0, 3.0, 1.0])
    out = enc(d)
    assert out.shape == (4, 64)
    torch.testing.assert_close(out[0, :32], -out[2, :32])  # sine half odd: sign kept
    torch.testing.assert_close(out[0, 32:], out[2, 32:])  # cosine half even
    torch.testing.assert_close(out[1], torch.cat([torch.zeros(32), torch.ones(32)]))
    assert (out[3] - out[1]).norm() < (out[2] - out[1]).norm()  # nearer distance, nearer code
    # mm input with a scale equals the slice code
    torch.testing.assert_close(SlicePositionEncoding(64, scale=1 / 2.5)(d * 2.5), out)
    assert sinusoid_1d(torch.zeros(2, 3), 8).shape == (2, 3, 8)
    with pytest.raises(ValueError, match="even"):
        SlicePositionEncoding(63)


def test_sine_encoding_2d() -> None:
    pe = sine_encoding_2d(8, 6, 32)
    assert pe.shape == (32, 8, 6)
    flat = pe.flatten(1).t()
    assert torch.cdist(flat, flat).add(torch.eye(48) * 10).min() > 1e-3  # every cell distinct
    torch.testing.assert_close(pe[:16, :, 0], pe[:16, :, 5])  # first half depends on the row only
    torch.testing.assert_close(pe[16:, 0, :], pe[16:, 7, :])  # second half on the column only


def _grads_ok(module: torch.nn.Module) -> None:
    missing = [
        n
        for n, p in module.named_parameters()
        if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0
    ]
    assert not missing, f"parameters without gradient: {missing}"


def test_memory_encoder_shapes_and_gradients() -> None:
    torch.manual_seed(0)
    enc = MemoryEncoder(embed_dim=256, mem_dim=64)
    emb = torch.randn(2, 256, GRID, GRID)
    mask = torch.randn(2, 1, 4 * GRID, 4 * GRID)
    out = enc(emb, mask, decoder_token=torch.randn(2, 256))
    assert out.features.shape == (2, 64, GRID, GRID) and out.pos.shape == (2, 64, GRID, GRID)
    assert out.pointer.shape == (2, 64)
    torch.testing.assert_close(out.pos[0], sine_encoding_2d(GRID, GRID, 64))
    (out.features.square().mean() + out.pointer.square().mean()).backward()
    _grads_ok(enc)
    # masks of another size are resized; no token -> no pointer
    out2 = enc(emb, torch.randn(2, 1, 40, 40))
    assert out2.features.shape == (2, 64, GRID, GRID) and out2.pointer is None
    with pytest.raises(ValueError, match="mask_logits"):
        enc(emb, torch.randn(3, 1, 64, 64))


def test_memory_encoder_depends_on_mask() -> None:
    torch.manual_seed(0)
    enc = MemoryEncoder().eval()
    emb = torch.randn(1, 256, GRID, GRID)
    with torch.no_grad():
        a = enc(emb, torch.full((1, 1, 64, 64), -10.0)).features
        b = enc(emb, torch.full((1, 1, 64, 64), 10.0)).features
    assert (a - b).abs().mean() > 1e-3


def _memory(b: int, m: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, m, 64, GRID, GRID, generator=g)


def test_memory_attention_shapes_and_gradients() -> None:
    torch.manual_seed(0)
    attn = MemoryAttention(d_model=256, mem_dim=64, layers=2, heads=8)
    x = torch.randn(2, 256, GRID, GRID)
    out = attn(x, _memory(2, 3, 1), slice_distance=torch.tensor([-2.0, -1.0, 3.0]), pointers=torch.randn(2, 3, 64))
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    _grads_ok(attn)


@pytest.mark.parametrize("memory_pool,token_pool", [(1, 1), (2, 2), (4, 1)])
def test_memory_attention_pooling_options(memory_pool: int, token_pool: int) -> None:
    attn = MemoryAttention(memory_pool=memory_pool, token_pool=token_pool, layer_scale_init=None).eval()
    x = torch.randn(1, 256, GRID, GRID)
    with torch.no_grad():
        out = attn(x, _memory(1, 2, 2), slice_distance=torch.tensor([1.0, 2.0]))
    assert out.shape == x.shape and torch.isfinite(out).all() and not torch.allclose(out, x)


def test_memory_attention_no_nan_bf16_autocast() -> None:
    torch.manual_seed(0)
    attn = MemoryAttention()
    x = torch.randn(1, 256, GRID, GRID) * 5
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(
            x,
            _memory(1, 2, 3) * 5,
            slice_distance=torch.tensor([-1.0, 1.0]),
            pointers=torch.randn(1, 2, 64),
            memory_valid=torch.tensor([[True, False]]),
        )
    assert out.shape == x.shape and torch.isfinite(out.float()).all()
    out.float().square().mean().backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in attn.parameters())


def test_no_memory_path_is_identity() -> None:
    attn = MemoryAttention().eval()
    x = torch.randn(2, 256, GRID, GRID)
    assert torch.equal(attn(x, None), x)
    assert torch.equal(attn(x, torch.zeros(2, 0, 64, GRID, GRID), slice_distance=torch.zeros(0)), x)
    mem = _memory(2, 2, 4)
    none_valid = torch.zeros(2, 2, dtype=torch.bool)
    assert torch.equal(attn(x, mem, torch.tensor([1.0, 2.0]), memory_valid=none_valid), x)
    # a batch item without valid memory is passed through; the other one is conditioned
    with torch.no_grad():
        out = attn(x, mem, torch.tensor([1.0, 2.0]), memory_valid=torch.tensor([[True, True], [False, False]]))
    assert torch.equal(out[1], x[1]) and not torch.equal(out[0], x[0])
    with pytest.raises(ValueError, match="slice_distance"):
        attn(x, mem)


def test_output_depends_on_memory_distance_and_padding() -> None:
    torch.manual_seed(0)
    attn = MemoryAttention(layer_scale_init=None).eval()
    x = torch.randn(1, 256, GRID, GRID)
    d = torch.tensor([-1.0, 2.0])
    with torch.no_grad():
        a = attn(x, _memory(1, 2, 5), d)
        b = attn(x, _memory(1, 2, 6), d)
        c = attn(x, _memory(1, 2, 5), torch.tensor([-5.0, 7.0]))
        # a padded (invalid) slot is ignored exactly as if it were absent
        padded = torch.cat([_memory(1, 2, 5), _memory(1, 1, 7)], dim=1)
        p = attn(x, padded, torch.tensor([-1.0, 2.0, 4.0]), memory_valid=torch.tensor([[True, True, False]]))
    assert (a - b).abs().mean() > 1e-3
    assert (a - c).abs().mean() > 1e-4
    torch.testing.assert_close(p, a, atol=1e-5, rtol=1e-5)


def test_default_layer_scale_starts_near_identity() -> None:
    attn = MemoryAttention().eval()  # layer_scale_init=1e-3
    x = torch.randn(1, 256, GRID, GRID)
    with torch.no_grad():
        out = attn(x, _memory(1, 3, 8), torch.tensor([-1.0, 1.0, 2.0]))
    rel = (out - x).norm() / x.norm()
    assert 0 < rel < 0.05


def test_memory_encoder_no_nan_bf16_autocast() -> None:
    torch.manual_seed(0)
    enc = MemoryEncoder()
    emb = torch.randn(1, 256, GRID, GRID) * 5
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = enc(emb, torch.randn(1, 1, 4 * GRID, 4 * GRID) * 20, decoder_token=torch.randn(1, 256))
    assert torch.isfinite(out.features.float()).all() and torch.isfinite(out.pointer.float()).all()
    (out.features.float().square().mean() + out.pointer.float().square().mean()).backward()
    _grads_ok(enc)
