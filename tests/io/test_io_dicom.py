"""DICOM series reading on the real TS-B series (JPEG 2000, anonymised UIDs) and AMOS / dcmqi slices."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import data_path

from organsam.io import VolumeReadError, load_labels, load_volume


@pytest.fixture(scope="module")
def ts_b():
    return load_volume(data_path("ts_b_dicom", "dicom"))


def test_ts_b_series_geometry_and_hu(ts_b):
    assert ts_b.shape == (20, 512, 512)
    assert np.allclose(ts_b.spacing, (2.0, 0.9765625, 0.9765625))
    assert ts_b.modality == "CT" and ts_b.meta.modality_source == "dicom"
    assert ts_b.meta.file_format == "dicom"
    assert len(ts_b.meta.dicom_datasets) == 20 and len(ts_b.meta.sources) == 20
    assert all("PixelData" not in ds for ds in ts_b.meta.dicom_datasets)  # headers only are kept
    # RescaleIntercept -1024 applied: air outside the body is about -1000 HU, stored values start at 0
    assert ts_b.array.min() == pytest.approx(-1024.0)
    assert float(np.median(ts_b.array[:, :20, :20])) < -900
    # slices ascend along the normal (feet -> head for this axial series)
    pos = ts_b.meta.extra["slice_positions_mm"]
    assert np.all(np.diff(pos) > 0)
    a = ts_b.world_affine_canonical
    assert a[2, 0] > 0  # canonical axis 0 runs to superior
    assert a[1, 1] > 0 and a[0, 2] < 0  # axis 1 anterior, axis 2 towards the patient's left (RAS x down)


def test_ts_b_pixels_match_pydicom_rescaled(ts_b):
    """Canonical slice k equals the rescaled DICOM slice at that position, rows flipped (DICOM rows run
    anterior->posterior here)."""
    files = sorted(data_path("ts_b_dicom", "dicom").iterdir())
    by_z = {}
    for f in files:
        ds = pydicom.dcmread(f)
        by_z[float(ds.ImagePositionPatient[2])] = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    zs = sorted(by_z)
    for k in (0, 7, 19):
        assert np.array_equal(ts_b.array[k], by_z[zs[k]][::-1, :].astype(np.float32))


def test_ts_b_label_nifti_is_on_the_dicom_grid(ts_b):
    labels = load_labels(data_path("ts_b_dicom", "label_ts_v2.nii.gz"), ts_b)
    assert labels.shape == ts_b.shape and labels.dtype == np.uint8
    liver = labels == 5  # totalsegmentator v2: 5 = liver
    assert liver.sum() > 100_000
    # contrast-enhanced liver parenchyma is about 60..200 HU
    assert 60 < float(np.median(ts_b.array[liver])) < 200


def test_single_file_reads_its_whole_series():
    one = sorted(data_path("ts_b_dicom", "dicom").iterdir())[5]
    vol = load_volume(one)
    assert vol.shape == (20, 512, 512)


def _copy_series(tmp_path: Path) -> Path:
    src = data_path("ts_b_dicom", "dicom")
    dst = tmp_path / "series"
    dst.mkdir()
    for f in sorted(src.iterdir()):
        shutil.copy(f, dst / f.name)
        (dst / f.name).chmod(0o644)
    return dst


def test_folder_with_two_series_is_refused_and_can_be_picked(tmp_path):
    folder = _copy_series(tmp_path)
    files = sorted(folder.iterdir())
    other_uid = "1.2.826.0.1.3680043.8.498.12345"
    for f in files[:5]:
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = other_uid
        ds.SeriesDescription = "other series"
        ds.save_as(f)
    with pytest.raises(VolumeReadError) as err:
        load_volume(folder)
    msg = str(err.value)
    assert str(folder) in msg and "2 DICOM series" in msg and "series_uid" in msg and "other series" in msg
    picked = load_volume(folder, series_uid=other_uid)
    assert picked.shape[0] == 5
    rest = load_volume(folder, series_uid="")
    assert rest.shape[0] == 15
    with pytest.raises(VolumeReadError, match="no series with SeriesInstanceUID"):
        load_volume(folder, series_uid="1.2.3")


def test_duplicate_slice_positions_are_refused(tmp_path):
    folder = _copy_series(tmp_path)
    files = sorted(folder.iterdir())
    ds = pydicom.dcmread(files[0])
    ds.ImagePositionPatient = pydicom.dcmread(files[1]).ImagePositionPatient
    ds.save_as(files[0])
    with pytest.raises(VolumeReadError, match="same position"):
        load_volume(folder)


def test_non_dicom_files_in_the_folder_are_skipped(tmp_path):
    folder = tmp_path / "ct"
    shutil.copytree(data_path("dcmqi_ct3slice", "ct-3slice"), folder)
    (folder / "notes.txt").write_text("scan notes")
    vol = load_volume(folder)
    assert vol.shape == (3, 512, 512) and vol.modality == "CT"
    assert np.allclose(vol.spacing, (1.0, 0.810547, 0.810547))


def test_dicom_seg_beside_a_series_is_not_an_image(tmp_path):
    folder = tmp_path / "ct"
    shutil.copytree(data_path("dcmqi_ct3slice", "ct-3slice"), folder)
    shutil.copy(data_path("dcmqi_ct3slice", "liver_SEG.dcm"), folder / "liver_SEG.dcm")
    assert load_volume(folder).shape == (3, 512, 512)


def test_nrrd_labels_on_a_dicom_grid():
    ct = load_volume(data_path("dcmqi_ct3slice", "ct-3slice"))
    liver = load_labels(data_path("dcmqi_ct3slice", "liver_seg.nrrd"), ct)
    spine = load_labels(data_path("dcmqi_ct3slice", "spine_seg.nrrd"), ct)
    assert set(np.unique(liver)) == {0, 1} and spine.any()
    lc, sc = np.argwhere(liver).mean(0), np.argwhere(spine).mean(0)
    assert sc[1] < lc[1]  # thoracic spine posterior to the liver
    assert lc[2] < sc[2]  # liver on the patient's right of the spine
