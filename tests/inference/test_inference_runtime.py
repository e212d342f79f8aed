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
def test_a_call_with_more_prompts_than_a_chunk_gives_what_single_prompts_give() -> None:
    """More than ``DECODE_CHUNK`` prompts in one call (split into chunks to bound its memory) give each prompt the
    mask and score it gets alone, on a real CT slice, in the default runtime."""
    from conftest import data_path

    from organsam.inference.decoders import DECODE_CHUNK
    from organsam.inference.state import DecodeJob
    from organsam.io import load_volume

    vol = load_volume(data_path("amos_0013_slab", "image.nii.gz"))
    predictor = VolumePredictor(prior=None, progress=False)
    state = predictor.init_state(vol)
    jobs = [DecodeJob(5, "liver", (60.0 + 3 * k, 150.0, 250.0 + 2 * k, 330.0), None) for k in range(DECODE_CHUNK + 4)]
    together = predictor.decode(state, jobs)
    assert len(together) == len(jobs)
    for job, cand in zip(jobs, together):
        (alone,) = predictor.decode(state, [job])
        assert abs(alone.score - cand.score) < 1e-3
        assert (alone.mask ^ cand.mask).sum() <= 0.001 * alone.mask.sum() and alone.mask.sum() > 1000
