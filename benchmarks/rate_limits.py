"""Requests and tokens per minute against a server that enforces them: throughput as a share of the limit,
and the share of requests the server refused. Writes the "Rate limits" section of docs/benchmarks.md.

The server is tests/helpers' ScriptedServer with a ServerLimits responder, in this process on 127.0.0.1: a
sliding window of one minute holding 600 requests and 60,000 tokens (prompt + answer words), OpenAI-shaped
429s with Retry-After, and x-ratelimit-* headers on every answer (or none, where a phase says so). It
answers after LATENCY s (real time). The client is the model layer: one model from a models config, with
CONCURRENCY workers that each send their next call as soon as the last is answered (no cache), for
--seconds per phase.

Time runs --scale times faster for the server's window and for the client's limiter (and Retry-After
waits are scaled the same way), so a minute of limits passes in 60/scale s: the default (scale 10, 12 s
a phase) meets the window twice per phase, in about a minute overall. Rates are per scaled minute.

    .venv/bin/python benchmarks/rate_limits.py
    .venv/bin/python benchmarks/rate_limits.py --seconds 6 --no-write
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests" / "helpers"))
from demo import write_section  # noqa: E402
from ratelimit_server import ServerLimits  # noqa: E402
from scripted_server import DEFAULT_MODEL, ScriptedServer  # noqa: E402
from specalign.errors import ModelError  # noqa: E402
from specalign.models import Message, _ratelimit, create_model, load_models_config, parse_model_spec  # noqa: E402

SECTION = "Rate limits"
RPM, TPM = 600, 60_000
CONCURRENCY = 64
LATENCY = 0.15
WORDS = "the little owl found a lantern and shared its light with every friend in the wood".split()


@dataclass
class Phase:
    name: str
    config: dict = field(default_factory=dict)  # requests_per_minute / tokens_per_minute in the models config
    headers: bool = True  # does the server send x-ratelimit-* headers?
    words: int = 20  # prompt words (+0..9)
    max_tokens: int = 30


LIMITS = {"requests_per_minute": RPM, "tokens_per_minute": TPM}
PHASES = [
    Phase("config, requests bind", LIMITS, words=20, max_tokens=30),
    Phase("config, tokens bind", LIMITS, words=150, max_tokens=120),
    Phase("config, server sends no headers", LIMITS, headers=False, words=20, max_tokens=30),
    Phase("headers alone (no config)", {}, words=20, max_tokens=30),
    Phase("neither (no limiter at work)", {}, headers=False, words=20, max_tokens=30),
]


def prompt(i: int, words: int) -> str:
    n = words + i % 10
    return f"request {i}: " + " ".join(WORDS[(i + k) % len(WORDS)] for k in range(n))


async def run_phase(phase: Phase, seconds: float, scale: float, tmp: Path) -> dict:
    def clock() -> float:
        return time.monotonic() * scale

    async def sleep(s: float) -> None:
        await asyncio.sleep(s / scale)

    _ratelimit._clock, _ratelimit._sleep = clock, sleep  # the limiters made from here on
    limits = ServerLimits(RPM, TPM, clock=clock, headers=phase.headers)
    with ScriptedServer(limits, latency=LATENCY, keep_requests=False) as server:
        config = tmp / f"models-{abs(hash(phase.name))}.yaml"
        entries = {"model_name": DEFAULT_MODEL, "base_url": server.base_url, "timeout": 30, **phase.config}
        config.write_text("m:\n" + "".join(f"  {k}: {v}\n" for k, v in entries.items()))
        settings = parse_model_spec("m", load_models_config(str(config)))
        settings = settings.model_copy(update={"calls_in_flight": CONCURRENCY})
        model = create_model(settings, None)
        model.backend.backoff_scale = 1 / scale  # Retry-After is in the server's (scaled) seconds
        limiter = model.backend._limiter
        counter, failures = itertools.count(), 0
        start = clock()
        stop = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal failures
            while time.monotonic() < stop:
                i = next(counter)
                message = [Message(role="user", content=prompt(i, phase.words))]
                try:
                    await model.generate(message, params={"max_tokens": phase.max_tokens})
                except ModelError:
                    failures += 1

        try:
            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        finally:
            await model.aclose()
    minutes = (max(t for t, _ in limits.history) - start) / 60 if limits.history else float("nan")
    return {
        "phase": phase,
        "configured": _ratelimit.rates_text(settings.requests_per_minute, settings.tokens_per_minute) or "none",
        "in_force": limiter.describe(),
        "received": limits.received,
        "refused": limits.refused,
        "failed": failures,
        "rpm": limits.accepted / minutes,
        "tpm": limits.tokens / minutes,
        "peak_requests": limits.peak_requests,
        "peak_tokens": limits.peak_tokens,
        "held": limiter.held,
        "admitted": limiter.admitted,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| phase | models config | limits in force at the end | requests | refused (429) | requests/min | "
        "tokens/min | binding limit reached | busiest minute |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        share = max(r["rpm"] / RPM, r["tpm"] / TPM)
        busiest = f"{r['peak_requests'] / RPM:.0%} of requests, {r['peak_tokens'] / TPM:.0%} of tokens"
        refused = f"{r['refused']:,} ({r['refused'] / max(1, r['received']):.1%})"
        if r["failed"]:
            refused += f"; {r['failed']} calls failed after their retries"
        lines.append(
            f"| {r['phase'].name} | {r['configured']} | {r['in_force']} | {r['received']:,} | {refused} | "
            f"{r['rpm']:,.0f} ({r['rpm'] / RPM:.0%}) | {r['tpm']:,.0f} ({r['tpm'] / TPM:.0%}) | {share:.0%} | {busiest} |"
        )
    return "\n".join(lines)


def body(rows: list[dict], args: argparse.Namespace, wall: float) -> str:
    day = datetime.date.today().isoformat()
    cores = len(os.sched_getaffinity(0))
    return f"""`nice -n 10 .venv/bin/python benchmarks/rate_limits.py` ({day}, {platform.machine()}, {cores} cores \
shared with other work; Python {platform.python_version()}; {wall:.0f} s in all). The server is \
`tests/helpers/ratelimit_server.py` on 127.0.0.1: {RPM:,} requests and {TPM:,} tokens (prompt + answer words) in any \
sliding minute, OpenAI-shaped 429s with `Retry-After`, and `x-ratelimit-*` headers on every answer unless the phase \
says otherwise; it answers after {LATENCY * 1000:.0f} ms. The client is the model layer: one model from a models \
config, {CONCURRENCY} workers that each send their next call as soon as the last is answered (no cache). Time runs \
{args.scale:g}× faster for the server's window and the client's limiter, so a minute of limits passes in \
{60 / args.scale:g} s and each phase ({args.seconds:g} s) meets the window {args.seconds * args.scale / 60:g} times; \
rates are per scaled minute, from the phase's start to its last request. *Binding limit reached* is the larger of \
the two rates as a share of its limit (target: 90% or more; refused: under 1%); *busiest minute* is the most the server's window ever \
held (it never lets it pass 100%).

{table(rows)}

The limiter paces at 95% of each limit, so 95% is the most a phase can reach. What it loses below that: calls \
let go a little late by a busy event loop (a pace catches up at most a second's worth), the server's remaining \
count (a call waits while it would leave the server nothing), and where tokens bind, the estimate held for calls \
in flight until their usage comes back (about four characters a token, while the server counts words). With the \
headers alone, the first calls go before any limit is known; once it is, the limiter first pays off what it sent. \
Without a limiter at work every worker runs into the limit, and only the 429s' Retry-After (which holds the other \
calls back too) slows them.
"""


async def main_async(args: argparse.Namespace) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for phase in PHASES:
            row = await run_phase(phase, args.seconds, args.scale, Path(tmp))
            print(
                f"{phase.name}: {row['received']} requests, {row['refused']} refused, {row['rpm']:.0f} rpm, "
                f"{row['tpm']:.0f} tpm, held {row['held']}, in force {row['in_force']}",
                flush=True,
            )
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="real seconds a phase runs")
    parser.add_argument("--scale", type=float, default=10.0, help="how much faster the limits' time runs")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    args = parser.parse_args()
    t0 = time.perf_counter()
    rows = asyncio.run(main_async(args))
    text = body(rows, args, time.perf_counter() - t0)
    if args.no_write:
        print(text)
    else:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
