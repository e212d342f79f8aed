"""FastImageEncoder (folded batch norms, channels-last, in-place GELU) computes the reference embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import data_path

from organsam.inference.volume_predictor import VolumePredictor
from organsam.model.components.blocks import Conv2dBN
from organsam.model.components.fast_image_encoder import FastImageEncoder, fold_conv_bn
from organsam.model.sam_core import build_lite_medsam


def _randomise_batch_norms(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every batch norm non-trivial statistics so that folding them is actually exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


def test_fold_conv_bn_matches_conv_then_batch_norm() -> None:
    torch.manual_seed(0)
    for groups, k, stride in [(1, 1, 1), (8, 3, 2), (1, 3, 1)]:
        block = Conv2dBN(8, 8, k, stride, k // 2, groups=groups)
        _randomise_batch_norms(block)
        block.eval()
        x = torch.randn(2, 8, 17, 19)
        with torch.no_grad():
            np.testing.assert_allclose(fold_conv_bn(block)(x).numpy(), block(x).numpy(), rtol=1e-5, atol=1e-5)


def test_fast_encoder_equals_reference_encoder() -> None:
    torch.manual_seed(0)
    core = build_lite_medsam(pretrained=False)
    _randomise_batch_norms(core)
    # 96x96 instead of 256x256 keeps the test fast; every code path (strips, window padding) is still taken
    x = torch.rand(2, 3, 96, 96)
    with torch.inference_mode():
        ref = core.image_encoder(x)
    for channels_last in (True, False):
        fast = FastImageEncoder(core.image_encoder, channels_last=channels_last)
        fast.strip_rows = 40  # 20 rows per image of the batch: strips of 20, 20, 20, 20, 16 rows
        out = fast(x)
        assert out.shape == (2, 256, 24, 24) and out.dtype == torch.float32 and out.is_contiguous()
        rel = float((out - ref).norm() / ref.norm())
        assert rel < 1e-5, f"channels_last={channels_last}: relative difference {rel:.2e}"
    # the reference module itself is untouched (deep copy)
    assert any(isinstance(m, Conv2dBN) for m in core.image_encoder.modules())


def test_fast_encoder_rejects_bad_input() -> None:
    core = build_lite_medsam(pretrained=False)
    with pytest.raises(ValueError, match="precision"):
        FastImageEncoder(core.image_encoder, precision="fp16")
    with pytest.raises(ValueError, match="TinyViT"):
        FastImageEncoder(core.mask_decoder)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        FastImageEncoder(core.image_encoder)(torch.rand(1, 1, 256, 256))


@pytest.mark.slow
def test_fast_encoder_on_real_ct_with_pretrained_weights() -> None:
    """Real AMOS slice, LiteMedSAM weights: fp32 reproduces the reference; bf16 stays close."""
    from organsam.io import load_volume
    from organsam.preprocessing.intensity import window_ct
    from organsam.preprocessing.slices import to_model_input_batch

    vol = load_volume(data_path("amos_0013_slab", "image.nii.gz"))
    x = torch.from_numpy(to_model_input_batch(window_ct(vol.array[5:6], "abdomen"))[0])
    core = build_lite_medsam()
    with torch.inference_mode():
        ref = core.encode(x, keep_levels=False).embedding
    fp32 = FastImageEncoder(core.image_encoder)(x)
    assert float((fp32 - ref).norm() / ref.norm()) < 1e-5
    bf16 = FastImageEncoder(core.image_encoder, precision="bf16")(x)
    assert bf16.dtype == torch.float32
    rel = float((bf16 - ref).norm() / ref.norm())
    assert 0 < rel < 0.1, rel


def test_volume_predictor_encoder_options() -> None:
    core = build_lite_medsam(pretrained=False)
    _randomise_batch_norms(core)
    with pytest.raises(ValueError, match="precision"):
        VolumePredictor(core, prior=None, precision="int4")
    with pytest.raises(ValueError, match="fast_encoder"):
        VolumePredictor(core, prior=None, fast_encoder=False, quantize=True)
    with pytest.raises(ValueError, match="batch_size"):
        VolumePredictor(core, prior=None, batch_size=0)
    fast = VolumePredictor(core, prior=None, progress=False, runtime="torch")
    assert fast.precision == "fp32" and fast.batch_size == VolumePredictor.default_batch_size("cpu")
    x = torch.rand(1, 3, 64, 64)
    a = fast.decoder.encode_images(x)
    assert isinstance(fast.decoder._fast, FastImageEncoder)
    with torch.inference_mode():
        b = core.image_encoder(x)
    assert float((a - b).norm() / b.norm()) < 1e-5
    plain = VolumePredictor(core, prior=None, fast_encoder=False, progress=False, runtime="torch")
    with pytest.raises(ValueError, match="256"):  # the plain path goes through SamCore.encode's checks
        plain.decoder.encode_images(x)
