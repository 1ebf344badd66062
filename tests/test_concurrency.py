"""``--concurrency`` is the number of calls in flight per model, as a real loopback server sees it;
several models config files merge; a configured token limit is the only one sent."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripted_server import DEFAULT_MODEL, ScriptedServer
from specalign.errors import ConfigError
from specalign.models import Message, ModelSettings, create_model, load_models_config, parse_model_spec
from specalign.runs import Evaluation, RunConfig
from specbench_world import is_judge, world

REPO = Path(__file__).resolve().parent.parent
#: long enough that every call of a wave is in flight before the first one is answered
LATENCY = 0.4


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "300"}
    return subprocess.run(
        [sys.executable, "-m", "specalign.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def _yaml(path: Path, entries: dict[str, dict]) -> str:
    lines = []
    for key, settings in entries.items():
        lines.append(f"{key}:")
        lines += [f"  {k}: {v}" for k, v in settings.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _entry(server: ScriptedServer, **extra) -> dict:
    return {"model_name": DEFAULT_MODEL, "base_url": server.base_url, "timeout": 30, **extra}


def _run_args(tmp_path: Path, *extra: str, scenarios: str = "child,code", limit: int = 0) -> list[str]:
    return [
        "run",
        *(x for key in scenarios.split(",") for x in ("--scenario", key)),
        "--limit",
        str(limit),
        "--no-cache",
        "--out",
        str(tmp_path / "run"),
        *extra,
    ]


# -- calls in flight ----------------------------------------------------------------------------------


def test_run_keeps_exactly_concurrency_calls_in_flight_above_eight(tmp_path):
    with ScriptedServer(world, latency=LATENCY, keep_requests=False) as server:
        spec = f"openai:{DEFAULT_MODEL}@{server.base_url}"
        p = _cli(*_run_args(tmp_path, "--model", spec, "--judge", spec, "--concurrency", "12"))
    assert p.returncode == 0, p.stderr
    assert server.max_in_flight == 12
    assert "concurrency: model and judge 12 calls in flight (1 endpoint) · 24 samples in flight" in p.stderr


def test_target_and_judge_each_get_concurrency_calls(tmp_path):
    with (
        ScriptedServer(world, latency=LATENCY, keep_requests=False) as target,
        ScriptedServer(world, latency=LATENCY, keep_requests=False) as judge,
    ):
        cfg = RunConfig(
            data="bundled",
            scenarios=["child", "code"],
            limit=0,
            concurrency=10,
            use_cache=False,
            model=f"openai:{DEFAULT_MODEL}@{target.base_url}",
            judge=f"openai:{DEFAULT_MODEL}@{judge.base_url}",
            out=str(tmp_path / "run"),
        )
        asyncio.run(Evaluation(cfg).run())
    assert (target.max_in_flight, judge.max_in_flight) == (10, 10)


def test_config_max_concurrency_caps_each_endpoint_and_the_run_line_says_so(tmp_path):
    with ScriptedServer(world, latency=LATENCY, keep_requests=False) as server:
        models = _yaml(tmp_path / "models.yaml", {"m": _entry(server, max_concurrency=5)})
        p = _cli(*_run_args(tmp_path, "--models-config", models, "--model", "m", "--judge", "m", "--concurrency", "12"))
    assert p.returncode == 0, p.stderr
    assert server.max_in_flight == 5
    assert (
        f"model and judge 5 calls in flight (1 endpoint) — fewer than --concurrency 12: max_concurrency 5 per "
        f"endpoint in {models}"
    ) in p.stderr


async def test_calls_spread_over_endpoints_and_a_config_caps_each():
    with ScriptedServer(latency=LATENCY) as a, ScriptedServer(latency=LATENCY) as b:
        urls = [a.base_url, b.base_url]
        spread = ModelSettings(key="t", backend="openai", model_name=DEFAULT_MODEL, base_urls=urls, calls_in_flight=12)
        assert await _burst(spread, 40) and (a.max_in_flight, b.max_in_flight) == (6, 6)
        assert spread.call_limits().describe() == "12 calls in flight, at most 6 at each of 2 endpoints"
        a.max_in_flight = b.max_in_flight = 0
        capped = spread.model_copy(update={"max_concurrency": 4})
        assert await _burst(capped, 40) and (a.max_in_flight, b.max_in_flight) == (4, 4)
        assert capped.call_limits().model == 8 and capped.call_limits().capped


async def _burst(settings: ModelSettings, n: int) -> bool:
    model = create_model(settings)
    try:
        outs = await asyncio.gather(*(model.generate([Message(role="user", content=f"q{i}")]) for i in range(n)))
    finally:
        await model.aclose()
    return len(outs) == n


def test_gateway_upstream_gets_max_concurrency_not_a_hidden_eight():
    from specalign.serve import ServeConfig
    from specalign.serve._gateway import upstream_settings

    settings = parse_model_spec("openai:m@http://127.0.0.1:9/v1")
    limits = upstream_settings(settings, ServeConfig(scenarios=["child"], max_concurrency=100)).call_limits()
    assert (limits.model, limits.per_endpoint) == (100, 100)
    capped = settings.model_copy(update={"max_concurrency": 16})
    assert upstream_settings(capped, ServeConfig(scenarios=["child"], max_concurrency=100)).call_limits().model == 16


# -- several models config files ------------------------------------------------------------------------


def test_two_models_configs_merge_like_the_official_pair(tmp_path):
    with ScriptedServer(world) as server:
        targets = _yaml(tmp_path / "config_model.yaml", {"Qwen3-14B": _entry(server, temperature=0.6)})
        judges = _yaml(tmp_path / "config_eval_model.yaml", {"GPT-4.1": _entry(server, temperature=0)})
        p = _cli(
            *_run_args(
                tmp_path,
                "--models-config",
                targets,
                "--models-config",
                judges,
                "--model",
                "Qwen3-14B",
                "--judge",
                "GPT-4.1",
                scenarios="child",
                limit=1,
            )
        )
    assert p.returncode == 0, p.stderr
    assert {r.json["temperature"] for r in server.chat_requests} == {0.6, 0}


def test_a_key_defined_differently_in_two_files_is_one_line_naming_both(tmp_path):
    a = _yaml(tmp_path / "a.yaml", {"m": {"model_name": "x", "temperature": 0}})
    b = _yaml(tmp_path / "b.yaml", {"m": {"model_name": "x", "temperature": 1}})
    same = _yaml(tmp_path / "same.yaml", {"m": {"model_name": "x", "temperature": 0}})
    assert load_models_config([a, same]).sources["m"] == a  # an identical definition is fine
    p = _cli("run", "--models-config", a, "--models-config", b, "--model", "m", "--judge", "m")
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr
    assert a in lines[0] and b in lines[0] and "'m'" in lines[0]


def test_errors_name_the_file_the_key_came_from(tmp_path):
    a = _yaml(tmp_path / "targets.yaml", {"t": {"model_name": "x"}})
    b = _yaml(tmp_path / "judges.yaml", {"j": {"model_name": "y", "temperature": "hot"}})
    with pytest.raises(ConfigError) as e:
        parse_model_spec("j", load_models_config([a, b]))
    assert str(e.value).startswith(f"{b}: j.temperature:")
    with pytest.raises(ConfigError, match=f"keys in {a}, {b}: j, t"):
        parse_model_spec("nope", load_models_config([a, b]))


def test_run_config_still_takes_one_file_as_a_string(tmp_path):
    assert RunConfig(models_config="m.yaml").models_config == ["m.yaml"]
    assert RunConfig(models_config=None).models_config == []


# -- one token limit ------------------------------------------------------------------------------------


def test_judge_configured_with_max_completion_tokens_is_sent_only_that(tmp_path):
    with ScriptedServer(world) as server:
        models = _yaml(
            tmp_path / "m.yaml",
            {"target": _entry(server), "GPT-4.1": _entry(server, temperature=0, max_completion_tokens=3000)},
        )
        p = _cli(
            *_run_args(
                tmp_path,
                "--models-config",
                models,
                "--model",
                "target",
                "--judge",
                "GPT-4.1",
                scenarios="child",
                limit=1,
            )
        )
    assert p.returncode == 0, p.stderr
    judged = [r.json for r in server.chat_requests if is_judge(r.json)]
    assert judged and all(b["max_completion_tokens"] == 3000 and "max_tokens" not in b for b in judged)


async def test_a_call_limit_goes_under_the_name_the_config_uses():
    with ScriptedServer() as server:
        settings = ModelSettings(
            key="t",
            backend="openai",
            model_name=DEFAULT_MODEL,
            base_urls=[server.base_url],
            params={"max_completion_tokens": 900},
        )
        model = create_model(settings)
        try:
            await model.generate([Message(role="user", content="hi")], params={"max_tokens": 50})
            await model.generate([Message(role="user", content="hi again")])
        finally:
            await model.aclose()
    first, second = (r.json for r in server.chat_requests)
    assert first["max_completion_tokens"] == 50 and "max_tokens" not in first
    assert second["max_completion_tokens"] == 900 and "max_tokens" not in second
