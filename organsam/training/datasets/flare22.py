"""FLARE22 folders."""

from __future__ import annotations

from organsam.training.datasets.base import (
    DatasetError,
    DatasetReader,
    pair_folder,
    register_dataset,
)
from organsam.training.manifest import Case


@register_dataset("flare22", "flare")
class Flare22Reader(DatasetReader):
    """FLARE22: every ``images``/``labels`` folder pair under ``root`` (``FLARE22_Tr_0001_0000.nii.gz`` with
    ``FLARE22_Tr_0001.nii.gz``); pairs under a ``Tuning``/``Validation`` folder are val."""

    default_labelmap = "flare22"

    def cases(self) -> list[Case]:
        roots = [self.root] if (self.root / "images").is_dir() else sorted(p.parent for p in self.root.rglob("images"))
        out = []
        for r in roots:
            is_val = any(
                part.lower() in ("tuning", "validation", "val") for part in r.relative_to(self.root.parent).parts
            )
            for cid, img, lab in pair_folder(r / "images", r / "labels"):
                out.append(self.make(cid, str(img), str(lab), modality="CT", split="val" if is_val else "train"))
        if not out:
            raise DatasetError(
                f"{self.root}: no FLARE22 pairs (images/FLARE22_Tr_0001_0000.nii.gz + labels/FLARE22_Tr_0001.nii.gz)"
            )
        return out
