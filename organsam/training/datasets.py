"""Dataset readers: one class per folder layout, registered by name; each lists the labelled cases.

``read_dataset(name, root, **options) -> list[Case]`` (see :class:`~organsam.training.manifest.Case`);
``load_case(case) -> LoadedCase`` reads one case into organsam's canonical (Z, Y, X) layout with display
intensities (CT abdomen window / MR percentiles / 8-bit data kept) and its integer label map.

Registered layouts (``list_datasets()``):

=================  ===================================================================================
``nnunet``/``msd``  ``dataset.json`` + ``imagesTr``/``labelsTr`` (nnU-Net v1/v2 raw, Medical Segmentation
                    Decathlon); label map from ``dataset.json`` (or ``labelmap=``), channel 0 only.
``amos22``          AMOS22: ``imagesTr``/``labelsTr`` (train), ``imagesVa``/``labelsVa`` (val), optional
                    ``dataset.json``; ids > 500 are MR.
``btcv``            BTCV raw (``RawData/Training``): ``img/imgXXXX.nii.gz`` + ``label/labelXXXX.nii.gz``.
``synapse``         Synapse as preprocessed for TransUNet: ``train_npz/caseXXXX_sliceYYY.npz`` (keys image,
                    label) and ``test_vol_h5/caseXXXX.npy.h5`` (needs h5py), with the 18-train/12-test list.
``word``            WORD: ``imagesTr``/``labelsTr``, ``imagesVal``/``labelsVal``, ``imagesTs``/``labelsTs``.
``flare22``         FLARE22: ``images/FLARE22_Tr_XXXX_0000.nii.gz`` + ``labels/FLARE22_Tr_XXXX.nii.gz``
                    (``Tuning``/``Validation`` folders become val).
``totalsegmentator``  TotalSegmentator subjects: ``<id>/ct.nii.gz`` + ``<id>/segmentations/<class>.nii.gz``,
                    split from ``meta.csv`` when present.
``cvpr_npz``        CVPR MedSAM-on-laptop challenge ``.npz`` (imgs, gts, spacing); label map per file via
                    ``labelmap=`` or ``labelmaps={glob: name}`` (files without one are skipped).
``manifest``        a CSV/JSON manifest (``root`` is the manifest file).
``shared``          the project's real-data folder (``../shared/data``): train ts_a, ts_b_dicom,
                    amos_0001_slab; val amos_0013_slab.
=================  ===================================================================================

Organs a dataset does not label are *unknown* for its cases (never prompted, left out of the class
loss); organs it labels but that are not on a slice are *absent* (negatives).
Common reader options: ``patient_regex`` (a regex whose first group, searched in the case id, is the
patient id; default: the case id), ``labelmap`` (override the label map).
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from organsam.preprocessing.intensity import model_intensities
from organsam.training.manifest import Case, ManifestError, read_manifest

logger = logging.getLogger(__name__)

__all__ = [
    "DatasetReader",
    "DatasetError",
    "LoadedCase",
    "register_dataset",
    "list_datasets",
    "get_dataset_reader",
    "read_dataset",
    "load_case",
    "SYNAPSE_TRAIN_CASES",
    "SYNAPSE_TEST_CASES",
    "register_loader",
]

#: TransUNet's Synapse split (``lists/lists_Synapse/train.txt`` and ``test_vol.txt``): case numbers.
SYNAPSE_TRAIN_CASES: tuple[str, ...] = (
    "0005",
    "0006",
    "0007",
    "0009",
    "0010",
    "0021",
    "0023",
    "0024",
    "0026",
    "0027",
    "0028",
    "0030",
    "0031",
    "0033",
    "0034",
    "0037",
    "0039",
    "0040",
)
SYNAPSE_TEST_CASES: tuple[str, ...] = (
    "0001",
    "0002",
    "0003",
    "0004",
    "0008",
    "0022",
    "0025",
    "0029",
    "0032",
    "0035",
    "0036",
    "0038",
)

_NII = (".nii.gz", ".nii", ".mha", ".nrrd")


class DatasetError(ManifestError):
    """A dataset folder that does not have the expected layout (message names the folder and the fix)."""


# --------------------------------------------------------------------------------------------------- registry
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
            raise FileNotFoundError(
                f"{self.root}: dataset folder for layout {self.name!r} not found; set data.root"
            )
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
            raise DatasetError(
                f"{self.root}: no label map for case {case_id}; pass labelmap=<packaged name or json>"
            )
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


def _strip(name: str) -> str:
    for suf in (*_NII, ".npz", ".npy.h5", ".h5"):
        if name.endswith(suf):
            return name[: -len(suf)]
    return name


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.name.endswith(_NII))


def _pair_folder(images: Path, labels: Path, channel_suffix: bool = True) -> list[tuple[str, Path, Path]]:
    """(case id, image, label) for every label file with an image of the same id (``_0000`` allowed)."""
    out = []
    if not images.is_dir() or not labels.is_dir():
        return out
    by_id = {}
    for img in _files(images):
        cid = _strip(img.name)
        if channel_suffix and re.search(r"_\d{4}$", cid):
            if not cid.endswith("_0000"):
                continue
            cid = cid[:-5]
        by_id[cid] = img
    for lab in _files(labels):
        cid = _strip(lab.name)
        if cid in by_id:
            out.append((cid, by_id[cid], lab))
        else:
            logger.warning("%s: no image for label %s in %s; skipped", labels, lab.name, images)
    return out


# ---------------------------------------------------------------------------------------------------- readers
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
        modality = (
            "CT" if mod == "CT" else ("MR" if mod in ("MR", "MRI", "T1", "T2", "ADC", "FLAIR") else None)
        )
        out = []
        if isinstance(doc.get("training"), list) and doc["training"]:
            for entry in doc["training"]:
                img = self.root / str(entry["image"]).removeprefix("./")
                lab = self.root / str(entry["label"]).removeprefix("./")
                if not img.exists():  # nnU-Net v1 lists the case name without the channel suffix
                    alt = img.with_name(_strip(img.name) + "_0000" + img.name[len(_strip(img.name)) :])
                    img = alt if alt.exists() else img
                if not lab.exists():
                    logger.warning("%s: label %s listed in dataset.json is missing; skipped", self.root, lab)
                    continue
                out.append(
                    self.make(_strip(lab.name), str(img), str(lab), labelmap=labelmap, modality=modality)
                )
        else:
            for cid, img, lab in _pair_folder(self.root / "imagesTr", self.root / "labelsTr"):
                out.append(self.make(cid, str(img), str(lab), labelmap=labelmap, modality=modality))
        if not out:
            raise DatasetError(
                f"{self.root}: dataset.json lists no training cases and imagesTr/labelsTr hold no pairs"
            )
        return out


@register_dataset("amos22", "amos")
class Amos22Reader(DatasetReader):
    """AMOS22: ``imagesTr``/``labelsTr`` (train) and ``imagesVa``/``labelsVa`` (val); ids above 500 are MR."""

    default_labelmap = "amos22"

    def cases(self) -> list[Case]:
        out = []
        for images, labels, split in (("imagesTr", "labelsTr", "train"), ("imagesVa", "labelsVa", "val")):
            for cid, img, lab in _pair_folder(self.root / images, self.root / labels, channel_suffix=False):
                m = re.search(r"(\d+)$", cid)
                modality = ("MR" if int(m.group(1)) > 500 else "CT") if m else None
                out.append(self.make(cid, str(img), str(lab), modality=modality, split=split))
        if not out:
            raise DatasetError(
                f"{self.root}: no AMOS22 cases (expected imagesTr/amos_XXXX.nii.gz with "
                f"labelsTr/amos_XXXX.nii.gz)"
            )
        return out


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
            labels = {re.sub(r"\D", "", _strip(p.name)): p for p in _files(lab_dir)}
            for img in _files(img_dir):
                num = re.sub(r"\D", "", _strip(img.name))
                if num in labels:
                    out.append(
                        self.make(f"btcv_{num}", str(img), str(labels[num]), modality="CT", split="train")
                    )
        if not out:
            raise DatasetError(
                f"{self.root}: no BTCV pairs (expected img/img0001.nii.gz + label/label0001.nii.gz)"
            )
        return out


@register_dataset("synapse", "synapse_transunet")
class SynapseReader(DatasetReader):
    """Synapse multi-organ as preprocessed for TransUNet.

    ``train_npz/caseXXXX_sliceYYY.npz`` (keys ``image`` in [0, 1] after clipping HU to [-125, 275], ``label``)
    are grouped per case into volumes; ``test_vol_h5/caseXXXX.npy.h5`` (keys ``image``, ``label``, (Z, H, W))
    need ``h5py`` (the ``train`` extra: ``pip install "organsam[train]"``, or ``pip install h5py``). Splits
    follow TransUNet's 18 train / 12 test cases (:data:`SYNAPSE_TRAIN_CASES`, :data:`SYNAPSE_TEST_CASES`).

    The arrays carry no affine, so the in-plane orientation cannot be checked: ``inplane`` (``"none"``,
    ``"transpose"``, ``"flipud"``, ``"fliplr"``, ``"rot90"``, ``"rot270"``) maps them to organsam's layout
    (rows posterior->anterior, columns patient right->left); check one slice before training.
    """

    default_labelmap = "synapse"

    def __init__(self, root: str | Path | None, *, inplane: str = "none", **options: Any) -> None:
        super().__init__(root, **options)
        if inplane not in _INPLANE:
            raise DatasetError(f"synapse: inplane must be one of {sorted(_INPLANE)}, got {inplane!r}")
        self.inplane = inplane

    def cases(self) -> list[Case]:
        out = []
        npz_dir = self.root / "train_npz" if (self.root / "train_npz").is_dir() else self.root
        groups: dict[str, list[tuple[int, Path]]] = {}
        for p in sorted(npz_dir.glob("case*_slice*.npz")):
            m = re.match(r"case(\d+)_slice(\d+)\.npz$", p.name)
            if m:
                groups.setdefault(m.group(1), []).append((int(m.group(2)), p))
        for num, items in sorted(groups.items()):
            files = [str(p) for _, p in sorted(items)]
            out.append(
                self.make(
                    f"synapse_{num}",
                    files[0],
                    files[0],
                    modality="CT",
                    split=self._split(num),
                    loader="npz_slices",
                    options={"files": files, "inplane": self.inplane},
                )
            )
        h5_dir = self.root / "test_vol_h5"
        for p in sorted(h5_dir.glob("case*.h5")) if h5_dir.is_dir() else []:
            num = re.sub(r"\D", "", p.name.split(".")[0])
            if any(c.case_id == f"synapse_{num}" for c in out):
                continue
            out.append(
                self.make(
                    f"synapse_{num}",
                    str(p),
                    str(p),
                    modality="CT",
                    split=self._split(num),
                    loader="h5_volume",
                    options={"inplane": self.inplane},
                )
            )
        if not out:
            raise DatasetError(
                f"{self.root}: no Synapse data (expected train_npz/case0005_slice000.npz or "
                f"test_vol_h5/case0001.npy.h5)"
            )
        return out

    @staticmethod
    def _split(num: str) -> str:
        return "test" if num in SYNAPSE_TEST_CASES else "train"


@register_dataset("word")
class WordReader(DatasetReader):
    """WORD: ``imagesTr``/``labelsTr`` (train), ``imagesVal``/``labelsVal`` (val), ``imagesTs``/``labelsTs``
    (test)."""

    default_labelmap = "word"

    def cases(self) -> list[Case]:
        out = []
        for suffix, split in (("Tr", "train"), ("Val", "val"), ("Ts", "test")):
            for cid, img, lab in _pair_folder(
                self.root / f"images{suffix}", self.root / f"labels{suffix}", False
            ):
                out.append(self.make(cid, str(img), str(lab), modality="CT", split=split))
        if not out:
            raise DatasetError(
                f"{self.root}: no WORD cases (expected imagesTr/word_0001.nii.gz + labelsTr/...)"
            )
        return out


@register_dataset("flare22", "flare")
class Flare22Reader(DatasetReader):
    """FLARE22: every ``images``/``labels`` folder pair under ``root`` (``FLARE22_Tr_0001_0000.nii.gz`` with
    ``FLARE22_Tr_0001.nii.gz``); pairs under a ``Tuning``/``Validation`` folder are val."""

    default_labelmap = "flare22"

    def cases(self) -> list[Case]:
        roots = (
            [self.root]
            if (self.root / "images").is_dir()
            else sorted(p.parent for p in self.root.rglob("images"))
        )
        out = []
        for r in roots:
            is_val = any(
                part.lower() in ("tuning", "validation", "val")
                for part in r.relative_to(self.root.parent).parts
            )
            for cid, img, lab in _pair_folder(r / "images", r / "labels"):
                out.append(
                    self.make(cid, str(img), str(lab), modality="CT", split="val" if is_val else "train")
                )
        if not out:
            raise DatasetError(
                f"{self.root}: no FLARE22 pairs (images/FLARE22_Tr_0001_0000.nii.gz + "
                f"labels/FLARE22_Tr_0001.nii.gz)"
            )
        return out


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
                f"{self.root}: no TotalSegmentator subjects (expected <id>/ct.nii.gz and "
                f"<id>/segmentations/*.nii.gz)"
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

    names = {_strip(p.name) for p in seg_dir.iterdir()}
    scores = {
        n: len(names & set(labelmap_info(n).labels.values()))
        for n in ("totalsegmentator_v2", "totalsegmentator_v1")
    }
    return max(scores, key=lambda n: (scores[n], n == "totalsegmentator_v2"))


@register_dataset("cvpr_npz", "cvpr")
class CvprNpzReader(DatasetReader):
    """CVPR MedSAM-on-laptop challenge ``.npz`` files (``imgs`` 0..255, ``gts``, ``spacing``), searched
    recursively. Their label values depend on the source dataset: give ``labelmap=`` for all files or
    ``labelmaps={"CT_AMOS_*": "amos22", ...}`` (glob on the file name); files without a map are skipped."""

    def __init__(
        self, root: str | Path | None, *, labelmaps: dict[str, Any] | None = None, **options: Any
    ) -> None:
        super().__init__(root, **options)
        self.labelmaps = dict(labelmaps or {})

    def cases(self) -> list[Case]:
        files = [self.root] if self.root.is_file() else sorted(self.root.rglob("*.npz"))
        out, skipped = [], []
        for f in files:
            lm = (
                next((v for pat, v in self.labelmaps.items() if fnmatch.fnmatch(f.name, pat)), None)
                or self.labelmap
            )
            if lm is None:
                skipped.append(f.name)
                continue
            out.append(self.make(_strip(f.name), str(f), str(f), labelmap=lm))
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

    def __init__(
        self, root: str | Path | None = None, *, cases: list[str] | None = None, **options: Any
    ) -> None:
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


# ---------------------------------------------------------------------------------------------------- loading
@dataclass
class LoadedCase:
    """One case in memory, canonical layout.

    Attributes:
        case: the :class:`Case`.
        image: (Z, Y, X) float32 display intensities in [0, 255] (model input before ``to_model_input``).
        labels: (Z, Y, X) integer label map on the same grid.
        spacing: (sz, sy, sx) in mm.
        modality: ``"CT"``, ``"MR"`` or ``"unknown"``.
        labelmap: label value -> vocabulary organ id (``None`` = not in the vocabulary).
    """

    case: Case
    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    modality: str
    labelmap: dict[int, str | None]


_INPLANE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda a: a,
    "transpose": lambda a: np.swapaxes(a, -1, -2),
    "flipud": lambda a: a[..., ::-1, :],
    "fliplr": lambda a: a[..., :, ::-1],
    "rot90": lambda a: np.rot90(a, 1, axes=(-2, -1)),
    "rot270": lambda a: np.rot90(a, -1, axes=(-2, -1)),
}

_LOADERS: dict[str, Callable[[Case, str], LoadedCase]] = {}


def register_loader(
    name: str,
) -> Callable[[Callable[[Case, str], LoadedCase]], Callable[[Case, str], LoadedCase]]:
    """Decorator registering ``loader(case, window) -> LoadedCase`` under ``Case.loader`` name."""

    def deco(fn: Callable[[Case, str], LoadedCase]) -> Callable[[Case, str], LoadedCase]:
        _LOADERS[name] = fn
        return fn

    return deco


def resolve_labelmap(labelmap: Any) -> dict[int, str | None]:
    """``{value: organ id | None}`` from a packaged name, a json file, or a ready mapping."""
    from organsam.vocabulary import load_labelmap

    if isinstance(labelmap, dict):
        return {int(k): v for k, v in labelmap.items()}
    return load_labelmap(str(labelmap))


def load_case(case: Case, window: str = "abdomen") -> LoadedCase:
    """Read a case: image as display intensities, labels on its grid, label map resolved.

    Raises:
        FileNotFoundError / organsam.io.VolumeReadError: unreadable files (naming them).
        DatasetError: unknown loader, or image and labels of different shapes.
    """
    if case.loader not in _LOADERS:
        raise DatasetError(f"case {case.case_id}: unknown loader {case.loader!r}; known: {sorted(_LOADERS)}")
    loaded = _LOADERS[case.loader](case, window)
    if loaded.image.shape != loaded.labels.shape:
        raise DatasetError(
            f"case {case.describe()}: image {loaded.image.shape} and labels {loaded.labels.shape} differ"
        )
    return loaded


@register_loader("volume")
def _load_volume_case(case: Case, window: str) -> LoadedCase:
    from organsam.io import Volume, load_labels, load_volume

    if isinstance(case.image, np.ndarray):
        vol = Volume.from_array(
            case.image, case.options.get("spacing", (1.0, 1.0, 1.0)), case.modality or "unknown"
        )
        labels = np.asarray(case.label)
        if labels.shape != vol.shape:
            raise DatasetError(f"case {case.case_id}: label array {labels.shape} != image {vol.shape}")
    else:
        vol = load_volume(case.image, modality=case.modality)
        labels = load_labels(case.label, vol)
    return LoadedCase(
        case,
        model_intensities(vol, window),
        np.ascontiguousarray(labels),
        tuple(vol.spacing),
        vol.modality,
        resolve_labelmap(case.labelmap),
    )


@register_loader("npz_slices")
def _load_npz_slices(case: Case, window: str) -> LoadedCase:
    files = case.options.get("files") or [case.image]
    imgs, labs = [], []
    for f in files:
        with np.load(f) as d:
            if "image" not in d or "label" not in d:
                raise DatasetError(
                    f"{f}: expected keys 'image' and 'label' (TransUNet Synapse slice), got {list(d)}"
                )
            imgs.append(np.asarray(d["image"], dtype=np.float32))
            labs.append(np.rint(np.asarray(d["label"])).astype(np.int32))
    return _synapse_arrays(case, np.stack(imgs), np.stack(labs))


@register_loader("h5_volume")
def _load_h5(case: Case, window: str) -> LoadedCase:
    try:
        import h5py
    except ImportError as e:
        raise DatasetError(
            f"{case.image}: reading TransUNet .h5 volumes needs h5py, which is not installed "
            f"(pip install h5py, or the organsam[train] extra), or use the train_npz slices"
        ) from e
    with h5py.File(case.image, "r") as f:
        image = np.asarray(f["image"], dtype=np.float32)
        label = np.rint(np.asarray(f["label"])).astype(np.int32)
    return _synapse_arrays(case, image, label)


def _synapse_arrays(case: Case, image: np.ndarray, label: np.ndarray) -> LoadedCase:
    fn = _INPLANE[case.options.get("inplane", "none")]
    image, label = np.ascontiguousarray(fn(image)), np.ascontiguousarray(fn(label))
    hi = float(image.max()) if image.size else 0.0
    display = np.clip(image * 255.0 if hi <= 1.0 + 1e-6 else image, 0, 255).astype(np.float32)
    spacing = tuple(float(s) for s in case.options.get("spacing", (1.0, 1.0, 1.0)))
    return LoadedCase(case, display, label, spacing, "CT", resolve_labelmap(case.labelmap))  # type: ignore[arg-type]


@register_loader("ts_subject")
def _load_ts_subject(case: Case, window: str) -> LoadedCase:
    from organsam.io import load_labels, load_volume
    from organsam.vocabulary import labelmap_info

    vol = load_volume(case.image, modality=case.modality or "CT")
    lm = labelmap_info(str(case.labelmap))
    value_of = {name: v for v, name in lm.labels.items()}
    labels = np.zeros(vol.shape, dtype=np.int16)
    unknown = []
    for f in sorted(Path(case.label).iterdir()):
        name = _strip(f.name)
        if name not in value_of:
            if f.name.endswith(_NII):
                unknown.append(name)
            continue
        mask = load_labels(f, vol) > 0
        labels[mask] = value_of[name]
    if unknown:
        logger.info(
            "%s: %d mask file(s) not in label map %s ignored (e.g. %s)",
            case.label,
            len(unknown),
            lm.name,
            unknown[0],
        )
    return LoadedCase(
        case, model_intensities(vol, window), labels, tuple(vol.spacing), vol.modality, dict(lm.organs)
    )
