"""Which shared CTs are contrast-enhanced: median attenuation (HU) of the labelled aorta, kidneys, liver and spleen
of every case of the shared data, and whether :func:`organsam.training.contrast_phases.is_unenhanced` takes it as
unenhanced (the training recipe then adds arterial and portal-venous copies of it, ``data.contrast_phases``).

    .venv/bin/python bench/contrast_phases.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from organsam.io import load_labels, load_volume  # noqa: E402
from organsam.training.case_store import organ_label_values  # noqa: E402
from organsam.training.contrast_phases import is_unenhanced  # noqa: E402
from organsam.training.datasets import read_dataset  # noqa: E402
from organsam.training.datasets.loading import resolve_labelmap  # noqa: E402

ORGANS = ("aorta", "kidney_right", "kidney_left", "liver", "spleen")


def main() -> int:
    print(f"| case | split | {' | '.join(ORGANS)} | unenhanced |")
    print("|:---|:---|" + "---:|" * len(ORGANS) + ":---|")
    for case in read_dataset("shared", None):
        vol = load_volume(case.image, modality=case.modality)
        labels = np.asarray(load_labels(case.label, vol))
        labelmap = resolve_labelmap(case.labelmap)
        cells = []
        for values in organ_label_values(labelmap, ORGANS):
            inside = np.isin(labels, values) if values is not None else np.zeros(labels.shape, bool)
            cells.append(f"{np.median(vol.array[inside]):.0f}" if inside.any() else "-")
        print(f"| {case.case_id} | {case.split} | {' | '.join(cells)} | {is_unenhanced(vol.array, labels, labelmap)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
