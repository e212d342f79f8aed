"""Slice <-> model-input geometry (organsam.preprocessing.slices), on real AMOS slices where possible."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import data_path

from organsam.preprocessing.slices import (
    SliceGeometry,
    geometry_for,
    resize_area,
    to_model_input,
    to_model_input_batch,
)


@pytest.fixture(scope="module")
def amos_slab() -> tuple[np.ndarray, np.ndarray]:
    """AMOS 0013 slab windowed to 0..255 (Z, Y, X) and its labels."""
    from organsam.io import load_labels, load_volume
    from organsam.preprocessing.intensity import window_ct

    vol = load_volume(data_path("amos_0013_slab", "image.nii.gz"))
    lab = load_labels(data_path("amos_0013_slab", "label.nii.gz"), like=vol)
    return window_ct(vol.array, "abdomen"), np.asarray(lab)


def test_square_slice_is_block_averaged_and_scaled(amos_slab):
    img, _ = amos_slab
    x, geom = to_model_input(img[5])
    assert x.shape == (3, 256, 256) and x.dtype == np.float32
    assert geom == SliceGeometry((512, 512), (256, 256), 256)
    # 512 -> 256 area resampling is the exact mean of each 2x2 block, then min-max to [0, 1].
    blocks = img[5].reshape(256, 2, 256, 2).mean(axis=(1, 3))
    expected = (blocks - blocks.min()) / (blocks.max() - blocks.min())
    np.testing.assert_allclose(x[0], expected, atol=1e-5)
    assert np.array_equal(x[0], x[1]) and np.array_equal(x[0], x[2])
    assert x.min() == 0.0 and x.max() == pytest.approx(1.0)


def test_non_square_slice_is_padded_bottom_right(amos_slab):
    img, _ = amos_slab
    crop = img[5, 100:400, :]  # 300 x 512
    x, geom = to_model_input(crop)
    assert geom.resized_shape == (150, 256)
    assert geom.scale == pytest.approx(0.5)
    assert np.all(x[:, 150:, :] == 0)
    assert x[:, :150].max() == pytest.approx(1.0) and x[:, :150].min() == 0.0
    # A tall slice pads on the right instead.
    xt, gt = to_model_input(crop.T)
    assert gt.resized_shape == (256, 150)
    assert np.all(xt[:, :, 150:] == 0)
    np.testing.assert_allclose(xt[0, :, :150], x[0, :150].T, atol=1e-6)


def test_resize_area_properties():
    rng = np.random.default_rng(0)
    const = np.full((1, 300, 211), 7.0, dtype=np.float32)
    np.testing.assert_allclose(resize_area(const, (256, 180)), 7.0, rtol=1e-6)  # non-integer ratio
    np.testing.assert_allclose(resize_area(const, (400, 300)), 7.0, rtol=1e-6)  # enlarging
    a = rng.random((2, 90, 60)).astype(np.float32)
    out = resize_area(a, (30, 20))  # 3x3 blocks
    np.testing.assert_allclose(out, a.reshape(2, 30, 3, 20, 3).mean(axis=(2, 4)), atol=1e-6)
    # Enlarging by an integer factor replicates pixels (OpenCV INTER_AREA behaviour).
    small = rng.random((1, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(resize_area(small, (8, 10)), small.repeat(2, axis=1).repeat(2, axis=2), atol=1e-6)


def test_batch_matches_single_and_constant_slice_is_safe(amos_slab):
    img, _ = amos_slab
    xb, gb = to_model_input_batch(img[3:6])
    for i in range(3):
        xs, gs = to_model_input(img[3 + i])
        np.testing.assert_array_equal(xb[i], xs)
        assert gs == gb
    x, _ = to_model_input(np.full((64, 48), 12.0))
    assert np.isfinite(x).all() and x.max() == 0.0


def test_boxes_follow_litemedsam_truncation():
    geom = geometry_for((512, 512))
    box = np.array([[263, 253, 281, 273], [0, 0, 511, 511]])
    np.testing.assert_array_equal(geom.box_to_model(box), [[131, 126, 140, 136], [0, 0, 255, 255]])
    np.testing.assert_allclose(geom.box_to_model(box, integer=False), box / 2)
    np.testing.assert_allclose(geom.box_to_model(torch.tensor([10.0, 20, 30, 40])), [5, 10, 15, 20])
    g2 = geometry_for((300, 600))
    np.testing.assert_allclose(g2.points_to_model([[600, 300]]), [[256, 128]], rtol=1e-6)
    with pytest.raises(ValueError, match="x_min, y_min, x_max, y_max"):
        geom.box_to_model([1, 2, 3])


def test_label_round_trip_through_model_space(amos_slab):
    _, lab = amos_slab
    liver = lab[10] == 6  # the largest liver section of the slab
    assert liver.sum() > 10000
    for crop in (slice(None), slice(60, 420)):  # square and non-square slices
        mask = liver[crop]
        geom = geometry_for(mask.shape)
        small = geom.mask_to_model(mask)
        assert small.shape == (256, 256)
        logits = np.where(small, 10.0, -10.0).astype(np.float32)
        # Logits in the padding must be ignored.
        h, w = geom.resized_shape
        logits[h:, :] = 10.0
        logits[:, w:] = 10.0
        back = geom.logits_to_original(logits)
        assert back.shape == mask.shape and back.dtype == np.float32
        pred = back > 0
        dice = 2 * (pred & mask).sum() / (pred.sum() + mask.sum())
        assert dice > 0.97, f"round-trip Dice {dice:.3f}"
    # Torch batches keep their leading dimensions.
    t = torch.zeros(2, 3, 256, 256)
    assert geometry_for((300, 512)).logits_to_original(t).shape == (2, 3, 300, 512)


def test_input_errors_are_clear():
    with pytest.raises(ValueError, match="one \\(H, W\\) slice"):
        to_model_input(np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="\\(N, H, W\\)"):
        to_model_input_batch(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="must end in"):
        geometry_for((100, 100)).logits_to_original(np.zeros((64, 64), np.float32))
