"""The runtime setting is checked in one line before any work, and the single-mask head that the OpenVINO graph
runs computes SAM's single-mask output (PyTorch only: no OpenVINO needed)."""

from __future__ import annotations

import pytest
import torch

from organsam.inference.options import SegmentOptions
from organsam.inference.volume_predictor import VolumePredictor
from organsam.model.sam_core import build_lite_medsam


def test_runtime_setting_is_checked_before_any_volume_is_read() -> None:
    with pytest.raises(ValueError, match="runtime must be one of"):
        SegmentOptions(runtime="onnx").check()
    SegmentOptions(runtime="torch").check()
    core = build_lite_medsam(pretrained=False)
    with pytest.raises(ValueError, match="runtime must be one of"):
        VolumePredictor(core, prior=None, runtime="tensorrt")
    with pytest.raises(ValueError, match=r"cannot run here: fast_encoder=False .*--runtime torch"):
        VolumePredictor(core, prior=None, runtime="openvino", fast_encoder=False)
    assert VolumePredictor(core, prior=None, runtime="torch").decoder.compute["runtime"] == "torch"


def test_single_mask_head_equals_the_first_mask_of_the_full_decoder() -> None:
    torch.manual_seed(0)
    core = build_lite_medsam(pretrained=False).eval()
    for p in core.mask_decoder.parameters():  # non-trivial biases and norms, so every term is exercised
        p.data.add_(0.05 * torch.randn_like(p))
    emb = torch.randn(2, 256, 64, 64)
    boxes = torch.tensor([[30.0, 60, 130, 170], [150, 70, 210, 150], [140, 120, 180, 170]])
    sparse, dense = core.embed_prompts(boxes=boxes)
    dec, pe = core.mask_decoder, core.get_dense_pe()
    with torch.inference_mode():
        for image_index, e, d in ((torch.tensor([0, 1, 1]), emb, dense[:1]), (None, emb[[0, 1, 1]], dense)):
            full, iou = dec.predict_masks(e, pe, sparse, d, image_index)
            one, iou1 = dec.predict_masks(e, pe, sparse, d, image_index, single_mask=True)
            assert one.shape == (3, 1, 256, 256) and iou1.shape == (3, 1)
            scale = float(full[:, :1].abs().max())
            assert scale > 0.1
            torch.testing.assert_close(one, full[:, :1], atol=1e-4 * scale, rtol=0)
            torch.testing.assert_close(iou1, iou[:, :1])


@pytest.mark.slow
def test_a_call_split_into_chunks_gives_what_single_prompts_give(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call with more prompts than a chunk (split to bound its memory) gives each prompt the mask and score it
    gets alone: prompts on three real CT slices, boxes of different sizes and places and point prompts, mixed in
    one call, in the default runtime."""
    import numpy as np
    from conftest import data_path

    from organsam.inference import decoders
    from organsam.inference.state import DecodeJob
    from organsam.io import load_volume

    monkeypatch.setattr(decoders, "DECODE_CHUNK", 4)
    vol = load_volume(data_path("amos_0013_slab", "image.nii.gz"))
    predictor = VolumePredictor(prior=None, progress=False)
    state = predictor.init_state(vol)
    boxes = [(60.0, 150.0, 250.0, 330.0), (300.0, 180.0, 420.0, 330.0), (200.0, 250.0, 340.0, 340.0)]
    point = (np.array([[150.0, 240.0]], np.float32), np.ones(1, np.int64))
    jobs = [DecodeJob(z, "liver", boxes[(z + k) % 3], None) for z in (4, 5, 6) for k in range(3)]
    jobs += [DecodeJob(z, "liver", None, point) for z in (4, 5, 6)]
    jobs = jobs[::2] + jobs[1::2]  # slices and prompt kinds interleaved
    together = predictor.decode(state, jobs)
    assert len(together) == len(jobs) == 12
    assert len({int(c.mask.sum()) for c in together}) >= 6  # the prompts draw different masks
    for job, cand in zip(jobs, together):
        (alone,) = predictor.decode(state, [job])
        assert abs(alone.score - cand.score) < 1e-3
        assert (alone.mask ^ cand.mask).sum() <= 0.001 * max(int(alone.mask.sum()), 1000)
