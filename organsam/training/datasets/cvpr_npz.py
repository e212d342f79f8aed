"""CVPR MedSAM-on-laptop challenge npz files."""

from __future__ import annotations

import fnmatch
import logging
from pathlib import Path
from typing import Any

from organsam.training.datasets.base import (
    DatasetError,
    DatasetReader,
    register_dataset,
    strip_suffix,
)
from organsam.training.manifest import Case

logger = logging.getLogger(__name__)


@register_dataset("cvpr_npz", "cvpr")
class CvprNpzReader(DatasetReader):
    """CVPR MedSAM-on-laptop challenge ``.npz`` files (``imgs`` 0..255, ``gts``, ``spacing``), searched
    recursively. Their label values depend on the source dataset: give ``labelmap=`` for all files or
    ``labelmaps={"CT_AMOS_*": "amos22", ...}`` (glob on the file name); files without a map are skipped."""

    def __init__(self, root: str | Path | None, *, labelmaps: dict[str, Any] | None = None, **options: Any) -> None:
        super().__init__(root, **options)
        self.labelmaps = dict(labelmaps or {})

    def cases(self) -> list[Case]:
        files = [self.root] if self.root.is_file() else sorted(self.root.rglob("*.npz"))
        out, skipped = [], []
        for f in files:
            lm = next((v for pat, v in self.labelmaps.items() if fnmatch.fnmatch(f.name, pat)), None) or self.labelmap
            if lm is None:
                skipped.append(f.name)
                continue
            out.append(self.make(strip_suffix(f.name), str(f), str(f), labelmap=lm))
        if skipped:
            logger.warning(
                "%s: %d npz file(s) without a label map skipped (e.g. %s); add labelmaps={glob: name}",
                self.root,
                len(skipped),
                skipped[0],
            )
        if not out:
            raise DatasetError(
                f"{self.root}: no usable challenge npz files (found {len(files)}; each needs a label "
                f"map: labelmap=<name> or labelmaps={{glob: name}})"
            )
        return out
