"""WORD folders."""

from __future__ import annotations

from organsam.training.datasets.base import (
    DatasetError,
    DatasetReader,
    pair_folder,
    register_dataset,
)
from organsam.training.manifest import Case


@register_dataset("word")
class WordReader(DatasetReader):
    """WORD: ``imagesTr``/``labelsTr`` (train), ``imagesVal``/``labelsVal`` (val), ``imagesTs``/``labelsTs``
    (test)."""

    default_labelmap = "word"

    def cases(self) -> list[Case]:
        out = []
        for suffix, split in (("Tr", "train"), ("Val", "val"), ("Ts", "test")):
            for cid, img, lab in pair_folder(self.root / f"images{suffix}", self.root / f"labels{suffix}", False):
                out.append(self.make(cid, str(img), str(lab), modality="CT", split=split))
        if not out:
            raise DatasetError(f"{self.root}: no WORD cases (expected imagesTr/word_0001.nii.gz + labelsTr/...)")
        return out
