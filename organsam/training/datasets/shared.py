"""The project's real-data folder (``../shared/data``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from organsam.training.datasets.base import (
    DatasetError,
    DatasetReader,
    register_dataset,
)
from organsam.training.manifest import Case

#: The shared real-data folder: (case id, image, label, label map, patient, split).
SHARED_CASES: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("ts_a", "ts_a/image.nii.gz", "ts_a/label_ts_v2_fast.nii.gz", "totalsegmentator_v2", "TS-A", "train"),
    ("ts_b", "ts_b_dicom/dicom", "ts_b_dicom/label_ts_v2.nii.gz", "totalsegmentator_v2", "TS-B", "train"),
    (
        "amos_0001",
        "amos_0001_slab/image.nii.gz",
        "amos_0001_slab/label.nii.gz",
        "amos22",
        "AMOS-0001",
        "train",
    ),
    ("amos_0013", "amos_0013_slab/image.nii.gz", "amos_0013_slab/label.nii.gz", "amos22", "AMOS-0013", "val"),
)


def default_shared_root() -> Path:
    """``$ORGANSAM_DATA``, else ``../shared/data`` from the working directory."""
    import os

    return Path(os.environ.get("ORGANSAM_DATA") or Path.cwd().parent / "shared" / "data")


@register_dataset("shared")
class SharedReader(DatasetReader):
    """The project's real CT data (``../shared/data``, README there): train ``ts_a`` (TotalSegmentator v2
    fast labels), ``ts_b_dicom`` (DICOM series + v2 labels), ``amos_0001_slab``; val ``amos_0013_slab``
    (AMOS reference annotation). ``cases=[...]`` restricts to some case ids."""

    def __init__(self, root: str | Path | None = None, *, cases: list[str] | None = None, **options: Any) -> None:
        super().__init__(root if root is not None else default_shared_root(), **options)
        known = [c[0] for c in SHARED_CASES]
        bad = [c for c in cases or [] if c not in known]
        if bad:
            raise DatasetError(f"shared dataset: unknown case(s) {bad}; known: {known}")
        self.only = list(cases or known)

    def cases(self) -> list[Case]:
        out = []
        for cid, img, lab, lm, patient, split in SHARED_CASES:
            if cid not in self.only:
                continue
            if not (self.root / img).exists() or not (self.root / lab).exists():
                raise DatasetError(
                    f"{self.root}: shared case {cid} is missing ({img}, {lab}); set data.root to the "
                    f"shared data folder or $ORGANSAM_DATA"
                )
            out.append(
                self.make(
                    cid,
                    str(self.root / img),
                    str(self.root / lab),
                    labelmap=lm,
                    patient_id=patient,
                    modality="CT",
                    split=split,
                )
            )
        return out
