"""nnU-Net v1/v2 raw and Medical Segmentation Decathlon folders."""

from __future__ import annotations

import logging

from organsam.training.datasets.base import (
    DatasetError,
    DatasetReader,
    pair_folder,
    register_dataset,
    strip_suffix,
)
from organsam.training.manifest import Case

logger = logging.getLogger(__name__)


@register_dataset("nnunet", "msd")
class NnUNetReader(DatasetReader):
    """nnU-Net raw (v1 and v2) / Medical Segmentation Decathlon task folder.

    Reads ``dataset.json``: MSD/nnU-Net v1 ``training`` list (``image``/``label`` entries) or nnU-Net v2
    ``labelsTr`` files with ``imagesTr/<case>_0000<file_ending>``; the label map from its ``labels`` (names
    resolved to vocabulary ids; unresolvable names are unmapped), unless ``labelmap=`` names a packaged map
    (e.g. ``msd_task03_liver``). Modality from ``modality`` / ``channel_names`` of channel 0. 4D
    multi-channel MSD images are not supported (convert channel 0 to 3D first).
    """

    def cases(self) -> list[Case]:
        import json

        from organsam.vocabulary import labelmap_from_json

        dj = self.root / "dataset.json"
        if not dj.is_file():
            raise DatasetError(
                f"{self.root}: no dataset.json; an nnU-Net/MSD folder has dataset.json, imagesTr and labelsTr"
            )
        doc = json.loads(dj.read_text(encoding="utf-8"))
        labelmap = self.labelmap or labelmap_from_json(dj, strict=False)
        chans = doc.get("channel_names") or doc.get("modality") or {}
        mod = str(chans.get("0", "")).upper() if isinstance(chans, dict) else ""
        modality = "CT" if mod == "CT" else ("MR" if mod in ("MR", "MRI", "T1", "T2", "ADC", "FLAIR") else None)
        out = []
        if isinstance(doc.get("training"), list) and doc["training"]:
            for entry in doc["training"]:
                img = self.root / str(entry["image"]).removeprefix("./")
                lab = self.root / str(entry["label"]).removeprefix("./")
                if not img.exists():  # nnU-Net v1 lists the case name without the channel suffix
                    alt = img.with_name(strip_suffix(img.name) + "_0000" + img.name[len(strip_suffix(img.name)) :])
                    img = alt if alt.exists() else img
                if not lab.exists():
                    logger.warning("%s: label %s listed in dataset.json is missing; skipped", self.root, lab)
                    continue
                out.append(self.make(strip_suffix(lab.name), str(img), str(lab), labelmap=labelmap, modality=modality))
        else:
            for cid, img, lab in pair_folder(self.root / "imagesTr", self.root / "labelsTr"):
                out.append(self.make(cid, str(img), str(lab), labelmap=labelmap, modality=modality))
        if not out:
            raise DatasetError(f"{self.root}: dataset.json lists no training cases and imagesTr/labelsTr hold no pairs")
        return out
