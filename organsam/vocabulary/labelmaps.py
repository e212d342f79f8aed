"""Dataset label maps: label value -> vocabulary organ id.

Packaged maps live in ``labelmaps/<name>.json`` beside this module (AMOS, BTCV, Synapse, WORD, FLARE22,
TotalSegmentator v1/v2/MR, Medical Segmentation Decathlon tasks). A value maps to ``None`` when the class
has no vocabulary entry (brain, skull, humerus, ...). Several values may map to the same id (single
vertebrae -> ``vertebrae_lumbar``, prostate zones -> ``prostate``): that organ's mask is the union of
those values. ``labelmap_from_json`` reads a user's own label file and resolves its free-text class names
through the prompt parser.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from organsam.vocabulary.parse import parse_prompt
from organsam.vocabulary.prompt_words import PromptError, normalize
from organsam.vocabulary.vocabulary import Vocabulary, load_vocabulary

logger = logging.getLogger(__name__)

_BACKGROUND = {"background", "bg", "clear label", "unlabeled", "unlabelled", "none", "void"}


class LabelMapError(ValueError):
    """A label map name that is not known, or a label file that cannot be read or resolved."""


@dataclass(frozen=True)
class LabelMap:
    """A dataset's label values with their original class names and vocabulary ids.

    Attributes:
        name: canonical name ("amos22").
        title: display title.
        aliases: other accepted names ("amos", "amos15").
        modality: "CT", "MR" or "CT/MR".
        source: where the class definitions come from.
        description: what the values cover and how unmapped classes are handled.
        labels: label value -> class name as the dataset spells it.
        organs: label value -> vocabulary organ id, or None where the class has no vocabulary entry.
    """

    name: str
    title: str
    aliases: tuple[str, ...]
    modality: str
    source: str
    description: str
    labels: dict[int, str]
    organs: dict[int, str | None]

    def values_for(self, organ_id: str, vocabulary: Vocabulary | None = None) -> list[int]:
        """Label values whose union is ``organ_id``: its own values, or those of its parts.

        For example ``values_for("lung_left")`` on TotalSegmentator v2 gives the two left lobe values,
        and ``values_for("vertebrae_lumbar")`` gives the values of L1 to L5. Empty when the dataset
        does not label the organ.
        """
        vocab = vocabulary if vocabulary is not None else load_vocabulary()
        direct = [v for v, o in self.organs.items() if o == organ_id]
        if direct:
            return direct
        wanted = set(vocab.expand_parts(organ_id))
        return [
            v
            for v, o in self.organs.items()
            if o is not None and wanted & set(vocab.expand_parts(o)) and set(vocab.expand_parts(o)) <= wanted
        ]


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


@functools.lru_cache(maxsize=1)
def _packaged() -> dict[str, LabelMap]:
    out: dict[str, LabelMap] = {}
    folder = importlib.resources.files("organsam.vocabulary").joinpath("labelmaps")
    for res in sorted(folder.iterdir(), key=lambda r: r.name):
        if not res.name.endswith(".json"):
            continue
        doc = json.loads(res.read_text(encoding="utf-8"))
        labels = {int(v): e["label"] for v, e in doc["labels"].items()}
        organs = {int(v): e["organ"] for v, e in doc["labels"].items()}
        lm = LabelMap(
            name=doc["name"],
            title=doc["title"],
            aliases=tuple(doc.get("aliases", ())),
            modality=doc.get("modality", ""),
            source=doc.get("source", ""),
            description=doc.get("description", ""),
            labels=labels,
            organs=organs,
        )
        out[lm.name] = lm
    return out


@functools.lru_cache(maxsize=1)
def _aliases() -> dict[str, str]:
    table: dict[str, str] = {}
    for lm in _packaged().values():
        for a in (lm.name, *lm.aliases):
            table[_key(a)] = lm.name
    return table


def list_labelmaps() -> list[str]:
    """Canonical names of the packaged label maps, sorted."""
    return sorted(_packaged())


def labelmap_info(name: str) -> LabelMap:
    """The packaged :class:`LabelMap` called ``name`` (or one of its aliases, case-insensitive).

    Raises:
        LabelMapError: no packaged map has that name.
    """
    canonical = _aliases().get(_key(name))
    if canonical is None:
        raise LabelMapError(
            f"unknown label map {name!r}; packaged maps: {', '.join(list_labelmaps())} "
            f"(or pass a json file of value -> class name to labelmap_from_json)"
        )
    return _packaged()[canonical]


def load_labelmap(name: str) -> dict[int, str | None]:
    """Label value -> organ id (None where unmapped) of a packaged map, or of a label json file.

    Args:
        name: a packaged map name or alias ("amos22", "btcv", "totalsegmentator_v2", "msd_task03_liver"),
            or the path of a json label file (read with :func:`labelmap_from_json`).

    Raises:
        LabelMapError: neither a packaged map nor an existing json file.
    """
    if _key(name) not in _aliases() and name.lower().endswith(".json") and Path(name).is_file():
        return labelmap_from_json(name)
    return dict(labelmap_info(name).organs)


@functools.lru_cache(maxsize=1)
def _known_class_names() -> dict[str, str | None]:
    """Normalised class names of the packaged maps -> organ id, where all maps agree."""
    seen: dict[str, set[str | None]] = {}
    for lm in _packaged().values():
        for v, label in lm.labels.items():
            seen.setdefault(" ".join(normalize(label)), set()).add(lm.organs[v])
    return {k: next(iter(v)) for k, v in seen.items() if len(v) == 1}


def resolve_class_name(name: str, vocabulary: Vocabulary | None = None) -> str | None:
    """The organ id a dataset class name stands for ("left kidney", "kidney_L", "rib_left_3", "adrenal").

    Order: an exact organ id; a class name of a packaged dataset map (may resolve to None, e.g.
    "brain"); then the prompt parser. A name that gives both sides of a pair resolves to the vocabulary's
    combined entry for that pair (WORD's "adrenal" -> ``adrenal_glands``).

    Raises:
        PromptError: the name names no organ, or several organs that no single entry combines.
    """
    vocab = vocabulary if vocabulary is not None else load_vocabulary()
    as_id = _key(name)
    if as_id in vocab:
        return as_id
    if vocabulary is None:
        known = _known_class_names()
        norm = " ".join(normalize(name))
        if norm in known:
            return known[norm]
    ids = parse_prompt(name, vocab)
    if len(ids) == 1:
        return ids[0]
    for o in vocab:
        if o.parts and sorted(o.parts) == sorted(ids):
            return o.id
    raise PromptError(
        f"class name {name!r} names several organs ({', '.join(ids)}) and no vocabulary entry combines them"
    )


def _entries(doc: Any, path: Path) -> list[tuple[int, Any]]:
    """(value, name-or-entry) pairs of the supported label-file layouts."""
    if isinstance(doc, dict) and "labels" in doc and isinstance(doc["labels"], (dict, list)):
        doc = doc["labels"]
    if isinstance(doc, list):
        return list(enumerate(doc))
    if not isinstance(doc, dict) or not doc:
        raise LabelMapError(
            f"{path}: expected a json object of label value -> class name (or a 'labels' "
            f"object / list), got {type(doc).__name__}"
        )

    def is_int(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) or isinstance(x, str) and x.strip().isdigit()

    if all(is_int(k) for k in doc):
        return [(int(k), v) for k, v in doc.items()]
    if all(is_int(v) for v in doc.values()):  # nnU-Net style: class name -> value
        return [(int(v), k) for k, v in doc.items()]
    raise LabelMapError(
        f'{path}: cannot tell label values from class names; write {{"1": "liver", ...}} or {{"liver": 1, ...}}'
    )


def labelmap_from_json(
    path: str | Path, vocabulary: Vocabulary | None = None, strict: bool = True
) -> dict[int, str | None]:
    """Read a user label file and map every class name to a vocabulary id.

    Accepted layouts: ``{"1": "liver", "2": "left kidney"}``, ``{"liver": 1, ...}`` (nnU-Net), either of
    them under a ``"labels"`` key (MSD / nnU-Net ``dataset.json``), a list of names indexed by value, or
    the packaged layout ``{"labels": {"1": {"label": ..., "organ": ...}}}``. Value 0 and background
    classes are skipped. Names resolve with :func:`resolve_class_name`.

    Args:
        path: the json file.
        vocabulary: vocabulary to resolve against (default: the packaged one).
        strict: raise on a class name that cannot be resolved; when False, map it to None and log a
            warning.

    Returns:
        Label value -> organ id (None for classes without a vocabulary entry).

    Raises:
        FileNotFoundError: the file does not exist.
        LabelMapError: the file is not valid json, has an unknown layout, or (strict) a class name does
            not resolve.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label map file {path} does not exist")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LabelMapError(f"{path}: not valid json ({e})") from e
    vocab = vocabulary if vocabulary is not None else load_vocabulary()
    out: dict[int, str | None] = {}
    for value, entry in _entries(doc, path):
        if isinstance(entry, dict) and "organ" in entry:  # packaged layout
            organ = entry["organ"]
            if organ is not None and organ not in vocab:
                raise LabelMapError(f"{path}: label {value} maps to {organ!r}, which is not a vocabulary id")
            out[value] = organ
            continue
        if isinstance(entry, dict):
            entry = entry.get("name") or entry.get("label")
        if not isinstance(entry, str):
            raise LabelMapError(f"{path}: label {value} has no class name (got {entry!r})")
        if value == 0 or " ".join(normalize(entry)) in _BACKGROUND:
            continue
        try:
            out[value] = resolve_class_name(entry, vocabulary)
        except PromptError as e:
            if strict:
                raise LabelMapError(
                    f"{path}: label {value} {entry!r}: {e}. Rename the class in the file, "
                    f"or pass strict=False to leave it unmapped"
                ) from e
            logger.warning("%s: label %d %r left unmapped: %s", path, value, entry, e)
            out[value] = None
    return out
