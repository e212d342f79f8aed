"""``organsam organs`` subcommand and ``scripts/generate_knowledge.py --dry-run``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from organsam.cli.main import main
from organsam.vocabulary import load_vocabulary

REPO = Path(__file__).resolve().parents[2]


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["organs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    vocab = load_vocabulary()
    assert len(lines) == len(vocab)
    first = lines[0].split()
    assert first[0] == "liver" and first[2] == "5" and first[3] == "midline" and "abdomen" in first[4]
    assert any(line.split()[0] == "kidney_left" and "left" in line.split() for line in lines)


def test_list_json_and_group(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["organs", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"] == load_vocabulary().version
    assert [o["id"] for o in doc["organs"]] == load_vocabulary().ids()
    assert set(doc["organs"][0]) == {"id", "name", "laterality", "label_value", "color", "groups"}
    assert doc["organs"][0]["label_value"] == 5 and len(doc["organs"][0]["color"]) == 3
    assert main(["organs", "--group", "synapse8", "--json"]) == 0
    ids = [o["id"] for o in json.loads(capsys.readouterr().out)["organs"]]
    assert sorted(ids) == sorted(load_vocabulary().group("synapse8")) and len(ids) == 8
    assert main(["organs", "--group", "chest"]) == 0  # an alias of "thorax"
    assert len(capsys.readouterr().out.splitlines()) == len(load_vocabulary().group("thorax"))


def test_unknown_group(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["organs", "--group", "brain"]) == 2
    assert "unknown organ group 'brain'" in capsys.readouterr().err


def test_parse(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["organs", "--parse", "liver and both kidneys"]) == 0
    assert capsys.readouterr().out.split() == ["liver", "kidney_right", "kidney_left"]
    assert main(["organs", "--parse", "IVC, left adrenal", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "prompt": "IVC, left adrenal",
        "ids": ["inferior_vena_cava", "adrenal_gland_left"],
    }


def test_parse_failure_exits_nonzero_with_suggestions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["organs", "--parse", "livr and spleen"]) == 2
    err = capsys.readouterr().err
    assert 'unknown organ "livr"' in err and "did you mean: liver" in err
    assert main(["organs", "--parse", "livr", "--json"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["term"] == "livr" and doc["suggestions"][0] == "liver"
    assert main(["organs", "--parse", "segment the"]) == 2
    assert "no organ named" in capsys.readouterr().err


def test_show_groups_and_labelmaps(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["organs", "--show", "spleen"]) == 0
    out = capsys.readouterr().out
    assert "A computerized tomography of a spleen." in out and "lien" in out and "HU" in out
    assert main(["organs", "--show", "spleen", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["knowledge"] == list(load_vocabulary()["spleen"].knowledge)
    assert main(["organs", "--show", "brain"]) == 2
    assert "unknown organ id 'brain'" in capsys.readouterr().err
    assert main(["organs", "--groups"]) == 0
    assert any(line.split()[:2] == ["amos15", "15"] for line in capsys.readouterr().out.splitlines())
    assert main(["organs", "--labelmaps"]) == 0
    assert "amos22" in capsys.readouterr().out.split()
    assert main(["organs", "--labelmap", "amos"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert rows[0] == ["1", "spleen", "spleen"] and rows[-1] == ["15", "prostate/uterus", "prostate_uterus"]
    assert main(["organs", "--labelmap", "nope"]) == 2
    assert "unknown label map" in capsys.readouterr().err


def test_generate_knowledge_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "generate_knowledge.py"),
            "--dry-run",
            "--organs",
            "liver",
            "kidney_left",
            "--mode",
            "extend",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "", "OPENAI_API_KEY": ""},
    )
    assert r.returncode == 0, r.stderr
    assert "### liver" in r.stdout and "### kidney_left" in r.stdout and "### spleen" not in r.stdout
    assert "left kidney" in r.stdout and "JSON array" in r.stdout
    assert load_vocabulary()["liver"].knowledge[0] in r.stdout  # extend mode shows the existing sentences
    assert not out.exists()  # a dry run writes nothing
    bad = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "generate_knowledge.py"), "--dry-run", "--organs", "brain"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "unknown organ ids" in bad.stderr
