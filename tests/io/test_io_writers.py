"""Writers: label maps and per-organ masks on exactly the input grid; affine/qform/sform bit-for-bit."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from conftest import data_path

from organsam.io import VolumeWriteError, load_labels, load_volume, write_labels, write_masks

_GEOMETRY_FIELDS = (
    "qform_code",
    "sform_code",
    "quatern_b",
    "quatern_c",
    "quatern_d",
    "qoffset_x",
    "qoffset_y",
    "qoffset_z",
    "srow_x",
    "srow_y",
    "srow_z",
    "pixdim",
    "xyzt_units",
)

CASES = [  # RAS, LPS, LAS
    ("ts_a/image.nii.gz", "ts_a/label_ts_v2_fast.nii.gz"),
    ("ts_mr/image.nii.gz", "ts_mr/label_ts_mr.nii.gz"),
    ("amos_0013_slab/image.nii.gz", "amos_0013_slab/label.nii.gz"),
]


def _assert_same_geometry(written: nib.Nifti1Image, original: nib.Nifti1Image) -> None:
    assert np.array_equal(written.affine, original.affine)
    assert np.array_equal(written.header.get_qform(), original.header.get_qform())
    assert np.array_equal(written.header.get_sform(), original.header.get_sform())
    for key in _GEOMETRY_FIELDS:
        assert np.array_equal(written.header[key], original.header[key]), key
    assert written.shape == original.shape


@pytest.mark.parametrize(("image", "label"), CASES)
def test_labelmap_written_on_input_grid_bit_for_bit(tmp_path, image, label):
    img_path = data_path(*image.split("/"))
    lab_path = data_path(*label.split("/"))
    vol = load_volume(img_path)
    labels = load_labels(lab_path, vol)
    out = write_labels(labels, vol, tmp_path / "out" / "labels.nii.gz")
    assert out.exists()
    written, original = nib.load(str(out)), nib.load(str(img_path))
    _assert_same_geometry(written, original)
    assert written.get_data_dtype() == np.uint8
    assert written.header.get_intent()[0] == "label"
    # data identical to the reference label file, voxel for voxel in the file's own order
    assert np.array_equal(np.asanyarray(written.dataobj), np.asanyarray(nib.load(str(lab_path)).dataobj))
    # no temporary files left behind
    assert sorted(p.name for p in out.parent.iterdir()) == ["labels.nii.gz"]


def test_uint16_labels(tmp_path):
    vol = load_volume(data_path("ts_mr", "image.nii.gz"))
    labels = np.zeros(vol.shape, dtype=np.int32)
    labels[5, 10:20, 30:40] = 300
    out = write_labels(labels, vol, tmp_path / "big.nii")
    written = nib.load(str(out))
    assert written.get_data_dtype() == np.uint16
    assert np.array_equal(vol.from_file_layout(np.asanyarray(written.dataobj)), labels)


def test_masks_one_file_per_organ(tmp_path):
    img_path = data_path("ts_a", "image.nii.gz")
    vol = load_volume(img_path)
    labels = load_labels(data_path("ts_a", "label_ts_v2_fast.nii.gz"), vol)
    masks = {"liver": labels == 5, "spleen": labels == 1, "kidney_left": labels == 3}
    paths = write_masks(masks, vol, tmp_path / "masks")
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == [
        "kidney_left.nii.gz",
        "liver.nii.gz",
        "spleen.nii.gz",
    ]
    original = nib.load(str(img_path))
    for organ, path in paths.items():
        written = nib.load(str(path))
        _assert_same_geometry(written, original)
        data = np.asanyarray(written.dataobj)
        assert data.dtype == np.uint8 and set(np.unique(data)) <= {0, 1}
        assert np.array_equal(vol.from_file_layout(data).astype(bool), masks[organ])
    with pytest.raises(VolumeWriteError, match="safe file name"):
        write_masks({"../evil": masks["liver"]}, vol, tmp_path / "masks")


def test_refuses_to_overwrite_the_input(tmp_path):
    src = data_path("ts_mr", "image.nii.gz")
    copy = tmp_path / "image.nii.gz"
    copy.write_bytes(src.read_bytes())
    vol = load_volume(copy)
    before = copy.read_bytes()
    with pytest.raises(VolumeWriteError, match="never overwrites its input"):
        write_labels(np.zeros(vol.shape, np.uint8), vol, copy)
    assert copy.read_bytes() == before


def test_existing_output_is_replaced_atomically(tmp_path):
    vol = load_volume(data_path("ts_mr", "image.nii.gz"))
    out = tmp_path / "labels.nii.gz"
    out.write_bytes(b"old result")
    labels = np.zeros(vol.shape, np.uint8)
    labels[3:6, 20:30, 40:50] = 7
    write_labels(labels, vol, out)
    assert np.array_equal(vol.from_file_layout(np.asanyarray(nib.load(str(out)).dataobj)), labels)
    assert [p.name for p in tmp_path.iterdir()] == ["labels.nii.gz"]
    # a failing write leaves the previous file untouched and no temporary file
    with pytest.raises(VolumeWriteError, match="label shape"):
        write_labels(np.zeros((1, 2, 3), np.uint8), vol, out)
    with pytest.raises(VolumeWriteError, match="whole numbers"):
        write_labels(np.full(vol.shape, 0.5), vol, out)
    assert [p.name for p in tmp_path.iterdir()] == ["labels.nii.gz"]
    with pytest.raises(VolumeWriteError, match="unknown output type"):
        write_labels(labels, vol, tmp_path / "labels.xyz")


def test_dicom_input_to_nifti_and_itk_outputs(tmp_path):
    vol = load_volume(data_path("ts_b_dicom", "dicom"))
    labels = load_labels(data_path("ts_b_dicom", "label_ts_v2.nii.gz"), vol)
    for name in ("labels.nii.gz", "labels.nrrd", "labels.mha"):
        out = write_labels(labels, vol, tmp_path / name)
        back = load_volume(out, check_values=False)  # a label map, read for its grid
        assert np.allclose(back.world_affine_canonical, vol.world_affine_canonical, atol=1e-4)
        assert np.array_equal(load_labels(out, vol), labels)
    # the NIfTI written for DICOM input lies exactly where TotalSegmentator's NIfTI does
    ref = nib.load(str(data_path("ts_b_dicom", "label_ts_v2.nii.gz")))
    ours = load_volume(tmp_path / "labels.nii.gz", check_values=False)
    assert np.array_equal(ours.array.astype(np.uint8), load_labels(data_path("ts_b_dicom", "label_ts_v2.nii.gz"), ours))
    assert nib.aff2axcodes(ref.affine) == ("L", "A", "S")


@pytest.mark.parametrize("source", [("ts_b_dicom", "dicom"), ("amos_0013_slab", "image.nii.gz")])
def test_one_index_order_for_every_input(tmp_path, source):
    """report.json's bounding boxes, overview.png and the viewer's readout name voxels (i, j, k) as the NIfTI
    written for the input numbers them (and ITK, 3D Slicer and ITK-SNAP do), for DICOM input as for NIfTI."""
    from organsam.inference.pipeline import organ_report

    vol = load_volume(data_path(*source))
    mask = np.zeros(vol.shape, bool)
    zyx = (vol.shape[0] - 3, 40, vol.shape[2] - 60)
    mask[zyx] = True
    out = write_labels(mask.astype(np.uint8), vol, tmp_path / "one.nii.gz")
    ijk = tuple(int(v) for v in np.argwhere(np.asarray(nib.load(str(out)).dataobj))[0])
    assert vol.ijk_index(zyx) == ijk
    box = organ_report("liver", mask, vol, None, None)["bbox_voxels"]
    assert tuple(box["min"]) == tuple(box["max"]) == ijk and box["axes"].startswith("ijk")
    for axis in range(3):  # the viewer's caption: which input axis a view's slices step along, and which way
        letter, reversed_ = vol.ijk_axis(axis)
        step = list(zyx)
        step[axis] += 1
        moved = np.subtract(vol.ijk_index(tuple(step)), ijk)
        assert moved["ijk".index(letter)] == (-1 if reversed_ else 1) and np.abs(moved).sum() == 1
