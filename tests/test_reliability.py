"""Long runs under faults: the official data's 1,500 prompts against a fault-injecting server, SIGKILL
and resume, an endpoint that never recovers, a disk that fills up."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import time
from functools import partial
from pathlib import Path

import pytest

from fault_server import FaultRates, FaultyWorld
from repo_paths import OFFICIAL_DATA
from run_world import records, start_cli
from scripted_server import Reply, ScriptedServer
from specalign.benchmark import load_benchmark
from specalign.errors import ModelOutage, RunDirError
from specalign.runs import Evaluation, RunConfig, RunDir
from specbench_world import is_judge, world
from waiting import wait_until

FAULTS = FaultRates(
    server_error=0.10,
    rate_limit=0.05,
    reset=0.02,
    timeout=0.01,
    truncated=0.01,
    empty=0.01,
    malformed_judge=0.20,
    timeout_delay=2.0,
)


def _models_yaml(path: Path, server: ScriptedServer, **extra) -> str:
    settings = {
        "model_name": "scripted-model",
        "base_url": server.base_url,
        "timeout": 1,
        "max_retries": 6,
        "max_concurrency": 64,
        **extra,
    }
    path.write_text("m:\n" + "".join(f"  {k}: {v}\n" for k, v in settings.items()))
    return str(path)


def _config(server: ScriptedServer, out: Path, data, **kw) -> RunConfig:
    models = _models_yaml(out.parent / f"{out.name}.models.yaml", server)
    base = dict(
        data=str(data),
        limit=0,
        model="m",
        judge="m",
        models_config=models,
        out=str(out),
        concurrency=48,
        use_cache=False,
    )
    return RunConfig(**{**base, **kw})


def _outcomes(run_dir: Path) -> dict[str, tuple]:
    """Per sample: (response, judgment status, verdicts) from the latest records."""
    rd = RunDir(run_dir)
    gens = {g.sample_id: g for g in rd.generations()}
    out = {}
    for j in rd.judgments():
        out[j.sample_id] = (gens[j.sample_id].response, j.status, {k: v.verdict for k, v in j.verdicts.items()})
    return out


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    data = OFFICIAL_DATA
    if not (data / "Child" / "prompts.json").is_file():
        pytest.skip(f"official SpecBench data not found at {data}")
    out = tmp_path_factory.mktemp("clean") / "run"
    with ScriptedServer(FaultyWorld(FaultRates()), keep_requests=False) as server:
        result = asyncio.run(Evaluation(_config(server, out, data)).run())
    return data, out, result


def test_official_run_under_faults_scores_exactly_like_a_clean_run(clean_run, tmp_path):
    data, clean_dir, clean = clean_run
    faulty = FaultyWorld(FAULTS, seed=7)
    with ScriptedServer(faulty, keep_requests=False) as server:
        result = asyncio.run(Evaluation(_config(server, tmp_path / "run", data)).run())
        requests = server.request_count
    injected = faulty.stats()["faults"]
    assert set(injected) == {"server_error", "rate_limit", "reset", "timeout", "truncated", "empty", "malformed_judge"}
    assert sum(injected.values()) > 900 and requests > 3000 + sum(injected.values()) - 10
    assert result.scores.counts == {"selected": 1500, "scored": 1500, "unscored": 0, "pending": 0}
    assert result.scores.overall == clean.scores.overall and result.scores.scenarios == clean.scores.scenarios
    assert _outcomes(tmp_path / "run") == _outcomes(clean_dir)
    lines = [json.loads(x) for x in (tmp_path / "run" / "judgments.jsonl").read_text().splitlines()]
    assert sum(j["attempts"] > 1 for j in lines) > 100  # malformed verdicts were asked again, not accepted


def test_permanent_faults_leave_every_sample_accounted_for(tmp_path):
    """Faults that never clear: every sample ends scored or unscored with its reason, none lost."""
    faulty = FaultyWorld(FaultRates(malformed_judge=0.3, server_error=0.05, max_consecutive=None), seed=3)
    with ScriptedServer(faulty, keep_requests=False) as server:
        cfg = _config(server, tmp_path / "run", "bundled", judge_attempts=2, stop_after_failures=0)
        cfg = cfg.model_copy(update={"models_config": _models_yaml(tmp_path / "m.yaml", server, max_retries=1)})
        result = asyncio.run(Evaluation(cfg).run())
    c = result.scores.counts
    assert c["selected"] == 135 and c["pending"] == 0 and c["scored"] + c["unscored"] == 135
    assert 0 < c["unscored"] < 135 and sum(result.scores.unscored_reasons.values()) == c["unscored"]
    assert any("unreadable" in r for r in result.scores.unscored_reasons)


# -- SIGKILL and resume ----------------------------------------------------------------------------


def _run_args(models: str, out: Path, *more: str) -> list[str]:
    """``specalign run`` with the models config's ``m`` as target and judge."""
    return ["run", "--model", "m", "--judge", "m", "--models-config", models, "--out", str(out), *more]


def _sample_of(data):
    """A function from a request body to the sample ids it can concern (by prompt text and scenario)."""
    bench = load_benchmark(str(data))
    index: dict[str, set[str]] = {}
    for s in bench.scenarios:
        for p in s.prompts:
            index.setdefault(p.prompt, set()).add(f"{s.key}/{p.id}")
            index.setdefault(p.original_prompt, set()).add(f"{s.key}/{p.id}")

    def sample_ids(body) -> set[str]:
        if not isinstance(body, dict):  # a body cut short when its client was killed
            return set()
        text = body["messages"][1]["content"]
        if is_judge(body):
            prompt = text.split("<request>\n", 1)[1].split("\n</request>", 1)[0]
        else:
            prompt = text.split("\n\n---\n", 1)[0]
        return index.get(prompt, set())

    return sample_ids


def _completed(run_dir: Path) -> set[str]:
    return {j["sample_id"] for j in records(run_dir / "judgments.jsonl")}


def _judged_or_ended(run_dir: Path, n: int, process: subprocess.Popen) -> bool:
    return len(_completed(run_dir)) >= n or process.poll() is not None


def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(clean_run, tmp_path):
    data, clean_dir, _ = clean_run
    out = tmp_path / "run"
    rng = random.Random(2026)
    sample_ids = _sample_of(data)
    with ScriptedServer(FaultyWorld(FaultRates()), latency=0.004) as server:
        models = _models_yaml(tmp_path / "m.yaml", server)
        args = _run_args(models, out, "--data", str(data), "--limit", "0", "--concurrency", "16", "--no-cache")
        kills = 0
        while kills < 4:
            before = server.chat_count
            done_before = _completed(out)
            p = start_cli(*args)
            kill_at = len(done_before) + rng.randint(1, 300)  # a random point: after 1 to 300 more judged samples
            wait_until(partial(_judged_or_ended, out, kill_at, p), 300, f"{kill_at} judged samples")
            if p.poll() is not None:
                break  # finished before the kill: nothing left to interrupt
            p.send_signal(signal.SIGKILL)
            p.wait()
            kills += 1
            repeated = [
                r for r in server.chat_requests[before:] if sample_ids(r.json) and sample_ids(r.json) <= done_before
            ]
            assert repeated == [], f"kill {kills}: requests for samples finished before it"
        assert kills >= 2
        done_before = _completed(out)
        before = server.chat_count
        p = start_cli(*args)
        _, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr
        assert not [
            r for r in server.chat_requests[before:] if sample_ids(r.json) and sample_ids(r.json) <= done_before
        ]
    gens = [json.loads(x)["sample_id"] for x in (out / "generations.jsonl").read_text().splitlines()]
    judged = [json.loads(x)["sample_id"] for x in (out / "judgments.jsonl").read_text().splitlines()]
    assert len(gens) == len(set(gens)) == 1500 and len(judged) == len(set(judged)) == 1500  # none twice, none missing
    assert _outcomes(out) == _outcomes(clean_dir)
    assert (
        json.loads((out / "scores.json").read_text())["overall"]
        == json.loads((clean_dir / "scores.json").read_text())["overall"]
    )


# -- endpoints that never recover, disks that fill up ---------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        Reply.error(429, "rate limited", type="requests", code="rate_limit_exceeded", headers={"Retry-After": "0.01"}),
        Reply.error(503, "overloaded"),
    ],
    ids=["429-forever", "503-forever"],
)
def test_an_endpoint_that_never_recovers_stops_the_run_quickly(tmp_path, reply):
    with ScriptedServer(lambda body: reply, keep_requests=False) as server:
        cfg = _config(server, tmp_path / "run", "bundled", concurrency=8)
        cfg = cfg.model_copy(update={"models_config": _models_yaml(tmp_path / "m.yaml", server, max_retries=2)})
        t0 = time.monotonic()
        evaluation = Evaluation(cfg)
        with pytest.raises(ModelOutage, match="the last 25 samples all failed"):
            asyncio.run(evaluation.run())
        elapsed, calls = time.monotonic() - t0, server.request_count
    in_flight = evaluation.samples_in_flight()  # 16: two samples per call slot for a remote model
    assert elapsed < 30 and calls <= 3 * (25 + in_flight)  # not 135 samples × 3 attempts
    gens = [json.loads(x) for x in (tmp_path / "run" / "generations.jsonl").read_text().splitlines()]
    assert gens and all(g["status"] == "error" for g in gens)  # recorded, and generated again on the next run


def test_quota_exhausted_ends_at_once_with_exit_3_and_one_line(tmp_path):
    quota = Reply.error(429, "You exceeded your current quota", type="insufficient_quota", code="insufficient_quota")
    with ScriptedServer(lambda body: quota) as server:
        models = _models_yaml(tmp_path / "m.yaml", server)
        p = start_cli(*_run_args(models, tmp_path / "run", "--scenario", "child", "--limit", "0"))
        _, stderr = p.communicate(timeout=60)
        assert server.chat_count <= 8  # one per worker, never retried
    assert p.returncode == 3 and "quota exhausted" in stderr and "Traceback" not in stderr


def test_judge_outage_is_judged_again_on_the_next_run(tmp_path):
    """A judge that cannot be reached leaves samples unscored for now, not for good: the rerun judges them."""
    down = {"on": True}

    def flaky_judge(body):
        return Reply.error(503, "judge down") if is_judge(body) and down["on"] else world(body)

    with ScriptedServer(flaky_judge, keep_requests=False) as server:
        cfg = _config(server, tmp_path / "run", "bundled", scenarios=["child"], limit=4, stop_after_failures=0)
        cfg = cfg.model_copy(update={"models_config": _models_yaml(tmp_path / "m.yaml", server, max_retries=0)})
        first = asyncio.run(Evaluation(cfg).run())
        down["on"] = False
        second = asyncio.run(Evaluation(cfg).run())
    assert first.scores.counts["unscored"] == 4 and "judge call failed" in next(iter(first.scores.unscored_reasons))
    assert second.scores.counts["scored"] == 4 and second.stats.model_calls == 4  # the judge only


def test_disk_full_is_one_clear_error_and_the_run_resumes_after(tmp_path):
    out = tmp_path / "run"
    with ScriptedServer(world, keep_requests=False) as server:
        cfg = _config(server, out, "bundled", scenarios=["child"], limit=6, concurrency=2)
        asyncio.run(Evaluation(cfg.model_copy(update={"scenarios": ["code"], "limit": 1})).run())  # a run directory
        (out / "judgments.jsonl").unlink()
        (out / "judgments.jsonl").symlink_to("/dev/full")  # every write fails with ENOSPC
        with pytest.raises(RunDirError, match="No space left on device"):
            asyncio.run(Evaluation(cfg).run())
        assert RunDir(out).read_manifest()  # the manifest is whole
        (out / "judgments.jsonl").unlink()
        result = asyncio.run(Evaluation(cfg).run())
    assert result.scores.counts == {"selected": 6, "scored": 6, "unscored": 0, "pending": 0}
    gens = [json.loads(x)["sample_id"] for x in (out / "generations.jsonl").read_text().splitlines()]
    gens = [g for g in gens if g.startswith("child/")]
    assert len(gens) == len(set(gens)) == 6


def test_disk_full_from_the_cli_is_one_line_exit_2(tmp_path):
    out = tmp_path / "run"
    with ScriptedServer(world, keep_requests=False) as server:
        models = _models_yaml(tmp_path / "m.yaml", server)
        first = start_cli(*_run_args(models, out, "--scenario", "code", "--limit", "1"))  # a run directory...
        assert first.wait(timeout=60) == 0
        (out / "generations.jsonl").unlink()
        (out / "generations.jsonl").symlink_to("/dev/full")  # ...then its disk fills up
        p = start_cli(*_run_args(models, out, "--scenario", "child", "--limit", "2"))
        _, stderr = p.communicate(timeout=60)
    assert p.returncode == 2 and "Traceback" not in stderr
    assert "No space left on device" in stderr and "generations.jsonl" in stderr
