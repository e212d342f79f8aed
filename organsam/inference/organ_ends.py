"""Organ ends along z: the slices past an organ's end, where the decoder drew another tissue, are cut.

The location prior often runs an organ past its end: a prior taller than the patient's organ, a partial scan, an
MR whose pseudo-CT registration is loose in z. On those slices the decoder still draws something inside the box,
the most salient neighbour (on ``ts_mr`` a spleen drawn for 8 slices on bright bowel, a left kidney for 8 slices
on the stomach). What gives it away is the tissue: an organ keeps its intensity from slice to slice, the
neighbour does not.

The rule, for solid organs that form one structure (:data:`ORGANS`): the reference tissue is the mask's voxels on
the slice the decoder trusts most (highest predicted IoU) and its drawn neighbours. Walking outwards from it, the
first slice whose median intensity lies outside the reference's Tukey fences (quartiles widened by ``fence`` x
IQR) is not the organ; it and every slice beyond it on that side are cut, since an organ is contiguous in z,
unless what is left would lie mostly on an anchor organ drawn (then the trusted slice was the anchor's). It runs
last, after the anchor z step, which reads the anchors' drawn ends. Partial volume at a real end keeps the median
inside the fences (the spleen's last slice on ``amos_0001_slab``, 23 HU against quartiles 38-50). Intensities
are the model grid's own (HU on CT, the scanner's values on MR), so the rule needs no modality-specific numbers.
Measured by ``bench/quality.py`` (row "without organ-end trimming"), ``bench/stress_prior.py`` and
``bench/mr_agreement.py``.
"""

from __future__ import annotations

import logging

import numpy as np

from organsam.inference.assignment import ANCHORS
from organsam.inference.postprocess import SINGLE_COMPONENT_ORGANS, SOLID_ORGANS
from organsam.inference.redraw import most_inside
from organsam.inference.state import InferenceState, OrganResult

logger = logging.getLogger(__name__)

__all__ = ["ORGANS", "trim_organ_ends", "trim_prior_placed"]

#: Organs of one homogeneous tissue that form one structure: their ends are checked.
ORGANS: frozenset[str] = SOLID_ORGANS & SINGLE_COMPONENT_ORGANS


def _fences(values: np.ndarray, fence: float) -> tuple[float, float]:
    q25, q75 = np.percentile(values, [25, 75])
    return float(q25 - fence * (q75 - q25)), float(q75 + fence * (q75 - q25))


def trim_organ_ends(result: OrganResult, image: np.ndarray, fence: float = 1.5) -> tuple[OrganResult, list[int]]:
    """``result`` without the slices past the organ's ends, and those slices.

    Args:
        result: one organ's masks and per-slice predicted IoUs on the model grid.
        image: (Z, Y, X) intensities of that grid (HU on CT).
        fence: the fences' width in interquartile ranges of the reference tissue.

    Returns:
        A new result (cut slices move from ``slice_scores`` to ``rejected``) and the cut slice indices, ascending.
    """
    drawn = [z for z in sorted(result.slice_scores) if result.mask[z].any()]
    if len(drawn) < 3:
        return result, []
    i = max(range(len(drawn)), key=lambda k: result.slice_scores[drawn[k]])
    core = drawn[max(0, i - 1) : i + 2]
    lo, hi = _fences(np.concatenate([image[z][result.mask[z]] for z in core]), fence)
    cut: list[int] = []
    for side in (drawn[i + 1 :], drawn[:i][::-1]):
        for k, z in enumerate(side):
            if z not in core and not lo <= float(np.median(image[z][result.mask[z]])) <= hi:
                cut += side[k:]
                break
    if not cut:
        return result, []
    out = result.copy()
    for z in cut:
        out.mask[z] = False
        out.rejected[z] = out.slice_scores.pop(z)
    return out, sorted(cut)


def trim_prior_placed(state: InferenceState) -> dict[str, OrganResult]:
    """The trimmed results of the organs placed by the prior alone (a text prompt, no user box or points) whose ends
    held another tissue.

    A trim that would leave the organ mostly (> half) inside an anchor organ's drawn mask is refused: the slice the
    decoder trusted most was then the anchor's (a prior moved off by centimetres puts the right kidney's boxes on
    the liver), and the slices it would cut are the organ's own. Only the anchors count (the organs the core draws
    reliably, :data:`organsam.inference.assignment.ANCHORS`): a bowel-sized duodenum mask over the gallbladder kept
    the gallbladder's 5 slices of gas on ``amos_0001_slab`` when every organ counted.
    """
    out: dict[str, OrganResult] = {}
    for oid, prompt in state.prompts.items():
        if oid in ORGANS and prompt.text is not None and not prompt.boxes and not prompt.points:
            result, cut = trim_organ_ends(state.results[oid], state.volume.array)
            if not cut:
                continue
            anchors = {o: r.mask for o, r in state.results.items() if o != oid and o in ANCHORS}
            inside, other = most_inside(result.mask, anchors)
            if inside > 0.5:
                logger.info(
                    "%s: slices %s hold another tissue, but without them it lies on the %s; kept", oid, cut, other
                )
                continue
            logger.info("%s: slices %s hold another tissue than the organ's; cut", oid, cut)
            out[oid] = result
    return out
