"""Fine-tuning from a design checkpoint (``init_from``): the shipped weights, not a fresh design, are what
training starts from, with the run's model keys applied; bad requests fail with one clear error."""

from __future__ import annotations

import pytest
import torch
from conftest import amos_liver_slice

from organsam.config import ConfigError
from organsam.model.checkpoint import CheckpointError
from organsam.registry import build_design
from organsam.training.distributed import DistInfo
from organsam.training.fine_tune import design_from_checkpoint
from organsam.training.train_config import load_train_config
from organsam.training.trainer import Trainer


def _liver_dice(model: torch.nn.Module, sample: dict) -> float:
    model.eval()
    with torch.no_grad():
        enc = model.encode_plain(sample["image"])
        pred = (model(None, model.organ_index_of(["liver"]), None, encoded=enc).masks > 0).float()
    ref = sample["mask"]
    return float(2 * (pred * ref).sum() / (pred.sum() + ref.sum()))


@pytest.mark.slow
def test_training_starts_from_the_shipped_weights_with_the_run_model_keys(tmp_path):
    """``init_from=packaged`` through the trainer: the PG-SAM to train draws the liver of a held-out AMOS slice from
    its name as the shipped checkpoint does (Dice over 0.5; a fresh PG-SAM draws it far worse), in train mode, with
    the run's freezing (the mask decoder is trainable here, frozen in the shipped recipe)."""
    sample = amos_liver_slice()
    cfg = load_train_config(
        "train_pg_sam", ["init_from=packaged", "model.freeze_mask_decoder=false", f"out_dir={tmp_path}"]
    )
    model = Trainer(cfg, quiet=True)._build_model(DistInfo(0, 0, 1, torch.device("cpu"), None))
    assert model.training
    decoder = [p.requires_grad for n, p in model.named_parameters() if n.startswith("core.mask_decoder.transformer")]
    assert decoder and all(decoder)
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith("core.image_encoder"))
    shipped, fresh = _liver_dice(model, sample), _liver_dice(build_design("pg_sam"), sample)
    assert shipped > 0.5 and shipped > fresh + 0.2, (shipped, fresh)


def test_init_from_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="holds a 'pg_sam' checkpoint, not 'seg_sam'"):
        from organsam.model.checkpoint import packaged_checkpoint

        design_from_checkpoint("seg_sam", packaged_checkpoint("pg_sam"))
    with pytest.raises(ConfigError, match="change the architecture"):
        design_from_checkpoint("pg_sam", "packaged", {"align_dim": 64})
    with pytest.raises(ConfigError, match="no checkpoint of design 'unified' ships"):
        design_from_checkpoint("unified", "packaged")


def test_modules_the_run_adds_start_untrained_on_the_shipped_weights():
    """``model.lora_rank`` adds image-encoder LoRA adapters to the shipped PG-SAM: every shipped tensor is loaded,
    the adapters are the only new tensors, and they are what trains in the encoder."""
    from organsam.model.checkpoint import load_checkpoint, packaged_checkpoint

    shipped = load_checkpoint(packaged_checkpoint("pg_sam"), design="pg_sam").state_dict()
    model = design_from_checkpoint("pg_sam", "packaged", {"lora_rank": 4})
    state = model.state_dict()
    added = sorted(set(state) - set(shipped))
    assert added and all("lora" in k for k in added)
    assert all(torch.equal(state[k], v) for k, v in shipped.items())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad and n.startswith("core.image_encoder")]
    assert trainable and all("lora" in n for n in trainable)
