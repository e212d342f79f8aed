"""MemoryBank policies on hand-built memories, and the bank -> MemoryAttention hand-off."""

from __future__ import annotations

import pytest
import torch

from organsam.model.components.memory_attention import MemoryAttention
from organsam.model.components.memory_bank import MemoryBank
from organsam.model.components.memory_encoder import MemoryEncoder


def _const(*channel_values: float, size: int = 4) -> torch.Tensor:
    """(1, C, size, size) features constant per channel: pooled vector == channel_values."""
    return torch.tensor(channel_values).view(1, -1, 1, 1).expand(1, len(channel_values), size, size).clone()


def _similar(seed: int, base: torch.Tensor, noise: float = 0.1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return base + noise * torch.randn(base.shape, generator=g)


def test_similarity_sums_hand_computed() -> None:
    bank = MemoryBank(max_slices=5, pool_size=1)
    bank.add(0, _const(1.0, 0.0))
    bank.add(1, _const(2.0, 0.0))  # same direction as slice 0: cosine 1
    bank.add(2, _const(0.0, 3.0))  # orthogonal to both
    bank.add(3, _const(1.0, 1.0))  # 45 degrees to all: cos = 1/sqrt(2)
    r = 2**-0.5
    expected = {0: 1 + 0 + r, 1: 1 + 0 + r, 2: 0 + 0 + r, 3: 3 * r}
    got = bank.similarity_sums()
    assert got.keys() == expected.keys()
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, abs=1e-6)


def test_similarity_policy_drops_the_outlier_first() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1, 8, 8, 8, generator=g)
    outlier = torch.randn(1, 8, 8, 8, generator=g)
    bank = MemoryBank(max_slices=4, policy="similarity", pool_size=4)
    for i in range(4):
        bank.add(i, outlier if i == 1 else _similar(i, base))
    assert bank.indices == [0, 1, 2, 3]
    assert bank.add(4, _similar(4, base))
    assert bank.indices == [0, 2, 3, 4]  # the outlier went, not the oldest slice
    assert bank.add(5, _similar(5, base))
    assert len(bank) == 4 and 5 in bank
    # an outlier arriving last is itself rejected
    assert not bank.add(6, -base)
    assert 6 not in bank and len(bank) == 4


def test_conditioning_slices_are_never_dropped() -> None:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(1, 8, 8, 8, generator=g)
    outlier = torch.randn(1, 8, 8, 8, generator=g)
    bank = MemoryBank(max_slices=3, policy="similarity", pool_size=4)
    bank.add(10, outlier, conditioning=True)
    for i in range(11, 16):
        bank.add(i, _similar(i, base))
    assert 10 in bank and len(bank) == 3
    # more conditioning slices than capacity: all kept, propagated ones evicted
    cond_bank = MemoryBank(max_slices=2, policy="recent")
    cond_bank.add(0, base, conditioning=True)
    cond_bank.add(1, base)
    cond_bank.add(2, outlier, conditioning=True)
    cond_bank.add(3, -base, conditioning=True)
    assert cond_bank.indices == [0, 2, 3]


def test_recent_policy_keeps_last_n() -> None:
    g = torch.Generator().manual_seed(2)
    bank = MemoryBank(max_slices=3, policy="recent")
    bank.add(50, torch.randn(1, 8, 4, 4, generator=g), conditioning=True)
    for i in range(51, 60):
        bank.add(i, torch.randn(1, 8, 4, 4, generator=g))
    assert bank.indices == [50, 58, 59]
    bank.add(57, torch.randn(1, 8, 4, 4, generator=g))  # re-adding an index makes it the most recent
    assert bank.indices == [50, 57, 59]


def test_select_distances_order_and_pointers() -> None:
    bank = MemoryBank(max_slices=7, policy="recent")
    feats = {i: torch.full((1, 8, 4, 4), float(i)) for i in (3, 9, 5, 7)}
    for i, f in feats.items():
        bank.add(i, f, pointer=torch.full((8,), float(i)), score=0.5 + i / 100, conditioning=(i == 3))
    sel = bank.select(current_index=6)
    assert sel.indices == [3, 5, 7, 9]
    assert sel.distances.tolist() == [-3.0, -1.0, 1.0, 3.0]
    assert sel.features.shape == (1, 4, 8, 4, 4) and sel.pointers.shape == (1, 4, 8)
    assert sel.features[0, :, 0, 0, 0].tolist() == [3.0, 5.0, 7.0, 9.0]
    assert sel.conditioning.tolist() == [True, False, False, False]
    assert sel.scores.tolist() == pytest.approx([0.53, 0.55, 0.57, 0.59])
    # own slice left out; spacing gives mm
    sel = bank.select(current_index=5, spacing=2.5)
    assert sel.indices == [3, 7, 9] and sel.distances.tolist() == [-5.0, 5.0, 10.0]
    # pointers only when every entry has one
    bank.add(4, torch.zeros(1, 8, 4, 4))
    assert bank.select(6).pointers is None
    assert MemoryBank().select(0) is None


def test_max_conditioning_min_score_and_validation() -> None:
    bank = MemoryBank(max_slices=7, min_score=0.5)
    for i in (0, 10, 20):
        bank.add(i, torch.randn(1, 8, 4, 4), conditioning=True)
    assert bank.select(12, max_conditioning=1).indices == [10]
    assert not bank.add(13, torch.randn(1, 8, 4, 4), score=0.2)  # low-quality propagated slice
    assert bank.add(14, torch.randn(1, 8, 4, 4), score=0.2, conditioning=True)  # prompts always stored
    with pytest.raises(ValueError, match="all entries must match"):
        bank.add(15, torch.randn(1, 8, 2, 2))
    with pytest.raises(ValueError, match="unknown memory policy"):
        MemoryBank(policy="oldest")


def test_bank_feeds_memory_attention() -> None:
    torch.manual_seed(0)
    enc, attn = MemoryEncoder().eval(), MemoryAttention().eval()
    bank = MemoryBank(max_slices=3)
    embeddings = torch.randn(4, 1, 256, 16, 16)
    with torch.no_grad():
        for z in range(3):
            m = enc(embeddings[z], torch.randn(1, 1, 64, 64), decoder_token=torch.randn(1, 256))
            bank.add(z, m.features, pointer=m.pointer, conditioning=(z == 0))
        sel = bank.select(3)
        out = attn(embeddings[3], sel.features, sel.distances, pointers=sel.pointers)
    assert sel.features.shape == (1, 3, 64, 16, 16) and sel.distances.tolist() == [-3.0, -2.0, -1.0]
    assert out.shape == (1, 256, 16, 16) and torch.isfinite(out).all()
