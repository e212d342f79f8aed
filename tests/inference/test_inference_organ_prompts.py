"""The packaged organ prompt table (the shipped default checkpoint) inside the volume pipeline, on a held-out
real CT with manual labels (AMOS 0013 slab, never trained on)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path

from organsam.inference.organ_prompt_table import load_prompt_table
from organsam.inference.volume_predictor import VolumePredictor
from organsam.io import load_labels, load_volume
from organsam.io.files import file_sha256
from organsam.vocabulary import labelmap_info
from organsam.weights import WEIGHTS, WeightsError


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(int(a.sum() + b.sum()), 1))


def test_packaged_table_is_hash_checked(tmp_path) -> None:
    table = load_prompt_table()
    assert file_sha256(table.path) == WEIGHTS["organ_prompts"].sha256
    assert table.path.stat().st_size < 25 * 2**20  # the size cap for shipped weights
    assert {"liver", "pancreas", "kidney_left"} <= set(table.organ_ids)
    assert table.lookup(["liver"]).abs().sum() > 0  # trained, not the zero initialisation
    tampered = tmp_path / "organ_prompts.safetensors"
    data = bytearray(table.path.read_bytes())
    data[-1] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="SHA-256"):
        load_prompt_table(tampered, check_hash=True)


@pytest.mark.slow
def test_learned_tokens_help_the_liver_prior_pass() -> None:
    vol = load_volume(data_path("amos_0013_slab", "image.nii.gz"))
    labels = load_labels(data_path("amos_0013_slab", "label.nii.gz"), vol)
    ref = np.isin(labels, labelmap_info("amos22").values_for("liver"))
    dice = {}
    shared = None
    for prompts in (False, True):
        predictor = VolumePredictor(progress=False, track_refine=False, organ_prompts=prompts)
        state = predictor.init_state(vol)
        if shared is not None:  # same registration and embeddings for both runs: only the tokens differ
            state.prior, state.embeddings = shared
        predictor.add_text_prompt(state, "liver")
        list(predictor.propagate(state))
        shared = (state.prior, state.embeddings)
        dice[prompts] = _dice(state.results["liver"].mask, ref)
    # atlas boxes around the liver also hold stomach, kidney and bowel; the tokens say which one is wanted
    assert dice[True] > dice[False] + 0.03, dice


@pytest.mark.parametrize("overrides", [{"lora_rank": 2}, {"freeze_mask_decoder": False}])
def test_export_refuses_checkpoints_that_changed_the_core(tmp_path, overrides) -> None:
    """A prompt table holds tokens only: a checkpoint whose core was adapted (LoRA) or trained must not be
    exported as a table that would silently drop those changes."""
    from organsam.inference.organ_prompt_table import export_prompt_table
    from organsam.model.checkpoint import save_checkpoint
    from organsam.registry import build_design

    model = build_design("organ_prompts", [{"pretrained": False, "organs": ["liver", "spleen"], **overrides}])
    ckpt = tmp_path / "model.safetensors"
    save_checkpoint(model, ckpt, design="organ_prompts")
    with pytest.raises(ValueError, match="prompt table cannot carry"):
        export_prompt_table(ckpt, tmp_path / "table.safetensors")
    assert not (tmp_path / "table.safetensors").exists()


def test_compare_tables_measures_the_token_difference() -> None:
    """What scripts/reproduce_default.sh prints: the largest token difference between two tables."""
    from organsam.inference.organ_prompt_table import OrganPromptTable, compare_tables

    shipped = load_prompt_table()
    assert compare_tables(shipped, shipped)["max_abs"] == 0.0
    tokens = shipped.tokens.clone()
    tokens[shipped.organ_ids.index("liver"), 0, 7] += 0.25
    moved = OrganPromptTable(tokens.flip(0).contiguous(), shipped.organ_ids[::-1])  # other row order, same organs
    d = compare_tables(shipped, moved)
    assert d["organs"] == len(shipped.organ_ids)
    assert abs(d["max_abs"] - 0.25) < 1e-6 and 0 < d["rel"] < 1
    with pytest.raises(ValueError, match="no common organ"):
        compare_tables(shipped, OrganPromptTable(tokens[:1], ["not_an_organ"]))


def test_cli_exports_a_table_and_compares_it_with_the_shipped_one(tmp_path, capsys) -> None:
    """`organsam prompts export` (what scripts/train_default.sh runs): a checkpoint whose core is untouched gives a
    table with its organs, and --compare-to measures it against the packaged table."""
    from organsam.cli.main import main
    from organsam.model.checkpoint import save_checkpoint
    from organsam.registry import build_design

    model = build_design("organ_prompts", [{"pretrained": False, "organs": ["liver", "spleen"]}])
    ckpt = tmp_path / "model.safetensors"
    save_checkpoint(model, ckpt, design="organ_prompts")
    out = tmp_path / "table.safetensors"
    assert main(["prompts", "export", str(ckpt), str(out), "--compare-to", "packaged"]) == 0
    table = load_prompt_table(out)
    assert set(table.organ_ids) >= {"liver", "spleen"}
    assert "max |token difference|" in capsys.readouterr().out
    assert main(["prompts", "export", str(tmp_path / "missing.safetensors"), str(tmp_path / "t2.safetensors")]) != 0
    assert len(capsys.readouterr().err.strip().splitlines()) == 1 and not (tmp_path / "t2.safetensors").exists()
