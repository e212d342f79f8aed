"""AMOS22 folders."""

from __future__ import annotations

import re

from organsam.training.datasets.base import (
    DatasetError,
    DatasetReader,
    pair_folder,
    register_dataset,
)
from organsam.training.manifest import Case


@register_dataset("amos22", "amos")
class Amos22Reader(DatasetReader):
    """AMOS22: ``imagesTr``/``labelsTr`` (train) and ``imagesVa``/``labelsVa`` (val); ids above 500 are MR."""

    default_labelmap = "amos22"

    def cases(self) -> list[Case]:
        out = []
        for images, labels, split in (("imagesTr", "labelsTr", "train"), ("imagesVa", "labelsVa", "val")):
            for cid, img, lab in pair_folder(self.root / images, self.root / labels, channel_suffix=False):
                m = re.search(r"(\d+)$", cid)
                modality = ("MR" if int(m.group(1)) > 500 else "CT") if m else None
                out.append(self.make(cid, str(img), str(lab), modality=modality, split=split))
        if not out:
            raise DatasetError(
                f"{self.root}: no AMOS22 cases (expected imagesTr/amos_XXXX.nii.gz with labelsTr/amos_XXXX.nii.gz)"
            )
        return out
