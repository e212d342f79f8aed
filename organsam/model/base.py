"""``OrganSegmenter``: the base every text-prompted design builds on (SAM core, organ text table, common API).

Every design holds

* ``core``: the LiteMedSAM-compatible :class:`~organsam.model.sam_core.SamCore` (pretrained by default),
* the organ text table: for the K organs of the design's vocabulary, the embedding of each organ's prompt
  text ``name_emb`` (K, D) and of its knowledge sentences ``knowledge_emb`` (K, S, D) with
  ``knowledge_mask`` (K, S) (MiniLM by default, D = 384, through the on-disk text-embedding cache). They
  are non-persistent buffers: checkpoints hold learned weights only and record the text encoder's
  fingerprint instead.

Common contract (all designs; model space: 256x256 inputs in [0, 1], see
:mod:`organsam.preprocessing.slices`):

* ``forward(images (B, 3, 256, 256), organ_index (B,) long, boxes (B, 4) | None,
  points (coords (B, N, 2), labels (B, N)) | None) -> DesignOutput`` with ``masks`` (B, 1, 256, 256)
  logits, ``iou`` (B, 1), ``presence_logit`` (B,) (is the organ on this slice) and ``aux`` (design
  specific extras). ``images`` may also have batch 1 (one slice, several organs). Instead of images, the
  plain encoder output ``encoded = model.encode_plain(images)`` may be passed (reuse a frozen encoder's
  features across organs and epochs; batch 1 or B). In eval mode with text alone, the mask is decoded again
  from the text and a box around its largest piece (``config.text_box_rounds`` times,
  :mod:`organsam.model.text_box_refinement`).
* ``compute_loss(output, target_masks (B, 1, 256, 256), present (B,), class_targets (B, K) | None,
  all_targets (B, K, 256, 256) | None) -> dict`` with ``"total"``.
* ``predict_all(images) -> (B, K, 256, 256)`` mask logits of every vocabulary organ (prompt-free mode).
* ``forward_sequence(images (T, 3, 256, 256), organ_index (B,)) -> list[DesignOutput]`` over consecutive
  slices of one volume (independent slices here; designs with a memory condition each slice on the
  earlier ones).

Freezing: ``freeze_image_encoder`` (default on), ``freeze_prompt_encoder`` (on), ``freeze_mask_decoder``
(off). A frozen image encoder stays in eval mode (its batch norms keep their statistics) and runs without
autograd unless a design injects into it. Core parameters a design never uses (the multimask hypernetworks
when only the single-mask output is used) are frozen too, so every trainable parameter gets a gradient.

LoRA: ``lora_rank > 0`` adds low-rank adapters (:mod:`organsam.model.components.lora`) to the image
encoder's linear layers named by ``lora_targets`` (default: attention ``qkv`` and ``proj`` of every TinyViT
attention block). The adapted layers' base weights always stay frozen and only ``lora_A``/``lora_B`` train;
with a frozen encoder these are its only trainable tensors. The encoder then runs with autograd (so the
adapters get gradients) but stays in eval mode (batch norms keep their statistics; the adapters' own
dropout follows the model's mode). The adapters start as an exact no-op (``lora_B`` = 0). Cached encoder
features would bypass them, so the training feature cache refuses a design with adapters.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from organsam.model.components.image_encoder import EncoderOutput
from organsam.model.components.text_cache import VocabularyEmbeddings
from organsam.model.design_checks import check_prompts, sequence_length
from organsam.model.design_types import DecoderRun, DesignOutput, SegmenterConfig
from organsam.model.freezing import add_lora, apply_freezing, is_frozen, keep_frozen_in_eval
from organsam.model.sam_core import IMAGE_SIZE, SamCore, build_lite_medsam
from organsam.model.text_box_refinement import box_rounds
from organsam.model.vocabulary_text import resolve_organ_ids, vocabulary_embeddings

logger = logging.getLogger(__name__)

__all__ = [
    "SegmenterConfig",
    "DesignOutput",
    "DecoderRun",
    "OrganSegmenter",
    "vocabulary_embeddings",
    "resolve_organ_ids",
]


# ---------------------------------------------------------------------------------------------------- base
class OrganSegmenter(nn.Module):
    """Base class of the text-prompted designs; see the module docstring for the contract.

    Args:
        config: the design's config (a :class:`SegmenterConfig` subclass).
        text: ready vocabulary embeddings (default: computed/cached from ``config``).

    Attributes:
        design_name: registry name of the design.
        encoder_levels: encoder levels (0-3) the design reads from ``encode_plain`` outputs.
        uses_all_targets: whether ``compute_loss`` reads ``all_targets``.
        prompt_free: whether the design segments every organ from the image alone in one pass.
        core: the SAM core.
        organ_ids: the K organ ids, in ``organ_index`` order.
        text_fingerprint: fingerprint of the text encoder the table comes from.
        lora_layers: qualified names (inside ``core.image_encoder``) of the layers with LoRA adapters.
    """

    design_name: ClassVar[str] = "base"
    encoder_levels: ClassVar[tuple[int, ...]] = ()
    #: the loss reads ``all_targets`` (the trainer then builds every organ's mask of each slice)
    uses_all_targets: ClassVar[bool] = False
    #: decodes every organ of a slice in one pass from the image alone (prompt-free, ``predict_all``): whole-volume
    #: inference then asks it with text alone by default
    prompt_free: ClassVar[bool] = False

    def __init__(self, config: SegmenterConfig, text: VocabularyEmbeddings | None = None) -> None:
        super().__init__()
        self.config = config
        self.core: SamCore = build_lite_medsam(config.sam_checkpoint, pretrained=config.pretrained)
        self.lora_layers: list[str] = []
        if text is None:
            text = vocabulary_embeddings(config.organs, config.text_model, config.text_cache_dir)
        self.organ_ids: list[str] = list(text.ids)
        self.text_fingerprint: str = text.fingerprint
        self.text_dim: int = text.dim
        self.register_buffer("name_emb", text.name_emb.detach().float().clone(), persistent=False)
        self.register_buffer("knowledge_emb", text.knowledge_emb.detach().float().clone(), persistent=False)
        self.register_buffer("knowledge_mask", text.knowledge_mask.detach().bool().clone(), persistent=False)

    # ------------------------------------------------------------------ set-up helpers
    @property
    def num_organs(self) -> int:
        """K, the number of organs in the design's vocabulary."""
        return len(self.organ_ids)

    def _finish_init(self) -> None:
        """Add the LoRA adapters, apply the freezing options and switch to eval mode (call at the end of a
        subclass __init__; the adapters come after the design's own modules, so with the same seed those are
        initialised identically with and without adapters)."""
        self.lora_layers = add_lora(self.core, self.config)
        self.apply_freezing()
        self.eval()

    def unused_core_modules(self) -> list[nn.Module]:
        """Core modules whose parameters never influence this design's outputs (kept frozen)."""
        return list(self.core.mask_decoder.output_hypernetworks_mlps[1:])

    def apply_freezing(self) -> None:
        """Set ``requires_grad`` from the config: frozen core parts and unused core modules off, the rest on.

        LoRA adapters always train; the base weights of the layers they adapt never do.
        """
        apply_freezing(self, self.config, self.unused_core_modules())

    def train(self, mode: bool = True) -> OrganSegmenter:
        """Like ``nn.Module.train``, but frozen core parts stay in eval mode (batch-norm statistics kept).

        A frozen image encoder with LoRA adapters counts as frozen: it stays in eval mode, only its adapters
        follow ``mode`` (their dropout).
        """
        super().train(mode)
        if mode:
            keep_frozen_in_eval(self.core, mode)
        return self

    def parameter_counts(self) -> dict[str, int]:
        """``{"total": ..., "trainable": ...}`` parameter counts."""
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"total": total, "trainable": trainable}

    def organ_index_of(self, organ_ids: Sequence[str]) -> Tensor:
        """(N,) long indices of organ ids in the design vocabulary.

        Raises:
            ValueError: an id the design does not know (parse free text with ``organsam.vocabulary.parse_prompt``).
        """
        if isinstance(organ_ids, str):
            organ_ids = [organ_ids]
        out = []
        for oid in organ_ids:
            if oid not in self.organ_ids:
                close = difflib.get_close_matches(oid, self.organ_ids, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise ValueError(
                    f"organ {oid!r} is not in the vocabulary of design {self.design_name} "
                    f"({self.num_organs} organs){hint}"
                )
            out.append(self.organ_ids.index(oid))
        return torch.tensor(out, dtype=torch.long, device=self.name_emb.device)

    def organ_text(self, organ_index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Text of the prompted organs: names (B, D), knowledge (B, S, D), knowledge mask (B, S)."""
        return self.name_emb[organ_index], self.knowledge_emb[organ_index], self.knowledge_mask[organ_index]

    # ------------------------------------------------------------------ checks
    def _check_images(self, images: Tensor) -> None:
        if not isinstance(images, Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE):
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(
                f"images must be (B, 3, {IMAGE_SIZE}, {IMAGE_SIZE}) float in [0, 1], got {shape}; "
                f"use organsam.preprocessing.slices.to_model_input"
            )

    def _check_organ_index(self, organ_index: Tensor | Sequence[int]) -> Tensor:
        if not isinstance(organ_index, Tensor):
            organ_index = torch.as_tensor(organ_index)
        organ_index = organ_index.to(device=self.name_emb.device)
        if organ_index.ndim != 1 or organ_index.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"organ_index must be a (B,) integer tensor, got {organ_index.dtype} "
                f"{tuple(organ_index.shape)}; map organ ids with model.organ_index_of(ids)"
            )
        if organ_index.numel() and (int(organ_index.min()) < 0 or int(organ_index.max()) >= self.num_organs):
            raise ValueError(
                f"organ_index values must lie in [0, {self.num_organs}) (design vocabulary), got {organ_index.tolist()}"
            )
        return organ_index.long()

    # ------------------------------------------------------------------ encoder
    def encode_plain(self, images: Tensor) -> EncoderOutput:
        """Encode images with the (unconditioned) image encoder.

        Runs without autograd when the encoder is frozen and has no LoRA adapters (with adapters it runs
        with autograd whenever autograd is on, so the adapters get gradients). Keeps the levels in
        ``encoder_levels``.

        Args:
            images: (B, 3, 256, 256) in [0, 1].

        Returns:
            :class:`EncoderOutput` (``levels`` empty unless the design reads them).
        """
        self._check_images(images)
        grad = torch.is_grad_enabled() and not is_frozen(self.core.image_encoder)
        with torch.set_grad_enabled(grad):
            return self.core.encode(images, keep_levels=bool(self.encoder_levels))

    # ------------------------------------------------------------------ contract
    def forward(
        self,
        images: Tensor | None = None,
        organ_index: Tensor | Sequence[int] | None = None,
        boxes: Tensor | None = None,
        points: tuple[Tensor, Tensor] | None = None,
        *,
        encoded: EncoderOutput | None = None,
    ) -> DesignOutput:
        """Segment the prompted organ on each slice.

        Args:
            images: (B, 3, 256, 256) or (1, 3, 256, 256) in [0, 1]; may be None when ``encoded`` is given.
            organ_index: (B,) long indices into :attr:`organ_ids`.
            boxes: optional (B, 4) xyxy boxes in the 256 model space (used alongside the text).
            points: optional (coords (B, N, 2), labels (B, N)) clicks (1 fg, 0 bg, -1 pad).
            encoded: output of :meth:`encode_plain` (batch 1 or B) instead of ``images``.

        Returns:
            :class:`DesignOutput`.
        """
        if organ_index is None:
            raise ValueError("organ_index (B,) is required; map organ ids with model.organ_index_of(ids)")
        organ_index = self._check_organ_index(organ_index)
        B = organ_index.shape[0]
        if encoded is None:
            if images is None:
                raise ValueError("pass images (B, 3, 256, 256) or encoded=model.encode_plain(images)")
            self._check_images(images)
            if images.shape[0] not in (1, B):
                raise ValueError(
                    f"images have batch {images.shape[0]} but organ_index has {B} entries; give one "
                    f"image per organ prompt, or a single image for all"
                )
        elif encoded.embedding.shape[0] not in (1, B):
            raise ValueError(f"encoded features have batch {encoded.embedding.shape[0]}, organ_index {B}")
        check_prompts(B, boxes, points)
        out = self._forward(images, encoded, organ_index, boxes, points)
        if self.training or boxes is not None or points is not None:
            return out
        return box_rounds(
            out, self.config.text_box_rounds, lambda around: self._forward(images, encoded, organ_index, around, None)
        )

    def _forward(
        self,
        images: Tensor | None,
        encoded: EncoderOutput | None,
        organ_index: Tensor,
        boxes: Tensor | None,
        points: tuple[Tensor, Tensor] | None,
    ) -> DesignOutput:
        raise NotImplementedError

    def compute_loss(
        self,
        output: DesignOutput,
        target_masks: Tensor,
        present: Tensor,
        class_targets: Tensor | None = None,
        all_targets: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Training loss.

        Args:
            output: this design's forward output.
            target_masks: (B, 1, 256, 256) float ground truth of the prompted organ in model space.
            present: (B,) float, 1 where the prompted organ is on the slice.
            class_targets: optional (B, K) float, 1 for every vocabulary organ on the slice.
            all_targets: optional (B, K, 256, 256) float masks of every vocabulary organ, ``-1`` everywhere in
                the channel of an organ the sample's dataset does not label (:data:`organsam.model.losses.
                UNKNOWN`); designs that predict all organs (``uses_all_targets``) use them, others ignore them.

        Returns:
            dict of scalar terms with the weighted sum under ``"total"``.
        """
        raise NotImplementedError

    def predict_all(
        self,
        images: Tensor | None = None,
        *,
        encoded: EncoderOutput | None = None,
        organ_index: Tensor | None = None,
        chunk: int = 8,
    ) -> Tensor:
        """Prompt-free mode: mask logits of every vocabulary organ.

        The generic version encodes each image once and decodes the organs in chunks with their text
        prompts; designs with an all-organ decoder override it.

        Args:
            images: (B, 3, 256, 256) in [0, 1] (or ``encoded``).
            encoded: output of :meth:`encode_plain`.
            organ_index: restrict to these organs (default: all K).
            chunk: organs decoded per pass.

        Returns:
            (B, K, 256, 256) mask logits (K' = len(organ_index) when given).
        """
        enc = encoded if encoded is not None else self.encode_plain(images)
        organs = (
            torch.arange(self.num_organs, device=self.name_emb.device)
            if organ_index is None
            else self._check_organ_index(organ_index)
        )
        rows = []
        for b in range(enc.embedding.shape[0]):
            enc_b = enc.select(b)
            parts = [
                self.forward(None, organs[i : i + chunk], encoded=enc_b).masks[:, 0]
                for i in range(0, organs.numel(), chunk)
            ]
            rows.append(torch.cat(parts, dim=0))
        return torch.stack(rows, dim=0)

    def forward_sequence(
        self,
        images: Tensor | None = None,
        organ_index: Tensor | Sequence[int] | None = None,
        boxes: Tensor | None = None,
        *,
        encoded: Sequence[EncoderOutput] | None = None,
        slice_indices: Sequence[int] | None = None,
        spacing: float | None = None,
    ) -> list[DesignOutput]:
        """Segment organs on consecutive slices of one volume, in order.

        This base version treats the slices independently; designs with a slice memory override it.

        Args:
            images: (T, 3, 256, 256) slices in order (or ``encoded``).
            organ_index: (B,) organs tracked together on every slice.
            boxes: optional (T, B, 4) boxes per slice.
            encoded: T outputs of :meth:`encode_plain` (batch 1 each) instead of ``images``.
            slice_indices: index of each slice in the volume (default 0..T-1), for slice distances.
            spacing: slice spacing in mm (memory distances in mm instead of slices).

        Returns:
            T :class:`DesignOutput`, each with batch B.
        """
        T = sequence_length(images, encoded, boxes)
        outputs = []
        for t in range(T):
            enc_t = encoded[t] if encoded is not None else self.encode_plain(images[t : t + 1])
            outputs.append(self.forward(None, organ_index, boxes[t] if boxes is not None else None, encoded=enc_t))
        return outputs
