"""The words of a prompt: separators, side words, filler words, plurals, normalisation, and the prompt errors
(for :mod:`organsam.vocabulary.parse`)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

__all__ = [
    "CONNECTORS",
    "QUANTIFIERS",
    "SEP",
    "SIDE_WORDS",
    "STOPWORDS",
    "PromptError",
    "UnknownOrganError",
    "foreign_words",
    "normalize",
    "plurals",
    "shown",
]

SEP = ","
SIDE_WORDS: dict[str, str] = {
    "left": "left",
    "l": "left",
    "lt": "left",
    "sinister": "left",
    "sinistra": "left",
    "sinistrum": "left",
    "right": "right",
    "r": "right",
    "rt": "right",
    "dexter": "right",
    "dextra": "right",
    "dextrum": "right",
    "both": "both",
    "bilateral": "both",
    "bilaterally": "both",
    "each": "both",
    "paired": "both",
}
CONNECTORS = frozenset({SEP, "and", "or", "plus", "with", "including", "also", "then", "vs", "versus"})
QUANTIFIERS = frozenset({"all", "every"})
_STOPWORD_TEXT = """
a an the this these those that my our its their his her there here is are be please pls kindly thanks thank
segment segments segmented segmenting segmentation segmentations delineate delineation contour contours
contouring outline outlines draw mark label labels labelled labeled mask masks annotate annotation show
me us find locate get give want need would like could can you i we to of in on at for from into by
as well too just only now entire whole full complete organ organs structure structures region regions
area areas patient patients ct cta mr mri scan scans image images volume volumes study series axial
side sides sided
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
TRAILING_SKIP = CONNECTORS | {"on", "side", "sides", "sided"}
IRREGULAR_PLURALS = {
    "vertebra": "vertebrae",
    "atrium": "atria",
    "femur": "femora",
    "ilium": "ilia",
    "pelvis": "pelves",
    "os": "ossa",
    "cor": "corda",
}


class PromptError(ValueError):
    """A text prompt that cannot be turned into organ ids."""


class UnknownOrganError(PromptError):
    """A term of a prompt that names no organ or group of the vocabulary.

    Attributes:
        term: the words that were not understood.
        prompt: the whole prompt.
        suggestions: close vocabulary phrases (names, synonyms, group names), best first.
    """

    def __init__(self, term: str, prompt: str, suggestions: Iterable[str] = (), hint: str | None = None) -> None:
        self.term = term
        self.prompt = prompt
        self.suggestions = list(suggestions)
        if hint is None and self.suggestions:
            hint = f"did you mean: {', '.join(self.suggestions)}?"
        elif hint is None:
            hint = "run 'organsam organs' to list the known organs and groups"
        super().__init__(f'unknown organ "{shown(term)}" in prompt "{shown(prompt)}"; {hint}')


def shown(text: str, limit: int = 80) -> str:
    """``text`` as it may appear in a message: control and escape characters dropped, whitespace collapsed,
    cut to ``limit`` characters (a 10,000-character prompt is not echoed back whole)."""
    clean = "".join(c if unicodedata.category(c)[0] != "C" else " " for c in str(text))
    clean = " ".join(clean.split())
    return clean if len(clean) <= limit else clean[: limit - 1] + "\u2026"


def foreign_words(text: str) -> list[str]:
    """Words with letters outside the Latin script ("腎臓", "печень"): the vocabulary is English and Latin, so they
    cannot be understood (without this they would be dropped silently)."""
    out = []
    for word in re.split(r"[\s,;:+&|]+", text):
        letters = [c for c in unicodedata.normalize("NFKD", word) if unicodedata.category(c).startswith("L")]
        if any(not ("a" <= c.lower() <= "z") and c not in "\u0153\u00e6\u00df\u0152\u00c6" for c in letters):
            out.append(word)
    return out


def normalize(text: str) -> list[str]:
    """Lower-case word tokens of ``text``; separators (``, ; : + & |`` and newlines) become ``","``."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = text.replace("\u0153", "oe").replace("\u00e6", "ae").replace("\u00df", "ss")  # oesophagus, caecum
    text = re.sub(r"['\u2019`]", "", text)
    text = re.sub(r"[,;:+&|\n\r\t]", f" {SEP} ", text)
    text = re.sub(rf"[^a-z0-9{SEP} ]", " ", text)
    return text.split()


def plurals(word: str) -> list[str]:
    out = []
    if word in IRREGULAR_PLURALS:
        out.append(IRREGULAR_PLURALS[word])
    if word.endswith(("s", "x", "z", "ch", "sh")):
        out.append(word + "es")
    elif word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        out.append(word[:-1] + "ies")
    elif not word.endswith("ae"):
        out.append(word + "s")
    return out
