"""Dataset label maps: packaged maps, the shared data's maps and label volumes, user label files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import data_path

from organsam.vocabulary import (
    LabelMap,
    labelmap_from_json,
    labelmap_info,
    list_labelmaps,
    load_labelmap,
    load_vocabulary,
)
from organsam.vocabulary.labelmaps import LabelMapError, resolve_class_name

EXPECTED_SIZES = {
    "amos22": 15,
    "btcv": 13,
    "synapse": 8,
    "word": 16,
    "flare22": 13,
    "totalsegmentator_v1": 104,
    "totalsegmentator_v2": 117,
    "totalsegmentator_mr": 50,
}
# shared/data/labelmaps file -> packaged map with the same classes
SHARED_TO_PACKAGED = {
    "amos22_15.json": "amos22",
    "totalsegmentator_v1_total_104.json": "totalsegmentator_v1",
    "totalsegmentator_v2_total_117.json": "totalsegmentator_v2",
    "totalsegmentator_total_mr_50.json": "totalsegmentator_mr",
}


def test_list_and_sizes() -> None:
    names = list_labelmaps()
    assert set(EXPECTED_SIZES) <= set(names)
    assert {"msd_task03_liver", "msd_task07_pancreas", "msd_task09_spleen", "msd_task10_colon"} <= set(names)
    for name, size in EXPECTED_SIZES.items():
        m = load_labelmap(name)
        assert sorted(m) == list(range(1, size + 1)), name


def test_every_mapped_id_is_in_the_vocabulary() -> None:
    vocab = load_vocabulary()
    for name in list_labelmaps():
        for value, organ in load_labelmap(name).items():
            assert organ is None or organ in vocab, (name, value, organ)


def test_amos_contract() -> None:
    expected = [
        "spleen",
        "kidney_right",
        "kidney_left",
        "gallbladder",
        "esophagus",
        "liver",
        "stomach",
        "aorta",
        "inferior_vena_cava",
        "pancreas",
        "adrenal_gland_right",
        "adrenal_gland_left",
        "duodenum",
        "urinary_bladder",
        "prostate_uterus",
    ]
    assert load_labelmap("amos22") == dict(enumerate(expected, start=1))
    assert load_labelmap("AMOS") == load_labelmap("amos15") == load_labelmap("amos22")


def test_synapse_transunet_values() -> None:
    assert load_labelmap("synapse") == {
        1: "aorta",
        2: "gallbladder",
        3: "kidney_left",
        4: "kidney_right",
        5: "liver",
        6: "pancreas",
        7: "spleen",
        8: "stomach",
    }


def test_word_and_flare_and_btcv() -> None:
    word = load_labelmap("word16")
    assert word[11] == "small_bowel" and word[12] == "adrenal_glands" and word[13] == "rectum"
    assert word[15] == "head_of_femur_left" and word[16] == "head_of_femur_right"
    flare = load_labelmap("flare22")
    assert flare[2] == "kidney_right" and flare[13] == "kidney_left" and flare[6] == "inferior_vena_cava"
    assert load_labelmap("btcv")[10] == "portal_vein_and_splenic_vein"
    vocab = load_vocabulary()
    for name, group in [
        ("btcv", "btcv13"),
        ("synapse", "synapse8"),
        ("amos22", "amos15"),
        ("word", "word16"),
        ("flare22", "flare13"),
    ]:
        assert set(load_labelmap(name).values()) == set(vocab.group(group)), name


def test_totalsegmentator_grouping() -> None:
    v2 = labelmap_info("totalsegmentator_v2")
    assert v2.labels[27] == "vertebrae_L5" and v2.organs[27] == "vertebrae_lumbar"
    assert v2.organs[26] == "sacrum"  # S1
    assert v2.organs[92] == "ribs_left" and v2.organs[115] == "ribs_right"
    assert v2.organs[90] is None and v2.organs[17] is None  # brain, thyroid
    assert v2.values_for("vertebrae_lumbar") == [27, 28, 29, 30, 31]
    assert v2.values_for("lung_left") == [10, 11]
    assert v2.values_for("vertebrae") == list(range(27, 51))
    assert v2.values_for("liver") == [5]
    v1 = labelmap_info("totalsegmentator_v1")
    assert v1.values_for("heart") == [44, 45, 46, 47, 48]
    assert v1.organs[53] == "iliac_vein_left"
    assert labelmap_info("word").values_for("adrenal_gland_left") == []
    assert labelmap_info("amos22").values_for("adrenal_glands") == [11, 12]


def test_msd_tasks() -> None:
    assert load_labelmap("msd_task03_liver") == {1: "liver", 2: "liver_tumor"}
    assert load_labelmap("msd_task05_prostate") == {1: "prostate", 2: "prostate"}
    assert load_labelmap("task09_spleen") == {1: "spleen"}
    assert load_labelmap("msd_task10_colon") == {1: "colon_tumor"}


def test_unknown_labelmap_name() -> None:
    with pytest.raises(LabelMapError, match="unknown label map 'nope'.*amos22"):
        load_labelmap("nope")
    assert isinstance(labelmap_info("ts_v2"), LabelMap)


@pytest.mark.parametrize("shared,packaged", sorted(SHARED_TO_PACKAGED.items()))
def test_shared_label_maps_resolve_like_the_packaged_ones(shared: str, packaged: str) -> None:
    path = data_path("labelmaps", shared)
    raw = {int(k): v for k, v in json.loads(path.read_text()).items()}
    lm = labelmap_info(packaged)
    assert lm.labels == raw  # the packaged map keeps the dataset's own class names
    assert labelmap_from_json(path) == lm.organs
    assert load_labelmap(str(path)) == lm.organs


def test_shared_dcmqi_label_map_resolves_through_the_parser() -> None:
    path = data_path("labelmaps", "dcmqi_ct3slice.json")
    assert labelmap_from_json(path) == {1: "liver", 2: "vertebrae_thoracic", 3: "heart"}


@pytest.mark.parametrize(
    "label_file,labelmap",
    [
        ("ts_a/label_ts_v2_fast.nii.gz", "totalsegmentator_v2"),
        ("ts_a/label_ts_v1.nii.gz", "totalsegmentator_v1"),
        ("ts_b_dicom/label_ts_v2.nii.gz", "totalsegmentator_v2"),
        ("ts_mr/label_ts_mr.nii.gz", "totalsegmentator_mr"),
        ("amos_0001_slab/label.nii.gz", "amos22"),
        ("amos_0013_slab/label.nii.gz", "amos22"),
    ],
)
def test_label_volumes_only_use_mapped_values(label_file: str, labelmap: str) -> None:
    nib = pytest.importorskip("nibabel")
    values = np.unique(np.asarray(nib.load(data_path(*label_file.split("/"))).dataobj))
    assert np.all(values == np.round(values))
    m = load_labelmap(labelmap)
    present = {int(v) for v in values} - {0}
    assert present and present <= set(m)
    organs = {m[v] for v in present} - {None}
    assert "liver" in organs or "kidney_left" in organs or "aorta" in organs


def _organ_masks(labels: np.ndarray, lm: LabelMap, ids: list[str]) -> dict[str, np.ndarray]:
    return {i: np.isin(labels, lm.values_for(i)) for i in ids}


def test_v1_and_v2_maps_name_the_same_anatomy_on_the_same_patient() -> None:
    """TS v1 and v2 number their classes differently; through the organ ids both label the same voxels."""
    nib = pytest.importorskip("nibabel")
    v1 = np.asarray(nib.load(data_path("ts_a", "label_ts_v1.nii.gz")).dataobj).round().astype(np.int16)
    v2 = np.asarray(nib.load(data_path("ts_a", "label_ts_v2_fast.nii.gz")).dataobj).astype(np.int16)
    assert v1.shape == v2.shape
    ids = [
        "liver",
        "spleen",
        "kidney_left",
        "kidney_right",
        "pancreas",
        "aorta",
        "inferior_vena_cava",
        "stomach",
        "vertebrae_lumbar",
        "urinary_bladder",
        "colon",
        "lung_left",
        "heart",
        "hip_left",
    ]
    m1 = _organ_masks(v1, labelmap_info("totalsegmentator_v1"), ids)
    m2 = _organ_masks(v2, labelmap_info("totalsegmentator_v2"), ids)
    checked = 0
    for i in ids:
        a, b = m1[i], m2[i]
        if a.sum() < 200 or b.sum() < 200:
            continue
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert dice > 0.6, (i, dice)
        checked += 1
    assert checked >= 8
    # and different organs do not overlap: the left kidney of v1 is not the right kidney of v2
    assert (m1["kidney_left"] & m2["kidney_right"]).sum() == 0


# ---------------------------------------------------------------------- user label files
def _write(tmp_path: Path, doc: object) -> Path:
    p = tmp_path / "labels.json"
    p.write_text(json.dumps(doc))
    return p


def test_user_label_file_layouts(tmp_path: Path) -> None:
    assert labelmap_from_json(
        _write(tmp_path, {"0": "background", "1": "Liver", "2": "kidney_L", "3": "R. kidney", "4": "Gall bladder"})
    ) == {1: "liver", 2: "kidney_left", 3: "kidney_right", 4: "gallbladder"}
    assert labelmap_from_json(_write(tmp_path, {"labels": {"background": 0, "spleen": 1, "IVC": 2}})) == {
        1: "spleen",
        2: "inferior_vena_cava",
    }
    assert labelmap_from_json(_write(tmp_path, ["background", "liver", "adrenal glands"])) == {
        1: "liver",
        2: "adrenal_glands",
    }
    assert labelmap_from_json(
        _write(tmp_path, {"labels": {"1": {"label": "x", "organ": "liver"}, "2": {"label": "y", "organ": None}}})
    ) == {1: "liver", 2: None}
    assert labelmap_from_json(_write(tmp_path, {"1": "brain", "2": "rib_left_3"})) == {1: None, 2: "ribs_left"}


def test_user_label_file_errors(tmp_path: Path) -> None:
    p = _write(tmp_path, {"1": "liver", "2": "livr"})
    with pytest.raises(LabelMapError, match=r"labels\.json: label 2 'livr'.*did you mean: liver.*strict=False"):
        labelmap_from_json(p)
    assert labelmap_from_json(p, strict=False) == {1: "liver", 2: None}
    with pytest.raises(LabelMapError, match="several organs"):
        labelmap_from_json(_write(tmp_path, {"1": "liver and spleen"}))
    with pytest.raises(LabelMapError, match="not a vocabulary id"):
        labelmap_from_json(_write(tmp_path, {"labels": {"1": {"label": "x", "organ": "brain"}}}))
    with pytest.raises(LabelMapError, match="cannot tell label values"):
        labelmap_from_json(_write(tmp_path, {"a": "b"}))
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(LabelMapError, match="not valid json"):
        labelmap_from_json(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        labelmap_from_json(tmp_path / "none.json")


def test_resolve_class_name() -> None:
    assert resolve_class_name("adrenal") == "adrenal_glands"  # WORD's class, both sides
    assert resolve_class_name("inferior vena cava (postcava)") == "inferior_vena_cava"
    assert resolve_class_name("vertebrae_T7") == "vertebrae_thoracic"
    assert resolve_class_name("Kidney (L)") == "kidney_left"
    with pytest.raises(ValueError, match="'lungs' names several organs"):  # no combined entry for both lungs
        resolve_class_name("lungs")


def test_overview_and_viewer_draw_an_organ_in_the_same_colour(tmp_path) -> None:
    """One colour per organ (organs.json): the liver is drawn in its colour in overview.png and in the viewer."""
    import numpy as np
    from PIL import Image

    from organsam.inference.overview import render_overview
    from organsam.server.deps import organ_colors
    from organsam.server.render import overlay_rgba
    from organsam.vocabulary.palette import organ_color, organ_label

    liver = organ_color("liver")
    assert organ_colors({organ_label("liver"): "liver"}) == {"liver": liver}
    labels = np.zeros((4, 32, 32), dtype=np.uint8)
    labels[1:3, 8:24, 8:24] = organ_label("liver")
    png = render_overview(
        np.full(labels.shape, 90, np.uint8),
        labels,
        {organ_label("liver"): ("liver", liver)},
        (3.0, 1.0, 1.0),
        tmp_path / "overview.png",
    )
    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    assert (pixels == liver).all(axis=1).any()  # the legend swatch
    rgba = overlay_rgba({"liver": labels == organ_label("liver")}, {"liver": liver}, labels.shape, "axial", 1)
    assert (rgba[..., :3].reshape(-1, 3) == liver).all(axis=1).any()  # the viewer's opaque outline
