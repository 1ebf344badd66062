"""A fault-injecting OpenAI-compatible server on 127.0.0.1, for reliability tests and benchmarks.

It is :class:`ScriptedServer` (faithful ``/v1/chat/completions`` and ``/v1/models``: usage, finish
reasons, error shapes) answering through :class:`FaultyWorld`. The world answers deterministically
from the request: generation gets ``ANSWER[...]`` and the joint judge gets verdicts computed from the
judged answer (see ``specbench_world``). On top of that, faults are drawn per request at the
configured rates:

- ``server_error``: HTTP 500, 502 or 503 in OpenAI's error shape
- ``rate_limit``: HTTP 429 with ``Retry-After``
- ``reset``: half a response, then a TCP reset
- ``timeout``: no answer before ``timeout_delay`` seconds (set the client's timeout below it)
- ``truncated``: a 200 whose JSON body stops half-way
- ``empty``: a 200 with an empty body
- ``malformed_judge`` (judge requests only): the wrong number of verdicts, prose only, or broken JSON

A draw depends on the seed, on the conversation's opening (system prompt and first user message)
and on how many times that opening has been seen. A rerun therefore meets the same faults, and a
retry can fail again. No opening fails more than ``max_consecutive`` times in a row, so with enough
retries every request ends with the fault-free answer. ``max_consecutive=None`` makes faults
permanent. Every request is counted, and every injected fault is counted by kind.

Standalone (for benchmarks), it serves until interrupted and writes its port to ``--port-file``:

    python tests/helpers/fault_server.py --latency 0.2 --max-concurrency 32 --port-file /tmp/port
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import signal
import sys
import threading
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scripted_server import Reply, ScriptedServer  # noqa: E402
from specbench_world import is_judge, world  # noqa: E402

KINDS = ("server_error", "rate_limit", "reset", "timeout", "truncated", "empty", "malformed_judge")


@dataclass
class FaultRates:
    """Probability of each fault per request (they add up; the rest is answered normally)."""

    server_error: float = 0.0
    rate_limit: float = 0.0
    reset: float = 0.0
    timeout: float = 0.0
    truncated: float = 0.0
    empty: float = 0.0
    malformed_judge: float = 0.0
    max_consecutive: int | None = 2
    retry_after: float = 0.05
    timeout_delay: float = 3.0

    @classmethod
    def parse(cls, text: str) -> FaultRates:
        """``server_error=0.1,rate_limit=0.05`` → FaultRates."""
        kw: dict[str, Any] = {}
        names = {f.name: f.type for f in fields(cls)}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, _, value = part.partition("=")
            if key not in names:
                raise ValueError(f"unknown fault {key!r}: one of {', '.join(names)}")
            kw[key] = None if value == "none" else int(value) if key == "max_consecutive" else float(value)
        return cls(**kw)


class FaultyWorld:
    """The deterministic world with faults drawn per request; a responder for :class:`ScriptedServer`."""

    def __init__(self, rates: FaultRates, seed: int = 0, answer=world):  # noqa: ANN001
        self.rates, self.seed, self.answer = rates, seed, answer
        self.seen: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> Reply | str:
        key = _opening(body)
        judge = is_judge(body)
        with self._lock:
            attempt = self.seen[key]
            self.seen[key] += 1
        limit = self.rates.max_consecutive
        kind = self._draw(key, attempt, judge) if limit is None or attempt < limit else None
        if kind is None:
            return self.answer(body)
        with self._lock:
            self.injected[kind] += 1
        return self._fault(kind, body, random.Random(f"{self.seed}:{key}:{attempt}:how"))

    def _draw(self, key: str, attempt: int, judge: bool) -> str | None:
        x = random.Random(f"{self.seed}:{key}:{attempt}").random()
        for kind in KINDS:
            if kind == "malformed_judge" and not judge:
                continue
            rate = getattr(self.rates, kind)
            if x < rate:
                return kind
            x -= rate
        return None

    def _fault(self, kind: str, body: dict[str, Any], rng: random.Random) -> Reply | str:
        r = self.rates
        if kind == "server_error":
            return Reply.error(rng.choice((500, 502, 503)), "injected server error")
        if kind == "rate_limit":
            return Reply.error(
                429,
                "injected rate limit",
                type="requests",
                code="rate_limit_exceeded",
                headers={"Retry-After": f"{r.retry_after:g}"},
            )
        if kind == "reset":
            return Reply(reset=True)
        if kind == "timeout":
            return Reply(self.answer(body), delay=r.timeout_delay)
        if kind == "truncated":
            return Reply(
                body=json.dumps(
                    {
                        "id": "chatcmpl-x",
                        "object": "chat.completion",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "cut"}}],
                    }
                )[:60]
            )
        if kind == "empty":
            return Reply(body=b"")
        return _malformed_judge(self.answer(body), rng)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": sum(self.seen.values()), "faults": dict(self.injected)}


def _opening(body: dict[str, Any]) -> str:
    """What identifies a conversation across retries and judge corrections: its first two messages."""
    head = [(m.get("role"), m.get("content")) for m in body.get("messages", [])[:2]]
    return hashlib.sha256(json.dumps(head, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _malformed_judge(good: str, rng: random.Random) -> str:
    """A judge answer the parser must refuse: a verdict missing, prose only, or JSON cut short."""
    how = rng.choice(("count", "prose", "broken"))
    if how == "prose":
        return "Having read the answer carefully, I think it follows the specifications quite well."
    try:
        verdicts = json.loads(good)
    except ValueError:  # the tag format: drop its last verdict line or cut it short
        lines = good.splitlines()
        return "\n".join(lines[:-2] + lines[-1:]) if how == "count" else good[: len(good) // 2]
    if how == "count":
        verdicts.pop(sorted(verdicts)[-1])
        return json.dumps(verdicts)
    return json.dumps(verdicts)[: len(json.dumps(verdicts)) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description="fault-injecting OpenAI-compatible server on 127.0.0.1")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds every chat answer takes")
    ap.add_argument("--max-concurrency", type=int, default=None, help="requests served at once (others wait)")
    ap.add_argument("--faults", default="", help="e.g. server_error=0.1,rate_limit=0.05,reset=0.02")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--port-file", required=True, help="file to write the port to once listening")
    args = ap.parse_args()
    faulty = FaultyWorld(FaultRates.parse(args.faults), args.seed)
    server = ScriptedServer(faulty, latency=args.latency, max_concurrency=args.max_concurrency, keep_requests=False)
    server.start()
    Path(args.port_file).write_text(str(server.port))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()
    print(json.dumps({**faulty.stats(), "max_in_flight": server.max_in_flight}), flush=True)


if __name__ == "__main__":
    main()
