"""BTCV raw folders."""

from __future__ import annotations

import re

from organsam.training.datasets.base import (
    DatasetError,
    DatasetReader,
    image_files,
    register_dataset,
    strip_suffix,
)
from organsam.training.manifest import Case


@register_dataset("btcv", "bcv")
class BtcvReader(DatasetReader):
    """BTCV (Multi-Atlas Labeling Beyond the Cranial Vault) raw: ``img/imgXXXX.nii.gz``,
    ``label/labelXXXX.nii.gz`` (in ``root`` or below it, e.g. ``RawData/Training``)."""

    default_labelmap = "btcv"

    def cases(self) -> list[Case]:
        img_dirs = [self.root / "img"] if (self.root / "img").is_dir() else sorted(self.root.rglob("img"))
        out = []
        for img_dir in img_dirs:
            lab_dir = img_dir.parent / "label"
            if not lab_dir.is_dir():
                continue
            labels = {re.sub(r"\D", "", strip_suffix(p.name)): p for p in image_files(lab_dir)}
            for img in image_files(img_dir):
                num = re.sub(r"\D", "", strip_suffix(img.name))
                if num in labels:
                    out.append(self.make(f"btcv_{num}", str(img), str(labels[num]), modality="CT", split="train"))
        if not out:
            raise DatasetError(f"{self.root}: no BTCV pairs (expected img/img0001.nii.gz + label/label0001.nii.gz)")
        return out
