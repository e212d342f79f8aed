"""Organ-balanced (slice, organ) sampling statistics on the real shared cases; step determinism; DDP
shares."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path

from organsam.training.case_store import CaseStore
from organsam.training.datasets import read_dataset
from organsam.training.sampling import OrganBalancedSampler, StepBatchSampler
from organsam.vocabulary import load_vocabulary

IDS = load_vocabulary().ids()


@pytest.fixture(scope="module")
def store():
    cases = [c for c in read_dataset("shared", data_path()) if c.case_id in ("ts_a", "amos_0001")]
    return CaseStore(cases, IDS)


def test_weights_inverse_to_organ_frequency(store):
    s = OrganBalancedSampler.from_store(store, absent_fraction=0.0)
    # weight of a (slice, organ) pair x the organ's pair count is the same for every pair
    np.testing.assert_allclose(
        s.pair_prob * s.organ_counts[s.pair_organ], s.pair_prob[0] * s.organ_counts[s.pair_organ[0]]
    )
    probs = s.organ_probabilities()
    organs = np.nonzero(s.organ_counts)[0]
    np.testing.assert_allclose(probs[organs], 1.0 / organs.size)
    # every positive pair covers at least min_area model pixels
    scale = np.array([store.model_scale(i) for i in range(len(store))])
    areas = np.array([store.areas[c][z, k] for c, z, k in zip(s.pair_case, s.pair_z, s.pair_organ)])
    assert np.all(areas * scale[s.pair_case] ** 2 >= s.min_area)


def test_empirical_draws_balance_small_organs(store):
    k = IDS.index
    bal = OrganBalancedSampler.from_store(store, absent_fraction=0.0, seed=1)
    uni = OrganBalancedSampler.from_store(store, absent_fraction=0.0, seed=1, balance_power=0.0)
    n = 3000
    drawn_bal = np.bincount([sp.organ for sp in bal.draw(0, 0, n)], minlength=len(IDS)) / n
    drawn_uni = np.bincount([sp.organ for sp in uni.draw(0, 0, n)], minlength=len(IDS)) / n
    p = bal.organ_probabilities()
    organs = np.nonzero(bal.organ_counts)[0]
    tol = 5 * np.sqrt(p[organs] * (1 - p[organs]) / n)
    assert np.all(np.abs(drawn_bal[organs] - p[organs]) < tol)
    # small organs (few slices) are oversampled relative to pair-uniform sampling, large ones undersampled
    small, large = k("adrenal_gland_right"), k("colon")
    assert bal.organ_counts[small] < bal.organ_counts[large]
    assert drawn_bal[small] > 2 * drawn_uni[small]
    assert drawn_bal[large] < drawn_uni[large]
    ratio = drawn_uni[large] / max(drawn_uni[small], 1e-9)
    assert ratio > 3 and 0.4 < drawn_bal[large] / drawn_bal[small] < 2.5


def test_absent_samples_and_prompt_restriction(store):
    k = IDS.index
    allowed = [k(o) for o in ("liver", "spleen", "kidney_left", "kidney_right", "colon", "gallbladder")]
    s = OrganBalancedSampler.from_store(store, absent_fraction=0.3, prompt_organs=allowed, seed=2)
    specs = s.draw(3, 0, 2000)
    assert {sp.organ for sp in specs} <= set(allowed)
    absent = [sp for sp in specs if not sp.present]
    assert 0.25 < len(absent) / len(specs) < 0.35
    for sp in absent:  # absent = labelled by the case but not on the slice
        assert store.known[sp.case][sp.organ] and store.areas[sp.case][sp.z, sp.organ] == 0
    amos = store.case_index("amos_0001")
    assert not any(sp.case == amos and sp.organ == k("colon") for sp in specs)  # AMOS does not label the colon
    for sp in specs:
        if sp.present:
            assert store.areas[sp.case][sp.z, sp.organ] > 0


def test_draws_are_a_function_of_step_and_ddp_shares_match(store):
    s = OrganBalancedSampler.from_store(store, seed=5)
    assert s.draw(7, 1, 6) == s.draw(7, 1, 6)
    assert s.draw(7, 1, 6) != s.draw(8, 1, 6)
    assert len({sp.seed for sp in s.draw(7, 0, 6)}) == 6
    one = list(StepBatchSampler(s, 4, 0, 5, accumulation=2))
    r0 = list(StepBatchSampler(s, 2, 0, 5, accumulation=2, rank=0, world_size=2))
    r1 = list(StepBatchSampler(s, 2, 0, 5, accumulation=2, rank=1, world_size=2))
    assert len(one) == len(r0) == 10
    assert all(a + b == g for a, b, g in zip(r0, r1, one))
    resumed = list(StepBatchSampler(s, 4, 3, 5, accumulation=2))
    assert resumed == one[6:]


def test_sampler_rejects_data_without_prompted_organs(store):
    with pytest.raises(ValueError, match="no \\(slice, organ\\) pair"):
        OrganBalancedSampler.from_store(store, prompt_organs=[IDS.index("lung_tumor")])
