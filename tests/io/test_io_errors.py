"""Bad input gives a VolumeReadError (a ValueError) naming the file, the problem and the fix."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from conftest import data_path

from organsam.io import VolumeReadError, load_labels, load_volume
from organsam.io.errors import VolumeFileNotFoundError


@pytest.fixture(scope="module")
def ts_a_img():
    return nib.load(str(data_path("ts_a", "image.nii.gz")))


def _assert_good_message(err: pytest.ExceptionInfo, path, *words: str) -> None:
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    assert str(path) in msg, msg
    assert "Fix:" in msg, msg
    for w in words:
        assert w in msg, msg


def test_truncated_nifti(tmp_path):
    src = data_path("ts_a", "image.nii.gz")
    bad = tmp_path / "truncated.nii.gz"
    data = src.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(VolumeReadError) as err:
        load_volume(bad)
    _assert_good_message(err, bad, "truncated or corrupt", "copy or export it again")


def test_garbage_with_nifti_ending(tmp_path):
    bad = tmp_path / "garbage.nii.gz"
    bad.write_bytes(b"this is not an image" * 100)
    with pytest.raises(VolumeReadError) as err:
        load_volume(bad)
    _assert_good_message(err, bad, "not a readable NIfTI")


def test_2d_nifti(tmp_path, ts_a_img):
    slice2d = np.asanyarray(ts_a_img.dataobj)[:, :, 50]
    path = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(slice2d, ts_a_img.affine), str(path))
    with pytest.raises(VolumeReadError) as err:
        load_volume(path)
    _assert_good_message(err, path, "2D image", "3D")


def test_4d_nifti(tmp_path, ts_a_img):
    vol = np.asanyarray(ts_a_img.dataobj)[:40, :40, :20]
    path = tmp_path / "series.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([vol, vol, vol], axis=-1), ts_a_img.affine), str(path))
    with pytest.raises(VolumeReadError) as err:
        load_volume(path)
    _assert_good_message(err, path, "4D", "3 volumes", "extract one 3D volume")


def test_4d_with_one_volume_is_accepted(tmp_path, ts_a_img):
    vol = np.asanyarray(ts_a_img.dataobj)[:40, :40, :20]
    path = tmp_path / "one.nii.gz"
    nib.save(nib.Nifti1Image(vol[..., None], ts_a_img.affine), str(path))
    loaded = load_volume(path)
    assert loaded.shape == (20, 40, 40)
    assert np.array_equal(loaded.to_file_layout(loaded.array), vol.astype(np.float32))


def test_empty_array(tmp_path, ts_a_img):
    path = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((0, 10, 10), np.int16), ts_a_img.affine), str(path))
    with pytest.raises(VolumeReadError) as err:
        load_volume(path)
    _assert_good_message(err, path, "empty")


def test_all_nan(tmp_path, ts_a_img):
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(np.full((20, 20, 10), np.nan, np.float32), ts_a_img.affine), str(path))
    with pytest.raises(VolumeReadError) as err:
        load_volume(path)
    _assert_good_message(err, path, "all NaN")


def test_some_nan_is_repaired(tmp_path, ts_a_img):
    data = np.asanyarray(ts_a_img.dataobj)[:30, :30, :10].astype(np.float32)
    data[0, 0, 0] = np.nan
    path = tmp_path / "partial_nan.nii.gz"
    nib.save(nib.Nifti1Image(data, ts_a_img.affine), str(path))
    vol = load_volume(path)
    assert np.all(np.isfinite(vol.array))
    assert vol.to_file_layout(vol.array)[0, 0, 0] == np.nanmin(data)


def test_missing_path(tmp_path):
    path = tmp_path / "nope.nii.gz"
    with pytest.raises(FileNotFoundError) as err:
        load_volume(path)
    assert isinstance(err.value, VolumeFileNotFoundError) and isinstance(err.value, VolumeReadError)
    _assert_good_message(err, path, "does not exist")


def test_unknown_file_type(tmp_path):
    path = tmp_path / "report.txt"
    path.write_text("not an image")
    with pytest.raises(VolumeReadError) as err:
        load_volume(path)
    _assert_good_message(err, path, "unknown", ".nii.gz", "DICOM")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(VolumeReadError) as err:
        load_volume(tmp_path)
    _assert_good_message(err, tmp_path, "no DICOM")


def test_mr_passed_as_ct():
    path = data_path("ts_mr", "image.nii.gz")
    with pytest.raises(VolumeReadError) as err:
        load_volume(path, modality="CT")
    _assert_good_message(err, path, "Hounsfield", "modality 'MR'")


def test_labels_on_another_grid():
    vol = load_volume(data_path("ts_a", "image.nii.gz"))
    path = data_path("ts_mr", "label_ts_mr.nii.gz")
    with pytest.raises(VolumeReadError) as err:
        load_labels(path, vol)
    _assert_good_message(err, path, "differs from the image grid")


def test_labels_with_same_shape_but_shifted_origin(tmp_path):
    img_path = data_path("ts_mr", "image.nii.gz")
    vol = load_volume(img_path)
    lab = nib.load(str(data_path("ts_mr", "label_ts_mr.nii.gz")))
    shifted = lab.affine.copy()
    shifted[:3, 3] += [0.0, 0.0, 15.0]
    path = tmp_path / "shifted.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(lab.dataobj), shifted), str(path))
    with pytest.raises(VolumeReadError) as err:
        load_labels(path, vol)
    _assert_good_message(err, path, "not on the image grid", "15 mm")


def test_non_integer_labels(tmp_path):
    vol = load_volume(data_path("ts_mr", "image.nii.gz"))
    img = nib.load(str(data_path("ts_mr", "image.nii.gz")))
    path = tmp_path / "float_labels.nii.gz"
    nib.save(nib.Nifti1Image(img.get_fdata(dtype=np.float32) / 7.0, img.affine), str(path))
    with pytest.raises(VolumeReadError) as err:
        load_labels(path, vol)
    _assert_good_message(err, path, "non-integer")


def test_float_stored_labels_are_accepted():
    """TS v1 labels are stored as float64: whole numbers are accepted and returned as integers."""
    vol = load_volume(data_path("ts_a", "image.nii.gz"))
    labels = load_labels(data_path("ts_a", "label_ts_v1.nii.gz"), vol)
    assert labels.dtype == np.uint8 and labels.max() > 50


def test_cropped_label_block_is_embedded_and_misaligned_one_refused(tmp_path):
    vol = load_volume(data_path("ts_a", "image.nii.gz"))
    lab = nib.load(str(data_path("ts_a", "label_ts_v2_fast.nii.gz")))
    full = load_labels(data_path("ts_a", "label_ts_v2_fast.nii.gz"), vol)
    block = lab.slicer[20:90, 10:80, 30:100]  # nibabel moves the affine origin with the crop
    path = tmp_path / "block.nii.gz"
    nib.save(block, str(path))
    embedded = load_labels(path, vol)
    assert embedded.shape == vol.shape
    inside = np.zeros(vol.shape, bool)
    inside[30:100, 10:80, 122 - 90 : 122 - 20] = True  # canonical z <- k, y <- j, x <- flipped i (RAS file)
    assert np.array_equal(embedded[inside], full[inside]) and not embedded[~inside].any()
    shifted = block.affine.copy()
    shifted[:3, 3] += [1.5, 0.0, 0.0]  # half a voxel: not on the image grid
    bad = tmp_path / "half_voxel.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(block.dataobj), shifted), str(bad))
    with pytest.raises(VolumeReadError) as err:
        load_labels(bad, vol)
    _assert_good_message(err, bad, "not a block")
