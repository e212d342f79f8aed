"""organ_prompts design: frozen LiteMedSAM whose box prompts are joined by learned organ prompt tokens.

The design behind the shipped default checkpoint (``organsam/assets/organ_prompts.safetensors``). Text places
nothing here: a box comes from the atlas prior (or the user), and the organ's text embedding, through
:class:`~organsam.model.components.organ_prompt.OrganPromptTokens`, tells the frozen decoder which structure in
that box is wanted. Only the token MLP trains (about 0.23 M parameters), so it can be trained on a CPU over
cached encoder features, with boxes jittered like atlas boxes (``data.box_jitter_rel``, ``data.box_margin``).

* ``forward`` takes ``boxes`` (B, 4) (points may be added); without boxes the whole slice is the box, which
  is weak: the pipeline always passes the atlas's or the user's box.
* ``presence_logit`` is ``logit(predicted IoU) - logit(0.5)``: positive where the predicted IoU passes the
  0.5 the inference pipeline uses to reject a slice.

Loss: ``(20 focal + Dice)(mask) + weight_iou * L1(IoU)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from organsam.model import losses
from organsam.model.base import DesignOutput, OrganSegmenter, SegmenterConfig
from organsam.model.components.image_encoder import EncoderOutput
from organsam.model.components.organ_prompt import OrganPromptTokens
from organsam.model.components.text_cache import VocabularyEmbeddings
from organsam.model.decoder_run import run_mask_decoder
from organsam.model.design_checks import check_targets
from organsam.model.sam_core import EMBED_DIM, IMAGE_SIZE
from organsam.registry import register_design

__all__ = ["OrganPromptsConfig", "OrganPrompts", "build_organ_prompts"]


@dataclass
class OrganPromptsConfig(SegmenterConfig):
    """organ_prompts settings (preset: ``organsam/configs/organ_prompts.yaml``).

    Attributes:
        num_tokens: prompt tokens per organ.
        hidden: hidden width of the token MLP.
        weight_iou: loss weight of the IoU L1 (keeps the predicted IoU, which the pipeline thresholds, honest).
        focal_weight: focal part of the mask loss.
        dice_weight: Dice part of the mask loss.
    """

    freeze_mask_decoder: bool = True
    num_tokens: int = 2
    hidden: int = 256
    weight_iou: float = 0.1
    focal_weight: float = 20.0
    dice_weight: float = 1.0


class OrganPrompts(OrganSegmenter):
    """Frozen LiteMedSAM + organ prompt tokens; see the module docstring.

    Args:
        config: :class:`OrganPromptsConfig`.
        text: ready vocabulary embeddings (default: from the config).
    """

    design_name = "organ_prompts"

    def __init__(self, config: OrganPromptsConfig, text: VocabularyEmbeddings | None = None) -> None:
        super().__init__(config, text)
        self.prompt_tokens = OrganPromptTokens(self.text_dim, EMBED_DIM, config.num_tokens, config.hidden)
        self._finish_init()

    def _forward(
        self,
        images: Tensor | None,
        encoded: EncoderOutput | None,
        organ_index: Tensor,
        boxes: Tensor | None,
        points: tuple[Tensor, Tensor] | None,
    ) -> DesignOutput:
        if boxes is None:  # text only: the whole slice is the box (weak; the pipeline always gives a box)
            boxes = organ_index.new_tensor([0.0, 0.0, IMAGE_SIZE - 1.0, IMAGE_SIZE - 1.0], dtype=torch.float32)
            boxes = boxes.expand(organ_index.shape[0], 4)
        enc = encoded if encoded is not None else self.encode_plain(images)
        tokens = self.prompt_tokens(self.name_emb[organ_index])
        sparse, dense = self.core.embed_prompts(boxes, points, sparse_extra=tokens.to(enc.embedding.dtype))
        run = run_mask_decoder(self.core, enc.embedding, sparse, dense)
        assert run.masks is not None and run.iou is not None
        iou = run.iou.float().clamp(1e-4, 1 - 1e-4)
        presence = torch.logit(iou[:, 0])  # logit(0.5) = 0: positive where the predicted IoU passes 0.5
        return DesignOutput(masks=run.masks, iou=run.iou, presence_logit=presence)

    def compute_loss(
        self,
        output: DesignOutput,
        target_masks: Tensor,
        present: Tensor,
        class_targets: Tensor | None = None,
        all_targets: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Mask focal+Dice plus IoU L1 (see the module docstring); class targets are not used."""
        check_targets(output, target_masks, present, class_targets, all_targets, self.num_organs)
        cfg = self.config
        terms = {
            "mask": losses.focal_dice_loss(output.masks, target_masks, cfg.focal_weight, cfg.dice_weight),
            "iou": losses.iou_l1_loss(output.iou, output.masks, target_masks),
        }
        terms["total"] = terms["mask"] + cfg.weight_iou * terms["iou"]
        return terms

    @torch.no_grad()
    def prompt_table(self) -> dict[str, Tensor]:
        """Inference table: ``{organ id: (num_tokens, 256) tokens}`` for every vocabulary organ."""
        table = self.prompt_tokens.table(self.name_emb)
        return {oid: table[k] for k, oid in enumerate(self.organ_ids)}


@register_design("organ_prompts", OrganPromptsConfig)
def build_organ_prompts(config: OrganPromptsConfig) -> OrganPrompts:
    """Build the organ_prompts design from its config."""
    return OrganPrompts(config)
