"""The prompts of a session: text resolved to organ ids, boxes and points on slices (the part of
:class:`~organsam.inference.volume_predictor.VolumePredictor`'s API that only records what the user asks)."""

from __future__ import annotations

from typing import Any

import numpy as np

from organsam.inference.state import Box, InferenceState, OrganPrompt
from organsam.vocabulary import load_vocabulary, parse_prompt

__all__ = ["PromptSession"]


class PromptSession:
    """Adds prompts to an :class:`InferenceState`; the class using it provides ``decoder`` (its ``check_organ``
    refuses organs it cannot draw)."""

    decoder: Any

    def add_text_prompt(self, state: InferenceState, text: str) -> list[str]:
        """Resolve free text (or a vocabulary id) to organ ids and add them; returns the ids (raises on unknown
        terms)."""
        ids = [text] if text in load_vocabulary() else parse_prompt(text)
        for oid in ids:
            self.decoder.check_organ(oid)
            state.prompts.setdefault(oid, OrganPrompt(oid, text=text))
            state.results.pop(oid, None)
        return ids

    def _organ(self, state: InferenceState, organ: str) -> OrganPrompt:
        oid = organ if organ in load_vocabulary() else parse_prompt(organ)[0]
        self.decoder.check_organ(oid)
        state.results.pop(oid, None)
        return state.prompts.setdefault(oid, OrganPrompt(oid))

    def _check_slice(self, state: InferenceState, slice_index: int) -> int:
        z = int(slice_index)
        if not 0 <= z < state.num_slices:
            raise ValueError(f"slice index {z} out of range: the volume has {state.num_slices} slices")
        return z

    def add_box(self, state: InferenceState, organ: str, slice_index: int, box: Box) -> None:
        """Box prompt (x0, y0, x1, y1) in the slice's pixels (x = column of the canonical slice)."""
        z = self._check_slice(state, slice_index)
        x0, y0, x1, y1 = (float(v) for v in box)
        if not (x1 > x0 and y1 > y0):
            raise ValueError(f"box must be (x0, y0, x1, y1) with x1 > x0 and y1 > y0, got {box}")
        self._organ(state, organ).boxes[z] = (x0, y0, x1, y1)

    def add_points(
        self, state: InferenceState, organ: str, slice_index: int, points: np.ndarray, labels: np.ndarray
    ) -> None:
        """Point prompts on one slice: ``points`` (N, 2) xy pixels, ``labels`` (N,) 1 = inside, 0 = outside."""
        z = self._check_slice(state, slice_index)
        pts = np.asarray(points, dtype=np.float32).reshape(-1, 2)
        lab = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(pts) != len(lab) or len(pts) == 0:
            raise ValueError(f"points {pts.shape} and labels {lab.shape} must be non-empty and of equal length")
        self._organ(state, organ).points[z] = (pts, lab)

    def reset(self, state: InferenceState) -> None:
        """Forget prompts and results (embeddings are kept)."""
        state.prompts.clear()
        state.results.clear()
        state.reassignments = []
