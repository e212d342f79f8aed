"""NRRD/MHA (SimpleITK), CVPR-challenge npz and 2D PNG readers, on real data."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813
from conftest import data_path

from organsam.io import Volume, load_labels, load_volume, write_labels
from organsam.io.npz import npz_spacing_zyx
from organsam.preprocessing.intensity import window_ct


@pytest.mark.parametrize("ext", [".mha", ".nrrd"])
def test_itk_formats_match_the_nifti(tmp_path, ext):
    """SimpleITK converts the LPS-stored MR NIfTI to MHA/NRRD; our reader must land on the same canonical grid."""
    src = data_path("ts_mr", "image.nii.gz")
    out = tmp_path / f"image{ext}"
    sitk.WriteImage(sitk.ReadImage(str(src)), str(out))
    nii, itk = load_volume(src), load_volume(out)
    assert itk.meta.file_format == "itk"
    assert np.array_equal(nii.array, itk.array)
    assert np.allclose(nii.world_affine_canonical, itk.world_affine_canonical, atol=1e-4)
    # labels read from NIfTI, written next to the ITK input as ITK, read back
    labels = load_labels(data_path("ts_mr", "label_ts_mr.nii.gz"), itk)
    back = write_labels(labels, itk, tmp_path / f"labels{ext}")
    assert np.array_equal(load_labels(back, nii), labels)
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert np.array_equal(itk.to_file_layout(itk.array), raw.astype(np.float32))


def _challenge_npz(tmp_path, with_gts=True):
    """A challenge-style npz made from AMOS 0013 the way the challenge did: sitk array order, 0..255."""
    img = nib.load(str(data_path("amos_0013_slab", "image.nii.gz")))
    lab = nib.load(str(data_path("amos_0013_slab", "label.nii.gz")))
    imgs = np.transpose(window_ct(img.get_fdata(dtype=np.float32)), (2, 1, 0)).round().astype(np.uint8)
    gts = np.transpose(np.asanyarray(lab.dataobj), (2, 1, 0)).astype(np.uint8)
    zooms = img.header.get_zooms()
    path = tmp_path / "CT_Abd_amos_0013.npz"
    extra = {"gts": gts} if with_gts else {}
    np.savez_compressed(path, imgs=imgs, spacing=np.array([zooms[0], zooms[1], zooms[2]]), **extra)
    return path, imgs, gts


def test_npz_reader(tmp_path):
    path, imgs, gts = _challenge_npz(tmp_path)
    vol = load_volume(path)
    assert vol.meta.file_format == "npz" and vol.meta.is_8bit
    assert vol.shape == imgs.shape == (11, 512, 512)
    assert np.array_equal(vol.array, imgs.astype(np.float32))
    assert np.allclose(vol.spacing, (5.0, 0.781, 0.781), atol=1e-3)
    assert vol.modality == "unknown"  # 8-bit data carries no modality
    assert load_volume(path, modality="CT").modality == "CT"  # pre-windowed 8-bit passes the CT check
    labels = load_labels(path, vol)
    assert np.array_equal(labels, gts)
    # the AMOS npz (LAS file) is in canonical layout: liver (6) right of spleen (1)
    liver, spleen = np.argwhere(labels == 6).mean(0), np.argwhere(labels == 1).mean(0)
    assert liver[2] < spleen[2]
    # the same data as the NIfTI, in canonical layout
    nii = load_volume(data_path("amos_0013_slab", "image.nii.gz"))
    assert np.array_equal(vol.array, np.rint(window_ct(nii.array)))
    # labels written as challenge output (segs) are read back unchanged
    out = write_labels(labels, vol, tmp_path / "pred.npz")
    with np.load(out) as data:
        assert np.array_equal(data["segs"], gts)


def test_npz_without_gts(tmp_path):
    from organsam.io import VolumeReadError

    path, _, _ = _challenge_npz(tmp_path, with_gts=False)
    vol = load_volume(path)
    with pytest.raises(VolumeReadError, match="no 'gts'"):
        load_labels(path, vol)


def test_npz_spacing_order():
    assert npz_spacing_zyx([0.7, 0.8, 5.0]) == (5.0, 0.8, 0.7)
    assert npz_spacing_zyx([5.0, 0.8, 0.7], order="zyx") == (5.0, 0.8, 0.7)
    with pytest.raises(ValueError):
        npz_spacing_zyx([1.0, 0.0, 1.0])


def test_png_slice_and_mask():
    img_path = data_path("slices_2d", "sam_med2d_demo", "data_demo", "images", "amos_0006_90.png")
    mask_path = data_path("slices_2d", "sam_med2d_demo", "data_demo", "masks", "amos_0006_90_liver_000.png")
    vol = load_volume(img_path)
    assert vol.shape == (1, 512, 512) and vol.meta.is_8bit and vol.modality == "unknown"
    assert vol.meta.file_format == "image"
    assert vol.array.min() >= 0 and vol.array.max() <= 255
    mask = load_labels(mask_path, vol)
    assert mask.shape == (1, 512, 512) and mask.dtype == np.uint8 and mask.any()


def test_png_labels_written_back(tmp_path):
    img_path = data_path("slices_2d", "sam_med2d_demo", "data_demo", "images", "amos_0006_90.png")
    mask_path = data_path("slices_2d", "sam_med2d_demo", "data_demo", "masks", "amos_0006_90_liver_000.png")
    vol = load_volume(img_path)
    mask = load_labels(mask_path, vol)
    labels = (mask > 0).astype(np.uint8) * 6
    out = write_labels(labels, vol, tmp_path / "pred.png")
    assert np.array_equal(load_labels(out, vol), labels)
    with pytest.raises(ValueError, match="one slice"):
        write_labels(np.zeros((2, 4, 4), np.uint8), Volume.from_array(np.zeros((2, 4, 4))), tmp_path / "two.png")


def test_rgba_png_becomes_grayscale():
    path = data_path("slices_2d", "biomedparse_demo", "demo", "06_CT_abdomen.png")
    vol = load_volume(path)
    assert vol.shape == (1, 1024, 1024) and vol.meta.is_8bit
    from PIL import Image

    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
    assert np.array_equal(vol.array[0], rgb[..., 0].astype(np.float32))
