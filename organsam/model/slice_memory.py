"""Slice memory of a design (CRISP-SAM2's, SAM2-style): segment a volume's slices in order, each conditioned on
a bounded bank of memories of the organ's earlier slices.

:class:`SliceMemory` is a mixin of a design that provides

* ``encode_text_conditioned(images, encoded, organ_index)``: per-organ features, a tuple of tensors with batch B
  whose first entry is the image embedding;
* ``_decode(features, boxes, points, memory)``: a :class:`~organsam.model.design_types.DesignOutput` whose
  ``aux["mask_token"]`` is the decoder's mask token, the memory attended to when ``memory`` is given;
* ``memory_encoder`` (:class:`~organsam.model.components.memory_encoder.MemoryEncoder`) and ``config.memory_slices``
  / ``config.memory_policy``.

Training runs sequences through :meth:`SliceMemory.forward_sequence` (one bank for the organs tracked together);
whole-volume inference (:class:`organsam.inference.decoders.DesignDecoder`) calls :meth:`SliceMemory.track_organs`
slice by slice with one bank per organ, kept in the session.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from organsam.model.components.image_encoder import EncoderOutput
from organsam.model.components.memory_bank import MemoryBank
from organsam.model.design_checks import check_prompts, sequence_length
from organsam.model.design_types import DesignOutput, cat_outputs
from organsam.model.text_box_refinement import box_rounds

__all__ = ["SliceMemory"]


class SliceMemory:
    """Memory across slices for a design (see the module docstring)."""

    config: Any
    training: bool
    memory_encoder: Any

    def new_memory_bank(self) -> MemoryBank:
        """An empty similarity-sorted (or recent) bank; it keeps the graph while the model trains."""
        return MemoryBank(
            max_slices=self.config.memory_slices, policy=self.config.memory_policy, detach=not self.training
        )

    def track_step(
        self,
        encoded: EncoderOutput,
        organ_index: Tensor,
        bank: MemoryBank,
        slice_index: int,
        boxes: Tensor | None = None,
        points: tuple[Tensor, Tensor] | None = None,
        spacing: float | None = None,
        conditioning: bool | None = None,
    ) -> DesignOutput:
        """Segment one slice conditioned on the bank's memories, then store this slice in the bank.

        Args:
            encoded: plain encoder output of the slice (batch 1).
            organ_index: (B,) organs tracked together.
            bank: the volume's :class:`MemoryBank` (features (B, memory_dim, 64, 64) per slice).
            slice_index: index of the slice in the volume.
            boxes: optional (B, 4) boxes on this slice.
            points: optional clicks on this slice.
            spacing: slice spacing in mm (distances in mm).
            conditioning: store as a conditioning (never evicted) entry; default: only the first slice (empty
                bank), so boxes on every slice of a sequence do not keep the bank from evicting.

        Returns:
            the slice's :class:`DesignOutput`; ``aux["memory_slices"]`` holds how many memories it used.
        """
        organ_index = self._check_organ_index(organ_index)
        check_prompts(organ_index.shape[0], boxes, points)
        feats = self.encode_text_conditioned(None, encoded, organ_index)
        selection = bank.select(slice_index, spacing=spacing, device=feats.embedding.device)
        out = self._decode_tracked(feats, boxes, points, selection)
        mem = self.memory_encoder(feats.embedding, out.masks, decoder_token=out.aux["mask_token"])
        if conditioning is None:
            conditioning = len(bank) == 0
        score = float(torch.sigmoid(out.presence_logit.detach().float()).mean() * out.iou.detach().float().mean())
        bank.add(slice_index, mem.features, mem.pointer, score=score, conditioning=conditioning)
        n_mem = len(selection.indices) if selection is not None else 0
        out.aux["memory_slices"] = torch.tensor(n_mem)
        return out

    def _decode_tracked(self, feats: Any, boxes: Tensor | None, points: Any, selection: Any) -> DesignOutput:
        """``_decode`` with the memories, then, for text alone at inference, the design's box round
        (``config.text_box_rounds``, as :meth:`OrganSegmenter.forward`): decoded again, with the same memories, from a
        box around the mask's largest piece."""
        out = self._decode(feats, boxes, points, selection)
        if self.training or boxes is not None or points is not None:
            return out
        return box_rounds(out, self.config.text_box_rounds, lambda around: self._decode(feats, around, None, selection))

    def track_organs(
        self,
        encoded: EncoderOutput,
        organ_index: Tensor,
        banks: list[MemoryBank],
        slice_index: int,
        boxes: Tensor | None = None,
        points: tuple[Tensor, Tensor] | None = None,
        spacing: float | None = None,
        conditioning: list[bool] | None = None,
    ) -> DesignOutput:
        """:meth:`track_step` for several organs of one slice, each with its own bank (whole-volume inference,
        where the organs asked for differ from slice to slice): the text-conditioned encoding runs once for
        all of them, then each organ is decoded with its own memories and stored in its bank.

        Args:
            encoded: plain encoder output of the slice (batch 1).
            organ_index: (B,) organs.
            banks: B memory banks, one per organ.
            slice_index: index of the slice in the volume.
            boxes: optional (B, 4) boxes; points: optional clicks per organ.
            spacing: slice spacing in mm.
            conditioning: per organ, store as a conditioning (never evicted) entry (default: only when its
                bank is empty).

        Returns:
            the slice's :class:`DesignOutput` with batch B; ``aux["memory_slices"]`` (B,) memories used.
        """
        organ_index = self._check_organ_index(organ_index)
        B = organ_index.shape[0]
        check_prompts(B, boxes, points)
        if len(banks) != B:
            raise ValueError(f"need one memory bank per organ: {len(banks)} banks for {B} organs")
        feats = self.encode_text_conditioned(None, encoded, organ_index)
        outs, used = [], []
        for b, bank in enumerate(banks):
            one = type(feats)(*(t[b : b + 1] if t is not None else None for t in feats))
            selection = bank.select(slice_index, spacing=spacing, device=one.embedding.device)
            box = boxes[b : b + 1] if boxes is not None else None
            pts = (points[0][b : b + 1], points[1][b : b + 1]) if points is not None else None
            out = self._decode_tracked(one, box, pts, selection)
            mem = self.memory_encoder(one.embedding, out.masks, decoder_token=out.aux["mask_token"])
            cond = conditioning[b] if conditioning is not None else len(bank) == 0
            score = float(torch.sigmoid(out.presence_logit.float()).mean() * out.iou.float().mean())
            bank.add(slice_index, mem.features, mem.pointer, score=score, conditioning=bool(cond) or len(bank) == 0)
            outs.append(out)
            used.append(len(selection.indices) if selection is not None else 0)
        out = cat_outputs(outs, ("sam_mask", "refine_mask"))
        out.aux["memory_slices"] = torch.tensor(used)
        return out

    def forward_sequence(
        self,
        images: Tensor | None = None,
        organ_index: Tensor | None = None,
        boxes: Tensor | None = None,
        *,
        encoded: list[EncoderOutput] | None = None,
        slice_indices: list[int] | None = None,
        spacing: float | None = None,
    ) -> list[DesignOutput]:
        """Segment consecutive slices in order, each conditioned on the memory of the earlier ones.

        The first slice has no memory; each later slice attends to the bank (similarity-sorted, at most
        ``memory_slices`` entries). While training, memories keep their graph so the memory encoder and
        attention learn through the sequence.

        Args:
            images: (T, 3, 256, 256) slices of one volume in order (or ``encoded``).
            organ_index: (B,) organs tracked together.
            boxes: optional (T, B, 4) boxes per slice.
            encoded: T plain encoder outputs (batch 1 each) instead of ``images``.
            slice_indices: volume index of each slice (default 0..T-1).
            spacing: slice spacing in mm.

        Returns:
            T :class:`DesignOutput` with batch B.
        """
        if organ_index is None:
            raise ValueError("organ_index (B,) is required")
        T = sequence_length(images, encoded, boxes)
        idx = list(slice_indices) if slice_indices is not None else list(range(T))
        if len(idx) != T:
            raise ValueError(f"slice_indices has {len(idx)} entries for {T} slices")
        bank = self.new_memory_bank()
        outputs = []
        for t in range(T):
            enc_t = encoded[t] if encoded is not None else self.encode_plain(images[t : t + 1])
            outputs.append(
                self.track_step(
                    enc_t, organ_index, bank, idx[t], boxes[t] if boxes is not None else None, spacing=spacing
                )
            )
        return outputs
