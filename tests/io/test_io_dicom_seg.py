"""DICOM-SEG output for the real TS-B DICOM series, read back with highdicom and pydicom."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from conftest import data_path

from organsam.io import VolumeReadError, VolumeWriteError, load_labels, load_volume, write_dicom_seg
from organsam.io.dicom_seg import organ_code
from organsam.preprocessing.orientation import LPS_TO_RAS, canonical_index_affine, canonical_transform, to_canonical

hd = pytest.importorskip("highdicom")


@pytest.fixture(scope="module")
def ts_b():
    vol = load_volume(data_path("ts_b_dicom", "dicom"))
    labels = load_labels(data_path("ts_b_dicom", "label_ts_v2.nii.gz"), vol)
    return vol, labels


def test_seg_round_trip(ts_b, tmp_path):
    vol, labels = ts_b
    body = vol.array > -300  # the body (and table) by thresholding
    masks = {"liver": labels == 5, "spleen": labels == 1, "body": body, "kidney_left": np.zeros_like(body)}
    out = write_dicom_seg(
        masks,
        vol,
        tmp_path / "seg.dcm",
        {"liver": "Liver (organsam)"},
        organ_colors={"liver": (220, 80, 40), "spleen": (150, 50, 210)},
    )

    ds = pydicom.dcmread(out)
    assert ds.Modality == "SEG" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert ds.FrameOfReferenceUID == vol.meta.dicom_datasets[0].FrameOfReferenceUID
    # the anonymised source has no SOPInstanceUIDs in the dataset: the SEG references the files' UIDs
    referenced = {item.ReferencedSOPInstanceUID for item in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {d.file_meta.MediaStorageSOPInstanceUID for d in vol.meta.dicom_datasets}

    seg = hd.seg.segread(out)
    assert seg.number_of_segments == 3  # the empty kidney mask is left out
    labels_out = [seg.get_segment_description(i).segment_label for i in (1, 2, 3)]
    assert labels_out == ["Liver (organsam)", "spleen", "body"]
    assert seg.get_segment_description(1).segmented_property_type.value == "10200004"  # SCT liver
    assert seg.get_segment_description(2).segmented_property_type.value == "78961009"  # SCT spleen
    # the recommended display colour a viewer shows (CIELab in the file), back as RGB
    assert ds.SegmentSequence[0].RecommendedDisplayCIELabValue is not None
    assert hd.color.CIELabColor.from_dicom_value(ds.SegmentSequence[0].RecommendedDisplayCIELabValue).to_rgb() == (
        220,
        80,
        40,
    )
    assert "RecommendedDisplayCIELabValue" not in ds.SegmentSequence[2]  # "body": no colour given

    geo = seg.get_volume()
    ras = LPS_TO_RAS @ geo.affine
    perm, flips = canonical_transform(ras)
    assert np.allclose(
        canonical_index_affine(ras, geo.array.shape[:3], perm, flips), vol.world_affine_canonical, atol=1e-4
    )
    for i, organ in enumerate(("liver", "spleen", "body")):
        back = to_canonical(geo.array[..., i], perm, flips).astype(bool)
        assert np.array_equal(back, masks[organ]), organ


def test_seg_needs_dicom_input(tmp_path):
    vol = load_volume(data_path("ts_mr", "image.nii.gz"))
    with pytest.raises(VolumeWriteError, match="needs DICOM input"):
        write_dicom_seg({"liver": vol.array > 100}, vol, tmp_path / "seg.dcm")


def test_seg_refuses_empty_and_misshaped_masks(ts_b, tmp_path):
    vol, _ = ts_b
    with pytest.raises(VolumeWriteError, match="all masks are empty"):
        write_dicom_seg({"liver": np.zeros(vol.shape, bool)}, vol, tmp_path / "seg.dcm")
    with pytest.raises(VolumeWriteError, match="shape"):
        write_dicom_seg({"liver": np.ones((2, 2, 2), bool)}, vol, tmp_path / "seg.dcm")
    assert not list(tmp_path.iterdir())


def test_organ_codes():
    assert organ_code("kidney_left").value == "64033007"
    assert organ_code("inferior_vena_cava").meaning == "Inferior vena cava"
    assert organ_code("urinary_bladder").meaning == "Bladder"
    assert organ_code("adrenal_gland_right").meaning == "Adrenal gland"
    assert organ_code("no_such_organ").meaning == "Organ"


def test_read_dcmqi_seg_equals_its_nrrd():
    """The dcmqi liver SEG and the NRRD it was made from give the same labels on the CT grid."""
    ct = load_volume(data_path("dcmqi_ct3slice", "ct-3slice"))
    seg = load_labels(data_path("dcmqi_ct3slice", "liver_SEG.dcm"), ct)
    nrrd = load_labels(data_path("dcmqi_ct3slice", "liver_seg.nrrd"), ct)
    assert seg.sum() > 100_000 and np.array_equal(seg, nrrd)
    with pytest.raises(VolumeReadError, match="DICOM SEG .*not an image"):
        load_volume(data_path("dcmqi_ct3slice", "liver_SEG.dcm"))


def test_seg_covering_some_slices_reads_back_on_the_full_grid(ts_b, tmp_path):
    vol, labels = ts_b
    liver = labels == 5
    liver[:6] = False
    liver[14:] = False  # only slices 6..13 hold the organ, so the SEG stores 8 frames
    spleen = np.zeros_like(liver)
    spleen[9:11] = labels[9:11] == 1
    out = write_dicom_seg({"liver": liver, "spleen": spleen}, vol, tmp_path / "partial.dcm")
    assert pydicom.dcmread(out).NumberOfFrames == 8 + 2
    back = load_labels(out, vol)
    assert back.shape == vol.shape
    assert np.array_equal(back == 1, liver) and np.array_equal(back == 2, spleen)
