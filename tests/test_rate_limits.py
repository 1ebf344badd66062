"""Requests and tokens per minute: models config settings, the client-side limiter on a fake clock, the
``x-ratelimit-*`` headers, and runs against a loopback server that enforces the limits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from ratelimit_server import ServerLimits, go_duration
from scripted_server import DEFAULT_MODEL, Reply, ScriptedServer
from specalign.errors import ConfigError
from specalign.models import Message, ModelSettings, _openai, _ratelimit, create_model, settings_from_config
from specalign.models._ratelimit import (
    HEADROOM,
    MAX_RESET,
    RateLimiter,
    estimate_prompt_tokens,
    limiter_for,
    parse_count,
    parse_duration,
    read_headers,
    retry_after,
)
from specbench_world import world
from waiting import wait_until_async


class FakeClock:
    """Time that moves only when a limiter sleeps; ``block`` makes every sleep last until woken otherwise.

    With a real server, ``settled`` says when every call admitted so far has reached it: a sleep waits for
    that before it moves the time, so a request arrives at the moment it was let go (no latency in fake time).
    """

    def __init__(self, block: bool = False):
        self.now = 0.0
        self.slept: list[float] = []
        self.block = block
        self.settled: Callable[[], bool] = lambda: True

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if self.block:
            await asyncio.Event().wait()
        await asyncio.sleep(0)
        await wait_until_async(self.settled, timeout=30, what="the admitted requests to reach the server")
        self.now += seconds
        self.slept.append(seconds)


def limiter(clock: FakeClock, rpm: float | None = None, tpm: float | None = None) -> RateLimiter:
    return RateLimiter(rpm, tpm, clock=clock, sleep=clock.sleep)


def request(text: str = "hello there", max_tokens: int | None = 100) -> dict:
    body: dict = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": text}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


def usage(prompt: int, completion: int) -> SimpleNamespace:
    return SimpleNamespace(prompt_tokens=prompt, completion_tokens=completion)


def headers(kind: str = "requests", limit: str | None = None, remaining: str | None = None, reset: str | None = None):
    found = {"limit": limit, "remaining": remaining, "reset": reset}
    return {f"x-ratelimit-{name}-{kind}": value for name, value in found.items() if value is not None}


class Refused(Exception):
    status_code = 429

    def __init__(self, headers: dict):
        super().__init__("429")
        self.response = SimpleNamespace(headers=headers)


# -- models config -----------------------------------------------------------------------------------


def test_config_entry_sets_both_limits_and_the_call_limits_say_so():
    entry = {"model_name": "m", "base_url": "http://127.0.0.1:9/v1", "requests_per_minute": 500}
    settings = settings_from_config("m", {**entry, "tokens_per_minute": 200_000, "temperature": 0}, "models.yaml")
    assert (settings.requests_per_minute, settings.tokens_per_minute) == (500, 200_000)
    assert "requests_per_minute" not in settings.params
    described = settings.call_limits().describe()
    assert described == "8 calls in flight (1 endpoint), ≤ 500 requests/min, ≤ 200,000 tokens/min"
    spread = settings.model_copy(update={"base_urls": ["http://a:1/v1", "http://b:1/v1"], "tokens_per_minute": None})
    assert spread.call_limits().describe() == "8 calls in flight, at most 4 at each of 2 endpoints, ≤ 500 requests/min"
    assert (
        settings_from_config("m", entry | {"requests_per_minute": 0.5}, "x")
        .call_limits()
        .describe()
        .endswith("≤ 0.5 requests/min")
    )


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("requests_per_minute", -5, "greater than 0"),
        ("requests_per_minute", 0, "greater than 0"),
        ("tokens_per_minute", "lots", "valid number"),
        ("tokens_per_minute", True, "valid number"),
        ("requests_per_minute", float("inf"), "finite"),
        ("requests_per_minute", [500], "valid number"),
    ],
)
def test_a_bad_limit_is_one_line_naming_the_file_and_field(field, value, says):
    with pytest.raises(ConfigError) as e:
        settings_from_config("m", {"model_name": "m", "base_url": "http://127.0.0.1:9/v1", field: value}, "models.yaml")
    message = str(e.value)
    assert message.startswith(f"models.yaml: m.{field}: ") and says in message and "\n" not in message


def test_the_cli_refuses_a_negative_limit_with_exit_2(cli, tmp_path):
    models = tmp_path / "models.yaml"
    models.write_text("m:\n  model_name: x\n  base_url: http://127.0.0.1:9/v1\n  tokens_per_minute: -1\n")
    p = cli("run", "--models-config", str(models), "--model", "m", "--judge", "m", "--out", str(tmp_path / "run"))
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and str(models) in lines[0] and "m.tokens_per_minute" in lines[0]
    assert not (tmp_path / "run").exists()


# -- reading headers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("2m59.56s", 179.56),
        ("7.66s", 7.66),
        (".5s", 0.5),
        ("150us", 150e-6),
        ("150µs", 150e-6),
        ("3ns", 3e-9),
        ("1d", 86400.0),
        ("12", 12.0),
        ("12.5", 12.5),
        (" 0s ", 0.0),
    ],
)
def test_reset_durations_in_every_format(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "-1s", "-5", "1e3", "s", "1x", "1s2", "1 s", "inf", "nan", "1s\r\nx-evil: 1", "1" * 100, None, 5]
)
def test_a_reset_that_is_not_a_duration_counts_as_absent(text):
    assert parse_duration(text) is None


def test_a_large_bare_number_is_a_unix_time_and_huge_resets_are_capped():
    assert parse_duration("1700000100", wall=1_700_000_000) == pytest.approx(100)
    assert parse_duration("1600000000", wall=1_700_000_000) == 0.0  # already past
    assert parse_duration("9" * 40 + "h") is not None  # finite, if absurd ...
    assert read_headers({"x-ratelimit-reset-requests": "9" * 40 + "h"})["requests"].reset == MAX_RESET  # ... capped


@pytest.mark.parametrize(
    ("text", "count"),
    [("600", 600), ("0", 0), ("60, 60", 60), ("60,50", 50), (" 7 ", 7), ("-1", None), ("1.5", None), ("1e3", None)]
    + [("abc", None), ("", None), ("9" * 20, None), ("٣", None), ("10\r\nx-evil: 1", None), (None, None)],
)
def test_header_counts(text, count):
    assert parse_count(text) == count


def test_read_headers_any_case_clamped_and_partial():
    found = read_headers(
        {
            "X-RateLimit-Limit-Requests": "60",
            "X-RateLimit-Remaining-Requests": "900",  # more than the limit: taken as the limit
            "X-RateLimit-Reset-Requests": "1s",
            "x-ratelimit-limit-tokens": "0",  # a limit of 0 would stop every call: ignored
            "x-ratelimit-remaining-tokens": "149984",
            "x-ratelimit-reset-tokens": "garbage",
        }
    )
    assert (found["requests"].limit, found["requests"].remaining, found["requests"].reset) == (60, 60, 1.0)
    assert (found["tokens"].limit, found["tokens"].remaining, found["tokens"].reset) == (None, 149984, None)
    assert read_headers(None) == {} and read_headers({"content-type": "application/json"}) == {}
    assert read_headers("not headers") == {}


def test_retry_after_forms():
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after({"Retry-After": "3"}) == 3.0
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, wall=1445412480) == 10.0
    assert retry_after({"retry-after": "soon"}) is None and retry_after(None) is None


def test_prompt_estimate_counts_ascii_by_fours_and_other_characters_one_each():
    assert estimate_prompt_tokens([{"role": "user", "content": "abcd" * 10}]) == 10 + 4
    assert estimate_prompt_tokens([{"role": "user", "content": "日本語"}]) == 3 + 4
    parts = [{"type": "text", "text": "abcdefgh"}, {"type": "image_url", "image_url": {"url": "x" * 99}}]
    assert estimate_prompt_tokens([{"role": "user", "content": parts}, {"role": "assistant"}]) == 2 + 4 + 4
    assert estimate_prompt_tokens(None) == 0


# -- pacing on a fake clock -------------------------------------------------------------------------------


async def test_requests_go_evenly_spaced_at_95_percent_of_the_limit():
    clock = FakeClock()
    lim = limiter(clock, rpm=60)
    times: list[float] = []

    async def one(i: int) -> None:
        await lim.acquire(request(f"q{i}"))
        times.append(clock.now)

    await asyncio.gather(*(one(i) for i in range(6)))
    gap = 60 / (60 * HEADROOM)
    assert times == pytest.approx([i * gap for i in range(6)])
    assert lim.admitted == 6 and lim.held == 5


async def test_without_limits_nothing_waits_or_queues():
    clock = FakeClock()
    lim = limiter(clock)
    permits = await asyncio.gather(*(lim.acquire(request(f"q{i}")) for i in range(50)))
    assert len(permits) == 50 and clock.slept == [] and lim.held == 0 and clock.now == 0
    assert lim.describe() == "no rate limits"


async def test_tokens_charge_the_estimate_and_the_real_usage_replaces_it():
    clock = FakeClock()
    lim = limiter(clock, tpm=6000)  # 95 tokens a second
    body = request("abcd" * 10, max_tokens=100)  # estimate: 10 + 4 + 100
    assert lim.estimate(body) == 114
    first = await lim.acquire(body)
    lim.answered(first, usage(10, 4))  # 100 tokens come back
    await lim.acquire(body)
    assert clock.now == pytest.approx(14 / 95)
    await lim.acquire(body)  # no answer yet: the whole estimate is owed
    assert clock.now == pytest.approx((14 + 114) / 95)


async def test_without_max_tokens_the_budget_follows_the_completions_seen():
    lim = limiter(FakeClock(), tpm=6000)
    body = request("abcd", max_tokens=None)
    assert lim.estimate(body) == 5 + _ratelimit.DEFAULT_COMPLETION
    lim.answered(await lim.acquire(body), usage(1, 40))
    assert lim.estimate(body) == 5 + 40
    assert lim.estimate({**body, "extra_body": {"max_completion_tokens": 7}}) == 5 + 7


async def test_waiting_calls_go_in_order():
    clock = FakeClock()
    lim = limiter(clock, rpm=600)
    order: list[int] = []

    async def one(i: int) -> None:
        await lim.acquire(request(f"q{i}"))
        order.append(i)

    await asyncio.gather(*(one(i) for i in range(20)))
    assert order == list(range(20))


# -- what the server states ----------------------------------------------------------------------------------


async def test_limits_learned_from_headers_apply_alone_or_the_lower_with_the_config():
    stated = {**headers("requests", "120", "120", "1s"), **headers("tokens", "40000", "40000", "6m0s")}
    for rpm, expected in ((None, 120), (100, 100), (200, 120)):
        lim = limiter(FakeClock(), rpm=rpm)
        lim.answered(await lim.acquire(request()), None, stated)
        assert (lim.requests_per_minute, lim.tokens_per_minute) == (expected, 40000)
        assert lim.learned == {"requests": 120, "tokens": 40000}
    assert lim.describe() == (
        "≤ 120 requests/min (from the server's x-ratelimit headers), "
        "≤ 40,000 tokens/min (from the server's x-ratelimit headers)"
    )


async def test_remaining_never_reaches_zero():
    clock = FakeClock()
    lim = limiter(clock)
    first = await lim.acquire(request("q0"))
    lim.answered(first, None, headers("requests", remaining="3", reset="10s"))  # no limit stated: no refill known
    for i in (1, 2):  # leave 2, then 1
        await lim.acquire(request(f"q{i}"))
    assert clock.now == 0
    await lim.acquire(request("q3"))  # would leave 0: waits for the reset
    assert clock.now == pytest.approx(10)


async def test_with_a_stated_limit_the_remaining_count_refills_toward_it():
    clock = FakeClock()
    lim = limiter(clock, rpm=1e6)  # a config limit far above the server's own
    first = await lim.acquire(request("q0"))
    lim.answered(first, None, headers("requests", limit="6000", remaining="5999", reset="10ms"))
    assert lim.requests_per_minute == 6000
    lim.answered(first, None, headers("requests", remaining="0", reset="60s"))  # spent (by another process?)
    await lim.acquire(request("q1"))  # the call needs to leave 1: waits for 2 to refill, at 6000 a minute
    assert clock.now == pytest.approx(2 * 60 / 6000, rel=1e-3)


async def test_a_limit_learned_late_starts_in_debt_for_what_the_server_says_was_used():
    clock = FakeClock()
    lim = limiter(clock)
    first = await lim.acquire(request("q0"))
    lim.answered(first, None, headers("requests", limit="100", remaining="20", reset="50s"))
    await lim.acquire(request("q1"))
    assert clock.now == pytest.approx(80 / (100 * HEADROOM / 60))  # the 80 used are paid off first


async def test_a_call_held_back_goes_as_soon_as_an_answer_shows_room():
    clock = FakeClock(block=True)  # a sleep never ends: only an answer can release the call
    lim = limiter(clock)
    first = await lim.acquire(request("q0"))
    lim.answered(first, None, headers("requests", remaining="1", reset="30s"))
    held = asyncio.ensure_future(lim.acquire(request("q1")))
    await wait_until_async(lambda: lim.held == 1, timeout=10, what="the call to be held back")
    assert not held.done()
    lim.answered(first, None, headers("requests", remaining="50", reset="30s"))  # a later word on the same count
    assert (await asyncio.wait_for(held, 5)).sent_requests == 2 and clock.now == 0


async def test_a_429_holds_the_other_calls_for_its_retry_after_but_not_its_own_retry():
    clock = FakeClock()
    lim = limiter(clock, tpm=60_000)
    refused_body, other = request("refused"), request("other")
    permit = await lim.acquire(refused_body)
    lim.failed(permit, Refused({"retry-after": "3", **headers("requests", remaining="5", reset="1s")}))
    assert lim.refused == 1
    await lim.acquire(refused_body)  # its retry has waited its Retry-After in the backend already
    assert clock.now == 0
    await lim.acquire(other)
    assert clock.now == pytest.approx(3)


async def test_one_limiter_per_model_and_key_with_the_lowest_configured_limits():
    def make(key: str, **kw) -> ModelSettings:
        return ModelSettings(key=key, backend="openai", model_name="m", base_urls=["http://127.0.0.1:9/v1"], **kw)

    a = limiter_for(make("a", requests_per_minute=500))
    b = limiter_for(make("b", requests_per_minute=300, tokens_per_minute=9000))
    assert a is b and (a.requests_per_minute, a.tokens_per_minute) == (300, 9000)
    assert limiter_for(make("c", api_key_env="OTHER_KEY")) is not a


# -- against a server that enforces its limits -------------------------------------------------------------


@pytest.fixture
def fake_time(monkeypatch):
    """One fake clock for the server and the limiters; backoff sleeps are not taken."""
    clock = FakeClock()
    monkeypatch.setattr(_ratelimit, "_clock", clock)
    monkeypatch.setattr(_ratelimit, "_sleep", clock.sleep)

    async def no_backoff(seconds: float) -> None:
        await asyncio.sleep(0)

    monkeypatch.setattr(_openai, "_sleep", no_backoff)
    return clock


async def _drive(server: ScriptedServer, n: int, words: int = 5, max_tokens: int = 60, **kw) -> RateLimiter:
    """``n`` concurrent calls: prompts of ``words`` to ``words`` + 29 three-letter words (a token each to
    both the server and the limiter's estimate). Returns the model's limiter."""
    settings = ModelSettings(
        key="limited", backend="openai", model_name=DEFAULT_MODEL, base_urls=[server.base_url], **kw
    )
    model = create_model(settings)
    limiter = model.backend._limiter
    if isinstance(_ratelimit._clock, FakeClock):
        _ratelimit._clock.settled = lambda: server.request_count >= limiter.admitted
    params = {"max_tokens": max_tokens}
    try:
        outs = await asyncio.gather(
            *(
                model.generate([Message(role="user", content="abc " * (words + i % 30))], params=params)
                for i in range(n)
            )
        )
    finally:
        await model.aclose()
    assert len(outs) == n
    return limiter


async def test_configured_requests_per_minute_hold_without_a_429_storm(fake_time):
    limits = ServerLimits(requests_per_minute=120, clock=fake_time, headers=False)
    with ScriptedServer(limits, keep_requests=False) as server:
        await _drive(server, 240, requests_per_minute=120, calls_in_flight=16)
    assert limits.refused / limits.received < 0.01
    assert 0.85 < limits.accepted / (fake_time.now / 60) / 120 <= 1  # fake time: the pace the limiter set


async def test_configured_tokens_per_minute_hold_without_a_429_storm(fake_time):
    limits = ServerLimits(tokens_per_minute=6_000, clock=fake_time, headers=False)
    with ScriptedServer(limits, keep_requests=False) as server:  # answers cut at max_tokens: the estimate is close
        await _drive(server, 120, words=100, max_tokens=20, tokens_per_minute=6_000, calls_in_flight=16)
    assert limits.refused / limits.received < 0.01
    assert 0.85 < limits.tokens / (fake_time.now / 60) / 6_000 <= 1


async def test_limits_learned_from_the_server_alone_hold_too(fake_time):
    limits = ServerLimits(requests_per_minute=120, tokens_per_minute=20_000, clock=fake_time)
    with ScriptedServer(limits, keep_requests=False) as server:
        limiter = await _drive(server, 240, calls_in_flight=16)
    assert limits.refused / limits.received < 0.01
    assert limits.accepted / (fake_time.now / 60) / 120 > 0.85
    assert limiter.learned == {"requests": 120, "tokens": 20_000} and limiter.requests_per_minute == 120


async def test_calls_in_flight_stay_as_configured_when_the_limits_do_not_bind():
    with ScriptedServer(latency=0.3) as server:
        await _drive(server, 24, requests_per_minute=1e6, tokens_per_minute=1e9, calls_in_flight=12)
    assert server.max_in_flight == 12


async def test_a_429_with_retry_after_is_still_retried(fake_time):
    with ScriptedServer() as server:
        server.script(Reply.error(429, "slow down", code="rate_limit_exceeded", headers={"Retry-After": "2"}))
        limiter = await _drive(server, 1, requests_per_minute=600)
    assert server.chat_count == 2 and limiter.refused == 1


def test_server_headers_use_go_durations():
    assert [go_duration(s) for s in (0.02, 1, 1.5, 60, 361)] == ["20ms", "1s", "1.5s", "1m0s", "6m1s"]
    assert all(parse_duration(go_duration(s)) == pytest.approx(s, rel=0.01) for s in (0.02, 1.5, 59, 61, 3600))


# -- the run line ----------------------------------------------------------------------------------------------


def test_the_run_line_shows_the_configured_limits(cli, tmp_path: Path):
    with ScriptedServer(world, keep_requests=False) as server:
        models = tmp_path / "models.yaml"
        models.write_text(
            f"m:\n  model_name: {DEFAULT_MODEL}\n  base_url: {server.base_url}\n  timeout: 30\n"
            "  requests_per_minute: 100000\n  tokens_per_minute: 50000000\n"
        )
        p = cli(
            "run", "--scenario", "child", "--limit", "1", "--no-cache", "--models-config", str(models),
            "--model", "m", "--judge", "m", "--concurrency", "4", "--out", str(tmp_path / "run"),
        )  # fmt: skip
    assert p.returncode == 0, p.stderr
    expected = "concurrency: model and judge 4 calls in flight (1 endpoint), ≤ 100,000 requests/min, "
    assert expected + "≤ 50,000,000 tokens/min · 1 sample in flight" in p.stderr
