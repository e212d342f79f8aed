"""PG-SAM design: prior aligner from organ descriptions, multi-level fusion decoder, iterative mask optimizer.

Composition on the LiteMedSAM core of PG-SAM (arXiv:2503.18227):

1. **Fine-grained prior aligner** (:class:`PriorAligner`): similarity between each organ's description
   sentences and the image embedding gives guide logits per organ (B, K, 64, 64); their per-pixel softmax
   weights organ value vectors that are added to the image embedding. With ``aligner_context_layers`` (4 in the
   preset) the image side also reads a position code and its surroundings (dilated convolutions) before the
   similarity: per pixel, the guide of the first shipped checkpoint did not find the kidneys of held-out AMOS 0013.
2. **Multi-level feature-fusion decoder** (:class:`MultiLevelFusionDecoder`): one mask token per organ
   (projected from its name embedding) goes through SAM's two-way transformer (with boxes/points when
   given); SAM's pretrained upsampling runs stage by stage with the guide and the encoder's level-1
   (128x128) and level-0 (256x256) features fused in; every organ token gives a mask, an IoU estimate and
   a presence logit. SAM's IoU and mask tokens stay in the token sequence (as in pretraining); their heads
   are not used (kept frozen). Warm start (:meth:`PgSam.warm_start`): the organ tokens' heads are copies of
   SAM's single-mask heads and every organ token starts as SAM's mask token.
3. **Iterative mask optimizer** (:class:`MaskOptimizer`): ``optimizer_iterations`` rounds of residual
   correction from the mask and the fused decoder features (1 by default, as PG-SAM's code runs).
4. **Prompt-free mode**: ``predict_all`` gives every organ's optimized mask without any prompt.
5. **Text alone** (``locate_with_guide``, on in the preset): at inference the prior guide locates the organ: its
   map is the first pass's mask and its highest logit the presence, and the box round of every design
   (``text_box_rounds``) decodes the organ from a box around the guide's largest piece. From the fusion decoder's
   own text-alone masks and class logits the previous shipped checkpoint reached 7.6 mean Dice on held-out AMOS 0013;
   this one, from its guide, 69.9 (81.5 over liver, spleen and kidneys; ``python bench/compare_designs.py
   --checkpoints pg_sam``, ``bench/results/compare_designs_shipped.md``).

``forward`` returns the prompted organ's optimized mask. In training it decodes all K organs (``aux["all_masks"]``,
before the optimizer, for the all-organ loss); at inference a box or click row decodes its own organ's token only
(the same mask: organ tokens only listen in the decoder), and the guide is computed once per slice, not per row.

Loss: ``0.2 BCE + 0.8 Dice`` at two resolutions (final 256x256 masks and the 64x64 guide logits, the latter
weighted ``weight_lowres``), over all organs the sample's dataset labels when ``all_targets`` are given (the
trainer passes them), else over the prompted organ; plus ``0.1 * L1(IoU) + 0.1 * BCE(presence / class
logits)``. Per-organ sigmoids rather than a softmax, because vocabulary structures may overlap (a lung and its
lobes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from organsam.model import losses
from organsam.model.base import DesignOutput, OrganSegmenter, SegmenterConfig
from organsam.model.components.fusion_decoder import MultiLevelFusionDecoder
from organsam.model.components.image_encoder import EncoderOutput
from organsam.model.components.mask_optimizer import MaskOptimizer
from organsam.model.components.prior_aligner import PriorAligner, PriorGuide
from organsam.model.components.text_cache import VocabularyEmbeddings
from organsam.model.components.text_projection import TextProjection
from organsam.model.decoder_run import run_mask_decoder
from organsam.model.design_checks import check_targets
from organsam.model.design_types import cat_outputs
from organsam.model.guide_location import guide_first_pass, guide_loss
from organsam.model.sam_core import EMBED_DIM
from organsam.registry import register_design

__all__ = ["PROMPTED_ROWS", "PgSamConfig", "PgSam", "build_pg_sam"]

#: Prompted rows decoded together at inference: each holds its fused (32, 256, 256) features (8 MB in float32) and
#: the optimizer's work, so a 13-organ box round is not held all at once.
PROMPTED_ROWS = 4


@dataclass
class PgSamConfig(SegmenterConfig):
    """PG-SAM settings (preset: ``organsam/configs/pg_sam.yaml``).

    Attributes:
        align_dim: width of the text-image alignment space.
        aligner_context_layers: spatial context of the prior aligner (a position code and this many residual
            dilated convolutions before the similarity; 0: per pixel, as PG-SAM and the first shipped checkpoint).
        optimizer_iterations: iterations of the mask optimizer (0 disables it).
        optimizer_hidden: working width of the mask optimizer.
        weight_ce: weight of the (binary) cross-entropy in the mask loss.
        weight_dice: weight of the Dice term in the mask loss.
        weight_lowres: weight of the 64x64 (guide) resolution relative to the 256x256 one.
        weight_iou: loss weight of the IoU L1.
        weight_presence: loss weight of the presence / class BCE.
        warm_start: start from SAM's single-mask output (see :meth:`PgSam.warm_start`); off: random heads.
        organ_token_scale: with ``warm_start``, the initial scale of the organ-name part of each organ token
            (the rest is SAM's mask token), so that untrained organs differ a little and training separates them.
        locate_with_guide: at inference with text alone, the first pass's mask is the organ's prior guide
            (upsampled), so the box round (``text_box_rounds``) decodes the organ from a box around the guide's
            largest piece, and the presence logit is the guide's highest logit; off: the fusion decoder's
            text-alone mask and class logit.
    """

    align_dim: int = 128
    aligner_context_layers: int = 0
    optimizer_iterations: int = 1
    optimizer_hidden: int = 16
    weight_ce: float = 0.2
    weight_dice: float = 0.8
    weight_lowres: float = 0.4
    weight_iou: float = 0.1
    weight_presence: float = 0.1
    warm_start: bool = True
    organ_token_scale: float = 0.1
    locate_with_guide: bool = False


@dataclass
class PgSamAll:
    """All-organ outputs of :meth:`PgSam.decode_all`.

    Attributes:
        masks: (B, K, 256, 256) decoder masks (before the optimizer).
        iou: (B, K) predicted IoU.
        class_logits: (B, K) presence logits.
        guide_logits: (B, K, 64, 64) prior guide logits.
        features: (B, 32, 256, 256) fused decoder features.
    """

    masks: Tensor
    iou: Tensor
    class_logits: Tensor
    guide_logits: Tensor
    features: Tensor


class PgSam(OrganSegmenter):
    """PG-SAM on the LiteMedSAM core; see the module docstring.

    Args:
        config: :class:`PgSamConfig`.
        text: ready vocabulary embeddings (default: from the config).
    """

    design_name = "pg_sam"
    encoder_levels = (0, 1)
    uses_all_targets = True
    prompt_free = True

    def __init__(self, config: PgSamConfig, text: VocabularyEmbeddings | None = None) -> None:
        super().__init__(config, text)
        dim = EMBED_DIM
        self.aligner = PriorAligner(self.text_dim, dim, config.align_dim, context_layers=config.aligner_context_layers)
        self.organ_token_proj = TextProjection(self.text_dim, dim)
        self.organ_token_bias = nn.Parameter(torch.zeros(dim))
        level_ch = self.core.image_encoder.embed_dims
        self.fusion_decoder = MultiLevelFusionDecoder(self.text_dim, dim, (level_ch[0], level_ch[1]))
        self.optimizer = MaskOptimizer(
            self.fusion_decoder.mask_dim, config.optimizer_hidden, config.optimizer_iterations
        )
        if config.warm_start:
            self.warm_start()
        self._finish_init()

    @torch.no_grad()
    def warm_start(self) -> None:
        """Start every organ token as SAM's (pretrained) single-mask output: the hypernetwork and the IoU head
        are copied from SAM's first mask token's (same shapes), each organ token is SAM's mask token plus its
        organ-name projection scaled by ``organ_token_scale``. With a box, an untrained PG-SAM then draws what
        LiteMedSAM draws (the fusions and the prior guide start with small gains); random heads drew nothing
        (Dice 0.09 with the liver's own box on AMOS 0013)."""
        dec = self.core.mask_decoder
        fusion = self.fusion_decoder
        fusion.hyper.load_state_dict(dec.output_hypernetworks_mlps[0].state_dict())
        for mine, sam in zip(fusion.iou_head.layers[:-1], dec.iou_prediction_head.layers[:-1]):
            mine.load_state_dict(sam.state_dict())
        fusion.iou_head.layers[-1].weight.copy_(dec.iou_prediction_head.layers[-1].weight[:1])
        fusion.iou_head.layers[-1].bias.copy_(dec.iou_prediction_head.layers[-1].bias[:1])
        self.organ_token_bias.copy_(dec.mask_tokens.weight[0])
        self.organ_token_proj.norm.weight.fill_(self.config.organ_token_scale)

    def unused_core_modules(self) -> list[nn.Module]:
        """SAM's hypernetworks and IoU head: the organ tokens' own heads replace them (SAM's IoU and mask tokens
        stay in the decoder's token sequence, as in pretraining)."""
        dec = self.core.mask_decoder
        return [dec.output_hypernetworks_mlps, dec.iou_prediction_head]

    def decode_all(
        self,
        encoded: EncoderOutput,
        boxes: Tensor | None = None,
        points: tuple[Tensor, Tensor] | None = None,
        organ_index: Tensor | None = None,
        guide: PriorGuide | None = None,
    ) -> PgSamAll:
        """Decode every organ of the vocabulary (or one organ per prompt row) on each image.

        The guide is computed once per image: an encoding of batch 1 serves every prompt row. The organ tokens only
        listen in SAM's decoder (no token reads them) and the fusion decoder's features depend on the guide, not on
        the tokens, so decoding one organ's token gives that organ the mask it has among all K.

        Args:
            encoded: plain encoder output with levels 0 and 1, batch N (1 or the number of prompt rows P).
            boxes: optional (P, 4) box prompt per row.
            points: optional clicks per row.
            organ_index: optional (P,) organ of each row: only its token is decoded (masks, IoU and class logits
                then have one column); None: all K organs.
            guide: the aligner's output on ``encoded`` when already computed (a caller decoding rows in groups).

        Returns:
            :class:`PgSamAll`; ``guide_logits`` has the encoding's batch N.
        """
        if len(encoded.levels) < 2:
            raise ValueError("pg_sam needs encoder levels 0 and 1: pass encoded=model.encode_plain(images)")
        emb = encoded.embedding
        rows = [len(t) for t in (boxes, None if points is None else points[0], organ_index) if t is not None]
        P = rows[0] if rows else emb.shape[0]
        if emb.shape[0] not in (1, P) or any(r != P for r in rows):
            raise ValueError(f"encoding batch {emb.shape[0]} and prompt rows {rows} disagree: give 1 or {P} images")
        if guide is None:
            guide = self.aligner(emb, self.name_emb, self.knowledge_emb, self.knowledge_mask)
        assert guide.embedding is not None and guide.probs is not None
        sparse, dense = self.core.embed_prompts(boxes, points, batch_size=P)
        organ_tokens = self.organ_token_proj(self.name_emb).squeeze(-2) + self.organ_token_bias
        if organ_index is None:
            extra = organ_tokens.unsqueeze(0).expand(P, -1, -1)
        else:
            extra = organ_tokens[organ_index].unsqueeze(1)
        run = run_mask_decoder(
            self.core, guide.embedding, sparse, dense, extra_tokens=extra, upscale=False, listen_only=True
        )
        assert run.extra is not None
        fused = self.fusion_decoder(
            run.image_tokens,
            run.extra,
            self.core.mask_decoder.output_upscaling,
            guide.probs,
            self.name_emb,
            encoded.levels,
        )
        return PgSamAll(
            masks=fused.masks,
            iou=fused.iou,
            class_logits=fused.class_logits,
            guide_logits=guide.logits,
            features=fused.features,
        )

    def _forward(
        self,
        images: Tensor | None,
        encoded: EncoderOutput | None,
        organ_index: Tensor,
        boxes: Tensor | None,
        points: tuple[Tensor, Tensor] | None,
    ) -> DesignOutput:
        enc = encoded if encoded is not None else self.encode_plain(images)
        # at inference a prompted row needs only its own organ decoded (training reads every organ: all_masks), and
        # the rows go PROMPTED_ROWS at a time (each holds its fused 256x256 features and the optimizer's work), all
        # of one shared image reading one guide
        if self.training or (boxes is None and points is None):
            return self._decode_rows(enc, organ_index, boxes, points, only_prompted=False)
        shared = enc.embedding.shape[0] == 1
        guide = self.aligner(enc.embedding, self.name_emb, self.knowledge_emb, self.knowledge_mask) if shared else None
        parts = []
        for s in range(0, organ_index.shape[0], PROMPTED_ROWS):
            rows = slice(s, s + PROMPTED_ROWS)
            part = enc if shared else EncoderOutput(enc.embedding[rows], [lv[rows] for lv in enc.levels])
            pts = None if points is None else (points[0][rows], points[1][rows])
            box = None if boxes is None else boxes[rows]
            parts.append(self._decode_rows(part, organ_index[rows], box, pts, only_prompted=True, guide=guide))
        return cat_outputs(parts) if len(parts) > 1 else parts[0]

    def _decode_rows(
        self,
        enc: EncoderOutput,
        organ_index: Tensor,
        boxes: Tensor | None,
        points: tuple[Tensor, Tensor] | None,
        only_prompted: bool,
        guide: PriorGuide | None = None,
    ) -> DesignOutput:
        """One decode of the rows: each row's own organ (``only_prompted``) or every organ."""
        B = organ_index.shape[0]
        out = self.decode_all(enc, boxes, points, organ_index if only_prompted else None, guide)

        def per_row(t: Tensor) -> Tensor:  # an output of one shared image is a view for every row, not B copies
            return t if t.shape[0] == B else t.expand(B, *t.shape[1:])

        rows_b = torch.arange(B, device=organ_index.device)
        cols = torch.zeros_like(organ_index) if only_prompted else organ_index
        coarse = per_row(out.masks)[rows_b, cols].unsqueeze(1)
        guide_logits = per_row(out.guide_logits)
        guide_mask = guide_logits[rows_b, organ_index].unsqueeze(1)
        presence = per_row(out.class_logits)[rows_b, cols]
        if self.config.locate_with_guide and not self.training and boxes is None and points is None:
            # the prior guide locates the organ: its map is the mask the box round starts from, and the organ is
            # on the slice where the guide marks any pixel (its highest logit); the optimizer's mask is not used
            masks, presence = guide_first_pass(guide_mask, coarse.shape[-2:])
        else:
            steps = self.optimizer(coarse, per_row(out.features))
            masks = steps[-1] if steps else coarse
        aux = {"coarse_mask": coarse, "guide_logits": guide_logits, "guide_mask": guide_mask}
        if not only_prompted:  # every organ was decoded
            aux["all_masks"] = per_row(out.masks)
            aux["class_logits"] = per_row(out.class_logits)
        return DesignOutput(
            masks=masks,
            iou=per_row(out.iou)[rows_b, cols].unsqueeze(1),
            presence_logit=presence,
            aux=aux,
        )

    def predict_all(
        self,
        images: Tensor | None = None,
        *,
        encoded: EncoderOutput | None = None,
        organ_index: Tensor | None = None,
        chunk: int = 8,
    ) -> Tensor:
        """Prompt-free mode: every organ's optimized mask, (B, K, 256, 256) logits (``chunk`` unused)."""
        enc = encoded if encoded is not None else self.encode_plain(images)
        out = self.decode_all(enc)
        masks = out.masks if organ_index is None else out.masks[:, self._check_organ_index(organ_index)]
        steps = self.optimizer(masks, out.features)
        return steps[-1] if steps else masks

    def compute_loss(
        self,
        output: DesignOutput,
        target_masks: Tensor,
        present: Tensor,
        class_targets: Tensor | None = None,
        all_targets: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """PG-SAM loss (see the module docstring)."""
        check_targets(output, target_masks, present, class_targets, all_targets, self.num_organs)
        cfg = self.config

        def mask_loss(logits: Tensor, target: Tensor) -> Tensor:
            return losses.bce_dice_loss(logits, target, cfg.weight_ce, cfg.weight_dice)

        terms = {"mask": mask_loss(output.masks, target_masks)}
        if all_targets is not None:  # organs the sample's dataset does not label are left out
            terms["all_masks"] = losses.labelled_bce_dice_loss(
                output.aux["all_masks"], all_targets, cfg.weight_ce, cfg.weight_dice
            )
        else:
            terms["all_masks"] = mask_loss(output.aux["coarse_mask"], target_masks)
        terms["lowres"] = guide_loss(
            output.aux["guide_logits"],
            output.aux["guide_mask"],
            target_masks,
            all_targets,
            cfg.weight_ce,
            cfg.weight_dice,
        )
        terms["iou"] = losses.iou_l1_loss(output.iou, output.masks, target_masks)
        if class_targets is not None:
            terms["presence"] = losses.presence_loss(output.aux["class_logits"], class_targets)
        else:
            terms["presence"] = losses.presence_loss(output.presence_logit, present)
        terms["total"] = (
            terms["mask"]
            + terms["all_masks"]
            + cfg.weight_lowres * terms["lowres"]
            + cfg.weight_iou * terms["iou"]
            + cfg.weight_presence * terms["presence"]
        )
        return terms


@register_design("pg_sam", PgSamConfig)
def build_pg_sam(config: PgSamConfig) -> PgSam:
    """Build PG-SAM from its config."""
    return PgSam(config)
