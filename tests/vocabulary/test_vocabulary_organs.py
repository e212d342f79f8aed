"""The packaged organ vocabulary: content, structure, lookup API and its pure-Python import."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from organsam.vocabulary import (
    PROMPT_TEMPLATE,
    VOCAB_VERSION,
    Organ,
    UnknownIdError,
    Vocabulary,
    VocabularyError,
    knowledge_text,
    load_vocabulary,
    prompt_text,
    read_vocabulary,
)
from organsam.vocabulary.parse import PromptParser
from organsam.vocabulary.vocabulary import Group, vocabulary_from_dict

# The dataset classes every model trained on these benchmarks needs (exact group sizes).
DATASET_GROUPS = {"btcv13": 13, "synapse8": 8, "amos15": 15, "word16": 16, "flare13": 13}
TS_ABDOMINAL = [
    "small_bowel",
    "colon",
    "urinary_bladder",
    "prostate",
    "portal_vein_and_splenic_vein",
    "iliac_artery_left",
    "iliac_artery_right",
    "iliac_vein_left",
    "iliac_vein_right",
    "vertebrae_lumbar",
    "vertebrae_thoracic",
    "lung_left",
    "lung_right",
    "heart",
    "esophagus",
    "trachea",
    "duodenum",
    "gluteus_maximus_left",
    "iliopsoas_right",
    "sacrum",
    "hip_left",
    "femur_right",
]


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return load_vocabulary()


def test_size_and_version(vocab: Vocabulary) -> None:
    assert len(vocab) >= 45
    assert vocab.version == VOCAB_VERSION
    assert load_vocabulary() is vocab  # cached
    assert vocab.ids()[0] == "liver" and len(set(vocab.ids())) == len(vocab)


@pytest.mark.parametrize("group,size", sorted(DATASET_GROUPS.items()))
def test_dataset_groups_have_the_dataset_class_count(vocab: Vocabulary, group: str, size: int) -> None:
    assert len(vocab.group(group)) == size


def test_totalsegmentator_abdominal_and_thoracic_structures_present(vocab: Vocabulary) -> None:
    missing = [i for i in TS_ABDOMINAL if i not in vocab]
    assert not missing


def test_ids_names_and_laterality_are_consistent(vocab: Vocabulary) -> None:
    for o in vocab:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", o.id), o.id
        assert o.name == o.name.lower() or o.name[0].isupper(), o.id
        if o.id.endswith("_left"):
            assert o.laterality == "left", o.id
        if o.id.endswith("_right"):
            assert o.laterality == "right", o.id
        if o.pair:
            other = vocab[o.pair]
            assert other.pair == o.id and {o.laterality, other.laterality} == {"left", "right"}
            assert o.id.rsplit("_", 1)[0] == other.id.rsplit("_", 1)[0]
        assert all(s == s.strip() and s for s in o.synonyms), o.id


def test_knowledge_sentences(vocab: Vocabulary) -> None:
    seen: set[str] = set()
    for o in vocab:
        assert 3 <= len(o.knowledge) <= 6, o.id
        for s in o.knowledge:
            assert s[0].isupper() and s.endswith("."), (o.id, s)
            assert 40 <= len(s) <= 300, (o.id, s)
        seen.update(o.knowledge)
    # anatomy is described in the organ's own words: most sentences are unique to one entry
    total = sum(len(o.knowledge) for o in vocab)
    assert len(seen) > 0.7 * total


def test_knowledge_mentions_ct_appearance(vocab: Vocabulary) -> None:
    for o in vocab:
        assert "CT" in o.knowledge_text or "HU" in o.knowledge_text, o.id
    for oid in vocab.group("default"):
        assert "HU" in vocab.knowledge_text(oid) or "enhance" in vocab.knowledge_text(oid), oid
    assert "HU" in knowledge_text("liver") and "portal venous" in knowledge_text("liver")


def test_prompt_and_knowledge_text(vocab: Vocabulary) -> None:
    assert PROMPT_TEMPLATE == "A computerized tomography of a {name}."
    assert prompt_text("liver") == "A computerized tomography of a liver."
    assert prompt_text("kidney_left") == "A computerized tomography of a left kidney."
    assert vocab["kidney_left"].prompt_text == prompt_text("kidney_left")
    assert knowledge_text("spleen") == " ".join(vocab["spleen"].knowledge)
    with pytest.raises(UnknownIdError, match="unknown organ id 'brain'"):
        prompt_text("brain")


def test_lookup_api(vocab: Vocabulary) -> None:
    assert isinstance(vocab["liver"], Organ)
    assert "liver" in vocab and "left kidney" not in vocab
    assert vocab.get("nope") is None
    with pytest.raises(KeyError):
        vocab["left kidney"]
    assert vocab.group("urinary") == ["kidney_right", "kidney_left", "urinary_bladder"]
    with pytest.raises(UnknownIdError, match="known groups"):
        vocab.group("brain")
    assert set(vocab.group_names()) >= {"abdomen", "pelvis", "thorax", "vessels", "gi_tract", "urinary"}
    assert vocab.default_ids() == vocab.group("default")
    assert "prostate_uterus" in vocab.default_ids() and "liver_tumor" not in vocab.default_ids()


def test_parts(vocab: Vocabulary) -> None:
    assert vocab.expand_parts("lung_left") == ["lung_upper_lobe_left", "lung_lower_lobe_left"]
    assert vocab.expand_parts("adrenal_glands") == ["adrenal_gland_right", "adrenal_gland_left"]
    assert len(vocab.expand_parts("vertebrae")) == 3
    assert vocab.expand_parts("liver") == ["liver"]
    for o in vocab:
        assert o.id not in vocab.expand_parts(o.id) or not o.parts


def test_parser_index_has_no_ambiguous_phrase(vocab: Vocabulary) -> None:
    PromptParser(vocab)  # raises VocabularyError on a phrase naming two different things


def test_roundtrip_and_read_vocabulary(vocab: Vocabulary, tmp_path) -> None:
    p = tmp_path / "organs.json"
    p.write_text(json.dumps(vocab.to_dict()))
    again = read_vocabulary(p)
    assert again.ids() == vocab.ids() and again["liver"] == vocab["liver"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_vocabulary(tmp_path / "missing.json")


def _organ(oid: str, **kw) -> Organ:
    return Organ(id=oid, name=oid.replace("_", " "), knowledge=("One.", "Two.", "Three."), **kw)


def test_validation_errors() -> None:
    groups = {"g": Group("g", "g")}
    with pytest.raises(VocabularyError, match="duplicate organ id"):
        Vocabulary([_organ("a"), _organ("a")], groups)
    with pytest.raises(VocabularyError, match="does not point back"):
        Vocabulary([_organ("a_left", laterality="left", pair="a_right")], groups)
    with pytest.raises(VocabularyError, match="group 'x' is not defined"):
        Vocabulary([_organ("a", groups=("x",))], groups)
    with pytest.raises(VocabularyError, match="laterality"):
        Vocabulary([_organ("a", laterality="upper")], groups)
    with pytest.raises(VocabularyError, match="3 to 6 knowledge"):
        Vocabulary([Organ("a", "a", knowledge=("x",))], groups)
    with pytest.raises(VocabularyError, match="malformed vocabulary"):
        vocabulary_from_dict({"organs": []})
    bad = Vocabulary([_organ("a", synonyms=("same",)), _organ("b", synonyms=("same",))], groups)
    with pytest.raises(VocabularyError, match="ambiguous phrases: 'same'"):
        PromptParser(bad)


def test_imports_without_torch_or_numpy() -> None:
    code = (
        "import sys; import organsam.vocabulary as v; v.parse_prompt('liver'); v.load_labelmap('amos22'); "
        "bad = [m for m in ('torch', 'numpy') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
