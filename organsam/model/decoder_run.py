"""SAM's mask decoder run with extra output tokens, exposing its intermediate outputs (the designs' shared
decoder step)."""

from __future__ import annotations

import torch
from torch import Tensor

from organsam.model.design_types import DecoderRun
from organsam.model.sam_core import EMBED_DIM, EMBED_SIZE, SamCore

__all__ = ["run_mask_decoder"]


def run_mask_decoder(
    core: SamCore,
    embedding: Tensor,
    sparse: Tensor,
    dense: Tensor,
    extra_tokens: Tensor | None = None,
    sam_tokens: bool = True,
    upscale: bool = True,
    listen_only: bool = False,
) -> DecoderRun:
    """Run SAM's mask decoder with optional extra output tokens and access to its intermediate outputs.

    Token order: [IoU token, 4 mask tokens] (if ``sam_tokens``), ``extra_tokens``, ``sparse``. Without
    extra tokens this is exactly ``core.decode``'s single-mask output.

    Args:
        core: the SAM core whose mask decoder runs.
        embedding: (P, 256, 64, 64) or (1, 256, 64, 64) image embedding.
        sparse: (P, T, 256) sparse prompt embeddings (from ``core.embed_prompts``).
        dense: (P, 256, 64, 64) dense prompt embeddings.
        extra_tokens: (P, E, 256) extra output tokens, or None.
        sam_tokens: include SAM's IoU and mask tokens (and compute the single-mask output).
        upscale: compute the upscaled pixel features and the SAM mask.
        listen_only: the extra tokens read the other tokens and the image but nothing attends to them (see
            :mod:`organsam.model.components.two_way_transformer`): SAM's own outputs stay exactly as without them.

    Returns:
        :class:`DecoderRun`.
    """
    dec = core.mask_decoder
    P = sparse.shape[0]
    dtype = sparse.dtype
    parts: list[Tensor] = []
    if sam_tokens:
        out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        parts.append(out_tokens.unsqueeze(0).expand(P, -1, -1).to(dtype))
    n_extra = 0
    if extra_tokens is not None:
        if extra_tokens.ndim != 3 or extra_tokens.shape[0] != P or extra_tokens.shape[2] != EMBED_DIM:
            raise ValueError(f"extra_tokens must be (P={P}, E, {EMBED_DIM}), got {tuple(extra_tokens.shape)}")
        n_extra = extra_tokens.shape[1]
        parts.append(extra_tokens.to(dtype))
    parts.append(sparse)
    tokens = torch.cat(parts, dim=1)
    if embedding.shape[0] not in (1, P) or tuple(embedding.shape[1:]) != (EMBED_DIM, EMBED_SIZE, EMBED_SIZE):
        raise ValueError(
            f"embedding must be (P={P} or 1, {EMBED_DIM}, {EMBED_SIZE}, {EMBED_SIZE}), got {tuple(embedding.shape)}"
        )
    src = embedding.expand(P, -1, -1, -1) + dense
    pos = core.get_dense_pe().expand(P, -1, -1, -1)
    b, c, h, w = src.shape
    flags = None
    if listen_only and n_extra:
        n0 = 1 + dec.num_mask_tokens if sam_tokens else 0
        flags = torch.zeros(tokens.shape[1], dtype=torch.bool, device=tokens.device)
        flags[n0 : n0 + n_extra] = True
        if bool(flags.all()):
            raise ValueError("listen_only extra tokens need other tokens to attend to (SAM's tokens or prompts)")
    hs, img = dec.transformer(src, pos, tokens, listen_only=flags)
    run = DecoderRun(image_tokens=img.transpose(1, 2).reshape(b, c, h, w))
    n0 = 1 + dec.num_mask_tokens if sam_tokens else 0
    if n_extra:
        run.extra = hs[:, n0 : n0 + n_extra]
    if sam_tokens:
        run.mask_token = hs[:, 1]
        run.iou = dec.iou_prediction_head(hs[:, 0])[:, :1]
        if upscale:
            up = dec.output_upscaling(run.image_tokens)
            run.upscaled = up
            weights = dec.output_hypernetworks_mlps[0](run.mask_token).unsqueeze(1)
            bu, cu, hu, wu = up.shape
            run.masks = (weights @ up.reshape(bu, cu, hu * wu)).reshape(bu, 1, hu, wu)
    return run
