"""parse_prompt: free-text organ prompts -> vocabulary ids (table-driven), and its error messages."""

from __future__ import annotations

import pytest

from organsam.vocabulary import PromptError, UnknownOrganError, load_vocabulary, parse_prompt, suggest

KIDNEYS = ["kidney_right", "kidney_left"]
ADRENALS = ["adrenal_gland_right", "adrenal_gland_left"]

CASES: list[tuple[str, list[str]]] = [
    # plain lists and separators
    ("liver", ["liver"]),
    ("liver, spleen", ["liver", "spleen"]),
    ("Liver; Spleen", ["liver", "spleen"]),
    ("LIVER and SPLEEN", ["liver", "spleen"]),
    ("spleen/liver", ["spleen", "liver"]),
    ("liver\nspleen\npancreas", ["liver", "spleen", "pancreas"]),
    ("the aorta + inferior vena cava", ["aorta", "inferior_vena_cava"]),
    ("aorta & IVC", ["aorta", "inferior_vena_cava"]),
    (
        "liver, spleen, left kidney, right kidney, aorta, pancreas, stomach, gallbladder",
        ["liver", "spleen", "kidney_left", "kidney_right", "aorta", "pancreas", "stomach", "gallbladder"],
    ),
    ("liver, liver and the liver", ["liver"]),
    ("pancreas. liver!", ["pancreas", "liver"]),
    # stop-words
    ("segment the liver", ["liver"]),
    ("please segment the liver and the spleen", ["liver", "spleen"]),
    ("show me the stomach", ["stomach"]),
    ("Could you delineate the pancreas in this CT scan?", ["pancreas"]),
    ("I need masks of the spleen as well as the liver", ["spleen", "liver"]),
    ("segment the entire liver", ["liver"]),
    # sides
    ("left kidney", ["kidney_left"]),
    ("right kidney", ["kidney_right"]),
    ("kidney_left", ["kidney_left"]),
    ("kidney left", ["kidney_left"]),
    ("L kidney and R adrenal", ["kidney_left", "adrenal_gland_right"]),
    ("lt kidney", ["kidney_left"]),
    ("left-sided kidney", ["kidney_left"]),
    ("segment the left and right kidneys", ["kidney_left", "kidney_right"]),
    ("right and left kidneys", ["kidney_right", "kidney_left"]),
    ("left & right lungs", ["lung_left", "lung_right"]),
    ("kidneys, left and right", ["kidney_left", "kidney_right"]),
    ("kidneys (right)", ["kidney_right"]),
    ("kidney left and right adrenal", ["kidney_left", "adrenal_gland_right"]),
    ("left kidney and the pancreas", ["kidney_left", "pancreas"]),
    ("left kidney, right kidney", ["kidney_left", "kidney_right"]),
    ("ren sinister", ["kidney_left"]),
    # both sides
    ("kidneys", KIDNEYS),
    ("kidney", KIDNEYS),
    ("both kidneys", KIDNEYS),
    ("bilateral kidneys", KIDNEYS),
    ("kidneys on both sides", KIDNEYS),
    ("both adrenals", ADRENALS),
    ("adrenal glands", ADRENALS),
    ("suprarenal glands", ADRENALS),
    ("adrenal_glands", ADRENALS),
    ("lungs", ["lung_right", "lung_left"]),
    ("iliac arteries", ["iliac_artery_right", "iliac_artery_left"]),
    ("femoral heads", ["head_of_femur_right", "head_of_femur_left"]),
    ("liver and both kidneys", ["liver", *KIDNEYS]),
    ("both the liver and the spleen", ["liver", "spleen"]),
    # synonyms: abbreviations, Latin, lay terms, spelling variants
    ("IVC", ["inferior_vena_cava"]),
    ("postcava", ["inferior_vena_cava"]),
    ("inferior vena cava (postcava)", ["inferior_vena_cava"]),
    ("SVC", ["superior_vena_cava"]),
    ("gall bladder", ["gallbladder"]),
    ("gall-bladder", ["gallbladder"]),
    ("hepar", ["liver"]),
    ("lien", ["spleen"]),
    ("oesophagus", ["esophagus"]),
    ("gullet", ["esophagus"]),
    ("windpipe", ["trachea"]),
    ("womb", ["uterus"]),
    ("bladder", ["urinary_bladder"]),
    ("small intestine", ["small_bowel"]),
    ("large bowel", ["colon"]),
    ("portal vein", ["portal_vein_and_splenic_vein"]),
    ("prostate/uterus", ["prostate_uterus"]),
    ("innominate artery", ["brachiocephalic_trunk"]),
    ("RUL and LLL", ["lung_upper_lobe_right", "lung_lower_lobe_left"]),
    ("right middle lobe", ["lung_middle_lobe_right"]),
    ("left and right lower lobes", ["lung_lower_lobe_left", "lung_lower_lobe_right"]),
    ("lumbar spine", ["vertebrae_lumbar"]),
    ("spine", ["vertebrae"]),
    ("breastbone", ["sternum"]),
    ("left psoas", ["iliopsoas_left"]),
    ("liver tumour", ["liver_tumor"]),
    ("liver and liver tumor", ["liver", "liver_tumor"]),
    ("Gallbladder, PANCREAS; Liver", ["gallbladder", "pancreas", "liver"]),
    ("Œsophagus", ["esophagus"]),
    # plurals
    ("livers", ["liver"]),
    ("pancreases", ["pancreas"]),
    ("ribs", ["ribs_right", "ribs_left"]),
    ("vertebrae", ["vertebrae"]),
    ("the atria", ["heart_atrium_right", "heart_atrium_left"]),
    ("ventricles", ["heart_ventricle_right", "heart_ventricle_left"]),
    # groups
    ("urinary tract", [*KIDNEYS, "urinary_bladder"]),
    ("left lung lobes", ["lung_upper_lobe_left", "lung_lower_lobe_left"]),
    ("right gluteal muscles", ["gluteus_maximus_right", "gluteus_medius_right", "gluteus_minimus_right"]),
    ("synapse", ["liver", "spleen", *KIDNEYS, "gallbladder", "pancreas", "stomach", "aorta"]),
    (
        "heart and lung lobes",
        [
            "heart",
            "lung_upper_lobe_right",
            "lung_upper_lobe_left",
            "lung_middle_lobe_right",
            "lung_lower_lobe_right",
            "lung_lower_lobe_left",
        ],
    ),
    ("bowel", ["duodenum", "small_bowel", "colon", "rectum"]),
]


@pytest.mark.parametrize("text,expected", CASES, ids=[c[0].replace("\n", "|") for c in CASES])
def test_parse(text: str, expected: list[str]) -> None:
    assert parse_prompt(text) == expected


def test_enough_cases() -> None:
    assert len(CASES) >= 60


@pytest.mark.parametrize(
    "text", ["all organs", "everything", "all", "segment all organs", "Everything please", "all of them"]
)
def test_everything_gives_the_default_set(text: str) -> None:
    assert parse_prompt(text) == load_vocabulary().default_ids()


@pytest.mark.parametrize(
    "text,group",
    [
        ("abdomen", "abdomen"),
        ("abdominal organs", "abdomen"),
        ("all abdominal organs", "abdomen"),
        ("chest", "thorax"),
        ("thoracic organs", "thorax"),
        ("pelvis", "pelvis"),
        ("vessels", "vessels"),
        ("GI tract", "gi_tract"),
        ("btcv", "btcv13"),
        ("AMOS", "amos15"),
        ("flare22", "flare13"),
    ],
)
def test_groups(text: str, group: str) -> None:
    assert parse_prompt(text) == load_vocabulary().group(group)


def test_group_expands_combined_bilateral_entries() -> None:
    ids = parse_prompt("word16")
    assert "adrenal_glands" not in ids and set(ADRENALS) <= set(ids)
    assert ids[-2:] == ["head_of_femur_right", "head_of_femur_left"]


def test_order_of_mention_and_no_duplicates() -> None:
    assert parse_prompt("spleen, abdomen, liver") == [
        "spleen",
        *[i for i in load_vocabulary().group("abdomen") if i != "spleen"],
    ]
    assert parse_prompt("right kidney, kidneys") == ["kidney_right", "kidney_left"]


def test_explicit_vocabulary_argument() -> None:
    vocab = load_vocabulary()
    assert parse_prompt("IVC", vocab) == ["inferior_vena_cava"]


@pytest.mark.parametrize(
    "text,term,suggestion",
    [
        ("livr", "livr", "liver"),
        ("liver, splen", "splen", "spleen"),
        ("segment the kidny", "kidny", "kidney"),
        ("pancrease and liver", "pancrease", "pancreas"),
        ("gallbladdr", "gallbladdr", "gallbladder"),
        ("left liver", "left liver", "liver"),
        ("left middle lobe", "left middle lobe", "middle lobe"),
        ("aortta", "aortta", "aorta"),
    ],
)
def test_unknown_term_suggests(text: str, term: str, suggestion: str) -> None:
    with pytest.raises(UnknownOrganError) as ei:
        parse_prompt(text)
    e = ei.value
    assert isinstance(e, ValueError)
    assert e.term == term and e.prompt == text
    assert e.suggestions[0] == suggestion
    assert str(e).startswith(f'unknown organ "{term}" in prompt "{text}"; did you mean: {suggestion}')


def test_error_message_exact() -> None:
    with pytest.raises(UnknownOrganError) as ei:
        parse_prompt("livr")
    assert str(ei.value) == 'unknown organ "livr" in prompt "livr"; did you mean: liver?'


def test_unknown_without_suggestion_points_to_the_list() -> None:
    with pytest.raises(UnknownOrganError, match="organsam organs") as ei:
        parse_prompt("liver except xyzzy")
    assert ei.value.term == "except xyzzy" and ei.value.suggestions == []


@pytest.mark.parametrize(
    "text,match",
    [
        ("", "no organ named"),
        ("segment the", "no organ named"),
        ("please, thanks", "no organ named"),
        ("liver and left", "not followed by an organ"),
    ],
)
def test_prompt_errors(text: str, match: str) -> None:
    with pytest.raises(PromptError, match=match):
        parse_prompt(text)


def test_suggest_helper() -> None:
    assert suggest("spleeen")[0] == "spleen"
    assert suggest("qqqqqq") == []


def test_words_in_another_script_are_reported_not_dropped() -> None:
    with pytest.raises(UnknownOrganError, match="English") as ei:
        parse_prompt("腎臓 and spleen")
    assert ei.value.term == "腎臓"
    with pytest.raises(UnknownOrganError, match="печень"):
        parse_prompt("liver печень")
    assert parse_prompt("oesophagus, caecum, Hépar") == ["esophagus", "colon", "liver"]  # Latin script: understood


def test_messages_show_a_long_or_escaped_prompt_short_and_clean() -> None:
    with pytest.raises(UnknownOrganError) as ei:
        parse_prompt("liver " + "x" * 10_000)
    assert len(str(ei.value)) < 400
    with pytest.raises(UnknownOrganError) as ei:
        parse_prompt("liver \x1b[31mbogus")
    assert "\x1b" not in str(ei.value)


def test_suggestions_favour_abdominal_organs_and_whole_phrases() -> None:
    """ "lefft" was answered with "left rib, left hip, left cca"; a typo in the side word now suggests the
    abdominal organs with that side, and a close match is not followed by far ones."""
    from organsam.vocabulary import suggest

    assert "left kidney" in suggest("lefft") and "left rib" not in suggest("lefft")
    assert suggest("livr") == ["liver"] and suggest("left kidny") == ["left kidney"]
