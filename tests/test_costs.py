"""Issue 18 §3: prices and budgets. A run's calls are priced (genai-prices' data, or a models config's ``price:``)
and written per record and to scores.json (generation, judging, candidate scoring; online and batched; cache hits
as saved); ``run --estimate`` says what a run will need without a call; ``--max-cost`` stops before the budget.

The scripted servers answer with fixed usage (:func:`billed`), so the dollars are computed by hand here: at
$2 / $0.50 / $8 per million input / cached / output tokens, an answer (1,000 prompt tokens, 200 of them cached,
100 completion) costs $0.0025 and a verdict (2,000 prompt, 300 completion) $0.0064."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import genai_prices
import pytest
import yaml

from batch_server import BatchServer
from run_world import records, run_config, run_evaluation
from scripted_server import Reply, ScriptedServer
from specalign.models import ChatRequest, Message, Price, Pricing, Usage, parse_model_spec, pricing_of
from specalign.runs import BudgetExceeded, CostMeter
from specbench_world import is_judge, world

PRICE = {"input": 2.0, "cached_input": 0.5, "output": 8.0}
ANSWER, VERDICT = 0.0025, 0.0064  # (800 × 2 + 200 × 0.5 + 100 × 8) / 1e6 and (2,000 × 2 + 300 × 8) / 1e6
N = 6  # samples: child and code, three prompts each
RUN = ["run", "-s", "child", "-s", "code", "-n", "3"]


def completion_body(body: dict[str, Any], text: str, prompt: int, cached: int, completion: int) -> dict[str, Any]:
    """A chat.completion as OpenAI returns it, with the usage given (cached tokens in prompt_tokens_details)."""
    return {
        "id": "chatcmpl-costs",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }


def billed(body: dict[str, Any]) -> Reply:
    """The scripted world's answers and verdicts, every answer and every verdict with the same usage."""
    usage = (2000, 0, 300) if is_judge(body) else (1000, 200, 100)
    return Reply(body=completion_body(body, world(body), *usage))


def cheap(body: dict[str, Any]) -> Reply:
    """Small usage, well under what the budget reserves for a call: an answer $0.0006, a verdict $0.0012."""
    usage = (200, 0, 100) if is_judge(body) else (100, 0, 50)
    return Reply(body=completion_body(body, world(body), *usage))


def models_file(tmp_path: Path, server: ScriptedServer, **entries: dict[str, Any]) -> str:
    """A models config: each entry names the server's model, with its own extra settings."""
    config = {
        key: {"model_name": "scripted-model", "base_url": server.base_url, **extra} for key, extra in entries.items()
    }
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def chats(server: ScriptedServer) -> int:
    return sum(1 for r in server.requests if r.path.endswith("/chat/completions"))


# -- a run's cost ---------------------------------------------------------------------------------------------------


def test_a_runs_cost_is_counted_per_call_and_cache_hits_are_saved(tmp_path, cli):
    with ScriptedServer(billed) as server:
        models = models_file(tmp_path, server, m={"price": PRICE})
        out, again = tmp_path / "run", tmp_path / "again"
        first = cli(*RUN, "--model", "m", "--judge", "m", "--models-config", models, "--out", str(out))
        assert first.returncode == 0, first.stderr
        assert chats(server) == 2 * N
        second = cli(*RUN, "--model", "m", "--judge", "m", "--models-config", models, "--out", str(again))
        assert second.returncode == 0, second.stderr
        assert chats(server) == 2 * N  # every call of the second run came from the call cache
    assert "cost: $0.053 (generation $0.015, judge $0.038)" in first.stderr
    for g in records(out / "generations.jsonl"):
        assert g["cost"]["online"] == pytest.approx(ANSWER) and g["cost"]["batched_calls"] == 0
    for j in records(out / "judgments.jsonl"):
        assert j["cost"]["online"] == pytest.approx(VERDICT)
    cost = json.loads((out / "scores.json").read_text())["cost"]
    assert cost["generation"]["total"] == pytest.approx(N * ANSWER)
    assert cost["judge"]["total"] == pytest.approx(N * VERDICT)
    assert cost["total"] == cost["online"] == pytest.approx(N * (ANSWER + VERDICT))
    assert cost["batch"] == 0 and cost["saved"] == 0 and cost["unpriced"] == []
    assert cost["prices"]["m"] == {
        "priced": True,
        **PRICE,
        "batch_input": 2.0,  # a server that is no known provider: no batch discount unless the config gives one
        "batch_cached_input": 0.5,
        "batch_output": 8.0,
        "source": "models config",
    }
    # the second run's calls were cache hits: they cost nothing now, and what they would have cost is saved
    saved = json.loads((again / "scores.json").read_text())["cost"]
    assert saved["total"] == 0
    assert saved["saved"] == pytest.approx(N * (ANSWER + VERDICT))
    assert saved["generation"]["saved"] == pytest.approx(N * ANSWER)
    assert "cache hits saved $0.053" in second.stderr

    rows = json.loads(cli("compare", str(out), str(again), "--format", "json").stdout)
    assert rows[0]["cost"] == pytest.approx(N * (ANSWER + VERDICT))
    assert rows[0]["cost_per_sample"] == pytest.approx(ANSWER + VERDICT)
    assert rows[1]["cost"] == 0 and rows[1]["cost_saved"] == pytest.approx(N * (ANSWER + VERDICT))
    table = cli("compare", str(out), str(again))
    assert table.returncode == 0 and "cost" in table.stdout and "$0.053" in table.stdout
    assert "| cost USD |" in cli("compare", str(out), "--format", "markdown").stdout

    html = tmp_path / "report.html"
    assert cli("report", str(out), "-o", str(html)).returncode == 0
    page = html.read_text()
    assert "cost<br>USD" in page and "$0.053" in page
    assert 'class="plot cost-usd"' in page and "USD per sample, every call" in page  # the dollars plot


def test_batched_calls_are_billed_at_the_batch_price(tmp_path):
    """Two answers fail inside the first batch (503) and go out again online, at the online price; the other
    answers and every verdict come through batches, at half price (the config's batch_discount)."""
    busy: set[str] = set()

    def responder(body: dict[str, Any]) -> Reply:
        text = json.dumps(body, sort_keys=True)
        if not is_judge(body) and len(busy) < 2 and text not in busy:
            busy.add(text)
            return Reply.error(503, "busy")
        return billed(body)

    with BatchServer(responder, advance="poll") as server:
        models = models_file(tmp_path, server, bm={"batch": True, "price": {**PRICE, "batch_discount": 0.5}})
        cfg = run_config(server, tmp_path / "run", model="bm", judge="bm", models_config=[models], batch=True)
        res = run_evaluation(cfg.model_copy(update={"batch_poll_s": 0.01}))
    cost = res.scores.cost
    assert cost is not None
    assert cost.generation.batch == pytest.approx(4 * ANSWER / 2) and cost.generation.batched_calls == 4
    assert cost.generation.online == pytest.approx(2 * ANSWER)
    assert cost.judge.batch == pytest.approx(N * VERDICT / 2) and cost.judge.batched_calls == N
    assert cost.judge.online == 0
    assert cost.total == pytest.approx(4 * ANSWER / 2 + 2 * ANSWER + N * VERDICT / 2)
    batched = [g for g in records(tmp_path / "run" / "generations.jsonl") if g["cost"]["batched_calls"]]
    assert len(batched) == 4 and all(g["cost"]["batch"] == pytest.approx(ANSWER / 2) for g in batched)


def test_candidate_scoring_is_counted_apart(tmp_path, cli):
    """Best-of-N's two candidates are scored by the judge: those calls are candidate scoring, not generation; the
    chosen answer's judgment is the scoring call made again, so it comes from the call cache."""

    def seeded(body: dict[str, Any]) -> Reply:  # each sample its own answer, so that each is scored by a call
        if is_judge(body):
            return billed(body)
        return Reply(body=completion_body(body, f"{world(body)} (seed {body.get('seed')})", 1000, 200, 100))

    with ScriptedServer(seeded) as server:
        models = models_file(tmp_path, server, m={"price": PRICE, "seed": 7})
        out = tmp_path / "run"
        res = cli(*RUN, "-m", "m", "-j", "m", "--models-config", models, "--out", str(out), "--method", "best_of_n",
                  "-p", "n=2")  # fmt: skip
    assert res.returncode == 0, res.stderr
    cost = json.loads((out / "scores.json").read_text())["cost"]
    assert cost["generation"]["total"] == pytest.approx(2 * N * ANSWER)
    assert cost["scorer"]["total"] == pytest.approx(2 * N * VERDICT)
    assert cost["judge"]["total"] == 0 and cost["judge"]["saved"] == pytest.approx(N * VERDICT)
    assert "candidate scoring $0.077" in res.stderr


# -- prices ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("local", "llama.cpp in this process"),
        ("gguf:/models/qwen.gguf", "llama.cpp in this process"),
        ("openai:gpt-4.1@http://127.0.0.1:9/v1", "not openai's own API"),
        ("openai:no-such-model-xyz@https://api.openai.com/v1", "genai-prices does not know openai model"),
        ("anthropic:claude-sonnet-4-5@http://127.0.0.1:9", "not anthropic's own API"),
    ],
)
def test_local_and_unknown_models_are_unpriced(spec, why):
    pricing = pricing_of(parse_model_spec(spec))
    assert not pricing.priced and why in pricing.note
    assert pricing.cost(Usage(prompt_tokens=10**6, completion_tokens=10**6)) == 0
    assert pricing.describe() == {"priced": False, "note": pricing.note}


def test_an_unpriced_run_costs_nothing_and_says_so(tmp_path, cli):
    with ScriptedServer(billed) as server:
        out = tmp_path / "run"
        spec = f"openai:scripted-model@{server.base_url}"
        res = cli(*RUN, "--model", spec, "--judge", spec, "--out", str(out), "--max-cost", "0.01")
    assert res.returncode == 0, res.stderr  # an unpriced model's calls count $0 against the budget
    assert "it covers only priced models" in res.stderr
    cost = json.loads((out / "scores.json").read_text())["cost"]
    assert cost["total"] == 0 and cost["unpriced"] == [spec]
    assert cost["generation"]["unpriced_calls"] == N and cost["judge"]["unpriced_calls"] == N
    assert "unpriced, counted as $0" in cost["note"]


def _package_price(model: str, provider: str, usage: dict[str, int], batch: bool = False) -> float:
    context = {"processing": "batch"} if batch else None
    got = genai_prices.calc_price(genai_prices.Usage(**usage), model, provider_id=provider, price_context=context)
    return float(got.total_price)


@pytest.mark.parametrize(
    ("spec", "model", "provider"),
    [
        ("openai:gpt-4.1", "gpt-4.1", "openai"),
        ("openai:gpt-4.1-2025-04-14@https://api.openai.com/v1", "gpt-4.1", "openai"),  # a dated snapshot
        ("openai:gpt-4.1-mini", "gpt-4.1-mini", "openai"),
        ("anthropic:claude-sonnet-4-5", "claude-sonnet-4-5", "anthropic"),
    ],
)
def test_a_known_model_costs_what_genai_prices_says(spec, model, provider, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    pricing = pricing_of(parse_model_spec(spec))
    assert pricing.priced and "genai-prices" in pricing.note
    ours = Usage(prompt_tokens=123_456, cached_prompt_tokens=23_456, completion_tokens=7_890)
    theirs = {"input_tokens": 123_456, "cache_read_tokens": 23_456, "output_tokens": 7_890}
    assert pricing.cost(ours) == pytest.approx(_package_price(model, provider, theirs), rel=1e-12)
    assert pricing.cost(ours, batch=True) == pytest.approx(_package_price(model, provider, theirs, True), rel=1e-12)


def test_a_config_price_overrides_the_packages(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "cheap-batch": {"model_name": "gpt-4.1", "price": {"batch_discount": 0.25}},
                "own-rates": {"model_name": "gpt-4.1", "price": {"output": 10.0}},
            }
        )
    )
    from specalign.models import load_models_config  # noqa: PLC0415

    config = load_models_config(str(path))
    cheap_batch = pricing_of(parse_model_spec("cheap-batch", config)).price
    assert cheap_batch is not None and (cheap_batch.input, cheap_batch.output) == (2.0, 8.0)
    assert (cheap_batch.batch_input, cheap_batch.batch_output) == (0.5, 2.0)
    assert cheap_batch.source.startswith("models config over genai-prices")
    own = pricing_of(parse_model_spec("own-rates", config)).price
    assert own is not None and (own.input, own.cached_input, own.output) == (2.0, 0.5, 10.0)
    assert (own.batch_input, own.batch_output) == (1.0, 5.0)  # OpenAI's half price for batches


@pytest.mark.parametrize(
    ("price", "message"),
    [
        ({"input": -1, "output": 1}, "greater than or equal to 0"),
        ({"input": float("nan"), "output": 1}, "finite number"),
        ({"input": float("inf"), "output": 1}, "finite number"),
        ({"input": "2", "output": 8}, "valid number"),
        ({"input": True, "output": 8}, "valid number"),
        ({"input": 1e9, "output": 1}, "less than or equal to 10000"),
        ({"input": 1, "output": 1, "batch_discount": 0}, "greater than 0"),
        ({"input": 1, "output": 1, "batch_discount": 1.5}, "less than or equal to 1"),
        ({"input": 1, "output": 1, "per_call": 3}, "Extra inputs are not permitted"),
        (5, "valid dictionary"),
        ({"batch_discount": 0.5}, "give input and output"),  # a model genai-prices does not know
    ],
)
def test_a_bad_price_is_one_line_and_no_call(tmp_path, cli, price, message):
    with ScriptedServer(billed) as server:
        models = models_file(tmp_path, server, m={"price": price})
        res = cli("run", "-n", "1", "-s", "child", "--model", "m", "--judge", "m", "--models-config", models,
                  "--out", str(tmp_path / "run"))  # fmt: skip
        assert server.requests == []
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "price" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("budget", ["-1", "nan", "inf", "-inf", "many"])
def test_a_bad_budget_is_refused(tmp_path, cli, budget):
    res = cli(*RUN, "--max-cost", budget, "--out", str(tmp_path / "run"))
    assert res.returncode == 2 and "--max-cost" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "run").exists()


# -- estimates ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "params", "calls"),
    [
        ("vanilla", [], {"model": 1, "judge": 1}),
        ("align3", [], {"model": 3, "judge": 1}),  # one call per stage, continued by prefill
        ("self_refine", ["-p", "max_iters=2"], {"model": 5, "judge": 1}),  # the answer, then feedback and refine
        ("best_of_n", ["-p", "n=3"], {"model": 3, "candidate scoring": 3, "judge": 1}),
        ("tpo", ["-p", "samples=2", "-p", "iterations=1"], {"model": 6, "candidate scoring": 4, "judge": 1}),
    ],
)
def test_estimate_follows_the_methods_calls_and_makes_none(tmp_path, cli, method, params, calls):
    with ScriptedServer(billed) as server:
        models = models_file(tmp_path, server, m={"price": PRICE, "max_tokens": 300, "prefill": True})
        out = tmp_path / "run"
        res = cli(*RUN, "-m", "m", "-j", "m", "--models-config", models, "--out", str(out), "--method", method,
                  *params, "--estimate", "--json")  # fmt: skip
        assert server.requests == []
    assert res.returncode == 0, res.stderr
    assert not out.exists()
    est = json.loads(res.stdout)
    assert (est["to_generate"], est["done"], est["spent"]) == (N, 0, 0)
    lines = {line["role"]: line for line in est["lines"]}
    assert {role: line["calls"] for role, line in lines.items()} == {k: v * N for k, v in calls.items()}
    for line in lines.values():
        assert line["completion_tokens"] == 300 * line["calls"]  # every call at its max_tokens
        cost = (line["prompt_tokens"] * 2.0 + line["completion_tokens"] * 8.0) / 1e6
        assert line["cost"] == pytest.approx(cost)
    assert est["cost"] == pytest.approx(sum(line["cost"] for line in lines.values()))


def test_estimate_subtracts_what_is_done_and_changes_nothing(tmp_path, cli):
    with ScriptedServer(billed) as server:
        models = models_file(tmp_path, server, m={"price": PRICE})
        out = tmp_path / "run"
        done = cli("run", "-s", "child", "-n", "3", "-m", "m", "-j", "m", "--models-config", models, "--out", str(out))
        assert done.returncode == 0, done.stderr
        before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
        asked = len(server.requests)
        res = cli(*RUN, "-m", "m", "-j", "m", "--models-config", models, "--out", str(out), "--estimate")
        assert len(server.requests) == asked
    assert res.returncode == 0, res.stderr
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before
    assert "3 samples to answer and judge, 0 to judge, 3 done of 6" in res.stdout
    assert "4 characters a token" in res.stdout and "an upper bound" in res.stdout
    assert "no max_tokens set for m: 4,096 a call assumed" in res.stdout
    assert "cost $0.027 already" in res.stdout  # three answers and three verdicts
    assert "no model was called and nothing was written" in res.stderr
    model = next(line for line in res.stdout.splitlines() if line.strip().startswith("model"))
    assert " 3 " in model and "12,288" in model  # three calls of 4,096 completion tokens


def test_a_method_can_say_its_calls():
    """The hook a plugin method implements: what it gives is what the estimate counts."""
    from specalign.benchmark import load_benchmark  # noqa: PLC0415
    from specalign.methods import GenerationMethod  # noqa: PLC0415
    from specalign.runs._costs import method_calls  # noqa: PLC0415

    class Twice(GenerationMethod):
        name = "twice"

        async def generate(self, ctx, scenario, prompt):  # noqa: ANN001, ANN202
            raise AssertionError("not called")

        def estimate_calls(self, scenario, prompt, *, prompt_tokens, completion_tokens):  # noqa: ANN001, ANN202
            return [("target", prompt_tokens, completion_tokens), ("score", 0, 0)]

    scenario = load_benchmark("bundled").scenarios[0]
    calls, note = method_calls(Twice(), scenario, scenario.prompts[0], completion=77, can_prefill=False)
    assert note is None and [c[0] for c in calls] == ["target", "score"] and calls[0][2] == 77


# -- budgets --------------------------------------------------------------------------------------------------------


def test_the_meter_counts_what_is_in_flight():
    """Three calls at once, none answered yet: the third would pass the budget with the other two's estimates."""
    price = Price(
        input=1.0, cached_input=1.0, output=1.0, batch_input=1.0, batch_cached_input=1.0, batch_output=1.0, source="t"
    )
    meter = CostMeter(budget=0.005, pricings={"m": Pricing(model="m", price=price, note="t")})
    model: Any = SimpleNamespace(settings=SimpleNamespace(key="m"))
    request = ChatRequest(messages=(Message(role="user", content="x" * 4000),), params={"max_tokens": 1000})
    held = [meter.reserve(model, request), meter.reserve(model, request)]
    assert held == [pytest.approx(0.002004)] * 2  # 1,004 prompt tokens (4 for the message) and 1,000 completion
    with pytest.raises(BudgetExceeded, match="held by calls in flight"):
        meter.reserve(model, request)
    answered = SimpleNamespace(usage=Usage(prompt_tokens=10, completion_tokens=10))
    meter.settle(held[0], model, answered)  # type: ignore[arg-type]
    assert meter.spent == pytest.approx(20 / 1e6) and meter.reserved == pytest.approx(0.002004)
    assert meter.reserve(model, request) == pytest.approx(0.002004)  # fits now that one call has settled
    assert meter.stopped is not None  # the first refusal: the runner starts no new sample after it


def _budget_models(tmp_path: Path, server: ScriptedServer, **extra: Any) -> str:
    """Target ``m`` and judge ``j``: a call is held at about $0.0036 (an answer) or $0.0095 (a verdict), online."""
    price = {**PRICE, "batch_discount": 0.5}
    return models_file(
        tmp_path,
        server,
        m={"price": dict(price), "max_tokens": 300, **extra},
        j={"price": dict(price), "max_tokens": 1000, **extra},
    )


def test_max_cost_stops_before_the_budget_and_a_higher_one_resumes(tmp_path, cli):
    """Six samples in flight, each call held at its estimate until it is answered: the run stops (exit 3, one line)
    having spent, and sent, no more than the budget; a higher budget finishes the same run."""
    out = tmp_path / "run"
    with ScriptedServer(cheap) as server:
        models = _budget_models(tmp_path, server)
        args = [*RUN, "-m", "m", "-j", "j", "--models-config", models, "--out", str(out), "--concurrency", "4"]
        stopped = cli(*args, "--max-cost", "0.02")
        assert stopped.returncode == 3, stopped.stderr
        line = stopped.stderr.strip().splitlines()[-1]
        assert line.startswith("error: stopped before passing --max-cost $0.020") and "held by calls in flight" in line
        sent = [r.json for r in server.requests if r.path.endswith("/chat/completions")]
        assert 0 < len(sent) < 2 * N
        assert sum(0.0012 if is_judge(body) else 0.0006 for body in sent) <= 0.02  # what the server would bill
        scores = json.loads((out / "scores.json").read_text())
        assert 0 < scores["cost"]["total"] <= 0.02 and scores["counts"]["scored"] < N
        done = cli(*args, "--max-cost", "1")
        assert done.returncode == 0, done.stderr
        assert chats(server) == 2 * N  # nothing asked twice
    assert "budget: $1.00 for this run's calls" in done.stderr
    assert json.loads((out / "scores.json").read_text())["counts"]["scored"] == N
    assert json.loads((out / "scores.json").read_text())["cost"]["total"] == pytest.approx(N * (0.0006 + 0.0012))
    assert len(records(out / "generations.jsonl")) == N


def test_max_cost_holds_a_batch_before_it_is_submitted(tmp_path):
    """With --batch, each call waiting for the next batch holds its estimate (at the batch price): the verdicts'
    batch takes only the calls the budget covers, and a rerun with a higher budget submits the rest."""
    out = tmp_path / "run"
    with BatchServer(cheap, advance="poll") as server:
        models = _budget_models(tmp_path, server, batch=True)
        cfg = run_config(server, out, model="m", judge="j", models_config=[models], batch=True, max_cost=0.015)
        cfg = cfg.model_copy(update={"batch_poll_s": 0.01})
        with pytest.raises(BudgetExceeded):
            run_evaluation(cfg)
        stopped = json.loads((out / "scores.json").read_text())["cost"]
        assert 0 < stopped["total"] <= 0.015 and stopped["batch"] == stopped["total"]
        ledger = [r for r in records(out / "batches.jsonl") if r["event"] == "submitted"]
        assert [len(r["custom_ids"]) for r in ledger][0] == N and sum(len(r["custom_ids"]) for r in ledger) < 2 * N
        res = run_evaluation(cfg.model_copy(update={"max_cost": 1.0}))
    assert res.scores.counts["scored"] == N and chats(server) == 0
    ids = [c for r in records(out / "batches.jsonl") if r["event"] == "submitted" for c in r["custom_ids"]]
    assert len(ids) == len(set(ids)) == 2 * N  # nothing submitted twice
    assert res.scores.cost is not None
    assert res.scores.cost.total == pytest.approx(N * (0.0006 + 0.0012) / 2)


def test_a_proxied_model_is_priced_as_its_providers():
    """price: {provider: openai} prices a model at another base URL with OpenAI's figures for its name."""
    from specalign.errors import ConfigError  # noqa: PLC0415
    from specalign.models import pricing_of, settings_from_config  # noqa: PLC0415

    direct = pricing_of(settings_from_config("d", {"model_name": "gpt-4.1-mini"}, "m.yaml"))
    proxied = settings_from_config(
        "p",
        {"model_name": "gpt-4.1-mini", "base_url": "http://127.0.0.1:9/v1", "price": {"provider": "openai"}},
        "m.yaml",
    )
    assert pricing_of(proxied).price == direct.price and direct.priced
    plain = settings_from_config("q", {"model_name": "gpt-4.1-mini", "base_url": "http://127.0.0.1:9/v1"}, "m.yaml")
    assert not pricing_of(plain).priced
    unknown = settings_from_config(
        "u",
        {"model_name": "no-such-model", "base_url": "http://127.0.0.1:9/v1", "price": {"provider": "openai"}},
        "m.yaml",
    )
    with pytest.raises(ConfigError, match="does not know openai model 'no-such-model'"):
        pricing_of(unknown)
