"""A CSV/JSON manifest of cases."""

from __future__ import annotations

from organsam.training.datasets.base import (
    DatasetReader,
    register_dataset,
)
from organsam.training.manifest import Case, read_manifest


@register_dataset("manifest", "csv", "json")
class ManifestReader(DatasetReader):
    """A CSV/JSON manifest (``root`` is the manifest file); see :mod:`organsam.training.manifest`."""

    def cases(self) -> list[Case]:
        cases = read_manifest(self.root)
        for c in cases:
            if self.patient_regex is not None and c.patient_id == c.case_id:
                c.patient_id = self.patient_of(c.case_id)
            if self.labelmap is not None:
                c.labelmap = self.labelmap
        return cases
