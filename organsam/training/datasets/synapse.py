"""Synapse as preprocessed for TransUNet, with its 18-train/12-test split."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from organsam.training.datasets.base import (
    DatasetError,
    DatasetReader,
    register_dataset,
)
from organsam.training.datasets.loading import INPLANE_TRANSFORMS
from organsam.training.manifest import Case

#: TransUNet's Synapse split (``lists/lists_Synapse/train.txt`` and ``test_vol.txt``): case numbers.
SYNAPSE_TRAIN_CASES: tuple[str, ...] = (
    "0005",
    "0006",
    "0007",
    "0009",
    "0010",
    "0021",
    "0023",
    "0024",
    "0026",
    "0027",
    "0028",
    "0030",
    "0031",
    "0033",
    "0034",
    "0037",
    "0039",
    "0040",
)
SYNAPSE_TEST_CASES: tuple[str, ...] = (
    "0001",
    "0002",
    "0003",
    "0004",
    "0008",
    "0022",
    "0025",
    "0029",
    "0032",
    "0035",
    "0036",
    "0038",
)


@register_dataset("synapse", "synapse_transunet")
class SynapseReader(DatasetReader):
    """Synapse multi-organ as preprocessed for TransUNet.

    ``train_npz/caseXXXX_sliceYYY.npz`` (keys ``image`` in [0, 1] after clipping HU to [-125, 275], ``label``)
    are grouped per case into volumes; ``test_vol_h5/caseXXXX.npy.h5`` (keys ``image``, ``label``, (Z, H, W))
    need ``h5py`` (the ``train`` extra: ``pip install "organsam[train]"``, or ``pip install h5py``). Splits
    follow TransUNet's 18 train / 12 test cases (:data:`SYNAPSE_TRAIN_CASES`, :data:`SYNAPSE_TEST_CASES`).

    The arrays carry no affine, so the in-plane orientation cannot be checked: ``inplane`` (``"none"``,
    ``"transpose"``, ``"flipud"``, ``"fliplr"``, ``"rot90"``, ``"rot270"``) maps them to organsam's layout
    (rows posterior->anterior, columns patient right->left); check one slice before training.
    """

    default_labelmap = "synapse"

    def __init__(self, root: str | Path | None, *, inplane: str = "none", **options: Any) -> None:
        super().__init__(root, **options)
        if inplane not in INPLANE_TRANSFORMS:
            raise DatasetError(f"synapse: inplane must be one of {sorted(INPLANE_TRANSFORMS)}, got {inplane!r}")
        self.inplane = inplane

    def cases(self) -> list[Case]:
        out = []
        npz_dir = self.root / "train_npz" if (self.root / "train_npz").is_dir() else self.root
        groups: dict[str, list[tuple[int, Path]]] = {}
        for p in sorted(npz_dir.glob("case*_slice*.npz")):
            m = re.match(r"case(\d+)_slice(\d+)\.npz$", p.name)
            if m:
                groups.setdefault(m.group(1), []).append((int(m.group(2)), p))
        for num, items in sorted(groups.items()):
            files = [str(p) for _, p in sorted(items)]
            out.append(
                self.make(
                    f"synapse_{num}",
                    files[0],
                    files[0],
                    modality="CT",
                    split=self._split(num),
                    loader="npz_slices",
                    options={"files": files, "inplane": self.inplane},
                )
            )
        h5_dir = self.root / "test_vol_h5"
        for p in sorted(h5_dir.glob("case*.h5")) if h5_dir.is_dir() else []:
            num = re.sub(r"\D", "", p.name.split(".")[0])
            if any(c.case_id == f"synapse_{num}" for c in out):
                continue
            out.append(
                self.make(
                    f"synapse_{num}",
                    str(p),
                    str(p),
                    modality="CT",
                    split=self._split(num),
                    loader="h5_volume",
                    options={"inplane": self.inplane},
                )
            )
        if not out:
            raise DatasetError(
                f"{self.root}: no Synapse data (expected train_npz/case0005_slice000.npz or "
                f"test_vol_h5/case0001.npy.h5)"
            )
        return out

    @staticmethod
    def _split(num: str) -> str:
        return "test" if num in SYNAPSE_TEST_CASES else "train"
