"""Anatomy-based orientation checks on every labelled real volume after loading into canonical layout.

Canonical (Z, Y, X): axis 1 posterior->anterior, axis 2 the patient's right->left. So the liver (right side)
must have a lower column index than the spleen (left side), and the spine must have a lower row index
(posterior) than the liver.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import data_path

from organsam.io import load_labels, load_volume


def _ids(labelmap: str) -> dict[str, int]:
    with open(data_path("labelmaps", labelmap)) as fh:
        return {name: int(k) for k, name in json.load(fh).items()}


def _centroid(mask: np.ndarray) -> np.ndarray:
    assert mask.any(), "structure missing from the label map"
    return np.argwhere(mask).mean(axis=0)


def _spine_mask_ts(labels: np.ndarray, ids: dict[str, int]) -> np.ndarray:
    return np.isin(labels, [v for k, v in ids.items() if k.startswith("vertebrae")])


TS_CASES = [
    ("ts_a/image.nii.gz", "ts_a/label_ts_v2_fast.nii.gz", "totalsegmentator_v2_total_117.json"),
    ("ts_b_dicom/dicom", "ts_b_dicom/label_ts_v2.nii.gz", "totalsegmentator_v2_total_117.json"),
    ("ts_mr/image.nii.gz", "ts_mr/label_ts_mr.nii.gz", "totalsegmentator_total_mr_50.json"),
]


@pytest.mark.parametrize(("image", "label", "labelmap"), TS_CASES)
def test_totalsegmentator_cases_liver_right_spine_posterior(image, label, labelmap):
    ids = _ids(labelmap)
    vol = load_volume(data_path(*image.split("/")))
    labels = load_labels(data_path(*label.split("/")), vol)
    liver = _centroid(labels == ids["liver"])
    spleen = _centroid(labels == ids["spleen"])
    spine = _centroid(_spine_mask_ts(labels, ids))
    assert liver[2] < spleen[2], f"liver column {liver[2]:.1f} should be < spleen column {spleen[2]:.1f}"
    assert spine[1] < liver[1], f"spine row {spine[1]:.1f} should be < liver row {liver[1]:.1f} (posterior)"
    # the spine is near the left-right middle, between liver and spleen
    assert liver[2] < spine[2] < spleen[2]


AMOS_CASES = [
    ("amos_0001_slab/image.nii.gz", "amos_0001_slab/label.nii.gz"),
    ("amos_0013_slab/image.nii.gz", "amos_0013_slab/label.nii.gz"),
    ("amos_0001_slab/dicom/image", "amos_0001_slab/dicom/label"),  # the same case as DICOM slices
]


@pytest.mark.parametrize(("image", "label"), AMOS_CASES)
def test_amos_cases_liver_right_spine_posterior(image, label):
    ids = _ids("amos22_15.json")
    assert ids["liver"] == 6 and ids["spleen"] == 1 and ids["aorta"] == 8
    vol = load_volume(data_path(*image.split("/")))
    assert vol.modality == "CT"
    labels = load_labels(data_path(*label.split("/")), vol)
    liver = _centroid(labels == 6)
    spleen = _centroid(labels == 1)
    aorta = _centroid(labels == 8)
    assert liver[2] < spleen[2]
    assert liver[2] < aorta[2] < spleen[2]
    # AMOS has no spine label: take bone (> 200 HU, unlabelled) in a 30 mm band of columns around the aorta;
    # it is the vertebral body (plus spinous process), which lies behind the aorta and the liver.
    half = int(round(15.0 / vol.spacing[2]))
    col = int(round(aorta[2]))
    band = np.zeros(vol.shape, dtype=bool)
    band[:, :, col - half : col + half + 1] = True
    spine = _centroid(band & (vol.array > 200) & (labels == 0))
    assert spine[1] < aorta[1], f"spine row {spine[1]:.1f} should be < aorta row {aorta[1]:.1f}"
    assert spine[1] < liver[1]


def test_dicom_and_nifti_of_the_same_case_agree():
    """The AMOS case exists as NIfTI (LAS) and as DICOM slices (rows running anterior): same canonical data."""
    nii = load_volume(data_path("amos_0001_slab", "image.nii.gz"))
    dcm = load_volume(data_path("amos_0001_slab", "dicom", "image"))
    assert dcm.meta.file_format == "dicom" and nii.meta.file_format == "nifti"
    assert np.array_equal(nii.array, dcm.array)
    assert np.allclose(nii.world_affine_canonical, dcm.world_affine_canonical, atol=1e-3)
    assert np.allclose(nii.spacing, dcm.spacing, atol=1e-4)
