"""Golden test: our SAM core with the LiteMedSAM weights reproduces the original LiteMedSAM's Dice on real
AMOS 0013 CT (manual labels), with tight per-slice boxes.

Protocol (as the original LiteMedSAM inference): window L40/W400 to 0..255, longest side to 256 (area),
per-image min-max to [0, 1], zero padding bottom/right; the tight box of each organ on each slice scaled to
256 pixels (truncated); single-mask decoding; logits cropped, resized bilinearly to 512x512, sigmoid > 0.5;
3D Dice over the slab per organ.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
import torch
from conftest import data_path

from organsam.model import SamCore, build_lite_medsam
from organsam.preprocessing.slices import to_model_input_batch

logger = logging.getLogger(__name__)

AMOS_ORGANS = {
    1: "spleen",
    2: "kidney_right",
    3: "kidney_left",
    4: "gallbladder",
    6: "liver",
    7: "stomach",
    8: "aorta",
    10: "pancreas",
}
# Dice of the original LiteMedSAM code on this slab with this protocol.
REFERENCE_DICE = {
    "spleen": 0.935,
    "kidney_right": 0.923,
    "kidney_left": 0.920,
    "liver": 0.922,
    "aorta": 0.894,
    "gallbladder": 0.941,
    "stomach": 0.924,
    "pancreas": 0.822,
}
TOLERANCE = 0.02


@pytest.fixture(scope="module")
def slab() -> tuple[np.ndarray, np.ndarray]:
    """Windowed CT (Z, Y, X) in 0..255 and labels (Z, Y, X), canonical layout (rows posterior->anterior)."""
    from organsam.io import load_labels, load_volume
    from organsam.preprocessing.intensity import window_ct

    vol = load_volume(data_path("amos_0013_slab", "image.nii.gz"))
    lab = load_labels(data_path("amos_0013_slab", "label.nii.gz"), like=vol)
    assert vol.array.shape == (11, 512, 512)
    return window_ct(vol.array, "abdomen"), np.asarray(lab)


def segment_with_boxes(
    model: SamCore, image: np.ndarray, labels: np.ndarray, slices: list[int]
) -> dict[int, np.ndarray]:
    """Per-organ predicted masks (Z, Y, X) bool: each slice encoded once, all its organs decoded in one batch."""
    x, geom = to_model_input_batch(image[slices])
    pred = {k: np.zeros(labels.shape, dtype=bool) for k in AMOS_ORGANS}
    with torch.inference_mode():
        for i, z in enumerate(slices):
            present = [k for k in AMOS_ORGANS if (labels[z] == k).any()]
            if not present:
                continue
            emb = model.encode(torch.from_numpy(x[i : i + 1]), keep_levels=False).embedding
            boxes = []
            for k in present:
                ys, xs = np.nonzero(labels[z] == k)
                boxes.append([xs.min(), ys.min(), xs.max(), ys.max()])
            logits, _ = model.decode(emb, boxes=torch.from_numpy(geom.box_to_model(np.array(boxes))))
            full = geom.logits_to_original(logits[:, 0]) > 0  # sigmoid > 0.5
            for j, k in enumerate(present):
                pred[k][z] = full[j].numpy()
    return pred


def dice_table(pred: dict[int, np.ndarray], labels: np.ndarray, slices: list[int]) -> dict[str, float]:
    out = {}
    for k, name in AMOS_ORGANS.items():
        gt, p = labels[slices] == k, pred[k][slices]
        if gt.any():
            out[name] = float(2 * (gt & p).sum() / (gt.sum() + p.sum()))
    return out


def _format(dice: dict[str, float]) -> str:
    return ", ".join(f"{n} {d:.3f} (ref {REFERENCE_DICE[n]:.3f})" for n, d in dice.items())


@pytest.mark.slow
def test_pretrained_core_matches_litemedsam_dice(slab):
    image, labels = slab
    torch.manual_seed(0)
    model = build_lite_medsam()
    slices = list(range(image.shape[0]))
    t0 = time.perf_counter()
    pred = segment_with_boxes(model, image, labels, slices)
    elapsed = time.perf_counter() - t0
    dice = dice_table(pred, labels, slices)
    report = f"Dice per organ on AMOS 0013 ({elapsed:.1f} s for {len(slices)} slices): {_format(dice)}"
    logger.info(report)
    print(report)
    assert set(dice) == set(REFERENCE_DICE)
    off = {n: round(d - REFERENCE_DICE[n], 3) for n, d in dice.items() if abs(d - REFERENCE_DICE[n]) > TOLERANCE}
    assert not off, f"Dice differs from LiteMedSAM by more than {TOLERANCE}: {off}; {report}"


@pytest.mark.slow
def test_random_weights_fail_the_golden_protocol(slab):
    image, labels = slab
    torch.manual_seed(0)
    model = build_lite_medsam(pretrained=False)
    slices = [5, 9]  # together they hold all eight organs
    pred = segment_with_boxes(model, image, labels, slices)
    dice = dice_table(pred, labels, slices)
    report = f"random-weight Dice: {_format(dice)}"
    print(report)
    assert set(dice) == set(REFERENCE_DICE)
    assert max(dice.values()) < 0.3, report
    assert np.mean(list(dice.values())) < 0.15, report


def test_shared_image_side_decoding_matches_per_prompt() -> None:
    """Decoding several prompts per slice with ``image_index`` (image-only projections computed once per slice)
    gives the masks of decoding each prompt against its own copy of the embedding."""
    import torch

    from organsam.model.sam_core import build_lite_medsam

    core = build_lite_medsam().eval()
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(3, 256, 64, 64, generator=gen)
    idx = torch.tensor([0, 0, 1, 2, 2, 2])
    xy = torch.rand(6, 2, generator=gen) * 150
    boxes = torch.cat([xy, xy + 30 + torch.rand(6, 2, generator=gen) * 60], dim=1)
    with torch.inference_mode():
        shared, iou_s = core.decode(emb, boxes=boxes, image_index=idx)
        single, iou_p = core.decode(emb[idx], boxes=boxes)
    assert shared.shape == (6, 1, 256, 256) and iou_s.shape == (6, 1)
    torch.testing.assert_close(shared, single, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(iou_s, iou_p, atol=1e-5, rtol=1e-5)
