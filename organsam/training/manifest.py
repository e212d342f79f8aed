"""Training cases: the ``Case`` record, CSV/JSON manifests and patient-level splits (numpy-free, no torch).

A dataset reader (:mod:`organsam.training.datasets`) turns a dataset folder into a list of :class:`Case`
records; a manifest file stores such a list (one row per labelled volume) so any collection of volumes
can be trained on:

* CSV with a header row: ``image,label,labelmap`` and optionally ``patient``, ``case``, ``modality``,
  ``split``, ``loader``. Relative paths are relative to the manifest's folder.
* JSON: a list of objects with the same keys, or ``{"cases": [...]}``.

``labelmap`` is a packaged label map name (``organsam.vocabulary.list_labelmaps()``, e.g. ``amos22``) or a
JSON label file (``{"1": "liver", ...}``). ``patient`` defaults to the case id: give it whenever a patient
has several scans, because :func:`split_cases` never puts one patient in two splits.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "Case",
    "ManifestError",
    "read_manifest",
    "write_manifest",
    "split_cases",
    "check_patient_split",
    "MANIFEST_COLUMNS",
]

#: Columns of a CSV manifest (the first three are required).
MANIFEST_COLUMNS: tuple[str, ...] = (
    "image",
    "label",
    "labelmap",
    "patient",
    "case",
    "modality",
    "split",
    "loader",
)


class ManifestError(ValueError):
    """A manifest file or a case list that cannot be used (message names the file and the fix)."""


@dataclass
class Case:
    """One labelled volume of a training dataset.

    Attributes:
        case_id: unique name of the volume (``amos_0001``).
        patient_id: the patient it belongs to (splits are made per patient).
        image: image file or DICOM folder (anything ``organsam.io.load_volume`` reads), or for the
            special loaders a reference they understand (see ``loader``).
        label: label file (integer label map on the image grid), or a loader-specific reference.
        labelmap: packaged label map name, JSON label file path, or a ready ``{value: organ id | None}``.
        modality: ``"CT"``, ``"MR"`` or ``None`` (from the file / intensity heuristic).
        split: the split the dataset itself assigns (``"train"``, ``"val"``, ``"test"``) or ``None``.
        dataset: name of the reader that produced it.
        loader: how to read it: ``"volume"`` (organsam.io, default), ``"npz_slices"`` (TransUNet Synapse
            slices), ``"h5_volume"`` (TransUNet Synapse test volumes), ``"ts_subject"`` (a
            TotalSegmentator subject folder with one mask file per class).
        options: loader options (e.g. the slice files of an ``npz_slices`` case, ``inplane``).
    """

    case_id: str
    patient_id: str
    image: Any
    label: Any
    labelmap: Any
    modality: str | None = None
    split: str | None = None
    dataset: str = ""
    loader: str = "volume"
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One line naming the case, its patient and its files."""
        return f"{self.case_id} (patient {self.patient_id}, {self.dataset or 'manifest'}: {self.image})"


def _resolve_path(value: str, base: Path) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p))


def _case_from_row(row: dict[str, Any], base: Path, where: str) -> Case:
    missing = [k for k in ("image", "label", "labelmap") if not row.get(k)]
    if missing:
        raise ManifestError(
            f"{where}: missing {', '.join(missing)}; every row needs image, label and labelmap "
            f"(columns: {', '.join(MANIFEST_COLUMNS)})"
        )
    unknown = sorted(set(row) - set(MANIFEST_COLUMNS) - {"options"})
    if unknown:
        raise ManifestError(f"{where}: unknown column(s) {unknown}; valid: {', '.join(MANIFEST_COLUMNS)}")
    image = _resolve_path(str(row["image"]), base)
    label = _resolve_path(str(row["label"]), base)
    labelmap = str(row["labelmap"])
    if labelmap.lower().endswith(".json"):
        labelmap = _resolve_path(labelmap, base)
    case_id = str(row.get("case") or Path(image).name.split(".")[0])
    modality = row.get("modality") or None
    return Case(
        case_id=case_id,
        patient_id=str(row.get("patient") or case_id),
        image=image,
        label=label,
        labelmap=labelmap,
        modality=str(modality).upper() if modality else None,
        split=(str(row["split"]).lower() if row.get("split") else None),
        dataset="manifest",
        loader=str(row.get("loader") or "volume"),
        options=dict(row.get("options") or {}),
    )


def read_manifest(path: str | Path) -> list[Case]:
    """Read a CSV or JSON manifest into cases.

    Args:
        path: ``.csv`` (header ``image,label,labelmap[,patient,case,modality,split,loader]``) or ``.json``.

    Returns:
        The cases, in file order.

    Raises:
        FileNotFoundError: the manifest does not exist.
        ManifestError: unreadable file, missing columns, duplicate case ids.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: manifest not found (a CSV or JSON list of image,label,labelmap rows)")
    base = p.parent
    rows: list[dict[str, Any]]
    if p.suffix.lower() == ".json":
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ManifestError(f"{p}: not valid JSON ({e})") from e
        if isinstance(doc, dict):
            doc = doc.get("cases")
        if not isinstance(doc, list) or not all(isinstance(r, dict) for r in doc):
            raise ManifestError(
                f'{p}: expected a JSON list of objects (or {{"cases": [...]}}) with image, label and labelmap keys'
            )
        rows = doc
    else:
        with p.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None:
                raise ManifestError(f"{p}: empty CSV; the first row must be the header image,label,labelmap")
            rows = [{k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in r.items() if k} for r in reader]
    cases = [_case_from_row(r, base, f"{p} row {i + 1}") for i, r in enumerate(rows)]
    if not cases:
        raise ManifestError(f"{p}: the manifest lists no cases")
    _check_unique(cases, str(p))
    return cases


def write_manifest(cases: Sequence[Case], path: str | Path) -> Path:
    """Write cases as a JSON manifest (loader options included) that :func:`read_manifest` reads back.

    Only cases whose image/label are paths (not in-memory arrays) and whose label map is a name or a
    file can be written.

    Returns:
        The written path.
    """
    p = Path(path)
    rows = []
    for c in cases:
        if not isinstance(c.image, (str, Path)) or not isinstance(c.label, (str, Path)):
            raise ManifestError(f"case {c.case_id}: in-memory image/label cannot be written to a manifest")
        if not isinstance(c.labelmap, (str, Path)):
            raise ManifestError(f"case {c.case_id}: label map must be a packaged name or a json file to be written")
        row: dict[str, Any] = {
            "image": str(c.image),
            "label": str(c.label),
            "labelmap": str(c.labelmap),
            "patient": c.patient_id,
            "case": c.case_id,
            "loader": c.loader,
        }
        if c.modality:
            row["modality"] = c.modality
        if c.split:
            row["split"] = c.split
        if c.options:
            row["options"] = c.options
        rows.append(row)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"cases": rows}, indent=1, default=str) + "\n", encoding="utf-8")
    return p


def _check_unique(cases: Iterable[Case], where: str) -> None:
    seen: set[str] = set()
    for c in cases:
        if c.case_id in seen:
            raise ManifestError(f"{where}: case id {c.case_id!r} appears twice; give each row a unique 'case'")
        seen.add(c.case_id)


def _patient_fraction(patient: str, seed: int) -> float:
    """A stable pseudo-random number in [0, 1) per (patient, seed)."""
    digest = hashlib.sha256(f"{seed}:{patient}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def check_patient_split(
    split_a: Sequence[Case],
    split_b: Sequence[Case],
    names: tuple[str, str] = ("train", "val"),
) -> None:
    """Raise when a patient has cases in both splits.

    Raises:
        ManifestError: naming the shared patients and their cases.
    """
    a = {c.patient_id for c in split_a}
    shared = sorted(a & {c.patient_id for c in split_b})
    if shared:
        ex = [c.case_id for c in (*split_a, *split_b) if c.patient_id == shared[0]]
        raise ManifestError(
            f"patient(s) {shared[:5]} appear in both the {names[0]} and the {names[1]} split (e.g. "
            f"{shared[0]}: cases {ex}); give those cases the same split, or set their patient ids"
        )


def split_cases(
    cases: Sequence[Case],
    split: str,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    use_dataset_splits: bool = True,
) -> list[Case]:
    """The cases of one split, split by patient.

    When the dataset defines splits (``Case.split``) and ``use_dataset_splits``, those are used: ``"train"``
    gives the cases marked train (or unmarked), ``"val"`` those marked val (``"validation"`` too),
    ``"test"`` those marked test. Without dataset splits (or ``use_dataset_splits=False``), patients are
    assigned by a seeded hash of their id, ``val_fraction`` of them to ``"val"`` (at least one patient when
    there are two or more), and ``"all"`` returns every case.

    Args:
        cases: all cases of the dataset.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        val_fraction: share of patients in ``val`` for datasets without their own split.
        seed: split seed.
        use_dataset_splits: honour ``Case.split`` where present.

    Returns:
        The cases of ``split``; never a patient that is also in the other split.

    Raises:
        ManifestError: unknown split name, or a patient in both train and val.
    """
    split = split.lower()
    if split not in ("train", "val", "test", "all"):
        raise ManifestError(f"unknown split {split!r}; use train, val, test or all")
    if split == "all":
        return list(cases)
    aliases = {"validation": "val", "valid": "val", "tr": "train", "training": "train", "ts": "test"}
    marked = [c for c in cases if c.split]
    if use_dataset_splits and marked:

        def norm(c: Case) -> str:
            return aliases.get((c.split or "train").lower(), (c.split or "train").lower())

        groups = {name: [c for c in cases if norm(c) == name] for name in ("train", "val", "test")}
        check_patient_split(groups["train"], groups["test"], ("train", "test"))
        check_patient_split(groups["val"], groups["test"], ("val", "test"))
        if split == "test":
            return groups["test"]
        if groups["val"]:
            check_patient_split(groups["train"], groups["val"])
            return groups[split]
        logger.info("the dataset defines no val cases; taking %.0f%% of its train patients", 100 * val_fraction)
        cases = groups["train"]
    if split == "test":
        return []
    patients = sorted({c.patient_id for c in cases})
    val_p = {p for p in patients if _patient_fraction(p, seed) < val_fraction}
    if not val_p and len(patients) >= 2 and val_fraction > 0:
        val_p = {min(patients, key=lambda p: _patient_fraction(p, seed))}
    if len(val_p) == len(patients) and len(patients) >= 2:
        val_p.discard(max(patients, key=lambda p: _patient_fraction(p, seed)))
    chosen = [c for c in cases if (c.patient_id in val_p) == (split == "val")]
    return chosen
