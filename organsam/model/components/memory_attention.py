"""Memory attention: condition the current slice's image embedding on memories of other slices.

SAM2-style, written for CPU speed: each layer runs self-attention over the current slice's tokens,
cross-attention from those tokens to the memory tokens of the bank, and an MLP; all attention goes
through :func:`torch.nn.functional.scaled_dot_product_attention`. Memory keys/values have ``mem_dim``
channels and are projected up to ``d_model``. Queries and self-attention keys carry the fixed 2-D sine
encoding of the grid; memory keys carry the 2-D sine encoding of the memory grid plus an encoding of
the signed slice distance (one per memory slice). Object pointers, when given, are extra memory tokens.

Semantics documented for the callers:

* **No memory** (``memory is None``, ``M == 0``, or every memory slot of a batch item invalid): the
  output is the input embedding, bit for bit. Conditioning slices (those with user/text prompts and no
  memory yet) therefore see exactly the image embedding a pretrained SAM decoder expects.
* **With memory**: ``output = input + residual``; every residual branch is scaled by a learnable
  per-channel layer scale initialised to ``layer_scale_init`` (default 1e-3), so an untrained module
  changes the embedding only slightly and fine-tuning starts from the pretrained decoder's behaviour.
  ``layer_scale_init=None`` gives plain residual branches.
* Speed options: ``memory_pool`` average-pools the memory grid (64x64 -> 32x32 for 2) and
  ``token_pool`` runs the attention on a pooled current-slice grid and upsamples the residual
  (bilinear) back to full resolution. ``memory_pool=1, token_pool=1`` is full-resolution attention
  (about 2 s per slice with 7 memories on 2 CPU cores); the defaults (2, 2) take about 0.15 s.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from organsam.model.components.slice_position_encoding import SlicePositionEncoding, sine_encoding_2d

logger = logging.getLogger(__name__)

__all__ = ["MemoryAttention"]


class _Attention(nn.Module):
    """Multi-head attention with separate query and key/value widths."""

    def __init__(self, dim: int, kv_dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"d_model={dim} is not divisible by heads={heads}")
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(kv_dim, dim)
        self.v_proj = nn.Linear(kv_dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """q: (B, Nq, dim); k, v: (B, Nk, kv_dim); attn_mask: (B, 1, 1, Nk) bool (True = attend)."""
        B, Nq, _ = q.shape
        Nk = k.shape[1]
        q = self.q_proj(q).view(B, Nq, self.heads, -1).transpose(1, 2)
        k = self.k_proj(k).view(B, Nk, self.heads, -1).transpose(1, 2)
        v = self.v_proj(v).view(B, Nk, self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out_proj(out.transpose(1, 2).reshape(B, Nq, -1))


class _LayerScale(nn.Module):
    def __init__(self, dim: int, init: float | None) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init))) if init is not None else None

    def forward(self, x: Tensor) -> Tensor:
        return x if self.gamma is None else x * self.gamma.to(x.dtype)


class _MemoryAttentionLayer(nn.Module):
    """Pre-norm: self-attention, cross-attention to memory, MLP; each a scaled residual branch."""

    def __init__(self, d_model: int, mem_dim: int, heads: int, mlp_dim: int, layer_scale_init: float | None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = _Attention(d_model, d_model, heads)
        self.ls1 = _LayerScale(d_model, layer_scale_init)
        self.norm2 = nn.LayerNorm(d_model)
        self.cross_attn = _Attention(d_model, mem_dim, heads)
        self.ls2 = _LayerScale(d_model, layer_scale_init)
        self.norm3 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, d_model))
        self.ls3 = _LayerScale(d_model, layer_scale_init)

    def forward(self, x: Tensor, pos: Tensor, mem_k: Tensor, mem_v: Tensor, attn_mask: Tensor | None) -> Tensor:
        y = self.norm1(x)
        qk = y + pos
        x = x + self.ls1(self.self_attn(qk, qk, y))
        y = self.norm2(x)
        x = x + self.ls2(self.cross_attn(y + pos, mem_k, mem_v, attn_mask))
        return x + self.ls3(self.mlp(self.norm3(x)))


class MemoryAttention(nn.Module):
    """Condition an image embedding on a bank of memory slices.

    Args:
        d_model: channels of the image embedding.
        mem_dim: channels of the memory features and object pointers.
        layers: number of attention layers.
        heads: attention heads.
        mlp_dim: hidden width of each layer's MLP.
        memory_pool: average-pooling factor applied to the memory grid before attention (1 = none).
        token_pool: pooling factor of the current slice's grid inside the attention (1 = none).
        layer_scale_init: initial value of the per-channel residual scales (``None``: no scaling).
        distance_scale: multiplier applied to the slice distances before their sine encoding (use
            e.g. ``1/2.5`` when distances are in mm and slices are about 2.5 mm apart).
    """

    def __init__(
        self,
        d_model: int = 256,
        mem_dim: int = 64,
        layers: int = 2,
        heads: int = 8,
        mlp_dim: int = 1024,
        memory_pool: int = 2,
        token_pool: int = 2,
        layer_scale_init: float | None = 1e-3,
        distance_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if memory_pool < 1 or token_pool < 1:
            raise ValueError(f"memory_pool and token_pool must be >= 1, got {memory_pool} and {token_pool}")
        if d_model % 4 or mem_dim % 4:
            raise ValueError(f"d_model and mem_dim must be divisible by 4, got {d_model} and {mem_dim}")
        self.d_model = d_model
        self.mem_dim = mem_dim
        self.memory_pool = memory_pool
        self.token_pool = token_pool
        self.layers = nn.ModuleList(
            [_MemoryAttentionLayer(d_model, mem_dim, heads, mlp_dim, layer_scale_init) for _ in range(layers)]
        )
        self.slice_pos = SlicePositionEncoding(mem_dim, scale=distance_scale, learnable=True)
        self.pointer_embed = nn.Parameter(torch.zeros(mem_dim).normal_(std=0.02))
        self._pos_cache: dict[tuple, Tensor] = {}

    def _grid_pos(self, h: int, w: int, dim: int, device: torch.device) -> Tensor:
        key = (h, w, dim, str(device))
        if key not in self._pos_cache:
            if len(self._pos_cache) > 16:
                self._pos_cache.clear()
            self._pos_cache[key] = sine_encoding_2d(h, w, dim, device=device)
        return self._pos_cache[key]

    def forward(
        self,
        image_embedding: Tensor,
        memory: Tensor | None,
        slice_distance: Tensor | None = None,
        pointers: Tensor | None = None,
        memory_pos: Tensor | None = None,
        memory_valid: Tensor | None = None,
    ) -> Tensor:
        """Condition ``image_embedding`` on ``memory``.

        Args:
            image_embedding: ``(B, d_model, H, W)`` current slice embedding.
            memory: ``(B, M, mem_dim, h, w)`` memory features of M slices, or ``None``.
            slice_distance: ``(B, M)`` or ``(M,)`` signed distance of each memory slice to the current
                slice (memory index minus current index, in slices or mm); required with memory.
            pointers: optional ``(B, M, mem_dim)`` object pointers of the memory slices.
            memory_pos: optional ``(B, M, mem_dim, h, w)`` 2-D encoding of the memory grid; computed
                (sine) when omitted.
            memory_valid: optional ``(B, M)`` bool, False for padding slots.

        Returns:
            ``(B, d_model, H, W)``; exactly ``image_embedding`` for batch items without valid memory.
        """
        if image_embedding.dim() != 4 or image_embedding.shape[1] != self.d_model:
            raise ValueError(f"image_embedding must be (B, {self.d_model}, H, W), got {tuple(image_embedding.shape)}")
        if memory is None or memory.shape[1] == 0:
            return image_embedding
        B, _, H, W = image_embedding.shape
        if memory.dim() != 5 or memory.shape[0] != B or memory.shape[2] != self.mem_dim:
            raise ValueError(f"memory must be (B={B}, M, {self.mem_dim}, h, w), got {tuple(memory.shape)}")
        M = memory.shape[1]
        if slice_distance is None:
            raise ValueError("slice_distance (B, M) or (M,) is required when memory is given")
        dist = slice_distance.to(device=memory.device, dtype=torch.float32)
        if dist.dim() == 1:
            dist = dist.unsqueeze(0).expand(B, M)
        if tuple(dist.shape) != (B, M):
            raise ValueError(f"slice_distance must be (B, M)=({B}, {M}) or (M,), got {tuple(slice_distance.shape)}")
        if pointers is not None and tuple(pointers.shape) != (B, M, self.mem_dim):
            raise ValueError(
                f"pointers must be (B, M, mem_dim)=({B}, {M}, {self.mem_dim}), got {tuple(pointers.shape)}"
            )
        if memory_valid is not None:
            valid = memory_valid.to(device=memory.device, dtype=torch.bool)
            if tuple(valid.shape) != (B, M):
                raise ValueError(f"memory_valid must be (B, M)=({B}, {M}), got {tuple(memory_valid.shape)}")
            has_mem = valid.any(dim=1)
            if not bool(has_mem.any()):
                return image_embedding
            # Items without any valid slot attend to everything (result discarded) to avoid NaN rows.
            valid = valid | ~has_mem[:, None]
        else:
            valid, has_mem = None, None

        # Memory keys and values.
        h, w = memory.shape[-2:]
        mem = memory.flatten(0, 1)
        if memory_pos is not None:
            mpos = memory_pos.flatten(0, 1)
            if self.memory_pool > 1:
                mpos = F.avg_pool2d(mpos, self.memory_pool, ceil_mode=True)
        if self.memory_pool > 1:
            mem = F.avg_pool2d(mem, self.memory_pool, ceil_mode=True)
        h2, w2 = mem.shape[-2:]
        if memory_pos is None:
            mpos = self._grid_pos(h2, w2, self.mem_dim, mem.device).unsqueeze(0)
        mem = mem.view(B, M, self.mem_dim, h2 * w2).transpose(2, 3)  # (B, M, h2*w2, Cm)
        mpos = mpos.expand(B * M, -1, -1, -1).reshape(B, M, self.mem_dim, h2 * w2).transpose(2, 3)
        dist_enc = self.slice_pos(dist)  # (B, M, Cm)
        mem_k = (mem + mpos.to(mem.dtype) + dist_enc.unsqueeze(2).to(mem.dtype)).reshape(B, M * h2 * w2, -1)
        mem_v = mem.reshape(B, M * h2 * w2, -1)
        attn_mask = None
        if valid is not None:
            attn_mask = valid[:, :, None].expand(B, M, h2 * w2).reshape(B, M * h2 * w2)
        if pointers is not None:
            ptr_k = pointers + dist_enc.to(pointers.dtype) + self.pointer_embed.to(pointers.dtype)
            mem_k = torch.cat([mem_k, ptr_k.to(mem_k.dtype)], dim=1)
            mem_v = torch.cat([mem_v, pointers.to(mem_v.dtype)], dim=1)
            if attn_mask is not None:
                attn_mask = torch.cat([attn_mask, valid], dim=1)
        if attn_mask is not None:
            attn_mask = attn_mask[:, None, None, :]

        # Current slice tokens.
        x_in = image_embedding
        if self.token_pool > 1:
            x_in = F.avg_pool2d(image_embedding, self.token_pool, ceil_mode=True)
        hq, wq = x_in.shape[-2:]
        x = x_in.flatten(2).transpose(1, 2)  # (B, hq*wq, C)
        pos = self._grid_pos(hq, wq, self.d_model, x.device).flatten(1).t().unsqueeze(0).to(x.dtype)
        for layer in self.layers:
            x = layer(x, pos, mem_k, mem_v, attn_mask)
        out = x.transpose(1, 2).reshape(B, self.d_model, hq, wq)
        if self.token_pool > 1:
            delta = out - x_in
            delta = F.interpolate(delta.float(), size=(H, W), mode="bilinear", align_corners=False)
            out = image_embedding + delta.to(out.dtype)
        if has_mem is not None:
            out = torch.where(has_mem[:, None, None, None], out, image_embedding.to(out.dtype))
        return out
