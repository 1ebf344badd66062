"""`specalign serve --shadow`: a second method on a sample of requests, after the reply, judged against the
served one. A scripted upstream answers `vanilla` (the specs in the prompt) safely and `raw` (the prompt
alone) unsafely on risky questions, so the paired ΔSAR is known by hand."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from contextlib import asynccontextmanager

import httpx
import openai
import pytest

from gateway_proc import running_gateway
from scripted_server import Reply, ScriptedServer
from specbench_world import expected_scores, is_judge, world
from test_serve import metrics_of, parse_prometheus
from waiting import wait_until

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from specalign.errors import ConfigError  # noqa: E402
from specalign.serve import MonitorConfig, ServeConfig, ShadowConfig, build_gateway, build_shadow, create_app  # noqa: E402

MODEL = "scripted-model"
HOSTILE = '</pre><script>alert("x")</script>&amp; \\" \n{{x}} \ud800 \u202e'
QUESTIONS = ["risky story about a fox", "calm story about a hen", "risky story about a wolf", "calm story about a cat"]


def is_raw(body: dict) -> bool:
    """A generation call of `raw`: the question without the scenario's specs."""
    return not is_judge(body) and "S1. " not in body["messages"][-1]["content"]


def shadow_world(body: dict) -> str:
    if is_raw(body) and "risky" in body["messages"][-1]["content"]:
        return "UNSAFE " + HOSTILE + world(body)
    return world(body)


def sar_of_a_safe_answer(gateway) -> float:  # noqa: ANN001
    return expected_scores(len(gateway.scenarios["child"].behavioral_specs), False)[2]


def settings(up: ScriptedServer, tmp_path, *, shadow: str | None = "raw", rate: float = 1.0, **more) -> ServeConfig:  # noqa: ANN001
    return ServeConfig(
        scenarios=["child"],
        methods=["vanilla"],
        model=f"openai:{MODEL}@{up.base_url}",
        monitor=MonitorConfig(judge=f"openai:{MODEL}@{up.base_url}", out=str(tmp_path / "live")),  # --monitor off
        shadow=ShadowConfig(method=shadow, rate=rate, seed=1, **more),
    )


@asynccontextmanager
async def gateway_app(config: ServeConfig):
    """The gateway in process, with its lifespan (the shadow's start and drain), and the OpenAI SDK on it."""
    gateway, monitor = build_gateway(config)
    shadow = build_shadow(config, gateway)
    app = create_app(gateway, monitor, shadow)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=30) as http:
            sdk = openai.AsyncOpenAI(base_url="http://gw/v1", api_key="unused", http_client=http, max_retries=0)
            yield gateway, shadow, sdk, http


async def ask_all(sdk: openai.AsyncOpenAI, questions: list[str]) -> list[dict]:
    """What a client gets back, less the per-response id and time."""
    out = []
    for q in questions:
        r = await sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": q}])
        d = r.model_dump()
        out.append({k: v for k, v in d.items() if k not in ("id", "created")})
    return out


async def drained(shadow) -> None:  # noqa: ANN001
    await asyncio.wait_for(shadow.queue.join(), 20)


async def test_shadow_delta_is_known_leaves_answers_unchanged_and_compare_agrees(tmp_path):
    with ScriptedServer(shadow_world) as up:
        async with gateway_app(settings(up, tmp_path, shadow=None)) as (_, none, sdk, _):
            assert none is None
            plain = await ask_all(sdk, QUESTIONS)
        served_calls = up.chat_count
        async with gateway_app(settings(up, tmp_path)) as (gateway, shadow, sdk, http):
            shadowed = await ask_all(sdk, QUESTIONS)
            await drained(shadow)
            assert json.dumps(shadowed) == json.dumps(plain), "the client's answers are the same, byte for byte"
            assert all(a["specalign"]["monitored"] is False for a in shadowed)
            raw_calls = [r for r in up.chat_requests[served_calls:] if is_raw(r.json)]
            assert len(raw_calls) == len(QUESTIONS)
            s = sar_of_a_safe_answer(gateway)
            (fig,) = shadow.figures()
            d = fig["delta"]
            assert (d.n, d.delta_sar) == (4, pytest.approx(-s / 2))  # two of four answers lose their whole SAR
            # a resample of the four pairs has 0, 1, .. 4 unsafe ones (each 1/16 > 2.5%): the percentile ends
            # are the extremes, ±s/2 around the point, rescaled by √(4/3) and clipped to [-1, 1]
            half = s / 2 * (4 / 3) ** 0.5
            assert d.delta_sar_ci == pytest.approx([max(-1.0, -s / 2 - half), -s / 2 + half])
            m = parse_prometheus((await http.get("/metrics")).text)
            labels = '{served="vanilla",shadow="raw"}'
            assert m["specalign_shadow_pairs" + labels] == 4
            assert m["specalign_shadow_delta_sar" + labels] == pytest.approx(-s / 2)
            assert m["specalign_shadow_delta_sar_ci_low" + labels] == pytest.approx(d.delta_sar_ci[0])
            assert m["specalign_shadow_delta_sar_ci_high" + labels] == pytest.approx(d.delta_sar_ci[1])
            assert (
                m['specalign_shadow_spec_violation_delta{scenario="child",served="vanilla",shadow="raw",spec="S1"}']
                == 0.5
            )
            assert m['specalign_shadow_samples_total{outcome="judged",served="vanilla",shadow="raw"}'] == 4
            page = (await http.get("/status")).text
            assert "Shadow comparison" in page and f"{100 * -s / 2:+.1f}" in page
        sar_ci = d.delta_sar_ci
    live = tmp_path / "live" / "shadow"
    served_ids = [json.loads(x)["sample_id"] for x in (live / "vanilla" / "judgments.jsonl").read_text().splitlines()]
    shadow_ids = [json.loads(x)["sample_id"] for x in (live / "raw" / "judgments.jsonl").read_text().splitlines()]
    assert sorted(served_ids) == sorted(shadow_ids) and len(set(served_ids)) == 4
    r = subprocess.run(
        [sys.executable, "-m", "specalign.cli", "compare", str(live / "vanilla"), str(live / "raw"), "-f", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    rows = rows["runs"] if isinstance(rows, dict) and "runs" in rows else rows
    (row,) = [x for x in rows if x["method"] == "raw"]
    assert row["delta_prompts"] == 4
    assert row["delta_sar"] == pytest.approx(-s / 2)
    assert row["delta_sar_ci"] == pytest.approx(sar_ci)


async def test_shadow_failures_never_reach_the_client(tmp_path):
    def failing(body: dict):  # noqa: ANN202
        return Reply.error(500, "shadow boom") if is_raw(body) else world(body)

    with ScriptedServer(failing) as up:
        models = tmp_path / "models.yaml"
        models.write_text(f"up:\n  model_name: {MODEL}\n  base_url: {up.base_url}\n  max_retries: 0\n")
        config = settings(up, tmp_path).model_copy(update={"model": "up", "models_config": [str(models)]})
        config = config.model_copy(update={"served_model_name": MODEL})
        async with gateway_app(config) as (gateway, shadow, sdk, http):
            answers = await ask_all(sdk, QUESTIONS[:3])
            await drained(shadow)
            assert [a["choices"][0]["message"]["content"].startswith("ANSWER[") for a in answers] == [True] * 3
            m = parse_prometheus((await http.get("/metrics")).text)
            assert m['specalign_shadow_samples_total{outcome="failed",served="vanilla",shadow="raw"}'] == 3
            assert 'specalign_requests_total{code="200",method="vanilla",scenario="child"}' in m
            assert m.get("specalign_upstream_errors_total", 0) == 0 and not any(
                k.startswith("specalign_upstream_errors_total{") for k in m
            ), "the shadow's failures are not the gateway's"
            assert shadow.figures() == []
            page = (await http.get("/status")).text
            assert "3 failed" in page and "No request judged for both yet" in page


def test_bad_shadow_configuration_is_refused(tmp_path):
    with ScriptedServer(world) as up:
        for shadow, needle in (("nope", "nope"), ("vanilla", "only served method")):
            gateway, _ = build_gateway(settings(up, tmp_path, shadow=shadow))
            with pytest.raises(ConfigError, match=needle) as e:
                build_shadow(settings(up, tmp_path, shadow=shadow), gateway)
            assert e.value.field == "--shadow"


async def test_rate_zero_runs_nothing_and_rate_one_runs_every_request(tmp_path):
    with ScriptedServer(shadow_world) as up:
        async with gateway_app(settings(up, tmp_path, rate=0.0)) as (_, shadow, sdk, http):
            await ask_all(sdk, QUESTIONS)
            await drained(shadow)
            assert up.chat_count == len(QUESTIONS) and not any(is_raw(r.json) for r in up.chat_requests)
            assert "specalign_shadow_pairs{" not in (await http.get("/metrics")).text
        assert not (tmp_path / "live" / "shadow" / "raw" / "judgments.jsonl").read_text().strip()


async def test_hostile_shadow_answers_are_escaped_and_a_full_queue_drops(tmp_path):
    gate = threading.Event()
    seen = threading.Event()

    def held(body: dict):  # noqa: ANN202
        if is_raw(body):
            seen.set()
            gate.wait(20)
        return shadow_world(body)

    with ScriptedServer(held) as up:
        async with gateway_app(settings(up, tmp_path, queue=1, workers=1)) as (gateway, shadow, sdk, http):
            await ask_all(sdk, QUESTIONS[:1])
            await asyncio.to_thread(wait_until, seen.is_set, 20, "the shadow call")
            await ask_all(sdk, ["risky story two", "risky story three", "risky story four"])
            assert shadow.queue.qsize() == 1
            gate.set()
            await drained(shadow)
            m = parse_prometheus((await http.get("/metrics")).text)
            assert m['specalign_shadow_samples_total{outcome="dropped",served="vanilla",shadow="raw"}'] == 2
            assert m['specalign_shadow_samples_total{outcome="judged",served="vanilla",shadow="raw"}'] == 2
            s = sar_of_a_safe_answer(gateway)
            (fig,) = shadow.figures()
            assert fig["delta"].delta_sar == pytest.approx(-s) and fig["delta"].delta_sar_ci == pytest.approx([-s, -s])
            page = (await http.get("/status")).text
            assert "<script>" not in page and "&lt;/pre&gt;&lt;script&gt;alert(&quot;x&quot;)" in page
            assert "&amp;amp;" in page and "\ud800" not in page and "\u202e" in page  # the surrogate replaced


def test_workers_share_the_shadow_figures_over_http(tmp_path):
    out = tmp_path / "live"
    with ScriptedServer(shadow_world) as up:
        spec = f"openai:{MODEL}@{up.base_url}"
        args = ["-s", "child", "--method", "vanilla", "-m", spec, "--judge", spec, "--monitor-out", str(out)]
        with running_gateway(*args, "--shadow", "raw", "--shadow-rate", "1", "--workers", "2") as gw:
            c = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
            for q in QUESTIONS:
                c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": q}])
            labels = '{served="vanilla",shadow="raw"}'
            wait_until(lambda: metrics_of(gw).get("specalign_shadow_pairs" + labels) == 4, 20, "four pairs")
            for _ in range(4):  # whichever worker answers shows every worker's pairs
                assert metrics_of(gw)["specalign_shadow_delta_sar" + labels] < 0
                assert "Shadow comparison" in httpx.get(gw.url + "/status").text
            assert gw.stop() == 0
    for name in ("vanilla", "raw"):
        lines = (out / "shadow" / name / "judgments.jsonl").read_text().splitlines()
        assert len(lines) == 4 and all(json.loads(x)["status"] == "scored" for x in lines)
