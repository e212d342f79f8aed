"""Batch inputs: a folder of volumes (files and DICOM series subfolders) or a manifest of paths, turned into
cases with safe, unique ids."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


#: Name of the per-run record inside the output folder.
MANIFEST_NAME = "batch_manifest.json"
#: File endings read as one volume each when a folder is given.
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".npz")
MANIFEST_SUFFIXES = (".csv", ".json", ".txt")
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


class BatchInputError(ValueError):
    """The batch input (folder or manifest) or the output folder cannot be used as given."""


# --------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class BatchCase:
    """One volume of a batch.

    Attributes:
        case_id: folder name of its outputs under the output folder (letters, digits, ``._-``).
        path: the input file or DICOM series folder.
    """

    case_id: str
    path: Path


def _strip_suffix(name: str) -> str:
    low = name.lower()
    for suf in VOLUME_SUFFIXES:
        if low.endswith(suf):
            return name[: -len(suf)]
    return name


def _safe_case_id(raw: str) -> str:
    cid = _SAFE_ID.sub("_", raw.strip()).strip("_")
    return cid.lstrip(".") or "case"


def _check_case_id(cid: str, where: str) -> str:
    if not cid or cid != _safe_case_id(cid) or cid == MANIFEST_NAME:
        raise BatchInputError(
            f"{where}: case id {cid!r} is not usable as a folder name; use letters, "
            f"digits, '.', '_' and '-' only (e.g. {_safe_case_id(cid)!r})"
        )
    return cid


def _is_dicom_series_folder(path: Path) -> bool:
    from organsam.io.dicom import DicomReader

    return path.is_dir() and DicomReader().can_read(path)


def is_batch_input(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a batch (a folder of volumes or a manifest) rather than one volume.

    A folder that itself holds a DICOM series is one volume; any other folder is a batch, and so is a
    ``.csv``, ``.json`` or ``.txt`` file.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        return not _is_dicom_series_folder(p)
    return p.name.lower().endswith(MANIFEST_SUFFIXES)


def unique_cases(cases: list[BatchCase], source: Path) -> list[BatchCase]:
    seen: dict[str, Path] = {}
    for c in cases:
        if c.case_id in seen:
            raise BatchInputError(
                f"{source}: two inputs get the case id {c.case_id!r} ({seen[c.case_id]} and {c.path}); "
                f"rename one, or list them in a manifest (.csv with columns case_id,path) with distinct ids"
            )
        seen[c.case_id] = c.path
    return cases


def _discover_folder(folder: Path, exclude: Path | None) -> list[BatchCase]:
    cases: list[BatchCase] = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or (exclude is not None and entry.resolve() == exclude):
            continue
        if entry.is_file() and entry.name.lower().endswith(VOLUME_SUFFIXES):
            cases.append(BatchCase(_safe_case_id(_strip_suffix(entry.name)), entry))
        elif entry.is_dir() and _is_dicom_series_folder(entry):
            cases.append(BatchCase(_safe_case_id(entry.name), entry))
        else:
            logger.debug("%s: not a volume file or DICOM series folder; ignored", entry)
    return cases


def _manifest_rows(path: Path) -> list[tuple[str | None, str]]:
    """(case_id or None, path text) rows of a manifest file."""
    text = path.read_text(encoding="utf-8-sig")
    low = path.name.lower()
    rows: list[tuple[str | None, str]] = []
    if low.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise BatchInputError(f"{path}: not valid JSON ({e}); fix the file") from e
        if isinstance(data, dict) and isinstance(data.get("cases"), list):
            data = data["cases"]
        if isinstance(data, dict):
            rows = [(str(k), str(v)) for k, v in data.items()]
        elif isinstance(data, list):
            for i, item in enumerate(data):
                if isinstance(item, str):
                    rows.append((None, item))
                elif isinstance(item, dict) and isinstance(item.get("path"), str):
                    cid = item.get("case_id", item.get("id"))
                    rows.append((None if cid is None else str(cid), item["path"]))
                else:
                    raise BatchInputError(
                        f"{path}: entry {i} is {item!r}; expected a path string or an "
                        f"object with 'path' (and optional 'case_id')"
                    )
        else:
            raise BatchInputError(
                f"{path}: expected a list of paths, a list of {{'path', 'case_id'}} "
                f"objects, {{'cases': [...]}} or a case_id -> path object"
            )
    elif low.endswith(".csv"):
        table = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
        if table and any(c.strip().lower() == "path" for c in table[0]):
            header = [c.strip().lower() for c in table[0]]
            ip = header.index("path")
            ic = next((header.index(k) for k in ("case_id", "id", "case") if k in header), None)
            for r in table[1:]:
                rows.append(
                    (
                        r[ic].strip() if ic is not None and ic < len(r) and r[ic].strip() else None,
                        r[ip].strip() if ip < len(r) else "",
                    )
                )
        else:
            for r in table:
                rows.append((None, r[0].strip()) if len(r) == 1 else (r[0].strip(), r[1].strip()))
    else:  # .txt: one path per line, or "case_id<TAB>path"; '#' starts a comment line
        for line in text.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if "\t" in line:
                cid, p = line.split("\t", 1)
                rows.append((cid.strip(), p.strip()))
            else:
                rows.append((None, line.strip()))
    for cid, p in rows:
        if not p:
            raise BatchInputError(f"{path}: a row has an empty path (case id {cid!r}); fix the manifest")
    return rows


def discover_cases(source: str | os.PathLike[str], exclude: str | os.PathLike[str] | None = None) -> list[BatchCase]:
    """List the volumes of a batch.

    Args:
        source: a folder (its ``*.nii``, ``*.nii.gz``, ``*.nrrd``, ``*.nhdr``, ``*.mha``, ``*.mhd``,
            ``*.npz`` files and its DICOM series subfolders, in name order; case id = file name without
            its ending, or the subfolder's name) or a manifest: ``.txt`` (one path per line, or
            ``case_id<TAB>path``), ``.csv`` (a ``path`` column and optional ``case_id``; or rows ``path``
            / ``case_id,path`` without header) or ``.json`` (list of paths, list of ``{"path",
            "case_id"}``, ``{"cases": [...]}`` or ``{case_id: path}``). Relative paths in a manifest are
            relative to the manifest's folder. Listed paths are not checked here: a missing one fails
            as its own case.
        exclude: a folder inside ``source`` to leave out (the output folder).

    Returns:
        The cases, in order.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        BatchInputError: nothing found, an unreadable manifest, bad or duplicate case ids.
    """
    src = Path(source).expanduser()
    if not src.exists():
        raise FileNotFoundError(
            f"{src}: batch input does not exist; give a folder of volumes or a .csv/.json/.txt manifest"
        )
    excl = Path(exclude).expanduser().resolve() if exclude is not None else None
    if src.is_dir():
        cases = _discover_folder(src, excl)
        if not cases:
            raise BatchInputError(
                f"{src}: no volumes found (looked for {', '.join(VOLUME_SUFFIXES)} files "
                f"and DICOM series subfolders); point -i at the folder holding them or "
                f"list them in a manifest"
            )
        return unique_cases(cases, src)
    if not src.name.lower().endswith(MANIFEST_SUFFIXES):
        raise BatchInputError(f"{src}: not a folder or a manifest (.csv, .json, .txt)")
    rows: list[tuple[str | None, Path]] = []
    for cid, p in _manifest_rows(src):
        path = Path(p).expanduser()
        rows.append((cid, path if path.is_absolute() else src.parent / path))
    if not rows:
        raise BatchInputError(f"{src}: the manifest lists no volumes")
    # ids from file names; where two coincide (e.g. case1/image.nii.gz, case2/image.nii.gz) the parent
    # folder's name is put in front
    derived = [_safe_case_id(_strip_suffix(p.name)) for _, p in rows]
    clash = {d for d in derived if derived.count(d) > 1}
    cases = []
    for (cid, path), d in zip(rows, derived):
        if cid is None:
            cid = _safe_case_id(f"{path.parent.name}_{d}") if d in clash else d
        cases.append(BatchCase(_check_case_id(cid, str(src)), path))
    return unique_cases(cases, src)
