"""The embedded model (SmolLM2-135M via llama.cpp) end to end: generation, joint judge through the grammar, scores."""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'specalign[local]')")

from specalign.runs import Evaluation, RunConfig  # noqa: E402

pytestmark = pytest.mark.slow


def test_embedded_model_end_to_end(tmp_path):
    cfg = RunConfig(scenarios=["child"], limit=2, out=str(tmp_path / "run"))
    ev = Evaluation(cfg)
    assert ev.target_settings.params["max_tokens"] == 200  # the demo cap applies to generation only
    result = asyncio.run(ev.run())
    gens = [json.loads(x) for x in (tmp_path / "run" / "generations.jsonl").read_text().splitlines()]
    judg = [json.loads(x) for x in (tmp_path / "run" / "judgments.jsonl").read_text().splitlines()]
    assert len(gens) == 2 and all(g["status"] == "ok" and g["response"] for g in gens)
    assert {g["label"] for g in gens} == {"unsafe", "safe"}
    assert len(judg) == 2
    for j in judg:
        if j["status"] == "scored":  # through the grammar every spec gets a verdict
            assert set(j["verdicts"]) == {f"S{i}" for i in range(1, 12)} | {f"B{i}" for i in range(1, 11)}
            assert all(v["verdict"] in ("YES", "NO", "NA") for v in j["verdicts"].values())
            assert all(len(v["reason"]) <= 60 for v in j["verdicts"].values())
        else:
            assert j["unscored_reason"] and j["raw_outputs"]
    scores = json.loads((tmp_path / "run" / "scores.json").read_text())
    full = scores["scenarios"]["child"]["full"]
    assert full["n_scored"] + full["n_unscored"] == 2
    assert full["n_scored"] >= 1
    assert 0 <= full["sar"] <= 1 and 0 <= full["safety"] <= 1 and 0 <= full["behavioral"] <= 1
    assert scores["usage"]["generation"]["completion_tokens"] > 0 and scores["usage"]["judge"]["completion_tokens"] > 0
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["judge"]["reason_chars"] == 60 and manifest["model_identity"]["kind"] == "llamacpp"
    again = asyncio.run(Evaluation(cfg).run())
    assert again.stats.model_calls == 0 and again.scores.overall == result.scores.overall
