"""The organ vocabulary: ids, display names, synonyms, laterality, groups and knowledge sentences.

The vocabulary is stored in ``organs.json`` inside this package and read with ``importlib.resources``
(pure standard library: no torch or numpy). Organ ids are snake_case with a ``_left``/``_right`` suffix
for paired structures (``kidney_left``). Paired structures are listed right side first.

An organ may have ``parts``: other vocabulary ids whose union it is (``lung_left`` = its two lobes,
``heart`` = myocardium and chambers, ``adrenal_glands`` = both adrenal glands). Evaluation code can use
them to compare a prediction for the whole with a label map that only has the parts.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

VOCAB_VERSION = "1.0.0"
PROMPT_TEMPLATE = "A computerized tomography of a {name}."
LATERALITIES = ("left", "right", "midline", "bilateral")
DEFAULT_GROUP = "default"


class VocabularyError(ValueError):
    """The vocabulary file is malformed (unknown reference, duplicate id, bad field)."""


class UnknownIdError(KeyError):
    """An organ id or group name that is not in the vocabulary."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Organ:
    """One anatomical structure of the vocabulary.

    Attributes:
        id: snake_case identifier, side suffix ``_left``/``_right`` for paired structures.
        name: display name in lower case, used in text prompts ("right kidney").
        synonyms: other names (lay terms, abbreviations, Latin), lower case.
        laterality: "left", "right", "midline" (unpaired) or "bilateral" (both sides in one structure).
        pair: id of the structure on the other side, or None.
        groups: names of the groups the structure belongs to.
        parts: ids of the structures whose union this one is (empty for most organs).
        knowledge: 3-6 factual sentences: location, neighbours, shape and CT appearance.
        max_volume_ml: the largest volume a mask of this organ may have (verification rejects a bigger one as a
            neighbour; see ``limits_note`` in ``organs.json``); None: no limit.
        max_contact: the largest fraction of a mask's surface that may lie along one other organ's mask
            (verification rejects a mask mostly wrapped by another organ's as a piece of it; see ``limits_note``);
            None: not checked.
        posterior_to: ids of the organs this one always lies behind (published anatomy; e.g. the pancreas behind
            the stomach): an organ drawn on one of them is decoded again without it
            (:mod:`organsam.inference.anatomical_order`).
        label_value: its fixed value in every label map organsam writes (TotalSegmentator v2 where that has the
            class; see ``labels_note`` in ``organs.json``); every organ of the packaged vocabulary has one.
        color: its fixed display colour, RGB 0..255 (every organ of the packaged vocabulary has one).
    """

    id: str
    name: str
    synonyms: tuple[str, ...] = ()
    laterality: str = "midline"
    pair: str | None = None
    groups: tuple[str, ...] = ()
    parts: tuple[str, ...] = ()
    knowledge: tuple[str, ...] = ()
    max_volume_ml: float | None = None
    max_contact: float | None = None
    posterior_to: tuple[str, ...] = ()
    label_value: int | None = None
    color: tuple[int, int, int] | None = None

    @property
    def knowledge_text(self) -> str:
        """The knowledge sentences joined with spaces."""
        return " ".join(self.knowledge)

    @property
    def prompt_text(self) -> str:
        """The text prompt for this organ: ``PROMPT_TEMPLATE`` filled with its name."""
        return PROMPT_TEMPLATE.format(name=self.name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict with the same keys as an entry of ``organs.json``."""
        return {
            "id": self.id,
            "name": self.name,
            "synonyms": list(self.synonyms),
            "laterality": self.laterality,
            "pair": self.pair,
            "groups": list(self.groups),
            "parts": list(self.parts),
            "knowledge": list(self.knowledge),
            **({} if self.max_volume_ml is None else {"max_volume_ml": self.max_volume_ml}),
            **({} if self.max_contact is None else {"max_contact": self.max_contact}),
            **({"posterior_to": list(self.posterior_to)} if self.posterior_to else {}),
            **({} if self.label_value is None else {"label_value": self.label_value}),
            **({} if self.color is None else {"color": list(self.color)}),
        }


@dataclass(frozen=True)
class Group:
    """A named set of organs (a body region, a system or a dataset's classes).

    Attributes:
        name: group name as used in ``Organ.groups`` ("abdomen", "amos15").
        title: display title.
        aliases: other phrases that name the group in a prompt ("chest" for "thorax").
        description: one-line description.
    """

    name: str
    title: str
    aliases: tuple[str, ...] = ()
    description: str = ""


@dataclass
class Vocabulary:
    """An ordered, validated collection of organs and groups.

    Args:
        organs: organs in display order.
        groups: group definitions by name; every name used in ``Organ.groups`` must be defined.
        version: vocabulary version string.
        source: where it was read from (for error messages).

    Raises:
        VocabularyError: duplicate ids, dangling ``pair``/``parts`` references, bad laterality or an
            undefined group.
    """

    organs: Sequence[Organ]
    groups: dict[str, Group]
    version: str = VOCAB_VERSION
    source: str = "<memory>"
    _by_id: dict[str, Organ] = field(init=False, repr=False, compare=False)
    _cache: dict[str, Any] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.organs = tuple(self.organs)
        self._by_id = {}
        values: dict[int, str] = {}
        for o in self.organs:
            if o.id in self._by_id:
                raise VocabularyError(f"{self.source}: duplicate organ id {o.id!r}")
            self._by_id[o.id] = o
            if o.label_value is not None and o.label_value in values:
                raise VocabularyError(
                    f"{self.source}: organs {values[o.label_value]!r} and {o.id!r} share label value {o.label_value}"
                )
            if o.label_value is not None:
                values[o.label_value] = o.id
        for o in self.organs:
            self._validate(o)

    def _validate(self, o: Organ) -> None:
        where = f"{self.source}: organ {o.id!r}"
        if not o.id or o.id != o.id.lower() or " " in o.id:
            raise VocabularyError(f"{where}: ids must be lower-case snake_case")
        if o.laterality not in LATERALITIES:
            raise VocabularyError(f"{where}: laterality {o.laterality!r} is not one of {LATERALITIES}")
        if o.pair is not None:
            other = self._by_id.get(o.pair)
            if other is None or other.pair != o.id:
                raise VocabularyError(f"{where}: pair {o.pair!r} is missing or does not point back")
            if {o.laterality, other.laterality} != {"left", "right"}:
                raise VocabularyError(f"{where}: a pair needs one left and one right structure")
        for p in o.parts:
            if p not in self._by_id or p == o.id:
                raise VocabularyError(f"{where}: part {p!r} is not another organ of the vocabulary")
        for f in o.posterior_to:
            if f not in self._by_id or f == o.id:
                raise VocabularyError(f"{where}: posterior_to {f!r} is not another organ of the vocabulary")
        for g in o.groups:
            if g not in self.groups:
                raise VocabularyError(f"{where}: group {g!r} is not defined in the 'groups' table")
        if o.label_value is not None and not 1 <= o.label_value <= 65535:
            raise VocabularyError(f"{where}: label_value must be 1..65535, got {o.label_value}")
        if o.color is not None and (len(o.color) != 3 or not all(0 <= c <= 255 for c in o.color)):
            raise VocabularyError(f"{where}: color must be three values 0..255, got {list(o.color)}")
        if not 3 <= len(o.knowledge) <= 6:
            raise VocabularyError(f"{where}: needs 3 to 6 knowledge sentences, has {len(o.knowledge)}")

    # ------------------------------------------------------------------ lookup
    def __len__(self) -> int:
        return len(self.organs)

    def __iter__(self) -> Iterator[Organ]:
        return iter(self.organs)

    def __contains__(self, organ_id: object) -> bool:
        return organ_id in self._by_id

    def __getitem__(self, organ_id: str) -> Organ:
        try:
            return self._by_id[organ_id]
        except KeyError:
            raise UnknownIdError(
                f"unknown organ id {organ_id!r}; run 'organsam organs' to list the ids "
                f"(free text such as 'left kidney' goes through organsam.vocabulary.parse_prompt)"
            ) from None

    def get(self, organ_id: str, default: Organ | None = None) -> Organ | None:
        """The organ with this id, or ``default``."""
        return self._by_id.get(organ_id, default)

    def ids(self) -> list[str]:
        """All organ ids in vocabulary order."""
        return [o.id for o in self.organs]

    def group_names(self) -> list[str]:
        """Names of all defined groups, in definition order."""
        return list(self.groups)

    def group(self, name: str) -> list[str]:
        """Ids of the organs in group ``name``, in vocabulary order.

        Raises:
            UnknownIdError: the group is not defined.
        """
        if name not in self.groups:
            raise UnknownIdError(f"unknown organ group {name!r}; known groups: {', '.join(self.groups)}")
        return [o.id for o in self.organs if name in o.groups]

    def default_ids(self) -> list[str]:
        """The organs segmented for "all organs" / "everything" (group ``default``)."""
        return self.group(DEFAULT_GROUP)

    def expand_parts(self, organ_id: str) -> list[str]:
        """The leaf structures an id stands for: its parts, recursively, or the id itself."""
        o = self[organ_id]
        if not o.parts:
            return [o.id]
        out: list[str] = []
        for p in o.parts:
            out.extend(x for x in self.expand_parts(p) if x not in out)
        return out

    def knowledge_text(self, organ_id: str) -> str:
        """Knowledge sentences of ``organ_id`` joined into one paragraph."""
        return self[organ_id].knowledge_text

    def prompt_text(self, organ_id: str) -> str:
        """Text prompt of ``organ_id`` ("A computerized tomography of a liver.")."""
        return self[organ_id].prompt_text

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form with the layout of ``organs.json``."""
        return {
            "version": self.version,
            "prompt_template": PROMPT_TEMPLATE,
            "groups": {
                g.name: {"name": g.title, "aliases": list(g.aliases), "description": g.description}
                for g in self.groups.values()
            },
            "organs": [o.to_dict() for o in self.organs],
        }


def vocabulary_from_dict(doc: dict[str, Any], source: str = "<dict>") -> Vocabulary:
    """Build a :class:`Vocabulary` from the parsed content of an ``organs.json`` file.

    Raises:
        VocabularyError: a required key is missing or a field has the wrong type.
    """
    try:
        groups = {
            name: Group(
                name=name,
                title=str(g.get("name", name)),
                aliases=tuple(g.get("aliases", ())),
                description=str(g.get("description", "")),
            )
            for name, g in doc["groups"].items()
        }
        organs = [
            Organ(
                id=e["id"],
                name=e["name"],
                synonyms=tuple(e.get("synonyms", ())),
                laterality=e.get("laterality", "midline"),
                pair=e.get("pair"),
                groups=tuple(e.get("groups", ())),
                parts=tuple(e.get("parts", ())),
                knowledge=tuple(e["knowledge"]),
                max_volume_ml=None if e.get("max_volume_ml") is None else float(e["max_volume_ml"]),
                max_contact=None if e.get("max_contact") is None else float(e["max_contact"]),
                posterior_to=tuple(e.get("posterior_to", ())),
                label_value=int(e["label_value"]),
                color=tuple(int(c) for c in e["color"]),
            )
            for e in doc["organs"]
        ]
        version = str(doc["version"])
    except (KeyError, TypeError, AttributeError) as e:
        raise VocabularyError(
            f"{source}: malformed vocabulary file ({e!r}); expected top-level keys "
            f"'version', 'groups' and 'organs' as in organsam/vocabulary/organs.json"
        ) from e
    return Vocabulary(organs, groups, version=version, source=source)


def read_vocabulary(path: str | Path) -> Vocabulary:
    """Read a vocabulary from a json file with the layout of the packaged ``organs.json``.

    Raises:
        FileNotFoundError: the file does not exist.
        VocabularyError: the file is not valid json or not a valid vocabulary.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vocabulary file {path} does not exist")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise VocabularyError(f"{path}: not valid json ({e})") from e
    return vocabulary_from_dict(doc, source=str(path))


@functools.lru_cache(maxsize=1)
def load_vocabulary() -> Vocabulary:
    """The packaged organ vocabulary (read once, then cached).

    Returns:
        The :class:`Vocabulary` of ``organsam/vocabulary/organs.json``.
    """
    res = importlib.resources.files("organsam.vocabulary").joinpath("organs.json")
    doc = json.loads(res.read_text(encoding="utf-8"))
    vocab = vocabulary_from_dict(doc, source="organsam/vocabulary/organs.json")
    if vocab.version != VOCAB_VERSION:
        logger.warning("organs.json has version %s but the code expects %s", vocab.version, VOCAB_VERSION)
    return vocab


def knowledge_text(organ_id: str) -> str:
    """Knowledge sentences of a packaged-vocabulary organ, joined into one paragraph.

    Raises:
        UnknownIdError: ``organ_id`` is not in the vocabulary.
    """
    return load_vocabulary().knowledge_text(organ_id)


def prompt_text(organ_id: str) -> str:
    """The text prompt "A computerized tomography of a {name}." for a packaged-vocabulary organ.

    Raises:
        UnknownIdError: ``organ_id`` is not in the vocabulary.
    """
    return load_vocabulary().prompt_text(organ_id)
