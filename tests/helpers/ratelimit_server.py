"""A responder for :class:`ScriptedServer` that enforces requests and tokens per minute, as hosted APIs do.

    limits = ServerLimits(requests_per_minute=120, tokens_per_minute=6_000)
    with ScriptedServer(limits) as server:
        ...
    assert limits.refused == 0

Counts over a sliding window (``window`` seconds of ``clock``, 60 by default): a request that would
take the window past either limit gets OpenAI's 429 (``rate_limit_exceeded``, type ``requests`` or
``tokens``) with ``Retry-After`` / ``retry-after-ms`` (when the window will have room) and is not
counted. Every answer, refusals included, carries ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``:
the limit per minute, what is left in the window, and how long until the window is empty (Go durations:
``20ms``, ``1.5s``, ``1m0s``). A request costs its prompt's words plus its answer's words
(``count_tokens``, as the server reports usage), counted when it arrives.

``clock`` may be a test's fake clock or a scaled one (a benchmark that runs time faster): every time the
server states (resets, Retry-After) is in its seconds.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from scripted_server import Reply, count_tokens, echo_responder


class ServerLimits:
    """Requests/tokens per minute over a sliding window; a responder (call it with a request body)."""

    def __init__(
        self,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        *,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        answer: Callable[[dict[str, Any]], str] = echo_responder,
        headers: bool = True,
    ):
        self.rpm, self.tpm = requests_per_minute, tokens_per_minute
        self.window = window
        self.clock = clock
        self.answer = answer
        self.headers = headers  # False: no x-ratelimit headers (a server that only refuses)
        self._log: deque[tuple[float, int]] = deque()  # (arrival, tokens) of the requests counted
        self._lock = threading.Lock()
        self.accepted = 0
        self.refused = 0
        self.tokens = 0
        #: (arrival, tokens) of every accepted request, for throughput figures
        self.history: list[tuple[float, int]] = []
        #: the most requests and tokens the window ever held
        self.peak_requests = 0
        self.peak_tokens = 0

    @property
    def received(self) -> int:
        return self.accepted + self.refused

    def _limit(self, per_minute: int | None) -> float:
        return math.inf if per_minute is None else per_minute * self.window / 60

    def __call__(self, body: dict[str, Any]) -> Reply:
        text = self.answer(body)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        words = text.split()
        if isinstance(limit, int) and len(words) > limit:
            words = words[:limit]
        prompt = sum(
            count_tokens(m.get("content") or "") for m in body["messages"] if isinstance(m.get("content"), str)
        )
        cost = prompt + len(words)
        with self._lock:
            now = self.clock()
            while self._log and self._log[0][0] <= now - self.window:
                self._log.popleft()
            used_r, used_t = len(self._log), sum(c for _, c in self._log)
            over = None
            if used_r + 1 > self._limit(self.rpm):
                over = "requests"
            elif used_t + cost > self._limit(self.tpm):
                over = "tokens"
            if over is None:
                self._log.append((now, cost))
                used_r, used_t = used_r + 1, used_t + cost
                self.accepted += 1
                self.tokens += cost
                self.history.append((now, cost))
                self.peak_requests = max(self.peak_requests, used_r)
                self.peak_tokens = max(self.peak_tokens, used_t)
            else:
                self.refused += 1
            state = self._state(now, used_r, used_t)
            wait = None if over is None else self._room_in(now, cost if over == "tokens" else 0)
        if over is None:
            return Reply(text, headers=state)
        retry = {"retry-after-ms": str(math.ceil(wait * 1000)), "retry-after": str(math.ceil(wait))}
        message = (
            f"Rate limit reached for {body.get('model')} on {over} per min: limit "
            f"{self.rpm if over == 'requests' else self.tpm}. Please try again in {go_duration(wait)}."
        )
        return Reply.error(429, message, type=over, code="rate_limit_exceeded", headers={**state, **retry})

    def _state(self, now: float, used_r: int, used_t: int) -> dict[str, str]:
        if not self.headers:
            return {}
        empty = go_duration(self._log[-1][0] + self.window - now if self._log else 0.0)
        out: dict[str, str] = {}
        for kind, per_minute, used in (("requests", self.rpm, used_r), ("tokens", self.tpm, used_t)):
            if per_minute is not None:
                out[f"x-ratelimit-limit-{kind}"] = str(per_minute)
                out[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(self._limit(per_minute) - used)))
                out[f"x-ratelimit-reset-{kind}"] = empty
        return out

    def _room_in(self, now: float, cost: int) -> float:
        """Seconds until the window has room for one more request of ``cost`` tokens (a whole window if never)."""
        limit_r, limit_t = self._limit(self.rpm), self._limit(self.tpm)
        used_r, used_t = len(self._log), sum(c for _, c in self._log)
        wait = 0.0
        for t, c in self._log:
            if used_r + 1 <= limit_r and used_t + cost <= limit_t:
                break
            used_r, used_t, wait = used_r - 1, used_t - c, t + self.window - now
        if used_r + 1 > limit_r or used_t + cost > limit_t:
            return self.window
        return max(0.001, wait)


def go_duration(seconds: float) -> str:
    """Seconds as Go writes a duration, as OpenAI's reset headers do: ``20ms``, ``1.5s``, ``6m0s``."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.3g}s"
