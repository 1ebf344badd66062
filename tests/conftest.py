"""Shared fixtures: an isolated call cache, the official data path. Test helpers live in tests/helpers/
(on the path: pyproject's ``[tool.pytest.ini_options] pythonpath``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from repo_paths import OFFICIAL_DATA


@pytest.fixture(scope="module", autouse=True)
def _module_cache(tmp_path_factory):
    """Module-scoped fixtures run before any test's own cache is set: they get one per module, never the
    user's (a scripted server on a reused port would otherwise be answered from another test's calls)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPECALIGN_CACHE_DIR", str(tmp_path_factory.mktemp("module-cache")))
        yield


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own model-call cache so nothing leaks between tests or from the user."""
    monkeypatch.setenv("SPECALIGN_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def official_data() -> Path:
    if not (OFFICIAL_DATA / "Child" / "prompts.json").is_file():
        pytest.skip(f"official SpecBench data not found at {OFFICIAL_DATA} (set SPECALIGN_OFFICIAL_DATA)")
    return OFFICIAL_DATA
