"""Dataset readers on small folder layouts built in tmp_path from the real shared files (symlinks, or real
volumes re-saved in the layout's format), manifests, patient-level splits, known/unknown organs."""

from __future__ import annotations

import json
import logging

import nibabel as nib
import numpy as np
import pytest
from conftest import data_path

from organsam.io import load_labels, load_volume
from organsam.training.case_store import CaseStore
from organsam.training.datasets import (
    SYNAPSE_TEST_CASES,
    SYNAPSE_TRAIN_CASES,
    DatasetError,
    list_datasets,
    load_case,
    read_dataset,
)
from organsam.training.manifest import Case, ManifestError, read_manifest, split_cases, write_manifest

AMOS_NAMES = {
    1: "spleen",
    2: "right kidney",
    3: "left kidney",
    4: "gallbladder",
    5: "esophagus",
    6: "liver",
    7: "stomach",
    8: "aorta",
    9: "inferior vena cava",
    10: "pancreas",
    11: "right adrenal gland",
    12: "left adrenal gland",
    13: "duodenum",
    14: "bladder",
    15: "prostate/uterus",
}


@pytest.fixture(scope="module")
def amos13():
    img, lab = data_path("amos_0013_slab", "image.nii.gz"), data_path("amos_0013_slab", "label.nii.gz")
    vol = load_volume(img)
    return img, lab, vol, load_labels(lab, vol)


def _link(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src)
    return dst


def _check_loaded(case, amos13):
    loaded = load_case(case)
    _, _, vol, labels = amos13
    assert loaded.image.shape == vol.shape == loaded.labels.shape
    assert loaded.image.dtype == np.float32 and loaded.image.min() >= 0.0 and loaded.image.max() <= 255.0
    np.testing.assert_array_equal(loaded.labels, labels)
    assert loaded.modality == "CT"
    return loaded


def test_all_layouts_registered():
    for name in (
        "nnunet",
        "msd",
        "amos22",
        "btcv",
        "synapse",
        "word",
        "flare22",
        "totalsegmentator",
        "cvpr_npz",
        "manifest",
        "shared",
    ):
        assert name in list_datasets()
    with pytest.raises(DatasetError, match="unknown dataset layout 'amos23'"):
        read_dataset("amos23", ".")


def test_nnunet_v2_layout(tmp_path, amos13):
    img, lab, _, _ = amos13
    _link(img, tmp_path / "imagesTr" / "abd_013_0000.nii.gz")
    _link(lab, tmp_path / "labelsTr" / "abd_013.nii.gz")
    labels = {"background": 0, **{name: v for v, name in AMOS_NAMES.items()}}
    (tmp_path / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 1, "file_ending": ".nii.gz"})
    )
    (case,) = read_dataset("nnunet", tmp_path)
    assert case.case_id == "abd_013" and case.patient_id == "abd_013" and case.modality == "CT"
    assert case.labelmap[1] == "spleen" and case.labelmap[3] == "kidney_left" and case.labelmap[6] == "liver"
    _check_loaded(case, amos13)


def test_msd_layout_with_packaged_labelmap(tmp_path, amos13):
    img, lab, _, _ = amos13
    _link(img, tmp_path / "imagesTr" / "amos_0013.nii.gz")
    _link(lab, tmp_path / "labelsTr" / "amos_0013.nii.gz")
    (tmp_path / "dataset.json").write_text(
        json.dumps(
            {
                "name": "AMOS",
                "modality": {"0": "CT"},
                "labels": {"0": "background", "1": "spleen"},
                "training": [{"image": "./imagesTr/amos_0013.nii.gz", "label": "./labelsTr/amos_0013.nii.gz"}],
            }
        )
    )
    (case,) = read_dataset("msd", tmp_path, labelmap="amos22", patient_regex=r"amos_(\d+)")
    assert case.labelmap == "amos22" and case.patient_id == "0013"
    loaded = _check_loaded(case, amos13)
    assert loaded.labelmap[15] == "prostate_uterus"


def test_amos22_layout_splits_and_modality(tmp_path, amos13):
    img, lab, _, _ = amos13
    a1 = data_path("amos_0001_slab")
    _link(a1 / "image.nii.gz", tmp_path / "imagesTr" / "amos_0001.nii.gz")
    _link(a1 / "label.nii.gz", tmp_path / "labelsTr" / "amos_0001.nii.gz")
    _link(img, tmp_path / "imagesVa" / "amos_0013.nii.gz")
    _link(lab, tmp_path / "labelsVa" / "amos_0013.nii.gz")
    _link(img, tmp_path / "imagesVa" / "amos_0540.nii.gz")  # an MR id (no label: not listed)
    cases = read_dataset("amos22", tmp_path)
    assert [(c.case_id, c.split, c.modality) for c in cases] == [
        ("amos_0001", "train", "CT"),
        ("amos_0013", "val", "CT"),
    ]
    assert [c.case_id for c in split_cases(cases, "val")] == ["amos_0013"]
    _check_loaded(cases[1], amos13)


def test_btcv_word_flare_layouts(tmp_path, amos13):
    img, lab, _, _ = amos13
    b = tmp_path / "btcv" / "RawData" / "Training"
    _link(img, b / "img" / "img0013.nii.gz")
    _link(lab, b / "label" / "label0013.nii.gz")
    (case,) = read_dataset("btcv", tmp_path / "btcv")
    assert case.case_id == "btcv_0013" and case.labelmap == "btcv"
    assert load_case(case).labelmap[10] == "portal_vein_and_splenic_vein"  # BTCV values, not AMOS's

    w = tmp_path / "word"
    _link(img, w / "imagesTr" / "word_0001.nii.gz")
    _link(lab, w / "labelsTr" / "word_0001.nii.gz")
    _link(img, w / "imagesVal" / "word_0101.nii.gz")
    _link(lab, w / "labelsVal" / "word_0101.nii.gz")
    cases = read_dataset("word", w)
    assert [(c.case_id, c.split, c.labelmap) for c in cases] == [
        ("word_0001", "train", "word"),
        ("word_0101", "val", "word"),
    ]

    f = tmp_path / "flare"
    _link(img, f / "FLARE22Train" / "images" / "FLARE22_Tr_0001_0000.nii.gz")
    _link(lab, f / "FLARE22Train" / "labels" / "FLARE22_Tr_0001.nii.gz")
    _link(img, f / "Tuning" / "images" / "FLARE22_Ts_0002_0000.nii.gz")
    _link(lab, f / "Tuning" / "labels" / "FLARE22_Ts_0002.nii.gz")
    cases = read_dataset("flare22", f)
    assert sorted((c.case_id, c.split) for c in cases) == [
        ("FLARE22_Tr_0001", "train"),
        ("FLARE22_Ts_0002", "val"),
    ]
    _check_loaded(cases[0], amos13)


def test_synapse_npz_slices_and_split(tmp_path, amos13, caplog):
    _, _, vol, labels = amos13
    hu = np.clip(vol.array, -125, 275)
    image01 = (hu + 125) / 400.0  # TransUNet's normalisation
    d = tmp_path / "train_npz"
    d.mkdir()
    for num, zs in (("0005", (3, 4, 5)), ("0001", (6, 7))):
        for i, z in enumerate(zs):
            np.savez(
                d / f"case{num}_slice{i:03d}.npz",
                image=image01[z].astype(np.float32),
                label=labels[z].astype(np.float32),
            )
    cases = read_dataset("synapse", tmp_path)
    assert [(c.case_id, c.split) for c in cases] == [("synapse_0001", "test"), ("synapse_0005", "train")]
    assert "0005" in SYNAPSE_TRAIN_CASES and "0001" in SYNAPSE_TEST_CASES and len(SYNAPSE_TRAIN_CASES) == 18
    loaded = load_case(cases[1])
    assert loaded.image.shape == (3, *vol.shape[1:])
    np.testing.assert_array_equal(loaded.labels, labels[3:6])
    np.testing.assert_allclose(loaded.image, image01[3:6] * 255.0, atol=1e-3)
    assert loaded.labelmap[1] == "aorta" and loaded.labelmap[5] == "liver"
    assert split_cases(cases, "test")[0].case_id == "synapse_0001"

    rot = read_dataset("synapse", tmp_path, inplane="rot90")[1]
    np.testing.assert_array_equal(load_case(rot).labels, np.rot90(labels[3:6], 1, axes=(1, 2)))


def test_synapse_h5_needs_h5py(tmp_path):
    pytest.importorskip("numpy")
    try:
        import h5py  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("h5py is installed; the missing-package message is not reachable")
    (tmp_path / "test_vol_h5").mkdir()
    (tmp_path / "test_vol_h5" / "case0008.npy.h5").write_bytes(b"")
    (case,) = read_dataset("synapse", tmp_path)
    assert case.case_id == "synapse_0008" and case.split == "test" and case.loader == "h5_volume"
    with pytest.raises(DatasetError, match="h5py"):
        load_case(case)


def test_totalsegmentator_subject_masks(tmp_path):
    img = data_path("ts_a", "image.nii.gz")
    lab_path = data_path("ts_a", "label_ts_v2_fast.nii.gz")
    lab_img = nib.load(lab_path)
    lab = np.asarray(lab_img.dataobj).astype(np.int16)
    subj = tmp_path / "s0042"
    _link(img, subj / "ct.nii.gz")
    (subj / "segmentations").mkdir()
    names = {5: "liver", 1: "spleen", 3: "kidney_left"}
    for v, name in names.items():
        nib.save(
            nib.Nifti1Image((lab == v).astype(np.uint8), lab_img.affine),
            subj / "segmentations" / f"{name}.nii.gz",
        )
    nib.save(
        nib.Nifti1Image((lab == 2).astype(np.uint8), lab_img.affine),
        subj / "segmentations" / "not_a_class.nii.gz",
    )
    (tmp_path / "meta.csv").write_text("image_id;age;split\ns0042;60;val\n")
    (case,) = read_dataset("totalsegmentator", tmp_path)
    assert case.case_id == "s0042" and case.split == "val" and case.labelmap == "totalsegmentator_v2"
    loaded = load_case(case)
    vol = load_volume(img)
    ref = load_labels(lab_path, vol)
    expected = np.where(np.isin(ref, list(names)), ref, 0)
    np.testing.assert_array_equal(loaded.labels, expected)
    assert loaded.labelmap[5] == "liver"


def test_cvpr_npz_per_file_labelmaps(tmp_path, amos13, caplog):
    _, _, vol, labels = amos13
    imgs = np.clip((vol.array + 160) / 400 * 255, 0, 255).astype(np.uint8)
    sp = vol.spacing
    np.savez_compressed(tmp_path / "CT_AMOS_amos_0013.npz", imgs=imgs, gts=labels, spacing=[sp[2], sp[1], sp[0]])
    np.savez_compressed(tmp_path / "CT_Other_x.npz", imgs=imgs[:2], gts=labels[:2], spacing=[1, 1, 1])
    with caplog.at_level(logging.WARNING):
        cases = read_dataset("cvpr_npz", tmp_path, labelmaps={"CT_AMOS_*": "amos22"})
    assert [c.case_id for c in cases] == ["CT_AMOS_amos_0013"]
    assert "without a label map skipped" in caplog.text
    loaded = load_case(cases[0])
    np.testing.assert_array_equal(loaded.labels, labels)
    np.testing.assert_array_equal(loaded.image, imgs.astype(np.float32))  # 8-bit data kept as is
    assert loaded.spacing == pytest.approx(vol.spacing)


def test_manifest_csv_json_roundtrip(tmp_path, amos13):
    img, lab, _, _ = amos13
    _link(img, tmp_path / "data" / "a13.nii.gz")
    _link(lab, tmp_path / "data" / "a13_label.nii.gz")
    ts = data_path("ts_b_dicom")
    (tmp_path / "cases.csv").write_text(
        "image,label,labelmap,patient,split\n"
        "data/a13.nii.gz,data/a13_label.nii.gz,amos22,P13,val\n"
        f"{ts / 'dicom'},{ts / 'label_ts_v2.nii.gz'},totalsegmentator_v2,PB,train\n"
    )
    cases = read_dataset("manifest", tmp_path / "cases.csv")
    assert [(c.case_id, c.patient_id, c.split) for c in cases] == [
        ("a13", "P13", "val"),
        ("dicom", "PB", "train"),
    ]
    _check_loaded(cases[0], amos13)
    back = read_manifest(write_manifest(cases, tmp_path / "out.json"))
    assert [(c.case_id, c.image, c.label, c.labelmap, c.patient_id) for c in back] == [
        (c.case_id, c.image, c.label, c.labelmap, c.patient_id) for c in cases
    ]
    (tmp_path / "bad.csv").write_text("image,labelmap\nx.nii.gz,amos22\n")
    with pytest.raises(ManifestError, match="missing label"):
        read_manifest(tmp_path / "bad.csv")
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        read_manifest(tmp_path / "nope.csv")


def test_shared_dataset_splits():
    cases = read_dataset("shared", data_path())
    train, val = split_cases(cases, "train"), split_cases(cases, "val")
    assert [c.case_id for c in train] == ["ts_a", "ts_b", "amos_0001"]
    assert [c.case_id for c in val] == ["amos_0013"]
    assert {c.labelmap for c in train} == {"totalsegmentator_v2", "amos22"}
    assert not {c.patient_id for c in train} & {c.patient_id for c in val}


def _case(cid, patient, split=None):
    return Case(cid, patient, f"{cid}.nii.gz", f"{cid}_l.nii.gz", "amos22", split=split)


def test_patient_level_splits():
    cases = [_case(f"c{i}", f"p{i // 3}") for i in range(60)]  # 20 patients, 3 scans each
    train = split_cases(cases, "train", val_fraction=0.25, seed=3)
    val = split_cases(cases, "val", val_fraction=0.25, seed=3)
    assert len(train) + len(val) == 60
    assert not {c.patient_id for c in train} & {c.patient_id for c in val}
    assert 2 <= len({c.patient_id for c in val}) <= 9
    assert [c.case_id for c in val] == [c.case_id for c in split_cases(cases, "val", val_fraction=0.25, seed=3)]
    assert [c.case_id for c in val] != [c.case_id for c in split_cases(cases, "val", val_fraction=0.25, seed=4)]
    two = [_case("a", "pa"), _case("b", "pb")]
    assert len(split_cases(two, "val", val_fraction=0.01)) == 1  # at least one val patient
    marked = [_case("a", "p1", "train"), _case("b", "p2", "val"), _case("c", "p1", "val")]
    with pytest.raises(ManifestError, match="p1"):
        split_cases(marked, "train")
    assert [
        c.case_id
        for c in split_cases(marked, "train", use_dataset_splits=False, val_fraction=0.5, seed=0)
        + split_cases(marked, "val", use_dataset_splits=False, val_fraction=0.5, seed=0)
    ] != []


def test_known_unknown_and_absent_organs():
    from organsam.vocabulary import load_vocabulary

    ids = load_vocabulary().ids()
    cases = [c for c in read_dataset("shared", data_path()) if c.case_id in ("ts_b", "amos_0013")]
    store = CaseStore(cases, ids)
    ts_b, amos = store.case_index("ts_b"), store.case_index("amos_0013")
    k = ids.index

    # AMOS does not label the colon or the prostate alone: unknown; TotalSegmentator labels both
    assert not store.known[amos][k("colon")] and not store.known[amos][k("prostate")]
    assert store.known[amos][k("prostate_uterus")] and store.known[amos][k("adrenal_glands")]
    assert store.known[ts_b][k("colon")]
    # the kidneys are labelled by TotalSegmentator but not in ts_b's field of view: known and absent
    assert store.known[ts_b][k("kidney_left")] and store.areas[ts_b][:, k("kidney_left")].sum() == 0
    assert store.areas[amos][:, k("liver")].sum() > 0 and store.areas[amos][:, k("colon")].sum() == 0
    # a composite organ is the union of its parts
    both = store.areas[amos][:, k("adrenal_glands")]
    np.testing.assert_array_equal(
        both, store.areas[amos][:, k("adrenal_gland_left")] + store.areas[amos][:, k("adrenal_gland_right")]
    )
    z = int(np.argmax(store.areas[amos][:, k("liver")]))
    assert store.organ_mask(amos, z, k("liver")).sum() == store.areas[amos][z, k("liver")]
    with pytest.raises(ValueError, match="not labelled"):
        store.organ_mask(amos, z, k("colon"))


def test_all_organ_targets_mark_unlabelled_organs_and_train_every_labelled_one():
    """With ``all_organs`` each sample carries every vocabulary organ's mask of its slice, transformed with the
    sample's own augmentation; organs the case's dataset does not label are -1 and stay out of PG-SAM's
    all-organ loss, which sends gradients to the organs it does label."""
    import torch

    from organsam.model.components.image_encoder import EncoderOutput
    from organsam.registry import build_design
    from organsam.training.slice_dataset import SliceDataset, collate_samples
    from organsam.training.transforms import AugmentConfig, SliceTransform
    from organsam.vocabulary import load_vocabulary

    ids = load_vocabulary().ids()
    k = ids.index
    store = CaseStore([c for c in read_dataset("shared", data_path()) if c.case_id == "amos_0013"], ids)
    z = int(np.argmax(store.areas[0][:, k("liver")]))
    on_slice = [ids[i] for i in np.flatnonzero(store.areas[0][z] > 0)]
    assert {"liver", "spleen", "stomach"} <= set(on_slice)
    augmented = SliceDataset(store, SliceTransform(AugmentConfig(affine_prob=1.0)), all_organs=True)
    item = augmented.slice_item(0, z, k("liver"), True, seed=3)
    every = item["all_masks"]
    assert every.shape == (len(ids), 256, 256) and every.dtype == torch.int8
    assert (every[k("colon")] == -1).all() and (every[k("kidney_left")] >= 0).all()  # AMOS: no colon label
    torch.testing.assert_close(every[k("liver")].float(), item["mask"][0])  # the same augmentation as the prompt
    assert all(every[k(o)].sum() > 0 for o in on_slice if store.areas[0][z, k(o)] > 200)
    assert (every[k("kidney_left")].sum() == 0) == (store.areas[0][z, k("kidney_left")] == 0)

    model = build_design("pg_sam")
    plain = SliceDataset(store, SliceTransform(AugmentConfig(enabled=False)), all_organs=True)
    batch = collate_samples([plain.slice_item(0, z, k("liver"), True, seed=0)])
    with torch.no_grad():
        enc = model.core.encode(batch["image"], keep_levels=True)
    model.train()
    out = model(None, torch.tensor([k("liver")]), encoded=EncoderOutput(enc.embedding, enc.levels))
    targets = batch["all_masks"].float()
    terms = model.compute_loss(out, batch["mask"], torch.ones(1), all_targets=targets)
    changed = targets.clone()
    changed[0, k("colon")] = 0.0  # now taught as empty: a different loss
    assert float(
        model.compute_loss(out, batch["mask"], torch.ones(1), all_targets=changed)["all_masks"].detach()
    ) != float(terms["all_masks"])
    terms["all_masks"].backward()
    grad = model.organ_token_proj.fc2.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    # per organ: the labelled ones are taught, an unlabelled one is not
    out = model(None, torch.tensor([k("liver")]), encoded=EncoderOutput(enc.embedding, enc.levels))
    every_mask = out.aux["all_masks"]
    every_mask.retain_grad()
    model.compute_loss(out, batch["mask"], torch.ones(1), all_targets=targets)["all_masks"].backward()
    per_organ = every_mask.grad.abs().sum(dim=(2, 3))[0]
    assert per_organ[k("colon")] == 0 and per_organ[k("spleen")] > 0 and per_organ[k("kidney_left")] > 0
