"""Intensity schemes on real CT and MR volumes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path

from organsam.io import Volume, load_labels, load_volume
from organsam.preprocessing.intensity import (
    CT_WINDOWS,
    CTWindow,
    IntensityError,
    MRNormalizer,
    check_ct_intensities,
    display_scheme,
    guess_modality,
    is_prewindowed_8bit,
    normalize_mr,
    to_uint8_display,
    window_ct,
)


@pytest.fixture(scope="module")
def ct():
    vol = load_volume(data_path("ts_a", "image.nii.gz"))
    labels = load_labels(data_path("ts_a", "label_ts_v2_fast.nii.gz"), vol)
    return vol, labels


@pytest.fixture(scope="module")
def mr():
    return load_volume(data_path("ts_mr", "image.nii.gz"))


def test_named_windows():
    assert CT_WINDOWS["abdomen"] == (40.0, 400.0) and CT_WINDOWS["liver"] == (80.0, 150.0)
    assert CT_WINDOWS["bone"] == (400.0, 1800.0) and CT_WINDOWS["lung"] == (-600.0, 1500.0)
    assert CT_WINDOWS["mediastinum"] == (50.0, 350.0) and CT_WINDOWS["soft_tissue"] == (50.0, 400.0)
    w = CTWindow("abdomen")
    assert (w.lower, w.upper) == (-160.0, 240.0)
    assert CTWindow("Soft-Tissue").width == 400.0
    with pytest.raises(ValueError, match="unknown CT window"):
        CTWindow("brain_stroke")
    with pytest.raises(ValueError, match="positive"):
        CTWindow((40, 0))


def test_window_ct_on_real_ct(ct):
    vol, labels = ct
    out = window_ct(vol.array, "abdomen")
    assert out.dtype == np.float32 and out.shape == vol.shape
    assert out.min() == 0.0 and out.max() == 255.0
    hu = vol.array
    # exact linear map inside the window, clipping outside
    inside = (hu > -160) & (hu < 240)
    assert np.allclose(out[inside], (hu[inside] + 160.0) * 255.0 / 400.0, atol=1e-3)
    assert np.all(out[hu <= -160] == 0) and np.all(out[hu >= 240] == 255)
    # air is black, liver (TS label 5) mid-grey, bone bright in the bone window
    assert float(np.median(out[hu < -900])) == 0.0
    liver = float(np.median(out[labels == 5]))
    assert 80 < liver < 180
    assert np.array_equal(CTWindow((40, 400)).run(hu), out)
    bone = window_ct(hu, "bone")
    assert float(np.median(bone[labels == 5])) < float(np.median(bone[(labels >= 25) & (labels <= 50)]))


def test_normalize_mr_on_real_mr(mr):
    out = normalize_mr(mr.array)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 255.0
    fg = mr.array[mr.array > 0]
    lo, hi = np.percentile(fg, [0.5, 99.5])
    assert np.all(out[mr.array <= 0] == 0)
    inside = (mr.array > lo) & (mr.array < hi)
    assert np.allclose(out[inside], (mr.array[inside] - lo) * 255.0 / (hi - lo), atol=1e-2)
    assert np.array_equal(MRNormalizer().run(mr.array), out)
    all_voxels = normalize_mr(mr.array, 1, 99, foreground_only=False)
    assert all_voxels.min() == 0.0 and all_voxels.max() == 255.0
    with pytest.raises(ValueError):
        MRNormalizer(50, 10)


def test_prewindowed_detection(ct, mr):
    vol, _ = ct
    assert not is_prewindowed_8bit(vol.array)
    assert not is_prewindowed_8bit(mr.array)
    windowed = np.rint(window_ct(vol.array))
    assert is_prewindowed_8bit(windowed)
    assert is_prewindowed_8bit(windowed.astype(np.uint8))
    assert not is_prewindowed_8bit(window_ct(vol.array))  # fractional values are not 8-bit data
    assert not is_prewindowed_8bit((vol.array > 0).astype(np.float32))  # a mask is not an image


def test_guess_modality(ct, mr):
    assert guess_modality(ct[0].array) == "CT"
    assert guess_modality(mr.array) == "MR"
    assert guess_modality(np.rint(window_ct(ct[0].array))) == "unknown"
    amos = load_volume(data_path("amos_0013_slab", "image.nii.gz"))  # padded with -2048
    assert guess_modality(amos.array) == "CT"


def test_check_ct_intensities(ct, mr):
    check_ct_intensities(ct[0].array, "ct.nii.gz")
    check_ct_intensities(np.rint(window_ct(ct[0].array)), "windowed.npz")
    with pytest.raises(IntensityError, match="mr.nii.gz.*Hounsfield") as err:
        check_ct_intensities(mr.array, "mr.nii.gz")
    assert isinstance(err.value, ValueError) and "modality 'MR'" in str(err.value)
    # CT stored without RescaleIntercept (raw 0..4095 values) is caught too
    with pytest.raises(IntensityError, match="RescaleSlope"):
        check_ct_intensities(ct[0].array + 1024.0, "raw.dcm")


def test_to_uint8_display_picks_scheme(ct, mr):
    vol, _ = ct
    assert display_scheme(vol) == "ct_window"
    out = to_uint8_display(vol)
    assert out.dtype == np.uint8 and np.array_equal(out, np.rint(window_ct(vol.array)).astype(np.uint8))
    assert display_scheme(mr) == "mr_percentile"
    assert np.array_equal(to_uint8_display(mr), np.rint(normalize_mr(mr.array)).astype(np.uint8))
    pre = Volume.from_array(np.rint(window_ct(vol.array, "liver")), vol.spacing, modality="CT")
    assert display_scheme(pre) == "prewindowed"  # already windowed: not windowed a second time
    assert np.array_equal(to_uint8_display(pre), pre.array.astype(np.uint8))
    png = load_volume(data_path("slices_2d", "sam_med2d_demo", "data_demo", "images", "amos_0006_90.png"))
    assert display_scheme(png) == "prewindowed"
    assert np.array_equal(to_uint8_display(png), png.array.astype(np.uint8))
