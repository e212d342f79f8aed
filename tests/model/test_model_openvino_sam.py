"""The OpenVINO runtime computes LiteMedSAM's embeddings and masks as PyTorch does, and caches its graphs."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from conftest import data_path

pytest.importorskip("openvino", reason="the OpenVINO runtime needs the openvino package")

from organsam.io import load_volume  # noqa: E402
from organsam.model.openvino_sam import OpenVinoSam, cache_dir  # noqa: E402
from organsam.model.sam_core import build_lite_medsam  # noqa: E402
from organsam.preprocessing.intensity import window_ct  # noqa: E402
from organsam.preprocessing.slices import to_model_input_batch  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def core():
    return build_lite_medsam().eval()


@pytest.fixture(scope="module")
def ov_cache(tmp_path_factory):
    """A cache folder of this module's own (the first build converts, later ones read it)."""
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("ov_cache")
        mp.setenv("ORGANSAM_CACHE_DIR", str(root))
        yield root / "openvino"


@pytest.fixture(scope="module")
def ov_sam(core, ov_cache):
    return OpenVinoSam(core)


def _images() -> torch.Tensor:
    vol = load_volume(data_path("amos_0013_slab", "image.nii.gz"))
    imgs, _ = to_model_input_batch(window_ct(vol.array[[4, 8]], "abdomen"))
    return torch.from_numpy(imgs)


def test_openvino_encoder_and_decoder_match_torch_on_real_slices(core, ov_sam) -> None:
    images = _images()
    with torch.inference_mode():
        ref_emb = core.encode(images, keep_levels=False).embedding
    emb = ov_sam.encode(images)
    assert emb.shape == (2, 256, 64, 64) and emb.dtype == torch.float32
    rel = float((emb - ref_emb).norm() / ref_emb.norm())
    assert rel < 1e-4, f"OpenVINO embedding differs from PyTorch's by {rel:.2e}"

    # liver, spleen and a kidney-sized box over two slices; then two-point prompts (another token count)
    boxes = torch.tensor([[30.0, 60, 130, 170], [150, 70, 210, 150], [140, 120, 180, 170]])
    image_index = torch.tensor([0, 1, 1])
    points = (torch.tensor([[[80.0, 110], [190, 110]], [[170, 100], [60, 60]]]), torch.tensor([[1, 0], [1, 1]]))
    for kwargs, index in ((dict(boxes=boxes), image_index), (dict(points=points), torch.tensor([1, 0]))):
        with torch.inference_mode():
            ref_logits, ref_iou = core.decode(ref_emb, image_index=index, **kwargs)
            sparse, _ = core.embed_prompts(batch_size=len(index), **kwargs)
        logits, iou = ov_sam.decode(ref_emb, sparse, index)
        assert logits.shape == ref_logits.shape == (len(index), 1, 256, 256)
        np.testing.assert_allclose(iou.numpy(), ref_iou.numpy(), atol=1e-3)
        agree = float(((logits > 0) == (ref_logits > 0)).float().mean())
        assert agree > 0.9995, f"masks agree on {agree:.5f} of the pixels"
        assert float((logits - ref_logits).abs().max()) < 2e-2
        if "boxes" in kwargs:  # the boxed organs are drawn, not empty masks
            assert all(int(n) > 500 for n in (logits > 0).sum(dim=(1, 2, 3))), (logits > 0).sum(dim=(1, 2, 3))


def test_openvino_graphs_are_cached_whole_and_read_back(core, ov_sam, ov_cache, caplog) -> None:
    assert cache_dir() == ov_cache
    stored = sorted(p.name.split("-")[0] for p in ov_cache.iterdir())
    assert stored == ["decoder", "encoder"], stored  # whole entries only, no temporary folders left
    images = _images()[:1]
    with caplog.at_level(logging.INFO, logger="organsam.model.openvino_sam"):
        again = OpenVinoSam(core)
    assert "converting" not in caplog.text  # read from the cache
    assert torch.equal(again.encode(images), ov_sam.encode(images))
    # a damaged entry (truncated weights file) is converted again and replaced
    (encoder,) = [p for p in ov_cache.iterdir() if p.name.startswith("encoder")]
    (encoder / "model.bin").write_bytes(b"\0" * 16)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="organsam.model.openvino_sam"):
        mended = OpenVinoSam(core)
    assert "cannot load the cached" in caplog.text and "converting LiteMedSAM's encoder" in caplog.text
    assert "converting LiteMedSAM's decoder" not in caplog.text
    assert torch.equal(mended.encode(images), ov_sam.encode(images))
    assert (encoder / "model.bin").stat().st_size > 1_000_000
    assert sorted(p.name.split("-")[0] for p in ov_cache.iterdir()) == ["decoder", "encoder"]


def test_openvino_unwritable_cache_converts_in_memory(core, tmp_path, monkeypatch, caplog) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("ORGANSAM_CACHE_DIR", str(blocker))
    # built inside inference mode, as the pipeline's first encode does it on a cold cache
    with caplog.at_level(logging.WARNING, logger="organsam.model.openvino_sam"), torch.inference_mode():
        ov = OpenVinoSam(core, threads=1)
    assert "cannot cache" in caplog.text
    assert blocker.read_text().startswith("a file")  # nothing of the user's is touched
    assert ov.encode(_images()[:1]).shape == (1, 256, 64, 64)


def test_openvino_rejects_unknown_precision(core) -> None:
    with pytest.raises(ValueError, match="precision must be one of"):
        OpenVinoSam(core, precision="fp16")


def test_pipeline_runs_openvino_on_the_cpu_by_default(core) -> None:
    from organsam.inference.volume_predictor import VolumePredictor

    auto = VolumePredictor(core, prior=None, progress=False)
    assert auto.decoder.compute == {"runtime": "openvino", "precision": "fp32", "decoder_precision": "fp32"}
    assert VolumePredictor(core, prior=None, runtime="torch").decoder.compute["runtime"] == "torch"
