"""The LiteMedSAM-compatible SAM core (organsam.model.sam_core and its components) on a real CT slice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import data_path
from scipy import ndimage

from organsam.model import CheckpointError, EncoderOutput, SamCore, build_lite_medsam
from organsam.preprocessing.slices import SliceGeometry, to_model_input
from organsam.weights import WeightsError, find_weight

SLICE = 10  # the slice of the AMOS 0013 slab with the largest liver section
LIVER = 6
LEVEL_SHAPES = [(64, 256, 256), (128, 128, 128), (160, 64, 64), (320, 64, 64)]


@pytest.fixture(scope="module")
def model() -> SamCore:
    torch.manual_seed(0)
    return build_lite_medsam()


@pytest.fixture(scope="module")
def ct_slice() -> tuple[np.ndarray, SliceGeometry, np.ndarray]:
    """Model input (3, 256, 256), its geometry and the (512, 512) liver mask of a real abdominal CT slice."""
    from organsam.io import load_labels, load_volume
    from organsam.preprocessing.intensity import window_ct

    vol = load_volume(data_path("amos_0013_slab", "image.nii.gz"))
    lab = load_labels(data_path("amos_0013_slab", "label.nii.gz"), like=vol)
    x, geom = to_model_input(window_ct(vol.array[SLICE], "abdomen"))
    return x, geom, np.asarray(lab[SLICE]) == LIVER


@pytest.fixture(scope="module")
def encoded(model, ct_slice) -> EncoderOutput:
    with torch.inference_mode():
        return model.encode(torch.from_numpy(ct_slice[0])[None])


def _box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([[xs.min(), ys.min(), xs.max(), ys.max()]], dtype=np.float64)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def test_checkpoint_loads_strictly_with_every_tensor(model):
    state = torch.load(find_weight("lite_medsam"), weights_only=True, map_location="cpu")
    assert len(state) == 435
    ours = model.state_dict()
    assert set(ours) == set(state)
    for k, v in state.items():
        assert ours[k].shape == v.shape, k
        assert torch.equal(ours[k], v), k
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # LiteMedSAM normalises nothing inside the model: no pixel mean/std buffers anywhere.
    assert not any("pixel" in name for name, _ in model.named_buffers())
    assert not model.training


def test_bad_checkpoints_raise_clear_errors(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"model": {"foo.weight": torch.zeros(3)}}, bad)
    with pytest.raises(CheckpointError, match=r"bad\.pth.*does not fit"):
        build_lite_medsam(checkpoint=bad)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"junk\.pth.*cannot read"):
        build_lite_medsam(checkpoint=junk)
    with pytest.raises(WeightsError, match="missing.pth"):
        build_lite_medsam(checkpoint=tmp_path / "missing.pth")


def test_encoder_levels_and_embedding_shapes(encoded):
    assert encoded.embedding.shape == (1, 256, 64, 64)
    assert [tuple(t.shape[1:]) for t in encoded.levels] == LEVEL_SHAPES
    assert all(torch.isfinite(t).all() for t in [encoded.embedding, *encoded.levels])


@pytest.mark.slow
def test_level_residual_hook_is_applied_in_order(model, ct_slice, encoded):
    x = torch.from_numpy(ct_slice[0])[None]
    seen: list[tuple[int, tuple[int, ...]]] = []

    def record(i: int, feat: torch.Tensor) -> torch.Tensor:
        seen.append((i, tuple(feat.shape[1:])))
        return feat

    with torch.inference_mode():
        same = model.encode(x, level_residual_fn=record, keep_levels=False)
        assert seen == list(enumerate(LEVEL_SHAPES))
        assert same.levels == []
        torch.testing.assert_close(same.embedding, encoded.embedding)

        def shift_level_2(i: int, feat: torch.Tensor) -> torch.Tensor:
            return feat + 1.0 if i == 2 else feat

        shifted = model.encode(x, level_residual_fn=shift_level_2)
    torch.testing.assert_close(shifted.levels[1], encoded.levels[1])
    torch.testing.assert_close(shifted.levels[2], encoded.levels[2] + 1.0)
    assert (shifted.embedding - encoded.embedding).abs().max() > 1e-2


def test_box_prompt_segments_the_liver(model, ct_slice, encoded):
    _, geom, liver = ct_slice
    box = torch.from_numpy(geom.box_to_model(_box(liver)))
    with torch.inference_mode():
        logits, iou = model.decode(encoded.embedding, boxes=box)
    assert logits.shape == (1, 1, 256, 256) and iou.shape == (1, 1)
    pred = (geom.logits_to_original(logits[0, 0]) > 0).numpy()
    assert _dice(pred, liver) > 0.9
    assert iou.item() > 0.8


def test_point_prompts_refine_a_box(model, ct_slice, encoded):
    """LiteMedSAM is a box-prompted model: clicks refine a box prompt (it does not segment from clicks alone)."""
    _, geom, liver = ct_slice
    dist = ndimage.distance_transform_edt(liver)
    row, col = np.unravel_index(dist.argmax(), dist.shape)  # deepest point inside the liver
    pt = torch.from_numpy(geom.points_to_model([[[col, row]]]))
    box = torch.from_numpy(geom.box_to_model(_box(liver)))
    with torch.inference_mode():
        box_only, _ = model.decode(encoded.embedding, boxes=box)
        pos, _ = model.decode(encoded.embedding, boxes=box, points=(pt, torch.ones(1, 1, dtype=torch.long)))
        neg, _ = model.decode(encoded.embedding, boxes=box, points=(pt, torch.zeros(1, 1, dtype=torch.long)))
        multi, iou = model.decode(
            encoded.embedding, points=(pt, torch.ones(1, 1, dtype=torch.long)), multimask_output=True
        )
    full = geom.logits_to_original(pos[0, 0]) > 0
    assert bool(full[row, col]), "a positive click inside the liver must be covered by the mask"
    assert _dice(full.numpy(), liver) > 0.9
    # Clicks are wired through: each label changes the prediction (LiteMedSAM reacts only mildly to them).
    assert (pos - box_only).abs().max() > 1e-2 and (neg - pos).abs().max() > 1e-2
    assert multi.shape == (1, 3, 256, 256) and iou.shape == (1, 3) and torch.isfinite(multi).all()


def test_many_prompts_against_shared_and_indexed_embeddings(model, ct_slice, encoded):
    _, geom, liver = ct_slice
    emb = encoded.embedding
    boxes = torch.from_numpy(geom.box_to_model(np.concatenate([_box(liver), [[100, 150, 300, 400]]])))
    with torch.inference_mode():
        shared, iou_shared = model.decode(emb, boxes=boxes)
        single = [model.decode(emb, boxes=boxes[i : i + 1])[0] for i in range(2)]
        two = torch.cat([emb, emb.flip(-1)])
        indexed, _ = model.decode(two, boxes=boxes[[0, 0, 1]], image_index=torch.tensor([0, 1, 0]))
        flipped_only, _ = model.decode(two[1:], boxes=boxes[:1])
    assert shared.shape == (2, 1, 256, 256) and iou_shared.shape == (2, 1)
    torch.testing.assert_close(shared, torch.cat(single), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(indexed[0], shared[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(indexed[2], shared[1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(indexed[1], flipped_only[0], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="image_index"):
        model.decode(two, boxes=boxes[[0, 0, 1]])


def test_extra_prompt_embeddings(model, ct_slice, encoded):
    _, geom, liver = ct_slice
    emb = encoded.embedding
    box = torch.from_numpy(geom.box_to_model(_box(liver)))
    with torch.inference_mode():
        base, _ = model.decode(emb, boxes=box)
        zero_dense, _ = model.decode(emb, boxes=box, dense_extra=torch.zeros(1, 256, 64, 64))
        extra_tok, _ = model.decode(emb, boxes=box, sparse_extra=torch.randn(1, 2, 256))
        text_only, iou = model.decode(emb, sparse_extra=torch.randn(1, 1, 256))
    torch.testing.assert_close(zero_dense, base)
    assert (extra_tok - base).abs().max() > 1e-3
    assert text_only.shape == (1, 1, 256, 256) and torch.isfinite(text_only).all()
    with pytest.raises(ValueError, match="sparse_extra"):
        model.decode(emb, boxes=box, sparse_extra=torch.zeros(1, 2, 128))
    with pytest.raises(ValueError, match="dense_extra"):
        model.decode(emb, boxes=box, dense_extra=torch.zeros(1, 256, 32, 32))
    with pytest.raises(ValueError, match="encode"):
        model.encode(torch.zeros(1, 1, 256, 256))
    with pytest.raises(ValueError, match="embedding"):
        model.decode(torch.zeros(1, 256, 32, 32), boxes=box)


def test_gradients_reach_every_decoder_and_prompt_encoder_parameter(model, ct_slice, encoded):
    _, geom, liver = ct_slice
    emb = encoded.embedding.clone()
    box = torch.from_numpy(geom.box_to_model(_box(liver)))
    target = torch.from_numpy(geom.mask_to_model(liver)).float()[None, None]
    dist = ndimage.distance_transform_edt(liver)
    row, col = np.unravel_index(dist.argmax(), dist.shape)
    pts = torch.from_numpy(geom.points_to_model([[[col, row], [20, 20]]]))
    labels = torch.tensor([[1, 0]])
    model.zero_grad(set_to_none=True)
    try:
        # Box + clicks, single mask: box corners, both click types, mask token 0, 'no mask' embedding.
        l1, iou1 = model.decode(emb, boxes=box, points=(pts, labels))
        # Clicks only (adds the padding point) + a mask prompt, multimask: the other mask tokens.
        l2, iou2 = model.decode(
            emb, points=(pts, labels), mask_input=torch.randn(1, 1, 256, 256), multimask_output=True
        )
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        loss = bce(l1, target) + bce(l2, target.expand_as(l2)) + iou1.sum() + iou2.sum()
        loss.backward()
        for part in (model.prompt_encoder, model.mask_decoder):
            for name, p in part.named_parameters():
                assert p.grad is not None, f"no gradient reaches {name}"
                assert torch.isfinite(p.grad).all(), name
                assert p.grad.abs().sum() > 0, f"zero gradient at {name}"
    finally:
        model.zero_grad(set_to_none=True)


@pytest.mark.slow
def test_no_nan_in_fp32_and_bf16_autocast(model, ct_slice, encoded):
    x, geom, liver = ct_slice
    box = torch.from_numpy(geom.box_to_model(_box(liver)))
    with torch.inference_mode():
        fp32, _ = model.decode(encoded.embedding, boxes=box)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            enc = model.encode(torch.from_numpy(x)[None])
            bf16, iou = model.decode(enc.embedding, boxes=box, multimask_output=True)
            single, _ = model.decode(enc.embedding, boxes=box)
    assert enc.embedding.dtype == torch.bfloat16
    for t in [enc.embedding, *enc.levels, bf16, iou, fp32]:
        assert torch.isfinite(t).all()
    a, b = (fp32[0, 0] > 0).numpy(), (single[0, 0].float() > 0).numpy()
    assert _dice(a, b) > 0.98, "bf16 autocast must give (nearly) the fp32 mask"
