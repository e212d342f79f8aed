"""Free-text organ prompts -> vocabulary ids.

``parse_prompt("segment the left and right kidneys and the IVC")`` returns
``["kidney_left", "kidney_right", "inferior_vena_cava"]``. Rules:

* Case, accents and punctuation are ignored; ``, ; : + & /`` and newlines separate mentions.
* Every organ is found by its id, name or a synonym (lay terms, abbreviations, Latin) and their plurals;
  the longest matching phrase wins ("portal vein" before "portal", "liver tumor" before "liver").
* Paired organs without a side ("kidneys", "both adrenals", "lung") give both sides, right first. Sides
  may come before ("left and right kidneys"), inside ("left kidney") or after ("kidneys, left and
  right") the organ name.
* A group ("abdomen", "chest", "vessels", "amos15") gives its members in vocabulary order; a side before a
  group keeps that side's members ("left lung lobes"). "all organs", "everything" and a bare "all" give
  the default set (``Vocabulary.default_ids()``).
* Filler words (segment, the, please, show me, and, ...) are ignored.
* The output follows the order of mention, without duplicates. Anything not understood raises
  :class:`UnknownOrganError` with close-match suggestions.

Combined bilateral entries (``adrenal_glands``) are label-map targets only: prompts that name them
resolve to the two sides.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from organsam.vocabulary.prompt_words import (
    CONNECTORS,
    QUANTIFIERS,
    SEP,
    SIDE_WORDS,
    STOPWORDS,
    TRAILING_SKIP,
    PromptError,
    UnknownOrganError,
    foreign_words,
    normalize,
    plurals,
    shown,
)
from organsam.vocabulary.vocabulary import Organ, Vocabulary, VocabularyError, load_vocabulary

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Target:
    """What a phrase names: one organ, a left/right pair (optionally one side) or a group."""

    kind: str  # "organ" | "pair" | "group"
    ids: tuple[str, ...]  # organ: (id,); pair: (right_id, left_id); group: (group_name,)
    side: str | None = None


class PromptParser:
    """Phrase index over a vocabulary; use :func:`get_parser` to get the cached one.

    Args:
        vocabulary: the vocabulary to resolve against.

    Raises:
        VocabularyError: two entries share a phrase (an ambiguous synonym), or a paired entry's
            synonym names the wrong side.
    """

    def __init__(self, vocabulary: Vocabulary) -> None:
        self.vocabulary = vocabulary
        self._index: dict[tuple[str, ...], _Target] = {}
        self._conflicts: list[str] = []
        self._suggest_pool: list[str] = []
        self._common: frozenset[str] = frozenset()
        self._build()
        if self._conflicts:
            raise VocabularyError(f"{vocabulary.source}: ambiguous phrases: " + "; ".join(self._conflicts))
        self._maxlen = max(len(k) for k in self._index)

    # ------------------------------------------------------------------ index
    def _put(self, toks: tuple[str, ...], target: _Target, explicit: dict[tuple[str, ...], _Target]) -> None:
        if not toks:
            return
        old = explicit.get(toks)
        if old is not None and old != target:
            self._conflicts.append(f"'{' '.join(toks)}' names both {old.ids} and {target.ids}")
            return
        explicit[toks] = target

    def _pair_ids(self, o: Organ) -> tuple[str, str]:
        assert o.pair is not None
        return (o.id, o.pair) if o.laterality == "right" else (o.pair, o.id)

    def _combined_pair(self, o: Organ) -> tuple[str, str] | None:
        """(right, left) when ``o`` is exactly the union of a left/right pair, else None."""
        if len(o.parts) != 2:
            return None
        a, b = (self.vocabulary[p] for p in o.parts)
        if a.pair != b.id:
            return None
        return self._pair_ids(a)

    def _build(self) -> None:
        vocab = self.vocabulary
        explicit: dict[tuple[str, ...], _Target] = {}
        pool: list[str] = []
        for o in vocab:
            terms = [o.id.replace("_", " "), o.name, *o.synonyms]
            pool.extend([o.name, *o.synonyms])
            if o.pair is not None:  # side-less forms too: "kidney" for a misspelt "kidny"
                pool.extend(" ".join(t for t in normalize(x) if t not in SIDE_WORDS) for x in (o.name, *o.synonyms))
            combined = self._combined_pair(o)
            for term in terms:
                toks = tuple(normalize(term))
                if combined is not None:
                    base = tuple(t for t in toks if t not in SIDE_WORDS)
                    self._put(base, _Target("pair", combined), explicit)
                elif o.pair is not None:
                    sides = {SIDE_WORDS[t] for t in toks if t in SIDE_WORDS}
                    if not sides:  # an abbreviation that implies the side ("rul")
                        self._put(toks, _Target("organ", (o.id,)), explicit)
                        continue
                    if sides != {o.laterality}:
                        self._conflicts.append(f"'{term}' of {o.id} names side {sorted(sides)}")
                        continue
                    pair = self._pair_ids(o)
                    self._put(toks, _Target("pair", pair, o.laterality), explicit)
                    self._put(tuple(t for t in toks if t not in SIDE_WORDS), _Target("pair", pair), explicit)
                else:
                    self._put(toks, _Target("organ", (o.id,)), explicit)
        for g in vocab.groups.values():
            pool.extend([g.name.replace("_", " "), *g.aliases])
            for term in (g.name.replace("_", " "), g.title, *g.aliases):
                self._put(tuple(normalize(term)), _Target("group", (g.name,)), explicit)
        plural: dict[tuple[str, ...], _Target] = {}
        for toks, target in explicit.items():
            if toks[-1] in SIDE_WORDS or not toks[-1].isalpha():
                continue
            for p in plurals(toks[-1]):
                key = (*toks[:-1], p)
                if key not in explicit and key not in plural:
                    plural[key] = target
        self._index = {**plural, **explicit}
        self._suggest_pool = sorted({" ".join(normalize(p)) for p in pool if normalize(p)})
        common: list[str] = []  # phrases of the default (abdominal) organ set: ranked first among equals
        for o in vocab:
            if "default" in o.groups:
                common.extend(" ".join(normalize(x)) for x in (o.name, *o.synonyms))
                common.extend(" ".join(t for t in normalize(x) if t not in SIDE_WORDS) for x in (o.name, *o.synonyms))
        self._common = frozenset(common)

    # ------------------------------------------------------------------ matching
    def _match(self, toks: list[str], i: int) -> tuple[int, _Target] | None:
        for length in range(min(self._maxlen, len(toks) - i), 0, -1):
            key = tuple(toks[i : i + length])
            if SEP in key:
                continue
            target = self._index.get(key)
            if target is not None:
                return length, target
        return None

    def _trailing_sides(self, toks: list[str], j: int) -> tuple[list[str], int]:
        """Side words right after a side-less paired organ ("kidneys, left and right")."""
        sides: list[str] = []
        k, end = j, j
        while k < len(toks):
            t = toks[k]
            if t in SIDE_WORDS:
                if self._match(toks, k) is not None:  # "right adrenal" starts the next mention
                    break
                sides.append(SIDE_WORDS[t])
                k += 1
                end = k
            elif t in TRAILING_SKIP:
                k += 1
            else:
                break
        return sides, end

    def suggest(self, term: str, n: int = 3) -> list[str]:
        """Vocabulary phrases (names, synonyms, groups) closest to ``term``, best first.

        A phrase is scored by its similarity to the whole term, or to the term's length of its start (a typo in the
        first word, "lefft" -> "left kidney"); among close phrases those of the default abdominal organ set come
        first ("left kidney" before "left rib")."""
        norm = " ".join(normalize(term))
        # abbreviations ("lv", "gb") only as suggestions for equally short terms
        pool = [p for p in self._suggest_pool if len(p) > 3 or len(norm) <= 3]

        def similarity(term: str, phrase: str) -> float:
            whole = difflib.SequenceMatcher(None, term, phrase).ratio()
            start = difflib.SequenceMatcher(None, term, phrase[: len(term)]).ratio() if len(phrase) > len(term) else 0
            return max(whole, 0.9 * start)

        def ranked(term: str, cutoff: float) -> list[str]:
            close = sorted(
                (
                    (sc + (0.1 if p in self._common else 0.0), p)
                    for p in pool
                    for sc in [similarity(term, p)]
                    if sc >= cutoff
                ),
                key=lambda x: (-x[0], x[1]),
            )
            return [p for sc, p in close if sc >= close[0][0] - 0.15]  # not the far ones after a close match

        out = ranked(norm, 0.6)[:n]
        if not out and " " in norm:
            for word in norm.split():
                out.extend(x for x in ranked(word, 0.7)[:n] if x not in out)
        return out[:n]

    def _expand_group(self, name: str, side: str | None) -> list[str]:
        ids: list[str] = []
        for oid in self.vocabulary.group(name):
            combined = self._combined_pair(self.vocabulary[oid])
            ids.extend(combined if combined is not None else (oid,))
        if side is not None:
            ids = [i for i in ids if self.vocabulary[i].laterality == side]
        return ids

    def parse(self, text: str) -> list[str]:
        """Organ ids named by ``text`` in order of mention (see the module docstring).

        Raises:
            UnknownOrganError: a term names no organ or group (with suggestions).
            PromptError: the prompt names no organ at all, or a side ("left") has no organ after it.
        """
        foreign = foreign_words(text)
        if foreign:
            raise UnknownOrganError(
                " ".join(foreign),
                text,
                hint="organ names are understood in English (and Latin "
                "terms such as 'hepar'); run 'organsam organs' for the list",
            )
        toks = normalize(text)
        out: list[str] = []
        pending: list[str] = []  # sides mentioned before their organ ("left and right ...")
        pending_words: list[str] = []
        i = 0

        def emit(ids: Iterable[str]) -> None:
            out.extend(x for x in ids if x not in out)

        def side_error(words: list[str]) -> UnknownOrganError:
            term = " ".join(pending_words + words)
            hints = [" ".join(words)] + [x for x in self.suggest(term) if x != " ".join(words)]
            return UnknownOrganError(term, text, hints[:3])

        while i < len(toks):
            t = toks[i]
            m = self._match(toks, i)
            if m is not None and t in SIDE_WORDS:  # "left lung lobes": the side applies to the longer phrase
                after = self._match(toks, i + 1)
                if after is not None and after[0] + 1 > m[0]:
                    m = None
            if m is not None:
                length, target = m
                words = toks[i : i + length]
                j = i + length
                explicit = [s for s in pending if s != "both"]
                if target.kind == "pair":
                    sides = list(pending)
                    if target.side:
                        sides.append(target.side)
                    elif not sides:
                        sides, j = self._trailing_sides(toks, j)
                    right, left = target.ids
                    ids: list[str] = []
                    for s in sides or ["both"]:
                        ids.extend({"right": [right], "left": [left], "both": [right, left]}[s])
                    emit(ids)
                elif target.kind == "organ":
                    lat = self.vocabulary[target.ids[0]].laterality
                    if any(s != lat for s in explicit):
                        raise side_error(words)
                    emit(target.ids)
                else:
                    if len(set(explicit)) > 1:
                        raise side_error(words)
                    ids = self._expand_group(target.ids[0], explicit[0] if explicit else None)
                    if not ids:
                        raise side_error(words)
                    emit(ids)
                pending, pending_words = [], []
                i = j
            elif t in SIDE_WORDS:
                pending.append(SIDE_WORDS[t])
                pending_words.append(t)
                i += 1
            elif t in QUANTIFIERS:
                k = i + 1
                while k < len(toks) and toks[k] in STOPWORDS:
                    k += 1
                if k == len(toks) or toks[k] in CONNECTORS:  # "all", "all organs", "all of them"
                    emit(self.vocabulary.default_ids())
                    i = k
                else:  # "all abdominal organs": the quantifier adds nothing
                    i += 1
            elif t in STOPWORDS or t in CONNECTORS:
                i += 1
            else:
                k = i
                while (
                    k < len(toks)
                    and toks[k] not in STOPWORDS
                    and toks[k] not in CONNECTORS
                    and toks[k] not in SIDE_WORDS
                    and toks[k] not in QUANTIFIERS
                    and (k == i or self._match(toks, k) is None)
                ):
                    k += 1
                term = " ".join(toks[i:k])
                raise UnknownOrganError(term, text, self.suggest(term))
        if any(s != "both" for s in pending):
            raise PromptError(
                f'side "{" ".join(pending_words)}" in prompt "{shown(text)}" is not followed by an organ '
                f'(write e.g. "left kidney")'
            )
        if not out:
            raise PromptError(
                f'no organ named in prompt "{shown(text)}"; name organs such as "liver, spleen" or '
                f"a group such as \"abdomen\" (run 'organsam organs' for the list)"
            )
        return out


def get_parser(vocabulary: Vocabulary | None = None) -> PromptParser:
    """The :class:`PromptParser` of ``vocabulary`` (packaged vocabulary by default), built once."""
    vocab = vocabulary if vocabulary is not None else load_vocabulary()
    parser = vocab._cache.get("parser")
    if parser is None:
        parser = vocab._cache["parser"] = PromptParser(vocab)
    return parser


def parse_prompt(text: str, vocabulary: Vocabulary | None = None) -> list[str]:
    """Resolve a free-text organ prompt into vocabulary ids, in order of mention.

    Args:
        text: e.g. "liver, spleen", "segment the left and right kidneys", "both adrenals", "IVC",
            "abdomen", "all organs".
        vocabulary: vocabulary to resolve against (default: the packaged one).

    Returns:
        Organ ids without duplicates, in the order they are mentioned.

    Raises:
        UnknownOrganError: a term names no organ or group; ``.term`` and ``.suggestions`` tell which and
            what was probably meant.
        PromptError: no organ is named, or a side word has no organ after it.
    """
    return get_parser(vocabulary).parse(text)


def suggest(term: str, vocabulary: Vocabulary | None = None, n: int = 3) -> list[str]:
    """Up to ``n`` vocabulary phrases close to ``term`` (difflib over names, synonyms and groups)."""
    return get_parser(vocabulary).suggest(term, n=n)
