"""TinyViT image encoder in the LiteMedSAM configuration (256x256 input, 256x64x64 embedding).

Layout for a (B, 3, 256, 256) input (``embed_dims`` [64, 128, 160, 320]):

======  ======================  ==========================  ===========================
stage   blocks                  level feature (B, C, H, W)  then
======  ======================  ==========================  ===========================
stem    1x1 conv-BN, GELU, 1x1  (B, 64, 256, 256)           -
0       2 MBConv                (B, 64, 256, 256)           patch merging, stride 2
1       2 windowed attention 7  (B, 128, 128, 128)          patch merging, stride 2
2       6 windowed attention 14 (B, 160, 64, 64)            patch merging, stride 1
3       2 windowed attention 7  (B, 320, 64, 64)            neck -> (B, 256, 64, 64)
======  ======================  ==========================  ===========================

The neck is conv1x1 (320->256), LayerNorm2d, conv3x3, LayerNorm2d. No mean/std normalisation happens in the
model: LiteMedSAM takes images min-max scaled to [0, 1] (the checkpoint holds no pixel mean/std buffers).

Each level (a stage's output before its patch merging) is returned in :class:`EncoderOutput` and can be
modified on the way by a ``level_residual_fn(level_index, feature) -> feature`` hook, which lets a design
inject residuals (e.g. text-conditioned features) into the encoder without changing its weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from organsam.model.components.blocks import Conv2dBN, LayerNorm2d

__all__ = [
    "EncoderOutput",
    "LevelResidualFn",
    "TinyViT",
    "MBConv",
    "PatchMerging",
    "WindowAttention",
    "TinyViTBlock",
    "ConvStage",
    "AttentionStage",
]

LevelResidualFn = Callable[[int, torch.Tensor], torch.Tensor]
"""``fn(level_index, feature (B, C, H, W)) -> feature (B, C, H, W)`` applied to each level's output."""


@dataclass
class EncoderOutput:
    """What the image encoder returns.

    Attributes:
        embedding: (B, 256, 64, 64) image embedding for the mask decoder.
        levels: per-stage feature maps (after the level hook), for a 256x256 input:
            [(B, 64, 256, 256), (B, 128, 128, 128), (B, 160, 64, 64), (B, 320, 64, 64)].
            Empty when the encoder was asked not to keep them.
    """

    embedding: torch.Tensor
    levels: list[torch.Tensor] = field(default_factory=list)

    def expand(self, batch: int) -> EncoderOutput:
        """Broadcast a batch-1 output to ``batch`` (views, no copy); a batch-``batch`` one passes through."""
        n = self.embedding.shape[0]
        if n == batch:
            return self
        if n != 1:
            raise ValueError(f"encoded features have batch {n}; expected 1 or {batch} (one per organ prompt)")
        return EncoderOutput(
            self.embedding.expand(batch, -1, -1, -1), [lv.expand(batch, -1, -1, -1) for lv in self.levels]
        )

    def select(self, index: int) -> EncoderOutput:
        """The batch-1 output of image ``index``."""
        return EncoderOutput(self.embedding[index : index + 1], [lv[index : index + 1] for lv in self.levels])


class PatchEmbed(nn.Module):
    """Stem: two 1x1 conv-BN layers with GELU between, (B, 3, H, W) -> (B, C, H, W) (no downsampling)."""

    def __init__(self, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            Conv2dBN(in_channels, embed_dim // 2, 1, 1, 0),
            nn.GELU(),
            Conv2dBN(embed_dim // 2, embed_dim, 1, 1, 0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, embed_dim, H, W)."""
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, 3x3 depth-wise, 1x1 project, residual, GELU.

    Args:
        channels: input and output channels.
        expand_ratio: hidden channels = ``channels * expand_ratio``.
    """

    def __init__(self, channels: int, expand_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(channels * expand_ratio)
        self.conv1 = Conv2dBN(channels, hidden, 1)
        self.conv2 = Conv2dBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.conv3 = Conv2dBN(hidden, channels, 1, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        y = F.gelu(self.conv1(x))
        y = F.gelu(self.conv2(y))
        y = self.conv3(y)
        return F.gelu(x + y)


class PatchMerging(nn.Module):
    """Downsampling between stages: 1x1 conv-BN, GELU, depth-wise 3x3 conv-BN (stride 1 or 2), GELU, 1x1.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: spatial stride of the depth-wise convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = Conv2dBN(in_channels, out_channels, 1)
        self.conv2 = Conv2dBN(out_channels, out_channels, 3, stride, 1, groups=out_channels)
        self.conv3 = Conv2dBN(out_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H / stride, W / stride)."""
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x))
        return self.conv3(x)


def _relative_offset_index(window: int) -> torch.Tensor:
    """(N, N) index into a table of per-offset biases, N = window**2, for tokens in row-major order.

    The offset (|d_row|, |d_col|) between two tokens maps to ``|d_row| * window + |d_col|``.
    """
    r = torch.arange(window).repeat_interleave(window)
    c = torch.arange(window).repeat(window)
    return (r[:, None] - r[None, :]).abs() * window + (c[:, None] - c[None, :]).abs()


class WindowAttention(nn.Module):
    """Multi-head self-attention inside one window, with pre-norm and learned relative-offset biases.

    Args:
        dim: token features.
        num_heads: attention heads; each head has ``dim // num_heads`` features.
        window: window side (tokens per window = window**2).
    """

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        self.register_buffer("bias_index", _relative_offset_index(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, dim) tokens of B windows -> (B, N, dim)."""
        B, N, _ = x.shape
        x = self.norm(x)
        # The checkpoint's qkv projection is laid out per head: [q_h, k_h, v_h] for each head h.
        qkv = self.qkv(x).view(B, N, self.num_heads, 3, self.head_dim).permute(3, 0, 2, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        bias = self.attention_biases[:, self.bias_index].to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(B, N, -1))


class _FeedForward(nn.Module):
    """Pre-norm MLP: LayerNorm, fc1, GELU, fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention (residual), depth-wise 3x3 local conv-BN, MLP (residual).

    Windows are taken on a grid anchored at the top-left; the feature map is zero-padded at the bottom and
    right to a multiple of the window size and the padding is dropped again after attention.

    Args:
        dim: channels.
        num_heads: attention heads.
        window: window side.
        mlp_ratio: MLP hidden width / dim.
    """

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.local_conv = Conv2dBN(dim, dim, 3, 1, 1, groups=dim)
        self.mlp = _FeedForward(dim, int(dim * mlp_ratio))

    def windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        B, H, W, C = x.shape
        ws = self.window
        pad_h, pad_w = (-H) % ws, (-W) % ws
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        Hp, Wp = H + pad_h, W + pad_w
        nh, nw = Hp // ws, Wp // ws
        win = x.view(B, nh, ws, nw, ws, C).transpose(2, 3).reshape(B * nh * nw, ws * ws, C)
        win = self.attn(win)
        x = win.view(B, nh, nw, ws, ws, C).transpose(2, 3).reshape(B, Hp, Wp, C)
        return x[:, :H, :W]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) channels-last -> (B, H, W, C)."""
        x = x + self.windowed_attention(x)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    """First stage: MBConv blocks (no attention) then an optional patch merging.

    Args:
        dim: channels.
        depth: number of MBConv blocks.
        expand_ratio: MBConv expansion.
        downsample: patch merging applied after the blocks, or ``None``.
    """

    def __init__(self, dim: int, depth: int, expand_ratio: float, downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W) after the blocks (before patch merging)."""
        for blk in self.blocks:
            x = blk(x)
        return x


class AttentionStage(nn.Module):
    """Attention stage: TinyViT blocks then an optional patch merging.

    Args:
        dim: channels.
        depth: number of blocks.
        num_heads: attention heads.
        window: attention window side.
        mlp_ratio: MLP hidden width / dim.
        downsample: patch merging applied after the blocks, or ``None``.
    """

    def __init__(
        self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float, downsample: PatchMerging | None
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TinyViTBlock(dim, num_heads, window, mlp_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W) after the blocks (before patch merging)."""
        x = x.permute(0, 2, 3, 1)
        for blk in self.blocks:
            x = blk(x)
        return x.permute(0, 3, 1, 2).contiguous()


class TinyViT(nn.Module):
    """TinyViT-5M image encoder with the SAM neck, as used by LiteMedSAM.

    Args:
        in_channels: image channels (3: the grey slice replicated).
        embed_dims: channels per stage.
        depths: blocks per stage.
        num_heads: attention heads per stage (stage 0 is convolutional; its entry is unused).
        window_sizes: attention window per stage (stage 0 unused).
        mlp_ratio: MLP width ratio in attention blocks.
        mbconv_expand_ratio: expansion of the MBConv blocks.
        out_channels: channels of the output embedding.
    """

    def __init__(
        self,
        in_channels: int = 3,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        out_channels: int = 256,
    ) -> None:
        super().__init__()
        n = len(embed_dims)
        self.embed_dims = list(embed_dims)
        self.patch_embed = PatchEmbed(in_channels, embed_dims[0])
        layers: list[nn.Module] = []
        for i in range(n):
            down = None
            if i < n - 1:
                # The last merging keeps the 64x64 resolution (as in MobileSAM/LiteMedSAM).
                stride = 1 if i == n - 2 else 2
                down = PatchMerging(embed_dims[i], embed_dims[i + 1], stride)
            if i == 0:
                layers.append(ConvStage(embed_dims[0], depths[0], mbconv_expand_ratio, down))
            else:
                layers.append(AttentionStage(embed_dims[i], depths[i], num_heads[i], window_sizes[i], mlp_ratio, down))
        self.layers = nn.ModuleList(layers)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_channels, kernel_size=1, bias=False),
            LayerNorm2d(out_channels),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_channels),
        )

    def forward_features(
        self, x: torch.Tensor, level_residual_fn: LevelResidualFn | None = None, keep_levels: bool = True
    ) -> EncoderOutput:
        """Encode images and return the embedding together with every stage's feature map.

        Args:
            x: (B, 3, 256, 256) images in [0, 1].
            level_residual_fn: optional ``fn(level_index, feature) -> feature`` applied to each stage's
                output (B, C_i, H_i, W_i) before patch merging; what it returns continues through the
                encoder (e.g. ``feature + residual``) and is what ``levels`` holds.
            keep_levels: keep the per-stage feature maps in the output (they hold ~20 MB per image).

        Returns:
            :class:`EncoderOutput` with ``embedding`` (B, 256, 64, 64) and ``levels`` (see the module
            docstring for their shapes).
        """
        if x.ndim != 4 or x.shape[1] != self.patch_embed.seq[0].c.in_channels:
            raise ValueError(f"TinyViT expects images (B, 3, H, W), got shape {tuple(x.shape)}")
        x = self.patch_embed(x)
        levels: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            x = layer.forward_blocks(x)
            if level_residual_fn is not None:
                x = level_residual_fn(i, x)
            if keep_levels:
                levels.append(x)
            if layer.downsample is not None:
                x = layer.downsample(x)
        return EncoderOutput(embedding=self.neck(x), levels=levels)

    def forward(self, x: torch.Tensor, level_residual_fn: LevelResidualFn | None = None) -> torch.Tensor:
        """(B, 3, 256, 256) images in [0, 1] -> (B, 256, 64, 64) embedding."""
        return self.forward_features(x, level_residual_fn, keep_levels=False).embedding
