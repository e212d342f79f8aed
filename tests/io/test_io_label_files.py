"""Label names and colours where viewers read them, and label values that do not depend on the prompt: a real CT's
reference labels written as NIfTI (header extension), 3D Slicer ``.seg.nrrd`` (read back with pynrrd) and an
ITK-SNAP label description file (parsed back)."""

from __future__ import annotations

import nibabel as nib
import nrrd
import numpy as np
import pytest
from conftest import data_path

from organsam.inference.postprocess import merge_labels
from organsam.io import load_labels, load_volume, write_labels
from organsam.io.label_files import label_xml_names, read_itksnap_labels, write_itksnap_labels
from organsam.vocabulary import labelmap_info, load_vocabulary
from organsam.vocabulary.palette import label_table, organ_color, organ_label

ORGANS = ["spleen", "kidney_right", "liver", "aorta"]


@pytest.fixture(scope="module")
def amos() -> tuple:
    vol = load_volume(data_path("amos_0013_slab", "image.nii.gz"))
    ref = load_labels(data_path("amos_0013_slab", "label.nii.gz"), vol)
    info = labelmap_info("amos22")
    masks = {o: np.isin(ref, info.values_for(o)) for o in ORGANS}
    return vol, masks


def _table(organ_ids: list[str]) -> dict[int, tuple[str, tuple[int, int, int]]]:
    vocab = load_vocabulary()
    return {v: (vocab[o].name, organ_color(o)) for v, o in label_table(organ_ids).items()}


def test_label_values_and_colours_do_not_follow_the_prompt(amos) -> None:
    _, masks = amos
    a, table_a = merge_labels(masks, ["spleen", "liver", "kidney_right", "aorta"])
    b, table_b = merge_labels(masks, ["aorta", "kidney_right", "liver", "spleen"])
    assert np.array_equal(a, b) and table_a == table_b
    # TotalSegmentator v2 values where TotalSegmentator has the class
    assert table_a == {1: "spleen", 2: "kidney_right", 5: "liver", 52: "aorta"}
    assert set(np.unique(a)) == {0, 1, 2, 5, 52}


def test_every_vocabulary_organ_has_its_own_value_and_a_colour() -> None:
    vocab = load_vocabulary()
    values = [organ_label(o.id) for o in vocab]
    assert len(set(values)) == len(values) == len(vocab)
    ts = labelmap_info("totalsegmentator_v2")
    classes: dict[str, list[int]] = {}
    for v, organ in ts.organs.items():
        if organ is not None:
            classes.setdefault(organ, []).append(v)
    for organ, vs in classes.items():  # one TotalSegmentator class for the organ: its value is TotalSegmentator's
        if len(vs) == 1:
            assert organ_label(organ) == vs[0], organ
    assert organ_color("liver") != organ_color("stomach") != organ_color("spleen")


def test_nifti_seg_nrrd_and_itksnap_files_name_and_colour_the_organs(amos, tmp_path) -> None:
    vol, masks = amos
    labels, table = merge_labels(masks, ORGANS)
    names = _table(ORGANS)
    nii = write_labels(labels, vol, tmp_path / "segmentation.nii.gz", names)
    ext = [e for e in nib.load(str(nii)).header.extensions]
    assert len(ext) == 1
    assert label_xml_names(ext[0].get_content()) == {1: "spleen", 2: "right kidney", 5: "liver", 52: "aorta"}

    seg = write_labels(labels, vol, tmp_path / "segmentation.seg.nrrd", names)
    data, header = nrrd.read(str(seg))
    segments = {header[f"Segment{i}_Name"]: i for i in range(len(ORGANS))}
    assert set(segments) == {"spleen", "right kidney", "liver", "aorta"}
    i = segments["liver"]
    assert header[f"Segment{i}_LabelValue"] == "5"
    assert [round(float(c) * 255) for c in header[f"Segment{i}_Color"].split()] == list(organ_color("liver"))
    # the same voxels as the NIfTI beside it, at the same place in space (Slicer reads LPS)
    img = nib.load(str(nii))
    assert np.array_equal(data, np.asarray(img.dataobj))
    ras_dirs = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(header["space directions"]).T
    assert np.allclose(ras_dirs, img.affine[:3, :3], atol=1e-4)
    assert np.allclose(np.diag([-1.0, -1.0, 1.0]) @ header["space origin"], img.affine[:3, 3], atol=1e-4)
    lo = [int(x) for x in header[f"Segment{i}_Extent"].split()][::2]
    assert lo == np.argwhere(data == 5).min(axis=0).tolist()

    txt = write_itksnap_labels(names, tmp_path / "segmentation.label.txt")
    assert read_itksnap_labels(txt) == names


def test_organ_colours_stand_out_on_a_grey_ct() -> None:
    """Every colour is saturated enough to tell from the grey image under a half-transparent overlay."""
    for organ in load_vocabulary():
        c = organ_color(organ.id)
        assert max(c) - min(c) >= 80, (organ.id, c)
