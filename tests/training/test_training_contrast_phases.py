"""Simulated contrast phases on the real shared CTs: which are unenhanced, and what an enhanced copy holds."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path

from organsam.config import ConfigError
from organsam.training.case_store import organ_label_values
from organsam.training.contrast_phases import PHASES, contrast_phase_cases, enhance, is_unenhanced
from organsam.training.datasets.loading import resolve_labelmap


def _case(folder: str) -> tuple[np.ndarray, np.ndarray, dict[int, str | None]]:
    from organsam.io import load_labels, load_volume

    vol = load_volume(data_path(folder, "image.nii.gz"))
    return vol.array, np.asarray(load_labels(data_path(folder, "label.nii.gz"), vol)), resolve_labelmap("amos22")


def _organ(labels: np.ndarray, labelmap: dict[int, str | None], organ_id: str) -> np.ndarray:
    values = organ_label_values(labelmap, [organ_id])[0]
    return np.zeros(labels.shape, bool) if values is None else np.isin(labels, values)


def test_unenhanced_and_enhanced_ct_are_told_apart():
    assert is_unenhanced(*_case("amos_0001_slab"))  # aorta about 40 HU
    assert not is_unenhanced(*_case("amos_0013_slab"))  # arterial phase, aorta about 375 HU


@pytest.mark.parametrize("phase", sorted(PHASES))
def test_enhanced_copy_moves_listed_organs_only_and_keeps_their_texture(phase):
    hu, labels, labelmap = _case("amos_0001_slab")
    out = enhance(hu, labels, labelmap, phase, np.random.default_rng(0))
    assert out.shape == hu.shape and not np.shares_memory(out, hu)
    listed = np.zeros(hu.shape, bool)
    for organ_id, (low, high) in PHASES[phase].items():
        inside = _organ(labels, labelmap, organ_id)
        if not inside.any():
            continue
        listed |= inside
        assert low <= np.median(out[inside]) <= high, organ_id
        assert np.std(out[inside]) == pytest.approx(np.std(hu[inside]), rel=1e-4), organ_id
    assert listed.any()
    np.testing.assert_array_equal(out[~listed], hu[~listed])  # stomach, gallbladder, fat, bone untouched
    kidney = _organ(labels, labelmap, "kidney_left")
    assert np.median(out[kidney]) - np.median(hu[kidney]) > 100  # unenhanced ~27 HU -> enhanced 140-200 HU


def test_copies_are_made_for_unenhanced_cts_only(shared_data):
    from organsam.training.datasets import read_dataset

    cases = read_dataset("shared", str(shared_data), cases=["ts_b", "amos_0001"])
    copies = contrast_phase_cases(cases, ["arterial", "portal"], seed=0)
    # ts_b is enhanced (contrast CT): only amos_0001 is copied, once per phase, under its own patient
    assert [c.case_id.split("-")[0] for c in copies] == ["amos_0001+arterial", "amos_0001+portal"]
    assert {c.patient_id for c in copies} == {"AMOS-0001"}
    again = contrast_phase_cases(cases, ["arterial"], seed=0)[0]
    np.testing.assert_array_equal(again.image, copies[0].image)  # deterministic per case, phase and seed


def test_unknown_phase_is_a_config_error():
    from organsam.training.train_config import load_train_config

    with pytest.raises(ConfigError, match="contrast_phases"):
        load_train_config("train_seg_sam", ["data.contrast_phases=[delayed]"])
