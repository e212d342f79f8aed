"""An inference-only copy of the TinyViT image encoder, rearranged for speed on CPU (and GPU).

:class:`FastImageEncoder` computes the same ``(B, 256, 64, 64)`` embedding as
``SamCore.encode(images, keep_levels=False).embedding`` from the same weights, but:

- every convolution + batch norm pair is folded into one convolution with a bias (eval-mode batch norm
  is an affine map per channel, so this is exact up to float rounding);
- the convolutional stages run in the channels-last memory layout, which is the layout the attention
  stages already use, so no layout copies happen between stages; 1x1 convolutions are plain matrix
  products over the channels;
- the relative-position attention biases are expanded once into dense ``(heads, N, N)`` tables (added by
  ``baddbmm``, no masked-softmax bookkeeping);
- GELUs run in place, and on CPU the 256x256 MBConv blocks run in strips of rows, so that their 64 MB
  hidden activations are never allocated whole (each fresh large allocation is paged in by the kernel:
  ~15% of the encoder's CPU time);
- optionally (``precision="bf16"``) matrix products and convolutions run in bfloat16 (autocast), and
  optionally (``quantize=True``, CPU only) the linear layers of the attention stages run as dynamic int8.

With ``precision="fp32"`` and ``quantize=False`` the result matches the reference encoder to float32
rounding (relative difference ~4e-6 on the embedding, identical golden-protocol Dice) at about 1.8x its
speed on a 2-core AVX512 CPU; ``precision="bf16"`` is about 5x (Dice within 0.005 on the eight large organs
of the golden protocol, up to 0.03 on the adrenal glands); ``quantize=True`` loses up to 0.1 Dice and is
kept only for measurement. See ``bench/encoder_speed.py``.

The copy is made once from the core's weights: if those weights change afterwards (training), build a new
one. Example::

    fast = FastImageEncoder(core.image_encoder)
    embedding = fast(images)          # (B, 3, 256, 256) in [0, 1] -> (B, 256, 64, 64) float32
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
from torch import nn

from organsam.model.components.blocks import Conv2dBN
from organsam.model.components.image_encoder import AttentionStage, ConvStage, TinyViT, TinyViTBlock

logger = logging.getLogger(__name__)

__all__ = ["FastImageEncoder", "fold_conv_bn", "bf16_is_fast", "PRECISIONS"]

PRECISIONS = ("fp32", "bf16")
"""Supported compute precisions of :class:`FastImageEncoder`."""


def bf16_is_fast(device: str | torch.device) -> bool:
    """Whether bfloat16 matrix products run natively on ``device`` (CUDA, or a CPU with AVX512-BF16/AMX
    that oneDNN uses); elsewhere bf16 is emulated and slower than float32."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return True
    if dev.type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def fold_conv_bn(block: Conv2dBN) -> nn.Conv2d:
    """One convolution (with bias) equal to ``block`` in eval mode (batch norm folded into the weights).

    Args:
        block: a bias-free convolution followed by batch normalisation.

    Returns:
        An ``nn.Conv2d`` with the same geometry, weight ``w * g / sqrt(var + eps)`` and bias
        ``b - mean * g / sqrt(var + eps)``.
    """
    conv, bn = block.c, block.bn
    scale = bn.weight.detach() / torch.sqrt(bn.running_var.detach() + bn.eps)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
    )
    with torch.no_grad():
        w = conv.weight.detach().double() * scale.double().view(-1, 1, 1, 1)
        fused.weight.copy_(w.to(conv.weight.dtype))
        fused.bias.copy_(
            (bn.bias.detach().double() - bn.running_mean.detach().double() * scale.double()).to(conv.weight.dtype)
        )
    return fused.to(conv.weight.device)


class _PointwiseConv(nn.Module):
    """A 1x1 convolution computed as a matrix product over the channels of a channels-last tensor.

    PyTorch sends float32 channels-last 1x1 convolutions on CPU to its slow im2col path; a plain GEMM on the
    (B*H*W, C) view is as exact and copies nothing.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach().flatten(1).clone(), requires_grad=False)  # (O, I)
        self.bias = nn.Parameter(conv.bias.detach().clone(), requires_grad=False) if conv.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, I, H, W) -> (B, O, H, W), channels-last when the input is."""
        return F.linear(x.permute(0, 2, 3, 1), self.weight, self.bias).permute(0, 3, 1, 2)


def _is_pointwise(conv: nn.Conv2d) -> bool:
    return (
        tuple(conv.kernel_size) == (1, 1)
        and tuple(conv.stride) == (1, 1)
        and conv.groups == 1
        and tuple(conv.padding) == (0, 0)
    )


def _fold_all(module: nn.Module, pointwise_as_linear: bool) -> None:
    """Replace every :class:`Conv2dBN` below ``module`` by its folded convolution (and, optionally, every 1x1
    convolution by a :class:`_PointwiseConv`), in place."""
    for name, child in list(module.named_children()):
        if isinstance(child, Conv2dBN):
            child = fold_conv_bn(child)
            setattr(module, name, child)
        if isinstance(child, nn.Conv2d):
            if pointwise_as_linear and _is_pointwise(child):
                setattr(module, name, _PointwiseConv(child))
        else:
            _fold_all(child, pointwise_as_linear)


class _DenseBiasAttention(nn.Module):
    """Window attention with its relative-position bias table expanded once to (heads, N, N).

    Same parameters and result as :class:`organsam.model.components.image_encoder.WindowAttention`.
    """

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.num_heads = attn.num_heads
        self.head_dim = attn.head_dim
        self.norm = attn.norm
        self.qkv = attn.qkv
        self.proj = attn.proj
        with torch.no_grad():
            bias = attn.attention_biases[:, attn.bias_index].detach().clone()
        self.register_buffer("bias", bias, persistent=False)  # (heads, N, N)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, dim) tokens of B windows -> (B, N, dim)."""
        B, N, _ = x.shape
        x = self.norm(x)
        qkv = self.qkv(x).view(B, N, self.num_heads, 3, self.head_dim).permute(3, 0, 2, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, heads, N, head_dim)
        h = self.num_heads
        scores = torch.baddbmm(
            self.bias.to(q.dtype).repeat(B, 1, 1),
            q.reshape(B * h, N, -1),
            k.reshape(B * h, N, -1).transpose(1, 2),
            alpha=self.head_dim**-0.5,
        )
        out = torch.bmm(scores.softmax(dim=-1), v.reshape(B * h, N, -1)).view(B, h, N, -1)
        return self.proj(out.transpose(1, 2).reshape(B, N, -1))


_gelu_ = torch._C._nn.gelu_  # in-place exact (erf) GELU, as F.gelu


def _mbconv(blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """:class:`MBConv` forward with in-place activations."""
    y = _gelu_(blk.conv1(x))
    y = _gelu_(blk.conv2(y))
    y = blk.conv3(y)
    y += x
    return _gelu_(y)


def _mbconv_strips(blk: nn.Module, x: torch.Tensor, rows: int) -> torch.Tensor:
    """:class:`MBConv` forward computed in horizontal strips of ``rows`` output rows (exact).

    The block's only spatial operation is a 3x3 depth-wise convolution, so each strip needs one extra input
    row above and below (recomputed, then dropped). The 4x wide hidden activation then exists one strip at
    a time (a few MB, reused from the heap) instead of as one 64 MB tensor per image that the kernel must
    page in afresh on every call; on a 2-core CPU this saves about a fifth of the encoder's time.
    """
    height = x.shape[2]
    if height <= rows:
        return _mbconv(blk, x)
    out = torch.empty_like(x)
    for r0 in range(0, height, rows):
        r1 = min(r0 + rows, height)
        a, b = max(r0 - 1, 0), min(r1 + 1, height)
        y = _gelu_(blk.conv1(x[:, :, a:b]))
        y = _gelu_(blk.conv2(y))[:, :, r0 - a : r1 - a]
        y = blk.conv3(y)
        y += x[:, :, r0:r1]
        out[:, :, r0:r1] = _gelu_(y)
    return out


def _patch_merging(pm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """:class:`PatchMerging` forward with in-place activations."""
    x = _gelu_(pm.conv1(x))
    x = _gelu_(pm.conv2(x))
    return pm.conv3(x)


def _tinyvit_block(blk: TinyViTBlock, x: torch.Tensor) -> torch.Tensor:
    """:class:`TinyViTBlock` forward on (B, H, W, C) with the MLP activation in place."""
    x = x + blk.windowed_attention(x)
    x = blk.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    mlp = blk.mlp
    h = _gelu_(mlp.fc1(mlp.norm(x)))
    out = mlp.fc2(h)
    out += x
    return out


class FastImageEncoder(nn.Module):
    """Inference copy of a :class:`TinyViT` encoder with folded batch norms and channels-last stages.

    Args:
        encoder: the reference encoder (``SamCore.image_encoder``); it is deep-copied, not modified.
        precision: ``"fp32"`` (default, matches the reference to float rounding) or ``"bf16"`` (autocast
            matrix products/convolutions to bfloat16: about twice as fast on CPUs with AVX512-BF16 or AMX and
            on GPUs, slightly different masks).
        quantize: run the linear layers of the attention stages as dynamic int8 (CPU only; approximate).
        channels_last: run convolutions in the channels-last layout (faster with oneDNN on CPU and on GPU).

    Attributes:
        strip_rows: rows per strip of the 256x256 MBConv blocks on CPU (divided by the batch size, at least
            4; 0 = whole images). Strips do not change the result.

    Raises:
        ValueError: unknown precision, or ``encoder`` is not a TinyViT.
    """

    def __init__(
        self, encoder: TinyViT, precision: str = "fp32", quantize: bool = False, channels_last: bool = True
    ) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if not isinstance(encoder, TinyViT):
            raise ValueError(f"FastImageEncoder needs a TinyViT image encoder, got {type(encoder).__name__}")
        self._in_channels = int(encoder.patch_embed.seq[0].c.in_channels)
        enc = copy.deepcopy(encoder).eval()
        _fold_all(enc, pointwise_as_linear=channels_last)
        for m in enc.modules():
            if isinstance(m, TinyViTBlock):
                m.attn = _DenseBiasAttention(m.attn)
        for p in enc.parameters():
            p.requires_grad_(False)
        self.encoder = enc
        self.precision = precision
        self.channels_last = bool(channels_last)
        self.quantized = False
        self.strip_rows = 16
        if channels_last:
            self.encoder.to(memory_format=torch.channels_last)
        if quantize:
            self._quantize()

    def _quantize(self) -> None:
        """Dynamic int8 quantisation of the attention stages' linear layers (CPU)."""
        from torch.ao.quantization import quantize_dynamic

        for layer in self.encoder.layers:
            if isinstance(layer, AttentionStage):
                layer.blocks = quantize_dynamic(layer.blocks, {nn.Linear}, dtype=torch.qint8)
        self.quantized = True

    @property
    def in_channels(self) -> int:
        """Image channels the encoder takes (3)."""
        return self._in_channels

    def _stages(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 256, 256) -> (B, 256, 64, 64); same operations as ``TinyViT.forward_features``, with the
        GELUs applied in place (fewer large allocations: each fresh 64 MB activation costs page faults)."""
        enc = self.encoder
        x = enc.patch_embed(x)
        for layer in enc.layers:
            if isinstance(layer, ConvStage):
                rows = x.shape[2]
                if self.strip_rows and x.device.type == "cpu":
                    rows = max(4, self.strip_rows // x.shape[0])
                for blk in layer.blocks:
                    x = _mbconv_strips(blk, x, rows)
            else:
                # channels-last NCHW <-> BHWC are free views; the reference makes a contiguous NCHW copy here.
                h = x.permute(0, 2, 3, 1)
                if not h.is_contiguous():
                    h = h.contiguous()
                for blk in layer.blocks:
                    h = _tinyvit_block(blk, h)
                x = h.permute(0, 3, 1, 2)
            if layer.downsample is not None:
                x = _patch_merging(layer.downsample, x)
        return enc.neck(x)

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Encode model-input images.

        Args:
            images: (B, 3, 256, 256) float in [0, 1] (see ``organsam.preprocessing.slices``).

        Returns:
            (B, 256, 64, 64) float32 embedding (contiguous).
        """
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"FastImageEncoder expects images (B, {self.in_channels}, H, W), got shape {tuple(images.shape)}"
            )
        x = images.float()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            emb = self._stages(x)
        return emb.float().contiguous()
