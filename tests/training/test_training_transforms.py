"""Slice transform on real slices (model space, MONAI augmentation without flips, boxes), the training
dataset items, and the learning-rate schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import data_path

from organsam.preprocessing.slices import geometry_for, to_model_input
from organsam.training.case_store import CaseStore
from organsam.training.datasets import read_dataset
from organsam.training.sampling import SampleSpec
from organsam.training.schedule import build_scheduler, lr_factor
from organsam.training.slice_dataset import SliceDataset, collate_samples
from organsam.training.transforms import AugmentConfig, SliceTransform, box_from_mask
from organsam.vocabulary import load_vocabulary

IDS = load_vocabulary().ids()


@pytest.fixture(scope="module")
def store():
    cases = [c for c in read_dataset("shared", data_path()) if c.case_id == "amos_0013"]
    return CaseStore(cases, IDS)


def _slice_with(store, organ):
    k = IDS.index(organ)
    z = int(np.argmax(store.areas[0][:, k]))
    return z, store.image_slice(0, z), store.organ_mask(0, z, k)


def test_without_augmentation_matches_inference_preprocessing(store):
    z, image, mask = _slice_with(store, "liver")
    out = SliceTransform(None, box_jitter=0.0)(image, mask, seed=0)
    ref, geom = to_model_input(image)
    np.testing.assert_array_equal(out["image"].numpy(), ref)
    np.testing.assert_array_equal(out["mask"][0].numpy(), geom.mask_to_model(mask))
    ys, xs = np.nonzero(geom.mask_to_model(mask))
    assert out["box"].tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]


@pytest.mark.slow
def test_augmentation_is_seeded_bounded_and_keeps_sides(store):
    _, image, mask_l = _slice_with(store, "kidney_left")
    mask_r = store.organ_mask(0, _slice_with(store, "kidney_left")[0], IDS.index("kidney_right"))
    t = SliceTransform(AugmentConfig(affine_prob=1.0, intensity_prob=1.0, noise_prob=1.0), box_jitter=5.0)
    a, b, c = t(image, mask_l, 11), t(image, mask_l, 11), t(image, mask_l, 12)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"]) and torch.equal(a["box"], b["box"])
    assert not torch.equal(a["image"], c["image"])
    ref, geom = to_model_input(image)
    assert not np.array_equal(a["image"].numpy(), ref)
    assert a["image"].shape == (3, 256, 256) and float(a["image"].min()) >= 0.0 and float(a["image"].max()) <= 1.0
    assert set(torch.unique(a["mask"]).tolist()) <= {0.0, 1.0}
    # no left-right flips: the left kidney stays on the image's right half (patient left), the right kidney
    # on the left half
    w = geom.resized_shape[1]
    for seed in range(4):
        left = t(image, mask_l, seed)["mask"][0].numpy()
        right = t(image, mask_r, seed)["mask"][0].numpy()
        assert np.nonzero(left)[1].mean() > w / 2 > np.nonzero(right)[1].mean()
    # the jittered box stays within 5 px of the augmented mask's tight box
    ys, xs = np.nonzero(a["mask"][0].numpy())
    tight = np.array([xs.min(), ys.min(), xs.max(), ys.max()])
    assert np.all(np.abs(a["box"].numpy() - tight) <= 5.0 + 1e-4)


def test_box_of_empty_mask_is_the_image_area():
    rng = np.random.default_rng(0)
    box = box_from_mask(np.zeros((256, 256), bool), 5.0, rng, (0.0, 0.0, 255.0, 170.0))
    assert box.tolist() == [0.0, 0.0, 255.0, 170.0]


def test_dataset_items_and_class_targets(store):
    k = IDS.index
    z, image, _ = _slice_with(store, "liver")
    ds = SliceDataset(store, SliceTransform(None), min_area=4.0)
    pos = ds[SampleSpec(0, z, k("liver"), True, 3)]
    neg_organ = int(np.nonzero(store.known[0] & (store.areas[0][z] == 0))[0][0])
    neg = ds[SampleSpec(0, z, neg_organ, False, 4)]
    batch = collate_samples([pos, neg])
    assert batch["image"].shape == (2, 3, 256, 256) and batch["mask"].shape == (2, 1, 256, 256)
    assert batch["organ_index"].tolist() == [k("liver"), neg_organ] and batch["present"].tolist() == [
        1.0,
        0.0,
    ]
    assert neg["mask"].sum() == 0 and pos["mask"].sum() > 0
    scale2 = (256 / max(image.shape)) ** 2
    expected = (store.areas[0][z] * scale2 >= 4.0).astype(np.float32)
    np.testing.assert_array_equal(batch["class_targets"][0].numpy(), expected)
    known = batch["class_known"][0].numpy()
    assert known[k("liver")] and not known[k("colon")]  # AMOS does not label the colon: unknown
    assert batch["case_id"] == ["amos_0013", "amos_0013"] and batch["z"] == [z, z]
    assert geometry_for(image.shape).resized_shape == (256, 256)


def test_lr_schedule_warmup_cosine_poly():
    assert lr_factor(0, 100, 10) == pytest.approx(0.01)
    assert lr_factor(5, 100, 10) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine", 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(100, 100, 10, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(55, 100, 10, "poly", 0.0, 0.9) == pytest.approx(0.5**0.9)
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor(0, 10, 0, "step")
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1e-3)
    sched = build_scheduler(opt, total_steps=20, warmup_steps=4, kind="cosine", min_ratio=0.0)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-5) and max(lrs) == pytest.approx(1e-3) and lrs[4] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))


def test_atlas_like_box_jitter_moves_scales_and_widens():
    mask = np.zeros((256, 256), bool)
    mask[100:140, 80:160] = True  # 80 wide, 40 high
    rng = np.random.default_rng(0)
    boxes = np.stack(
        [box_from_mask(mask, 0.0, rng, (0.0, 0.0, 255.0, 255.0), jitter_rel=0.15, margin=5.0) for _ in range(400)]
    )
    assert np.all(boxes >= 0) and np.all(boxes <= 255) and np.all(boxes[:, 2] > boxes[:, 0])
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    width = boxes[:, 2] - boxes[:, 0]
    assert 0.10 * 80 < cx.std() < 0.20 * 80  # centre shift ~ 15 % of the width
    assert np.median(width) > 80 + 5  # the margin widens the box on both sides
    # the same seed gives the same boxes; jitter_rel=0 keeps the tight box
    again = box_from_mask(mask, 0.0, np.random.default_rng(0), (0.0, 0.0, 255.0, 255.0), jitter_rel=0.15, margin=5.0)
    assert np.array_equal(again, boxes[0])
    tight = box_from_mask(mask, 0.0, rng, (0.0, 0.0, 255.0, 255.0), jitter_rel=0.0, margin=5.0)
    assert tight.tolist() == [80.0, 100.0, 159.0, 139.0]


def test_validation_with_reference_boxes_scores_the_untrained_prompt_design(store):
    from organsam.registry import build_design
    from organsam.training.validation import validate

    model = build_design("organ_prompts", [{"organs": ["liver", "spleen", "kidney_left", "aorta"]}])
    vstore = CaseStore(store.cases, model.organ_ids)
    res = validate(model, vstore, max_slices=3, presence_gate=False, box_margin=5.0)
    # untrained tokens are zero: this is LiteMedSAM with reference boxes grown by 5 px
    assert set(res.per_organ) == {"liver", "spleen", "kidney_left", "aorta"}
    assert res.per_organ["liver"] > 0.85 and res.mean_dice > 0.75
    text_only = validate(model, vstore, max_slices=3, presence_gate=False)
    assert text_only.mean_dice < res.mean_dice  # the whole-slice box is no substitute for a located one
