"""Shared fixtures: an isolated call cache, the official data path, the repo root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
OFFICIAL_DATA = Path(os.environ.get("SPECALIGN_OFFICIAL_DATA", REPO.parent / "shared" / "specbench-data"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own model-call cache so nothing leaks between tests or from the user."""
    monkeypatch.setenv("SPECALIGN_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def official_data() -> Path:
    if not (OFFICIAL_DATA / "Child" / "prompts.json").is_file():
        pytest.skip(f"official SpecBench data not found at {OFFICIAL_DATA} (set SPECALIGN_OFFICIAL_DATA)")
    return OFFICIAL_DATA
