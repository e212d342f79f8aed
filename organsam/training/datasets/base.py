"""The dataset registry, the reader base class and the helpers the readers share."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from organsam.training.manifest import Case, ManifestError

logger = logging.getLogger(__name__)


IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")


class DatasetError(ManifestError):
    """A dataset folder that does not have the expected layout (message names the folder and the fix)."""


_READERS: dict[str, type[DatasetReader]] = {}


def register_dataset(*names: str) -> Callable[[type[DatasetReader]], type[DatasetReader]]:
    """Class decorator registering a reader under one or more names."""

    def deco(cls: type[DatasetReader]) -> type[DatasetReader]:
        for n in names:
            _READERS[n] = cls
        cls.name = names[0]
        return cls

    return deco


def list_datasets() -> list[str]:
    """Names of the registered dataset layouts."""
    return sorted(_READERS)


def get_dataset_reader(name: str) -> type[DatasetReader]:
    """The reader class of a layout name.

    Raises:
        DatasetError: unknown name (the known ones listed).
    """
    key = name.strip().lower().replace("-", "_")
    if key not in _READERS:
        raise DatasetError(
            f"unknown dataset layout {name!r}; known: {', '.join(list_datasets())} (or write a "
            f"manifest CSV and use 'manifest')"
        )
    return _READERS[key]


def read_dataset(name: str, root: str | Path | None, **options: Any) -> list[Case]:
    """All labelled cases of a dataset folder.

    Args:
        name: layout name (:func:`list_datasets`).
        root: dataset folder (manifest file for ``manifest``; ``None`` for ``shared`` = ``../shared/data`` or
            ``$ORGANSAM_DATA``).
        **options: reader options (see each reader).

    Returns:
        The cases (``Case.split`` set where the dataset defines splits).
    """
    return get_dataset_reader(name)(root, **options).cases()


class DatasetReader:
    """Base of the readers: ``Reader(root, **options).cases() -> list[Case]``.

    Args:
        root: the dataset folder.
        patient_regex: regex whose first group (searched in the case id) is the patient id.
        labelmap: label map overriding the layout's default.
    """

    name: ClassVar[str] = ""
    default_labelmap: ClassVar[str | None] = None

    def __init__(
        self,
        root: str | Path | None,
        *,
        patient_regex: str | None = None,
        labelmap: Any = None,
        **options: Any,
    ) -> None:
        if root is None:
            raise DatasetError(f"dataset {self.name!r} needs a root folder (data.root in the config)")
        self.root = Path(root).expanduser()
        if not self.root.exists():
            raise FileNotFoundError(f"{self.root}: dataset folder for layout {self.name!r} not found; set data.root")
        self.patient_regex = re.compile(patient_regex) if patient_regex else None
        self.labelmap = labelmap if labelmap is not None else self.default_labelmap
        if options:
            raise DatasetError(f"dataset {self.name!r}: unknown option(s) {sorted(options)}")

    def patient_of(self, case_id: str) -> str:
        """Patient id of a case (``patient_regex`` group 1, else the case id)."""
        if self.patient_regex is not None:
            m = self.patient_regex.search(case_id)
            if m:
                return m.group(1) if m.groups() else m.group(0)
        return case_id

    def make(self, case_id: str, image: Any, label: Any, **kw: Any) -> Case:
        """A :class:`Case` of this dataset."""
        labelmap = kw.pop("labelmap", None) or self.labelmap
        if labelmap is None:
            raise DatasetError(f"{self.root}: no label map for case {case_id}; pass labelmap=<packaged name or json>")
        return Case(
            case_id=case_id,
            patient_id=kw.pop("patient_id", None) or self.patient_of(case_id),
            image=image,
            label=label,
            labelmap=labelmap,
            dataset=self.name,
            **kw,
        )

    def cases(self) -> list[Case]:
        raise NotImplementedError


def strip_suffix(name: str) -> str:
    for suf in (*IMAGE_SUFFIXES, ".npz", ".npy.h5", ".h5"):
        if name.endswith(suf):
            return name[: -len(suf)]
    return name


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.name.endswith(IMAGE_SUFFIXES))


def pair_folder(images: Path, labels: Path, channel_suffix: bool = True) -> list[tuple[str, Path, Path]]:
    """(case id, image, label) for every label file with an image of the same id (``_0000`` allowed)."""
    out = []
    if not images.is_dir() or not labels.is_dir():
        return out
    by_id = {}
    for img in image_files(images):
        cid = strip_suffix(img.name)
        if channel_suffix and re.search(r"_\d{4}$", cid):
            if not cid.endswith("_0000"):
                continue
            cid = cid[:-5]
        by_id[cid] = img
    for lab in image_files(labels):
        cid = strip_suffix(lab.name)
        if cid in by_id:
            out.append((cid, by_id[cid], lab))
        else:
            logger.warning("%s: no image for label %s in %s; skipped", labels, lab.name, images)
    return out
