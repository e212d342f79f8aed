"""SEG-SAM design: SAM's binary decoder plus an independent semantic-aware decoder over the vocabulary.

Composition on the LiteMedSAM core of SEG-SAM (arXiv:2412.12660):

1. **Text-to-vision semantic module** (:class:`TextToVision`): the image embedding cross-attends to the
   knowledge sentences of every vocabulary organ, transferring their characteristics into the visual
   features. Both decoders read these enriched features.
2. **Semantic-aware decoder** (:class:`SemanticDecoder`), independent of SAM's decoder: one text-derived
   query per organ; it classifies which organs are on the slice (``class_logits`` (B, K), the prompted
   organ's entry is ``presence_logit``) and segments every organ (``all_masks`` (B, K, 256, 256); the
   prompted organ's is ``semantic_mask``).
3. **SAM path**: the prompted organ's text embedding, projected to two prompt tokens, is decoded by SAM's
   mask decoder from the enriched features: ``masks`` (B, 1, 256, 256) and ``iou``. With text alone the
   semantic mask is SAM's mask prompt, which SAM refines, so the organ knowledge conditions the returned mask
   (when SAM decoded the raw embedding without it, trained from text alone on one slice its mask stayed empty).
   With boxes/points, SAM also decodes the raw embedding (the input the frozen decoder was trained on) and the
   decode with the higher predicted IoU is returned. On AMOS 0013 with each organ's reference box
   (``bench/compare_designs.py --checkpoints seg_sam``): 89.5 mean Dice from the enriched features alone, 89.9
   from the raw embedding alone, 90.0 picking by IoU (LiteMedSAM 90.9); over whole volumes with the atlas's
   looser boxes (``bench/quality.py --checkpoint ... --rows checkpoint_prior``) the raw embedding alone lost 6
   points against the enriched features (the knowledge picks the organ inside a loose box), the pick 0.4.
4. **Cross-mask spatial alignment**: a loss pulling the two decoders' masks of the prompted organ to
   overlap (1 - soft Dice between them).

Loss: ``(20 focal + Dice)(SAM mask) + (0.2 BCE + 0.8 Dice)(semantic mask; when all_targets are given, every
organ the sample's dataset labels) + 0.1 * L1(IoU) + 0.5 * BCE(class logits over K, or presence of the prompted
organ) + 0.1 * alignment``. ``predict_all`` returns the semantic decoder's all-organ masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from organsam.model import losses
from organsam.model.base import DesignOutput, OrganSegmenter, SegmenterConfig
from organsam.model.components.image_encoder import EncoderOutput
from organsam.model.components.semantic_decoder import SemanticDecoder
from organsam.model.components.text_cache import VocabularyEmbeddings
from organsam.model.components.text_projection import TextProjection
from organsam.model.components.text_to_vision import TextToVision
from organsam.model.decoder_run import run_mask_decoder
from organsam.model.design_checks import check_targets
from organsam.model.sam_core import EMBED_DIM
from organsam.registry import register_design

__all__ = ["SegSamConfig", "SegSam", "build_seg_sam"]


@dataclass
class SegSamConfig(SegmenterConfig):
    """SEG-SAM settings (preset: ``organsam/configs/seg_sam.yaml``).

    Attributes:
        heads: attention heads.
        text_tokens: prompt tokens per organ text for SAM's decoder.
        semantic_layers: layers of the semantic decoder.
        semantic_pool: pooling of the 64x64 grid for the semantic modules' attention.
        weight_sam_mask: loss weight of the SAM mask (focal:Dice).
        weight_semantic_mask: loss weight of the semantic mask (BCE + Dice).
        weight_iou: loss weight of the IoU L1.
        weight_class: loss weight of the classification / presence BCE.
        weight_alignment: loss weight of the cross-mask spatial alignment.
        focal_weight: focal part of SAM's mask loss.
        dice_weight: Dice part of SAM's mask loss.
    """

    heads: int = 8
    text_tokens: int = 2
    semantic_layers: int = 2
    semantic_pool: int = 2
    weight_sam_mask: float = 1.0
    weight_semantic_mask: float = 1.0
    weight_iou: float = 0.1
    weight_class: float = 0.5
    weight_alignment: float = 0.1
    focal_weight: float = 20.0
    dice_weight: float = 1.0


class SegSam(OrganSegmenter):
    """SEG-SAM on the LiteMedSAM core; see the module docstring.

    Args:
        config: :class:`SegSamConfig`.
        text: ready vocabulary embeddings (default: from the config).
    """

    design_name = "seg_sam"
    uses_all_targets = True
    prompt_free = True

    def __init__(self, config: SegSamConfig, text: VocabularyEmbeddings | None = None) -> None:
        super().__init__(config, text)
        dim = EMBED_DIM
        self.text_proj = TextProjection(self.text_dim, dim, num_tokens=config.text_tokens)
        self.text_to_vision = TextToVision(self.text_dim, dim, config.heads, config.semantic_pool)
        self.semantic_decoder = SemanticDecoder(
            self.text_dim, dim, config.heads, config.semantic_layers, config.semantic_pool
        )
        self._finish_init()

    def semantic(self, embedding: Tensor) -> tuple[Tensor, Tensor]:
        """Semantic branch: class logits (B, K) and all-organ masks (B, K, 256, 256) of (B, 256, 64, 64)."""
        visual = self.text_to_vision(embedding, self.knowledge_emb, self.knowledge_mask, self.name_emb)
        return self.semantic_decoder(visual, self.name_emb)

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
        # The knowledge-enriched features depend only on the image: computed once per distinct image, and
        # read by both decoders.
        visual = self.text_to_vision(emb, self.knowledge_emb, self.knowledge_mask, self.name_emb)
        class_logits, all_masks = self.semantic_decoder(visual, self.name_emb)
        if class_logits.shape[0] == 1 and B > 1:
            class_logits, all_masks = class_logits.expand(B, -1), all_masks.expand(B, -1, -1, -1)
        rows = torch.arange(B, device=organ_index.device)
        semantic_mask = all_masks[rows, organ_index].unsqueeze(1)
        text_tokens = self.text_proj(self.name_emb[organ_index])
        text_alone = boxes is None and points is None
        # text alone: the semantic decoder's mask of the organ is SAM's mask prompt (SAM refines it)
        mask_input = semantic_mask if text_alone else None
        sparse, dense = self.core.embed_prompts(boxes, points, mask_input=mask_input, sparse_extra=text_tokens)
        run = run_mask_decoder(self.core, visual, sparse, dense)
        masks, iou = run.masks, run.iou
        if not text_alone:  # or SAM's decode of the raw embedding (its training input), where it is surer
            raw = run_mask_decoder(self.core, emb, sparse, dense)
            pick = (raw.iou > iou).view(-1, 1, 1, 1)
            masks, iou = torch.where(pick, raw.masks, masks), torch.maximum(raw.iou, iou)
        presence = class_logits[rows, organ_index]
        aux = {
            "sam_mask": masks,
            "semantic_mask": semantic_mask,
            "class_logits": class_logits,
            "all_masks": all_masks,
        }
        return DesignOutput(masks=masks, iou=iou, presence_logit=presence, aux=aux)

    def predict_all(
        self,
        images: Tensor | None = None,
        *,
        encoded: EncoderOutput | None = None,
        organ_index: Tensor | None = None,
        chunk: int = 8,
    ) -> Tensor:
        """All organs' masks from the semantic decoder, (B, K, 256, 256) logits (``chunk`` unused)."""
        enc = encoded if encoded is not None else self.encode_plain(images)
        masks = self.semantic(enc.embedding)[1]
        return masks if organ_index is None else masks[:, self._check_organ_index(organ_index)]

    def compute_loss(
        self,
        output: DesignOutput,
        target_masks: Tensor,
        present: Tensor,
        class_targets: Tensor | None = None,
        all_targets: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """SEG-SAM loss (see the module docstring)."""
        check_targets(output, target_masks, present, class_targets, all_targets, self.num_organs)
        cfg = self.config
        if all_targets is not None:
            semantic = losses.labelled_bce_dice_loss(output.aux["all_masks"], all_targets)
        else:
            semantic = losses.bce_dice_loss(output.aux["semantic_mask"], target_masks)
        if class_targets is not None:
            cls = losses.presence_loss(output.aux["class_logits"], class_targets)
        else:
            cls = losses.presence_loss(output.presence_logit, present)
        terms = {
            "sam_mask": losses.focal_dice_loss(output.masks, target_masks, cfg.focal_weight, cfg.dice_weight),
            "semantic_mask": semantic,
            "iou": losses.iou_l1_loss(output.iou, output.masks, target_masks),
            "class": cls,
            "alignment": losses.mask_alignment_loss(output.masks, output.aux["semantic_mask"]),
        }
        terms["total"] = (
            cfg.weight_sam_mask * terms["sam_mask"]
            + cfg.weight_semantic_mask * terms["semantic_mask"]
            + cfg.weight_iou * terms["iou"]
            + cfg.weight_class * terms["class"]
            + cfg.weight_alignment * terms["alignment"]
        )
        return terms


@register_design("seg_sam", SegSamConfig)
def build_seg_sam(config: SegSamConfig) -> SegSam:
    """Build SEG-SAM from its config."""
    return SegSam(config)
