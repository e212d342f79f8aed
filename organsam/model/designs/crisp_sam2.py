"""CRISP-SAM2 design: text injected into the image encoder, semantic prompts, refinement token, sorted memory.

Composition on the LiteMedSAM core of CRISP-SAM2 (ACM MM 2025, arXiv:2506.23121):

1. **Progressive cross-modal interaction** (:class:`CrossModalAttention`): the encoder's stage-2 features
   (B, 160, 64, 64), projected to 256 channels, interact with the organ's text tokens (its prompt text
   and knowledge sentences, MiniLM embeddings projected to 256) in two levels, giving the semantics
   S (B, 256, 64, 64).
2. **Injection into the encoder** (:class:`FeatureInjection`): a shared MLP plus one MLP per level add S
   into stage 2's output, stage 3's output and the neck output (the image embedding), through the
   encoder's level hook, in one encoder pass (stages 0-1 run before S exists and are not injected).
   The frozen encoder therefore passes gradients to the injection MLPs.
3. **Semantic prompt encoder**: dense (B, 256, 64, 64) and sparse (B, 4, 256) prompt embeddings from S,
   the embedding and the text; boxes/points, when given, are added through SAM's prompt encoder.
4. **Refinement token** (:class:`MaskRefinement`) and a **presence token** go through SAM's decoder with its
   own tokens; ``masks = sam_mask + refinement``; ``presence_logit`` from the presence token.
5. **Memory** (:class:`~organsam.model.slice_memory.SliceMemory`): a memory encoder, memory attention and a
   similarity-sorted memory bank (CRISP-SAM2's self-updating policy) condition each slice's embedding on the
   earlier slices, in training sequences and over a whole volume at inference.

6. **Location** (``guide_aligner``, on in the preset; this project's addition): CRISP-SAM2's semantics say what the
   organ is, not where: with text alone the first shipped checkpoint drew almost nothing (mean Dice 8.7 on held-out
   AMOS 0013). PG-SAM's prior aligner (:class:`PriorAligner`, with its position code and context convolutions) reads
   the plain image embedding once per slice and gives every organ a guide map; with text alone
   (``locate_with_guide``) the prompted organ's map is the first pass, and the box round (``text_box_rounds``)
   decodes the organ from a box around its largest piece (:mod:`organsam.model.guide_location`).

Loss: ``0.5 * (20 focal + Dice)(SAM mask) + 0.5 * (20 focal + Dice)(refined) + 0.1 * L1(IoU)
+ 0.1 * BCE(presence)``, plus ``weight_guide * (0.2 BCE + 0.8 Dice)`` of the guide at 64x64 over every organ the
slice's dataset labels (the design then reads ``all_targets``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from organsam.model import losses
from organsam.model.base import DesignOutput, OrganSegmenter, SegmenterConfig
from organsam.model.components.blocks import MLP, LayerNorm2d
from organsam.model.components.cross_modal_attention import CrossModalAttention
from organsam.model.components.feature_injection import FeatureInjection
from organsam.model.components.image_encoder import EncoderOutput
from organsam.model.components.memory_attention import MemoryAttention
from organsam.model.components.memory_bank import POLICIES, MemorySelection
from organsam.model.components.memory_encoder import MemoryEncoder
from organsam.model.components.prior_aligner import PriorAligner
from organsam.model.components.refinement import MaskRefinement
from organsam.model.components.semantic_prompt_encoder import SemanticPromptEncoder
from organsam.model.components.text_cache import VocabularyEmbeddings
from organsam.model.components.text_projection import TextProjection
from organsam.model.decoder_run import run_mask_decoder
from organsam.model.design_checks import check_targets
from organsam.model.guide_location import guide_first_pass, guide_loss
from organsam.model.sam_core import EMBED_DIM
from organsam.model.slice_memory import SliceMemory
from organsam.registry import register_design

logger = logging.getLogger(__name__)

__all__ = ["CrispSam2Config", "CrispSam2", "build_crisp_sam2"]

SOURCE_LEVEL = 2
"""Encoder level whose output the cross-modal interaction reads (TinyViT stage 2, (B, 160, 64, 64))."""
NECK = 4
"""Key of the neck output (the image embedding) among the injection targets."""


@dataclass
class CrispSam2Config(SegmenterConfig):
    """CRISP-SAM2 settings (preset: ``organsam/configs/crisp_sam2.yaml``).

    Attributes:
        heads: attention heads of the cross-modal and prompt modules.
        cross_pool: pooling of the 64x64 grid inside the cross-modal attention.
        mlp_ratio: fusion MLP width ratio.
        inject_levels: encoder levels injected (subset of 2, 3) in addition to the neck.
        inject_neck: also add the semantics to the image embedding (neck output).
        injection_hidden: width of the shared injection MLP.
        injection_init: initial gain of the injected residuals.
        num_sparse_tokens: sparse prompt tokens from the semantic prompt encoder.
        memory_slices: capacity of the memory bank.
        memory_policy: ``"similarity"`` (CRISP-SAM2) or ``"recent"`` (SAM2).
        memory_dim: channels of the memory features.
        memory_layers: memory-attention layers.
        weight_sam_mask: loss weight of the SAM mask term.
        weight_refined: loss weight of the refined mask term.
        weight_iou: loss weight of the IoU L1 term.
        weight_presence: loss weight of the presence BCE term.
        focal_weight: focal part of the focal:Dice mask loss.
        dice_weight: Dice part of the focal:Dice mask loss.
        guide_aligner: locate organs with a prior aligner over the plain image embedding (off: as CRISP-SAM2 and
            the checkpoints before it).
        align_dim: text-image alignment space of the aligner.
        aligner_context_layers: the aligner's position code and residual dilated convolutions (0: per pixel).
        weight_guide: loss weight of the guide.
        locate_with_guide: at inference with text alone, the first pass's mask is the organ's guide map and the
            presence its highest logit, so the box round decodes the organ from a box around the map's largest
            piece; off: the decoder's text-alone mask.
    """

    heads: int = 8
    cross_pool: int = 2
    mlp_ratio: float = 2.0
    inject_levels: tuple[int, ...] = (2, 3)
    inject_neck: bool = True
    injection_hidden: int = 256
    injection_init: float = 0.01
    num_sparse_tokens: int = 4
    memory_slices: int = 7
    memory_policy: str = "similarity"
    memory_dim: int = 64
    memory_layers: int = 2
    weight_sam_mask: float = 0.5
    weight_refined: float = 0.5
    weight_iou: float = 0.1
    weight_presence: float = 0.1
    focal_weight: float = 20.0
    dice_weight: float = 1.0
    guide_aligner: bool = False
    align_dim: int = 128
    aligner_context_layers: int = 4
    weight_guide: float = 1.0
    locate_with_guide: bool = False


class _TextConditioned(NamedTuple):
    embedding: Tensor  # (B, 256, 64, 64) text-injected image embedding
    semantics: Tensor  # (B, 256, 64, 64) cross-modal semantics
    text: Tensor  # (B, L, 256) image-aware text tokens
    text_mask: Tensor  # (B, L) bool
    guide: Tensor | None  # (B, K, 64, 64) every organ's guide logits on the image of row b (guide_aligner)
    guide_mask: Tensor | None  # (B, 1, 64, 64) the prompted organ's guide logits


class CrispSam2(SliceMemory, OrganSegmenter):
    """CRISP-SAM2 on the LiteMedSAM core; see the module docstring.

    Args:
        config: :class:`CrispSam2Config`.
        text: ready vocabulary embeddings (default: from the config).
    """

    design_name = "crisp_sam2"
    encoder_levels = (SOURCE_LEVEL,)

    def __init__(self, config: CrispSam2Config, text: VocabularyEmbeddings | None = None) -> None:
        super().__init__(config, text)
        bad = [lv for lv in config.inject_levels if lv not in (2, 3)]
        if bad:
            raise ValueError(
                f"crisp_sam2 inject_levels must be a subset of (2, 3) (levels computed after the "
                f"semantics, which come from level {SOURCE_LEVEL}), got {list(config.inject_levels)}"
            )
        if config.memory_policy not in POLICIES:
            raise ValueError(f"crisp_sam2 memory_policy must be one of {POLICIES}, got {config.memory_policy!r}")
        dim = EMBED_DIM
        level_ch = self.core.image_encoder.embed_dims
        self.text_proj = TextProjection(self.text_dim, dim)
        self.text_type = nn.Embedding(2, dim)  # 0: organ name prompt, 1: knowledge sentence
        self.visual_proj = nn.Sequential(nn.Conv2d(level_ch[SOURCE_LEVEL], dim, 1), LayerNorm2d(dim))
        self.cross = CrossModalAttention(dim, config.heads, config.mlp_ratio, config.cross_pool)
        targets = {lv: level_ch[lv] for lv in config.inject_levels}
        if config.inject_neck:
            targets[NECK] = dim
        if not targets:
            raise ValueError("crisp_sam2 needs at least one injection target (inject_levels or inject_neck)")
        self.injection = FeatureInjection(dim, targets, config.injection_hidden, config.injection_init)
        self.prompt_encoder = SemanticPromptEncoder(dim, config.heads, config.num_sparse_tokens)
        self.refinement = MaskRefinement(dim)
        self.presence_token = nn.Embedding(1, dim)
        nn.init.normal_(self.presence_token.weight, std=0.1)  # SAM's output tokens have norm ~2
        self.presence_head = MLP(dim, dim, 1, 3)
        self.aligner = None
        if config.guide_aligner:
            context = config.aligner_context_layers  # the guide locates organs; the decoder reads no guided embedding
            self.aligner = PriorAligner(
                self.text_dim, dim, config.align_dim, context_layers=context, guide_embedding=False
            )
        self.memory_encoder = MemoryEncoder(dim, config.memory_dim)
        self.memory_attention = MemoryAttention(dim, config.memory_dim, layers=config.memory_layers, heads=config.heads)
        self._finish_init()

    @property
    def uses_all_targets(self) -> bool:  # type: ignore[override]
        """With the guide aligner, every organ's map of each slice is supervised."""
        return self.aligner is not None

    # ------------------------------------------------------------------ text + encoder
    def _text_tokens(self, organ_index: Tensor) -> tuple[Tensor, Tensor]:
        names, know, know_mask = self.organ_text(organ_index)
        tokens = torch.cat(
            [
                self.text_proj(names).squeeze(-2).unsqueeze(1) + self.text_type.weight[0],
                self.text_proj(know).squeeze(-2) + self.text_type.weight[1],
            ],
            dim=1,
        )
        mask = torch.cat([know_mask.new_ones(know_mask.shape[0], 1), know_mask], dim=1)
        return tokens, mask

    def encode_text_conditioned(
        self, images: Tensor | None, encoded: EncoderOutput | None, organ_index: Tensor
    ) -> _TextConditioned:
        """Encode with the organ's semantics injected into the encoder.

        With ``images`` of batch B (one per organ) and no guide aligner, one encoder pass with the level hook.
        Otherwise the plain features (``encoded``, or ``encode_plain(images)``) are resumed from level 2: the
        injected level 2 goes again through stage 3 and the neck (identical result); the guide aligner reads their
        plain embedding.

        Returns:
            embedding, semantics, text tokens and text mask, all with batch B = len(organ_index).
        """
        B = organ_index.shape[0]
        text, text_mask = self._text_tokens(organ_index)
        state: dict[str, Tensor] = {}
        inject = set(self.config.inject_levels)

        def hook(level: int, x: Tensor) -> Tensor:
            if level == SOURCE_LEVEL:
                sem, t = self.cross(self.visual_proj(x), text.to(x.dtype), text_mask)
                state["semantics"], state["text"] = sem, t
                state["shared"] = self.injection.shared_features(sem)
            if level in inject and "shared" in state:
                x = x + self.injection.residual(level, state["shared"], x.shape[-2:]).to(x.dtype)
            return x

        if encoded is None and images is not None and images.shape[0] == B and self.aligner is None:
            self._check_images(images)
            emb = self.core.encode(images, level_residual_fn=hook, keep_levels=False).embedding
        else:
            if encoded is None:
                encoded = self.encode_plain(images)
            if len(encoded.levels) <= SOURCE_LEVEL:
                raise ValueError("crisp_sam2 needs the encoder levels: pass encoded=model.encode_plain(images)")
            enc = self.core.image_encoder
            x = encoded.expand(B).levels[SOURCE_LEVEL]
            x = hook(SOURCE_LEVEL, x)
            for i in range(SOURCE_LEVEL, len(enc.layers)):
                if i > SOURCE_LEVEL:
                    x = hook(i, enc.layers[i].forward_blocks(x))
                if enc.layers[i].downsample is not None:
                    x = enc.layers[i].downsample(x)
            emb = enc.neck(x)
        if NECK in self.injection.levels:
            emb = emb + self.injection.residual(NECK, state["shared"], emb.shape[-2:]).to(emb.dtype)
        guide = guide_mask = None
        if self.aligner is not None:
            assert encoded is not None  # the guide reads the plain embedding
            plain = encoded.embedding
            guide = self.aligner(plain, self.name_emb, self.knowledge_emb, self.knowledge_mask).logits
            guide = guide.expand(B, -1, -1, -1) if guide.shape[0] == 1 else guide
            guide_mask = guide[torch.arange(B, device=guide.device), organ_index].unsqueeze(1)
        return _TextConditioned(emb, state["semantics"], state["text"], text_mask, guide, guide_mask)

    # ------------------------------------------------------------------ decoding
    def _decode(
        self,
        feats: _TextConditioned,
        boxes: Tensor | None,
        points: tuple[Tensor, Tensor] | None,
        memory: MemorySelection | None = None,
    ) -> DesignOutput:
        emb = feats.embedding
        if memory is not None:
            emb = self.memory_attention(emb, memory.features, memory.distances, memory.pointers)
        sparse_sem, dense_sem = self.prompt_encoder(feats.semantics, emb, feats.text, feats.text_mask)
        sparse, dense = self.core.embed_prompts(boxes, points, sparse_extra=sparse_sem, dense_extra=dense_sem)
        P = sparse.shape[0]
        extra = torch.cat([self.refinement.token.weight, self.presence_token.weight], dim=0)
        run = run_mask_decoder(self.core, emb, sparse, dense, extra_tokens=extra.unsqueeze(0).expand(P, -1, -1))
        assert run.masks is not None and run.iou is not None and run.extra is not None
        refine = self.refinement(run.extra[:, 0], feats.semantics)
        masks = run.masks + refine.to(run.masks.dtype)
        presence = self.presence_head(run.extra[:, 1]).squeeze(-1)
        aux = {"sam_mask": run.masks, "refine_mask": refine, "mask_token": run.mask_token, "semantics": feats.semantics}
        if feats.guide is not None and feats.guide_mask is not None:
            aux["guide_logits"], aux["guide_mask"] = feats.guide, feats.guide_mask
            if self.config.locate_with_guide and not self.training and boxes is None and points is None:
                masks, presence = guide_first_pass(feats.guide_mask.to(masks.dtype), masks.shape[-2:])
        return DesignOutput(masks=masks, iou=run.iou, presence_logit=presence, aux=aux)

    def _forward(
        self,
        images: Tensor | None,
        encoded: EncoderOutput | None,
        organ_index: Tensor,
        boxes: Tensor | None,
        points: tuple[Tensor, Tensor] | None,
    ) -> DesignOutput:
        feats = self.encode_text_conditioned(images, encoded, organ_index)
        return self._decode(feats, boxes, points)

    # ------------------------------------------------------------------ loss
    def compute_loss(
        self,
        output: DesignOutput,
        target_masks: Tensor,
        present: Tensor,
        class_targets: Tensor | None = None,
        all_targets: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """CRISP-SAM2 loss (see the module docstring); ``class_targets`` are not used, ``all_targets`` only by the
        guide."""
        check_targets(output, target_masks, present, class_targets, all_targets, self.num_organs)
        cfg = self.config
        sam = output.aux["sam_mask"]
        terms = {
            "sam_mask": losses.focal_dice_loss(sam, target_masks, cfg.focal_weight, cfg.dice_weight),
            "refined": losses.focal_dice_loss(output.masks, target_masks, cfg.focal_weight, cfg.dice_weight),
            "iou": losses.iou_l1_loss(output.iou, output.masks, target_masks),
            "presence": losses.presence_loss(output.presence_logit, present),
        }
        terms["total"] = (
            cfg.weight_sam_mask * terms["sam_mask"]
            + cfg.weight_refined * terms["refined"]
            + cfg.weight_iou * terms["iou"]
            + cfg.weight_presence * terms["presence"]
        )
        if "guide_logits" in output.aux:
            guide = output.aux["guide_logits"], output.aux["guide_mask"]
            terms["guide"] = guide_loss(*guide, target_masks, all_targets)
            terms["total"] = terms["total"] + cfg.weight_guide * terms["guide"]
        return terms


@register_design("crisp_sam2", CrispSam2Config)
def build_crisp_sam2(config: CrispSam2Config) -> CrispSam2:
    """Build CRISP-SAM2 from its config."""
    return CrispSam2(config)
