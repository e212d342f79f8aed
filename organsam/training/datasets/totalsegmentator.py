"""TotalSegmentator subject folders."""

from __future__ import annotations

from pathlib import Path

from organsam.training.datasets.base import (
    DatasetError,
    DatasetReader,
    register_dataset,
    strip_suffix,
)
from organsam.training.manifest import Case


@register_dataset("totalsegmentator", "ts")
class TotalSegmentatorReader(DatasetReader):
    """TotalSegmentator subjects ``<root>/<id>/ct.nii.gz`` + ``segmentations/<class>.nii.gz``.

    The per-class masks are combined into one label map on the fly with the values of the packaged
    TotalSegmentator map whose class names match the files (v2 by default, v1 when more v1 names
    match). Splits from ``meta.csv`` (``image_id;...;split``) when present.
    """

    def cases(self) -> list[Case]:
        subjects = sorted(
            p for p in self.root.iterdir() if (p / "ct.nii.gz").is_file() and (p / "segmentations").is_dir()
        )
        if not subjects:
            raise DatasetError(
                f"{self.root}: no TotalSegmentator subjects (expected <id>/ct.nii.gz and <id>/segmentations/*.nii.gz)"
            )
        splits = self._meta_splits()
        labelmap = self.labelmap or _ts_labelmap_for(subjects[0] / "segmentations")
        return [
            self.make(
                s.name,
                str(s / "ct.nii.gz"),
                str(s / "segmentations"),
                labelmap=labelmap,
                modality="CT",
                split=splits.get(s.name),
                loader="ts_subject",
            )
            for s in subjects
        ]

    def _meta_splits(self) -> dict[str, str]:
        meta = self.root / "meta.csv"
        if not meta.is_file():
            return {}
        import csv

        text = meta.read_text(encoding="utf-8")
        delim = ";" if text.count(";") > text.count(",") else ","
        rows = list(csv.DictReader(text.splitlines(), delimiter=delim))
        return {r["image_id"]: r["split"] for r in rows if r.get("image_id") and r.get("split")}


def _ts_labelmap_for(seg_dir: Path) -> str:
    from organsam.vocabulary import labelmap_info

    names = {strip_suffix(p.name) for p in seg_dir.iterdir()}
    scores = {
        n: len(names & set(labelmap_info(n).labels.values())) for n in ("totalsegmentator_v2", "totalsegmentator_v1")
    }
    return max(scores, key=lambda n: (scores[n], n == "totalsegmentator_v2"))
