"""Shared fixtures. Real data lives in ``../shared/data`` beside the repository (never committed);
tests that need it skip with a clear message where it is absent. ``ORGANSAM_DATA`` overrides the path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ORGANSAM_DATA", REPO.parent / "shared" / "data"))


def data_path(*parts: str) -> Path:
    """Path under the shared data folder; skips the calling test when it does not exist."""
    p = DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p} is missing (expected ../shared/data beside the repo, "
                    f"or set ORGANSAM_DATA)")
    return p


@pytest.fixture
def shared_data() -> Path:
    """The shared real-data folder (skips when absent)."""
    return data_path()
