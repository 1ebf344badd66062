"""Shared fixtures: an isolated call cache, the official data path, the CLI in this process. Test helpers live in tests/helpers/
(on the path: pyproject's ``[tool.pytest.ini_options] pythonpath``)."""

from __future__ import annotations

import subprocess
import sys
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


@pytest.fixture
def cli(capsys, monkeypatch):
    """`specalign ARGS` through ``specalign.cli.main`` in this process (fast): a CompletedProcess with the exit
    code, stdout and stderr. Any exception but SystemExit escapes and fails the test (a user's traceback)."""
    from specalign import cli as cli_module  # noqa: PLC0415

    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # typer replaces it

    def call(*args: str) -> subprocess.CompletedProcess[str]:
        monkeypatch.setattr(sys, "argv", ["specalign", *args])
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            cli_module.main()
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, e.value.code, captured.out, captured.err)

    return call
