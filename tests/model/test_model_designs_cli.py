"""``organsam designs``: listing without torch, parameter counts of the real designs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from organsam.cli.main import main
from organsam.registry import list_designs


def test_designs_lists_every_design_without_importing_torch():
    code = (
        "import sys, io, contextlib, argparse; from organsam.cli import designs_cmd; buf = io.StringIO()\n"
        "args = argparse.Namespace(names=[], params=False, json=True)\n"
        "with contextlib.redirect_stdout(buf): rc = designs_cmd.run(args)\n"
        "print(buf.getvalue()); print('TORCH', 'torch' in sys.modules, rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    rows = json.loads(out[: out.rindex("TORCH")])
    assert [r["name"] for r in rows] == list_designs()
    assert all(r["summary"] for r in rows)
    assert out.strip().endswith("TORCH False 0")


def test_every_design_module_registers_the_design_it_is_named_after():
    """A design is one module: its file name is its name, its decorator registers it, its docstring summarises it."""
    from organsam.registry import DESIGNS_DIR, design_summary, get_design, resolve_config

    names = list_designs()
    assert {"crisp_sam2", "seg_sam", "pg_sam", "unified", "organ_prompts"} <= set(names)
    assert names == sorted(p.stem for p in DESIGNS_DIR.glob("*.py") if p.stem != "__init__")
    for name in names:
        entry = get_design(name)
        assert entry.name == name and design_summary(name).lower().startswith(name.replace("_", "-")[:4].lower())
        assert isinstance(resolve_config(name), entry.config_cls)
    with pytest.raises(KeyError, match="did you mean: pg_sam"):
        get_design("pg-sam")


@pytest.mark.slow
def test_designs_params_builds_the_real_designs(capsys):
    assert main(["designs", "--params", "--json", "seg_sam", "pg_sam"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["seg_sam", "pg_sam"]
    for r in rows:
        # LiteMedSAM core (~9.8 M) plus the design's modules; the frozen encoder is not trainable.
        assert 9.5e6 < r["total_params"] < 30e6
        assert 0 < r["trainable_params"] < r["total_params"] - 5e6
    assert main(["designs", "--params"]) == 0
    text = capsys.readouterr().out
    assert all(f"{n} " in text and "trainable" in text for n in list_designs())


def test_unknown_design_is_an_error(capsys):
    assert main(["designs", "crisp"]) == 2
    assert "unknown design(s) crisp" in capsys.readouterr().err
