"""The whole scenario-building path on the embedded model, through the CLI: describe → draft specs →
curate a handful of prompts → de-duplicate (a planted near-duplicate goes) → attack → review decisions
imported → `specalign run` evaluates the result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from review_sheet import accept_all

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'specalign[local]')")
if not os.environ.get("CI"):
    pytest.importorskip("sentence_transformers", reason="pip install 'specalign[curate]'")

from specalign.authoring import Candidate, Curator, MiniLMEmbedder  # noqa: E402
from specalign.benchmark import load_benchmark  # noqa: E402

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "200"}
    r = subprocess.run(
        [sys.executable, "-m", "specalign.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert "Traceback" not in r.stderr, r.stderr
    return r


def test_describe_to_evaluated_scenario_on_the_embedded_model(tmp_path):
    data, folder = tmp_path / "data", tmp_path / "data" / "garden-helper"
    r = _cli(
        "scenario",
        "new",
        "Garden Helper",
        "-d",
        "An assistant for a garden centre that answers questions about plants, tools and pests for home gardeners.",
        "--safety",
        "2-2",
        "--behavioral",
        "1-2",
        "--out",
        str(data),
    )
    assert r.returncode == 0, r.stderr
    assert _cli("scenario", "lint", str(folder)).returncode == 0
    r = _cli(
        "scenario", "curate", str(folder), "--unsafe", "2", "--safe", "1", "--pool", "1", "--no-filter", "--batch", "2"
    )
    assert r.returncode == 0, r.stderr
    [scenario] = load_benchmark(str(data)).scenarios
    assert scenario.prompts and all(p.seed_spec for p in scenario.prompts if p.label == "unsafe")

    # de-duplication with the real embedder: a near-copy of a curated prompt is planted and removed
    first = scenario.prompts[0].prompt
    pool = [Candidate(text=p.prompt, label="unsafe") for p in scenario.prompts]
    pool.append(Candidate(text=f"{first.rstrip('?.!')}, please?", label="unsafe"))
    kept = Curator(None, MiniLMEmbedder).dedupe(pool, len(pool) - 1)  # type: ignore[arg-type]
    texts = [c.text for c in kept]
    assert len(kept) == len(pool) - 1 and (first in texts) != (pool[-1].text in texts)

    r = _cli(
        "scenario",
        "attack",
        str(folder),
        "--attempts",
        "1",
        "--escalation",
        "2",
        "--max-attempts",
        "2",
        "--checks",
        "1",
    )
    assert r.returncode == 0, r.stderr
    [scenario] = load_benchmark(str(data)).scenarios
    unsafe = [p for p in scenario.prompts if p.label == "unsafe"]
    assert all(p.attack_attempts for p in unsafe)  # every unsafe prompt was tried, kept or not
    assert all(p.attack is None for p in scenario.prompts if p.label == "safe")

    sheet = tmp_path / "sheet.csv"
    assert _cli("scenario", "review", str(folder), "--export", str(sheet)).returncode == 0
    assert accept_all(sheet) > 0
    assert _cli("scenario", "review", str(folder), "--import", str(sheet), "--reviewer", "ci").returncode == 0
    r = _cli("scenario", "review", str(folder), "--apply", str(tmp_path / "final"))
    assert r.returncode == 0, r.stderr

    r = _cli("run", "--data", str(tmp_path / "final"), "--limit", "1", "--out", str(tmp_path / "run"), "--json")
    assert r.returncode == 0, r.stderr
    counts = json.loads(r.stdout)["counts"]
    assert counts["pending"] == 0 and counts["scored"] + counts["unscored"] == counts["selected"] >= 1
