"""Protocol tables: organs, reference label maps, empty rules and the printed description."""

from __future__ import annotations

import pytest

from organsam.evaluation.metrics import EMPTY_RULES
from organsam.evaluation.protocols import UnknownProtocolError, get_protocol, list_protocols
from organsam.vocabulary import labelmap_info, load_vocabulary

EXPECTED = {"synapse8": 8, "btcv13": 13, "amos15": 15, "word16": 16, "flare13": 13}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_protocol_organs_match_vocabulary_group_and_labelmap(name):
    p = get_protocol(name)
    vocab = load_vocabulary()
    assert len(p.organs) == EXPECTED[name]
    assert set(p.organs) == set(vocab.group(name))
    lm = labelmap_info(p.labelmap)
    for o in p.organs:  # every protocol organ is labelled by the protocol's reference map
        assert lm.values_for(o), (name, o)
    assert p.empty_rule in EMPTY_RULES
    assert p.published_hd95_unit in ("mm", "voxels", "-")


def test_synapse8_is_in_transunet_table_order_and_conventions():
    p = get_protocol("synapse8")
    assert p.organs == ("aorta", "gallbladder", "kidney_left", "kidney_right", "liver", "pancreas", "spleen", "stomach")
    assert p.empty_rule == "transunet" and p.published_hd95_unit == "voxels"
    text = p.describe()
    assert "published in voxels" in text and "reported here in millimetres" in text
    assert "Kidney (L)" in text and "Aorta 2" in text  # names and NSD tolerances
    assert "calculate_metric_percase" in text
    assert "instead of the protocol rule transunet" in p.describe(rule="strict")
    assert "voxels (spacing taken as 1)" in p.describe(hd95_unit="voxels")


def test_flare_and_btcv_conventions():
    flare = get_protocol("flare13")
    assert flare.empty_rule == "strict" and "nsd" in flare.metrics
    assert "Duodenum 7" in flare.describe()
    assert get_protocol("btcv13").empty_rule == "monai"
    assert "PV/SV" in get_protocol("btcv13").describe()


def test_aliases_and_unknown():
    assert get_protocol("Synapse").name == "synapse8"
    assert get_protocol("FLARE22").name == "flare13"
    assert get_protocol("amos").name == "amos15"
    assert list_protocols() == list(EXPECTED)
    with pytest.raises(UnknownProtocolError, match="choose one of synapse8"):
        get_protocol("kits19")
