"""Resampling of real images (linear) and label maps (nearest)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path

from organsam.io import load_labels, load_volume
from organsam.preprocessing.resample import resample_to_shape, resample_volume, resampled_shape


@pytest.fixture(scope="module")
def amos():
    vol = load_volume(data_path("amos_0013_slab", "image.nii.gz"))
    return vol, load_labels(data_path("amos_0013_slab", "label.nii.gz"), vol)


def test_resampled_shape():
    assert resampled_shape((11, 512, 512), (5.0, 0.781, 0.781), (5.0, 1.562, 1.562)) == (11, 256, 256)
    assert resampled_shape((3, 10, 10), (1, 1, 1), (100, 1, 1)) == (1, 10, 10)
    with pytest.raises(ValueError):
        resampled_shape((3, 3), (1, 1, 1), (1, 1, 1))
    with pytest.raises(ValueError):
        resampled_shape((3, 3, 3), (1, 1, 1), (1, 0, 1))


def test_image_and_labels_resampled_consistently(amos):
    vol, labels = amos
    new = (5.0, 1.5, 1.5)
    img = resample_volume(vol.array, vol.spacing, new, order=1)
    lab = resample_volume(labels, vol.spacing, new, order=0)
    shape = resampled_shape(vol.shape, vol.spacing, new)
    assert img.shape == lab.shape == shape == (11, 267, 267)
    assert img.dtype == np.float32 and lab.dtype == labels.dtype
    # labels keep their values (nearest neighbour creates none) and organ volumes in mm^3 are kept
    assert set(np.unique(lab)) <= set(np.unique(labels))
    out_spacing = np.array(vol.shape) * np.array(vol.spacing) / np.array(shape)
    for organ in (1, 6, 8):  # spleen, liver, aorta
        before = (labels == organ).sum() * np.prod(vol.spacing)
        after = (lab == organ).sum() * np.prod(out_spacing)
        assert after == pytest.approx(before, rel=0.05)
    # linear interpolation stays within the input range, and the liver's intensity is kept
    assert img.min() >= vol.array.min() and img.max() <= vol.array.max()
    assert np.median(img[lab == 6]) == pytest.approx(np.median(vol.array[labels == 6]), abs=10)
    # centroids stay in place (in mm)
    c0 = np.argwhere(labels == 6).mean(0) * vol.spacing
    c1 = (np.argwhere(lab == 6).mean(0) + 0.5) * out_spacing - 0.5 * np.array(vol.spacing)
    assert np.allclose(c0, c1, atol=2.0)


def test_resample_to_shape_round_trip_and_dtypes(amos):
    vol, labels = amos
    small = resample_to_shape(labels, (11, 128, 128), order=0)
    back = resample_to_shape(small, vol.shape, order=0)
    assert back.shape == vol.shape
    agree = np.mean(back[labels > 0] == labels[labels > 0])
    assert agree > 0.85
    mask = labels == 6
    m = resample_to_shape(mask, (11, 100, 100), order=0)
    assert m.dtype == bool and m.any()
    same = resample_to_shape(vol.array, vol.shape)
    assert np.array_equal(same, vol.array) and same is not vol.array
    as_float = resample_to_shape(labels, (11, 64, 64), order=1)
    assert as_float.dtype == np.float32
    with pytest.raises(ValueError, match="axes"):
        resample_to_shape(labels, (64, 64))
