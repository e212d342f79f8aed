"""NIfTI reading on real files in RAS, LAS and LPS: canonical layout, spacing, round trip to the file array."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from conftest import data_path

from organsam.io import Volume, load_volume
from organsam.preprocessing.orientation import axcodes

CASES = [
    # file, axis codes in the file, expected canonical shape (Z, Y, X), spacing (sz, sy, sx), modality
    ("ts_a/image.nii.gz", ("R", "A", "S"), (112, 101, 122), (3.0, 3.0, 3.0), "CT"),
    ("ts_mr/image.nii.gz", ("L", "P", "S"), (20, 91, 117), (3.0, 3.0, 3.0), "MR"),
    ("amos_0013_slab/image.nii.gz", ("L", "A", "S"), (11, 512, 512), (5.0, 0.781, 0.781), "CT"),
]


@pytest.mark.parametrize(("rel", "codes", "shape", "spacing", "modality"), CASES)
def test_nifti_loads_into_canonical_layout(rel, codes, shape, spacing, modality):
    path = data_path(*rel.split("/"))
    img = nib.load(str(path))
    assert nib.aff2axcodes(img.affine) == codes  # the data README's claim, so the test covers 3 orientations
    vol = load_volume(path)
    assert isinstance(vol, Volume)
    assert vol.array.dtype == np.float32 and vol.array.flags.c_contiguous
    assert vol.shape == shape
    assert np.allclose(vol.spacing, spacing, atol=1e-3)
    assert vol.modality == modality and vol.meta.modality_source == "heuristic"
    assert vol.meta.file_format == "nifti" and vol.path == path
    # the original affine is kept exactly (float64) and the canonical affine has canonical axis codes
    assert vol.meta.affine.dtype == np.float64
    assert np.array_equal(vol.meta.affine, img.affine)
    assert axcodes(vol.world_affine_canonical) == ("S", "A", "L")
    assert np.allclose(vol.spacing_from_affine, vol.spacing)


@pytest.mark.parametrize("rel", [c[0] for c in CASES])
def test_round_trip_to_file_layout_equals_raw_file_array(rel):
    path = data_path(*rel.split("/"))
    img = nib.load(str(path))
    raw = img.get_fdata(dtype=np.float32)
    vol = load_volume(path)
    back = vol.to_file_layout(vol.array)
    assert back.shape == raw.shape
    assert np.array_equal(back, raw)
    assert np.array_equal(vol.from_file_layout(raw), vol.array)


def test_canonical_equals_nibabel_reorientation_to_las():
    """Independent check: nibabel's own reorientation to L,A,S then transposed to (Z, Y, X)."""
    for rel in ("ts_a/image.nii.gz", "ts_mr/image.nii.gz"):
        path = data_path(*rel.split("/"))
        img = nib.load(str(path))
        ornt = nib.orientations.ornt_transform(
            nib.orientations.io_orientation(img.affine), nib.orientations.axcodes2ornt(("L", "A", "S"))
        )
        las = img.as_reoriented(ornt)
        expected = np.transpose(las.get_fdata(dtype=np.float32), (2, 1, 0))
        vol = load_volume(path)
        assert np.array_equal(vol.array, expected)
        # the world position of canonical voxel (z, y, x) equals nibabel's for LAS voxel (x, y, z)
        ijk = np.array([[3, 7, 11], [0, 0, 0], [vol.shape[2] - 1, vol.shape[1] - 1, vol.shape[0] - 1]])
        for i, j, k in ijk:
            world_nib = las.affine @ [i, j, k, 1]
            world_ours = vol.world_affine_canonical @ [k, j, i, 1]
            assert np.allclose(world_nib, world_ours, atol=1e-4)


def test_scl_slope_and_inter_are_applied(tmp_path):
    """A file stored with scaling reads back in the scaled units (here HU stored as (HU + 1024) / 2)."""
    path = data_path("ts_a", "image.nii.gz")
    img = nib.load(str(path))
    hu = np.asanyarray(img.dataobj).astype(np.int32)
    stored = ((hu + 1024) // 2).astype(np.int16)
    scaled = nib.Nifti1Image(stored, img.affine, img.header.copy())
    scaled.header.set_data_dtype(np.int16)
    scaled.header.set_slope_inter(2.0, -1024.0)
    out = tmp_path / "scaled.nii.gz"
    nib.save(scaled, str(out))
    vol = load_volume(out)
    expected = stored.astype(np.float32) * 2.0 - 1024.0
    assert np.array_equal(vol.to_file_layout(vol.array), expected)
    assert vol.modality == "CT"


def test_modality_override_and_aliases():
    path = data_path("ts_a", "image.nii.gz")
    assert load_volume(path, modality="unknown").modality == "unknown"
    vol = load_volume(path, modality="ct")
    assert vol.modality == "CT" and vol.meta.modality_source == "user"
    assert load_volume(data_path("ts_mr", "image.nii.gz"), modality="MRI").modality == "MR"
    with pytest.raises(ValueError, match="unknown modality"):
        load_volume(path, modality="PET")


def test_in_memory_volume_uses_canonical_layout():
    arr = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    vol = Volume.from_array(arr, spacing=(2.0, 0.5, 0.5), modality="CT")
    assert vol.meta.file_format == "array" and vol.meta.file_shape == (2, 3, 4)
    assert np.array_equal(vol.to_file_layout(arr), arr)
    assert axcodes(vol.world_affine_canonical) == ("S", "A", "L")
    assert np.allclose(vol.spacing_from_affine, (2.0, 0.5, 0.5))
    with pytest.raises(ValueError, match="does not match"):
        vol.to_file_layout(np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match="3D"):
        Volume(array=np.zeros((3, 4)))
