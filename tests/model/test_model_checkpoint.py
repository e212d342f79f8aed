"""Design checkpoints: safetensors + JSON sidecar round trip, and every check that rejects a bad checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import data_path

from organsam.io.files import file_sha256
from organsam.model.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
    sidecar_path,
)
from organsam.registry import build_design


@pytest.fixture(scope="module")
def encoded():
    """Plain LiteMedSAM features of a real abdominal CT slice (AMOS 0013, slice 10)."""
    from organsam.io import load_volume
    from organsam.model import build_lite_medsam
    from organsam.preprocessing.intensity import window_ct
    from organsam.preprocessing.slices import to_model_input

    vol = load_volume(data_path("amos_0013_slab", "image.nii.gz"))
    x, _ = to_model_input(window_ct(vol.array[10], "abdomen"))
    with torch.no_grad():
        return build_lite_medsam().encode(torch.from_numpy(x)[None], keep_levels=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A seg_sam design whose design weights and two mask-decoder tensors were changed, saved once."""
    torch.manual_seed(1)
    model = build_design("seg_sam")
    with torch.no_grad():
        model.core.mask_decoder.iou_token.weight.add_(0.5)
        model.core.mask_decoder.transformer.layers[0].mlp.lin1.bias.mul_(1.5)
        for p in model.semantic_decoder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("ckpt") / "seg.safetensors"
    save_checkpoint(model, path, design="seg_sam", config=model.config, extra={"epoch": 3, "val_dice": 0.5})
    return model, path


def _outputs(model, encoded):
    organs = model.organ_index_of(["liver", "spleen"])
    with torch.no_grad():
        out = model(None, organs, boxes=torch.tensor([[40.0, 60.0, 150.0, 170.0]] * 2), encoded=encoded)
    return out


def test_round_trip_gives_identical_outputs(trained, encoded):
    model, path = trained
    info = read_checkpoint_info(path)
    assert info["format"] == CHECKPOINT_FORMAT and info["design"] == "seg_sam"
    assert info["tensor_sha256"] == file_sha256(path)
    assert info["extra"] == {"epoch": 3, "val_dice": 0.5}
    assert info["organ_ids"] == model.organ_ids and info["vocabulary_version"]
    assert info["base_weights"]["name"] == "lite_medsam"
    assert info["config"]["pretrained"] is True
    # Only the two changed core tensors are stored next to all of the design's own weights.
    assert info["core_tensors_saved"] == 2
    n_design = sum(1 for k in model.state_dict() if not k.startswith("core."))
    assert info["num_tensors"] == n_design + 2
    loaded = load_checkpoint(path, design="seg_sam")
    assert not loaded.training
    a, b = _outputs(model, encoded), _outputs(loaded, encoded)
    for key in ("masks", "iou", "presence_logit"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    for key, t in a.aux.items():
        assert torch.equal(t, b.aux[key]), key
    sd_a, sd_b = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)


def test_random_core_is_saved_whole(tmp_path):
    model = build_design("unified", ["pretrained=false", "organs=[amos15]", "optimizer_iterations=2"])
    path = save_checkpoint(model, tmp_path / "rand.safetensors")
    info = read_checkpoint_info(path)
    assert info["base_weights"] is None
    assert info["num_tensors"] == len(model.state_dict())
    loaded = load_checkpoint(path)
    assert loaded.config.optimizer_iterations == 2 and loaded.organ_ids == model.organ_ids
    sd = loaded.state_dict()
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())
    side = sidecar_path(path)  # the same checkpoint as saved before the design was renamed organsam -> unified
    sidecar = json.loads(side.read_text())
    side.write_text(json.dumps({**sidecar, "design": "organsam"}))
    assert load_checkpoint(path).design_name == "unified"


def test_tampered_tensor_file_is_rejected(trained, tmp_path):
    _, path = trained
    bad = tmp_path / "bad.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-7] ^= 0x01  # flip one bit of the last tensor's data
    bad.write_bytes(bytes(raw))
    sidecar_path(bad).write_text(sidecar_path(path).read_text())
    with pytest.raises(CheckpointError, match=r"bad\.safetensors.*SHA-256.*modified or is corrupt"):
        load_checkpoint(bad)


def _copy(path, tmp_path, name, edit=None):
    dst = tmp_path / f"{name}.safetensors"
    dst.write_bytes(path.read_bytes())
    info = json.loads(sidecar_path(path).read_text())
    if edit:
        edit(info)
    sidecar_path(dst).write_text(json.dumps(info))
    return dst


def test_wrong_design_vocabulary_and_text_encoder_are_named(trained, tmp_path):
    _, path = trained
    with pytest.raises(CheckpointError, match=r"holds a 'seg_sam' checkpoint, not 'pg_sam'"):
        load_checkpoint(path, design="pg_sam")
    old_vocab = _copy(path, tmp_path, "vocab", lambda i: i.update(vocabulary_version="0.9.0"))
    with pytest.raises(CheckpointError, match=r"vocabulary version 0\.9\.0.*vocabulary version 1\."):
        load_checkpoint(old_vocab)
    organs = _copy(path, tmp_path, "organs", lambda i: i.update(organ_ids=i["organ_ids"][:-1]))
    with pytest.raises(CheckpointError, match="organ list differs"):
        load_checkpoint(organs)
    text = _copy(path, tmp_path, "text", lambda i: i.update(text_fingerprint="0" * 64))
    with pytest.raises(CheckpointError, match="text encoder 0000"):
        load_checkpoint(text)
    assert load_checkpoint(text, strict_text=False).design_name == "seg_sam"
    other = _copy(path, tmp_path, "other", lambda i: i.update(design="pg_sam"))
    with pytest.raises(CheckpointError, match="does not fit design 'pg_sam'"):
        load_checkpoint(other)


def test_missing_and_unexpected_tensors_are_listed(trained, tmp_path):
    from safetensors.torch import load_file, save_file

    _, path = trained
    tensors = load_file(str(path))
    tensors.pop("text_proj.fc1.weight")
    tensors["bogus.weight"] = torch.zeros(3)
    dst = tmp_path / "keys.safetensors"
    save_file(tensors, str(dst))
    info = json.loads(sidecar_path(path).read_text())
    info["tensor_sha256"] = file_sha256(dst)
    sidecar_path(dst).write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match=r"missing tensors: text_proj\.fc1\.weight.*unexpected tensors: bogus"):
        load_checkpoint(dst)


def test_missing_files_and_bad_arguments(trained, tmp_path):
    model, path = trained
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes(path.read_bytes())
    with pytest.raises(FileNotFoundError, match=r"lone\.json: sidecar"):
        load_checkpoint(lone)
    sidecar_path(lone).write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read the checkpoint sidecar"):
        load_checkpoint(lone)
    with pytest.raises(ValueError, match="cannot end in .json"):
        save_checkpoint(model, tmp_path / "x.json")
    with pytest.raises(ValueError, match="design='pg_sam' but the model is a 'seg_sam'"):
        save_checkpoint(model, tmp_path / "y.safetensors", design="pg_sam")
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        save_checkpoint(model, tmp_path / "z.safetensors", extra={"a": np.zeros(2)})
    assert not (tmp_path / "z.safetensors").exists()


def test_half_precision_storage_of_the_shipped_seg_sam_draws_the_same_masks(encoded, tmp_path):
    """The shipped SEG-SAM checkpoint stored again in float16: about half the file, and on a real slice the same
    masks (box + text and text alone) as the float32 file."""
    from organsam.model.checkpoint import resave_checkpoint
    from organsam.weights import ASSET_SUMS

    src = ASSET_SUMS.parent / "design_seg_sam.safetensors"
    dst = resave_checkpoint(src, tmp_path / "seg_fp16.safetensors", "float16")
    assert read_checkpoint_info(dst)["stored_dtype"] == "float16"
    assert dst.stat().st_size < 0.55 * src.stat().st_size
    full, half = load_checkpoint(src), load_checkpoint(dst)
    assert all(p.dtype == torch.float32 for p in half.parameters())
    organs = full.organ_index_of(["liver", "spleen"])
    for boxes in (torch.tensor([[40.0, 60.0, 150.0, 170.0]] * 2), None):
        with torch.no_grad():
            a = full(None, organs, boxes=boxes, encoded=encoded).masks > 0
            b = half(None, organs, boxes=boxes, encoded=encoded).masks > 0
        for i in range(2):
            union = int((a[i] | b[i]).sum())
            assert union == 0 or 2 * int((a[i] & b[i]).sum()) / (int(a[i].sum()) + int(b[i].sum())) > 0.99
