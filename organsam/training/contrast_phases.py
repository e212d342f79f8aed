"""Simulated contrast phases: copies of unenhanced training CTs with their organs brought to enhanced values.

The shared training CTs with kidneys (``ts_a``, ``amos_0001``) are unenhanced (median aorta 39-41 HU, kidneys
12-27 HU), while the validation CT and most clinical abdominal CTs are contrast-enhanced (``amos_0013``: aorta
375 HU, kidneys 174-184 HU; ``bench/contrast_phases.py``). A model trained on them never sees an enhanced kidney
or aorta, and from text alone it finds neither there. A copy of such a case per phase, with each labelled
organ's voxels shifted so that the organ's median reaches a value of that phase (drawn once per organ and copy,
deterministic), gives it enhanced organs on the same anatomy. The texture inside an organ is kept (a shift, not
a fill); organs without a row (stomach contents, gallbladder bile, fat, bone) keep their values.

The values are typical adult attenuations in the late arterial and the portal venous phase (HU; ranges
from the common abdominal CT protocols: aorta 250-400 in the arterial phase and 150-200 in the portal
phase; renal parenchyma 140-200 once enhanced; liver 60-80 arterial, 100-130 portal; spleen 100-140 /
110-130; pancreas 100-130 / 90-110; portal-venous structures and IVC bright in the portal phase).

``data.contrast_phases: [arterial, portal]`` in a training config adds the copies to the training split;
their case ids name the phase and a digest of this table (a changed table never reads stale cached features).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence

import numpy as np

from organsam.training.manifest import Case

logger = logging.getLogger(__name__)

__all__ = ["PHASES", "UNENHANCED_AORTA_HU", "contrast_phase_cases", "enhance", "is_unenhanced"]

_KIDNEY = {"kidney_left": (140.0, 200.0), "kidney_right": (140.0, 200.0)}
_ADRENAL = {"adrenal_gland_left": (60.0, 90.0), "adrenal_gland_right": (60.0, 90.0)}
_ARTERIES = ("aorta", "iliac_artery_left", "iliac_artery_right")

#: phase -> organ id -> (low, high) median attenuation in HU.
PHASES: dict[str, dict[str, tuple[float, float]]] = {
    "arterial": {
        **{a: (250.0, 380.0) for a in _ARTERIES},
        **_KIDNEY,
        **_ADRENAL,
        "spleen": (100.0, 140.0),
        "liver": (60.0, 80.0),
        "pancreas": (100.0, 130.0),
        "inferior_vena_cava": (60.0, 110.0),
        "portal_vein_and_splenic_vein": (100.0, 150.0),
    },
    "portal": {
        **{a: (150.0, 200.0) for a in _ARTERIES},
        **_KIDNEY,
        **_ADRENAL,
        "spleen": (110.0, 130.0),
        "liver": (100.0, 130.0),
        "pancreas": (90.0, 110.0),
        "inferior_vena_cava": (130.0, 160.0),
        "portal_vein_and_splenic_vein": (160.0, 200.0),
        "iliac_vein_left": (130.0, 160.0),
        "iliac_vein_right": (130.0, 160.0),
    },
}

#: A CT whose aorta's median attenuation is below this is taken as unenhanced.
UNENHANCED_AORTA_HU = 100.0

_DIGEST = hashlib.sha256(json.dumps(PHASES, sort_keys=True).encode()).hexdigest()[:8]


def _inside(labels: np.ndarray, labelmap: dict[int, str | None], organ_id: str) -> np.ndarray:
    """Voxels of ``organ_id`` (its own label values or its parts', :func:`organ_label_values`)."""
    from organsam.training.case_store import organ_label_values

    values = organ_label_values(labelmap, [organ_id])[0]
    return np.zeros(labels.shape, bool) if values is None else np.isin(labels, values)


def is_unenhanced(hu: np.ndarray, labels: np.ndarray, labelmap: dict[int, str | None]) -> bool:
    """Whether a CT is unenhanced, judged by its labelled aorta (False when it labels none)."""
    aorta = _inside(labels, labelmap, "aorta")
    return bool(aorta.any()) and float(np.median(hu[aorta])) < UNENHANCED_AORTA_HU


def enhance(
    hu: np.ndarray, labels: np.ndarray, labelmap: dict[int, str | None], phase: str, rng: np.random.Generator
) -> np.ndarray:
    """A copy of ``hu`` with every organ of ``PHASES[phase]`` that ``labels`` holds shifted so that its median
    is a value drawn from the phase's range."""
    if phase not in PHASES:
        raise ValueError(f"unknown contrast phase {phase!r}; known: {sorted(PHASES)}")
    out = np.array(hu, dtype=np.float32, copy=True)
    for organ_id, (low, high) in PHASES[phase].items():
        inside = _inside(labels, labelmap, organ_id)
        if inside.any():
            target = float(rng.uniform(low, high))
            out[inside] += target - float(np.median(hu[inside]))
    return out


def contrast_phase_cases(cases: Sequence[Case], phases: Sequence[str], seed: int = 0) -> list[Case]:
    """One enhanced copy per phase of every unenhanced CT case with a labelled aorta (read here; the copies hold
    their arrays). Other cases get none."""
    from organsam.io import load_labels, load_volume
    from organsam.training.datasets.loading import resolve_labelmap

    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        raise ValueError(f"data.contrast_phases: unknown phase(s) {unknown}; known: {sorted(PHASES)}")
    copies: list[Case] = []
    for case in cases:
        if case.loader != "volume" or isinstance(case.image, np.ndarray) or (case.modality or "CT") != "CT":
            continue
        vol = load_volume(case.image, modality=case.modality)
        if vol.modality != "CT":
            continue
        labels = np.asarray(load_labels(case.label, vol))
        labelmap = resolve_labelmap(case.labelmap)
        if not is_unenhanced(vol.array, labels, labelmap):
            continue
        for phase in phases:
            digest = int(hashlib.sha256(f"{case.case_id}|{phase}|{seed}".encode()).hexdigest()[:8], 16)
            image = enhance(vol.array, labels, labelmap, phase, np.random.default_rng(digest))
            copies.append(
                Case(
                    case_id=f"{case.case_id}+{phase}-{_DIGEST}",
                    patient_id=case.patient_id,
                    image=image,
                    label=labels,
                    labelmap=labelmap,
                    modality="CT",
                    split=case.split,
                    dataset=case.dataset,
                    options={"spacing": tuple(vol.spacing)},
                )
            )
        logger.info("contrast phases: %s gets enhanced copies %s", case.case_id, list(phases))
    return copies
