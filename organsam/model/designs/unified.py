"""unified design: our composition of the parts of the three papers that fit a frozen LiteMedSAM encoder.

* **SAM core**, encoder frozen and never modified (its features can be cached and reused across organs
  and epochs: ``encoded=model.encode_plain(images)``).
* **Cross-modal interaction + semantic prompt encoder** (from CRISP-SAM2), applied to the image
  embedding instead of inside the encoder: the organ's prompt text and knowledge sentences give dense
  (B, 256, 64, 64) and sparse (B, 4, 256) prompt embeddings, so no box is needed.
* **Optional box prompts from a prior**: when a box is given (e.g. from ``organsam.priors`` atlas boxes
  or a user), it is used alongside the text through SAM's prompt encoder.
* **Presence / class head** (from SEG-SAM's classification): text queries over the embedding give a
  presence logit for every vocabulary organ (``class_logits`` (B, K)); the prompted organ's is
  ``presence_logit``, used to drop absent organs.
* **Iterative mask optimizer** (from PG-SAM), ``optimizer_iterations`` configurable (0 = off).

It keeps the pretrained LiteMedSAM path intact: box prompts reproduce LiteMedSAM while the text parts are still at
their small initial gains. How it compares with the other designs is measured by ``bench/compare_designs.py``.

Loss: ``(20 focal + Dice)(final mask) + 0.5 * (20 focal + Dice)(mask before the optimizer, when it runs)
+ 0.1 * L1(IoU) + 0.5 * BCE(class logits over K, or presence of the prompted organ)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from organsam.model import losses
from organsam.model.base import DesignOutput, OrganSegmenter, SegmenterConfig
from organsam.model.components.cross_modal_attention import CrossModalAttention
from organsam.model.components.image_encoder import EncoderOutput
from organsam.model.components.mask_optimizer import MaskOptimizer
from organsam.model.components.presence_head import ClassPresenceHead
from organsam.model.components.semantic_prompt_encoder import SemanticPromptEncoder
from organsam.model.components.text_cache import VocabularyEmbeddings
from organsam.model.components.text_projection import TextProjection
from organsam.model.decoder_run import run_mask_decoder
from organsam.model.design_checks import check_targets
from organsam.model.sam_core import EMBED_DIM
from organsam.registry import register_design

__all__ = ["UnifiedConfig", "UnifiedSam", "build_unified"]


@dataclass
class UnifiedConfig(SegmenterConfig):
    """unified settings (preset: ``organsam/configs/unified.yaml``).

    Attributes:
        heads: attention heads.
        cross_pool: pooling of the 64x64 grid in the cross-modal attention.
        mlp_ratio: fusion MLP width ratio.
        num_sparse_tokens: sparse prompt tokens from the semantic prompt encoder.
        optimizer_iterations: iterations of the mask optimizer (0 disables it).
        optimizer_hidden: working width of the mask optimizer.
        weight_mask: loss weight of the final mask (focal:Dice).
        weight_coarse: loss weight of the mask before the optimizer.
        weight_iou: loss weight of the IoU L1.
        weight_class: loss weight of the class / presence BCE.
        focal_weight: focal part of the mask loss.
        dice_weight: Dice part of the mask loss.
    """

    heads: int = 8
    cross_pool: int = 2
    mlp_ratio: float = 2.0
    num_sparse_tokens: int = 4
    optimizer_iterations: int = 1
    optimizer_hidden: int = 16
    weight_mask: float = 1.0
    weight_coarse: float = 0.5
    weight_iou: float = 0.1
    weight_class: float = 0.5
    focal_weight: float = 20.0
    dice_weight: float = 1.0


class UnifiedSam(OrganSegmenter):
    """The unified composition; see the module docstring.

    Args:
        config: :class:`UnifiedConfig`.
        text: ready vocabulary embeddings (default: from the config).
    """

    design_name = "unified"

    def __init__(self, config: UnifiedConfig, text: VocabularyEmbeddings | None = None) -> None:
        super().__init__(config, text)
        dim = EMBED_DIM
        self.text_proj = TextProjection(self.text_dim, dim)
        self.text_type = nn.Embedding(2, dim)  # 0: organ name prompt, 1: knowledge sentence
        self.cross = CrossModalAttention(dim, config.heads, config.mlp_ratio, config.cross_pool)
        self.prompt_encoder = SemanticPromptEncoder(dim, config.heads, config.num_sparse_tokens)
        self.presence_head = ClassPresenceHead(self.text_dim, dim, config.heads)
        self.optimizer = MaskOptimizer(
            self.core.mask_decoder.transformer_dim // 8, config.optimizer_hidden, config.optimizer_iterations
        )
        self._finish_init()

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

    def _forward(
        self,
        images: Tensor | None,
        encoded: EncoderOutput | None,
        organ_index: Tensor,
        boxes: Tensor | None,
        points: tuple[Tensor, Tensor] | None,
    ) -> DesignOutput:
        B = organ_index.shape[0]
        enc = encoded if encoded is not None else self.encode_plain(images)
        emb = enc.embedding
        emb_b = emb.expand(B, -1, -1, -1) if emb.shape[0] == 1 else emb
        text, text_mask = self._text_tokens(organ_index)
        semantics, text = self.cross(emb_b, text.to(emb.dtype), text_mask)
        sparse_sem, dense_sem = self.prompt_encoder(semantics, emb_b, text, text_mask)
        sparse, dense = self.core.embed_prompts(boxes, points, sparse_extra=sparse_sem, dense_extra=dense_sem)
        run = run_mask_decoder(self.core, emb, sparse, dense)
        assert run.masks is not None and run.upscaled is not None
        steps = self.optimizer(run.masks, run.upscaled)
        masks = steps[-1] if steps else run.masks
        class_logits = self.presence_head(emb, self.name_emb)
        if class_logits.shape[0] == 1 and B > 1:
            class_logits = class_logits.expand(B, -1)
        presence = class_logits[torch.arange(B, device=organ_index.device), organ_index]
        aux = {"coarse_mask": run.masks, "class_logits": class_logits}
        return DesignOutput(masks=masks, iou=run.iou, presence_logit=presence, aux=aux)

    def compute_loss(
        self,
        output: DesignOutput,
        target_masks: Tensor,
        present: Tensor,
        class_targets: Tensor | None = None,
        all_targets: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """unified loss (see the module docstring); ``all_targets`` is not used."""
        check_targets(output, target_masks, present, class_targets, all_targets, self.num_organs)
        cfg = self.config
        terms = {"mask": losses.focal_dice_loss(output.masks, target_masks, cfg.focal_weight, cfg.dice_weight)}
        weight_coarse = cfg.weight_coarse if self.optimizer.iterations > 0 else 0.0
        terms["coarse"] = (
            losses.focal_dice_loss(output.aux["coarse_mask"], target_masks, cfg.focal_weight, cfg.dice_weight)
            if weight_coarse
            else output.masks.new_zeros(())
        )
        terms["iou"] = losses.iou_l1_loss(output.iou, output.masks, target_masks)
        if class_targets is not None:
            terms["class"] = losses.presence_loss(output.aux["class_logits"], class_targets)
        else:
            terms["class"] = losses.presence_loss(output.presence_logit, present)
        terms["total"] = (
            cfg.weight_mask * terms["mask"]
            + weight_coarse * terms["coarse"]
            + cfg.weight_iou * terms["iou"]
            + cfg.weight_class * terms["class"]
        )
        return terms


@register_design("unified", UnifiedConfig)
def build_unified(config: UnifiedConfig) -> UnifiedSam:
    """Build the unified composition from its config."""
    return UnifiedSam(config)
