"""Design losses (organsam.model.losses) on a real liver mask in model space."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import data_path

from organsam.model import losses


@pytest.fixture(scope="module")
def liver() -> torch.Tensor:
    """(1, 1, 256, 256) float liver mask of AMOS 0013 slice 10 in the model space."""
    from organsam.io import load_labels, load_volume
    from organsam.preprocessing.slices import geometry_for

    vol = load_volume(data_path("amos_0013_slab", "image.nii.gz"))
    lab = load_labels(data_path("amos_0013_slab", "label.nii.gz"), like=vol)
    m = geometry_for(vol.array.shape[1:]).mask_to_model(np.asarray(lab[10]) == 6)
    assert m.sum() > 1000
    return torch.from_numpy(m)[None, None].float()


def _logits(mask: torch.Tensor, margin: float = 8.0) -> torch.Tensor:
    return (mask * 2 - 1) * margin


def test_mask_losses_rank_predictions(liver):
    perfect, inverted = _logits(liver), _logits(1 - liver)
    shifted = _logits(torch.roll(liver, shifts=20, dims=-1))
    for fn in (losses.focal_dice_loss, losses.bce_dice_loss, losses.dice_loss, losses.focal_loss):
        good, mid, bad = fn(perfect, liver), fn(shifted, liver), fn(inverted, liver)
        assert good < mid < bad, fn.__name__
        assert float(good) < 0.01, fn.__name__
    # SAM's 20:1 weighting.
    d, f = losses.dice_loss(shifted, liver), losses.focal_loss(shifted, liver)
    torch.testing.assert_close(losses.focal_dice_loss(shifted, liver), 20 * f + d)
    # Dice skips empty targets (an absent organ): only the pixel-wise term sees them.
    empty = torch.zeros_like(liver)
    assert float(losses.dice_loss(perfect, empty)) == 0.0
    assert float(losses.focal_loss(perfect, empty)) > 100 * float(losses.focal_loss(_logits(empty), empty))
    both = torch.cat([liver, empty])
    torch.testing.assert_close(losses.dice_loss(torch.cat([shifted, perfect]), both), losses.dice_loss(shifted, liver))


def test_iou_targets_and_l1(liver):
    shifted = torch.roll(liver, shifts=20, dims=-1)
    iou = losses.iou_targets(_logits(shifted), liver)
    expected = float((shifted.bool() & liver.bool()).sum() / (shifted.bool() | liver.bool()).sum())
    assert iou.shape == (1, 1) and abs(float(iou) - expected) < 1e-6
    assert float(losses.iou_targets(_logits(torch.zeros_like(liver)), torch.zeros_like(liver))) == 1.0
    pred = torch.tensor([[expected]], requires_grad=True)
    assert float(losses.iou_l1_loss(pred.detach(), _logits(shifted), liver)) < 1e-6
    loss = losses.iou_l1_loss(pred + 0.25, _logits(shifted), liver)
    loss.backward()
    assert abs(float(loss.detach()) - 0.25) < 1e-5 and pred.grad is not None


def test_alignment_presence_and_bf16(liver):
    a = _logits(liver)
    assert float(losses.mask_alignment_loss(a, a)) < 0.01
    assert float(losses.mask_alignment_loss(a, _logits(1 - liver))) > 0.99
    p = losses.presence_loss(torch.tensor([6.0, -6.0]), torch.tensor([1.0, 0.0]))
    assert float(p) < 0.01
    with pytest.raises(ValueError, match="same shape"):
        losses.presence_loss(torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        losses.dice_loss(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v = losses.focal_dice_loss(a.bfloat16(), liver)
    assert v.dtype == torch.float32 and torch.isfinite(v)
    low = losses.downsample_target(liver, 64)
    assert low.shape == (1, 1, 64, 64) and float(low.min()) >= 0 and float(low.max()) <= 1
    assert abs(float(low.mean()) - float(liver.mean())) < 1e-6
