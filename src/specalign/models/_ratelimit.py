"""Requests and tokens per minute, held on the client side.

Two sources set the limits of one model: its models config entry (``requests_per_minute``,
``tokens_per_minute``) and what the server states in the ``x-ratelimit-*`` headers of its answers,
429s included. A stated limit applies when the config gives none; when both give one, the lower.

One :class:`RateLimiter` serves every call of one model in a process (:func:`limiter_for`). A call
asks it for a turn just before it is sent (:meth:`RateLimiter.acquire`) and reports how it went
(:meth:`RateLimiter.answered`, :meth:`RateLimiter.failed`):

- **Pacing.** Each limit is a bucket that refills at ``HEADROOM`` (95%) of the limit, starts empty and
  banks at most one second's worth (``CATCH_UP``): a call goes once the bucket is out of debt, and takes
  its whole cost. Calls are spaced evenly, never sent in a burst, so any stretch of time holds at most
  its share of the limit plus a second's worth and one call, and a server that counts over a window
  shorter than a minute sees no burst either.
- **Tokens.** Before it is sent, a call costs an estimate of its prompt (about four characters a
  token, one per non-ASCII character) plus its completion budget (``max_tokens`` or
  ``max_completion_tokens``; without one, the mean completion seen so far). Its real usage replaces the
  estimate when the answer arrives.
- **Remaining.** The ``x-ratelimit-remaining-*`` and ``-reset-*`` headers of the latest answer hold
  calls back so that the server's remaining count never reaches zero: a call waits while what was left,
  less what was sent since, plus what has refilled since (linearly, up to the full limit at the reset),
  would not cover it.
- **429.** The refused call retries after its ``Retry-After`` as before; the other calls wait as long.

Waiting calls keep their order, and only a limit that binds holds a call back: the calls in flight
stay as the run or the models config sets them.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import re
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: the limits are per minute
WINDOW = 60.0
#: the share of a limit that calls are paced at: room for clocks and estimates that differ a little
HEADROOM = 0.95
#: seconds of a limit a pace may bank: a call let go late (a busy event loop) does not delay the next ones
CATCH_UP = 1.0
#: a reset further away than this is a daily limit or nonsense: looked at again after this long
MAX_RESET = 60.0
#: the longest ``Retry-After`` other calls wait for (the backend treats a longer one as an exhausted quota)
MAX_COOLDOWN = 120.0
#: a header count above this is taken for garbage
MAX_COUNT = 10**12
#: a bare number this large in a reset header is a Unix time, not a duration
EPOCH_FLOOR = 1e9
#: what a call must leave of the server's remaining count (1 request, 1 token)
RESERVE = 1
#: tokens counted for each message on top of its text (role and separators)
PER_MESSAGE = 4
#: the completion budget of a call without ``max_tokens``, until answers have shown a better guess
DEFAULT_COMPLETION = 1024
KINDS = ("requests", "tokens")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]

#: the clock and sleep of limiters made without their own; tests and benchmarks replace them
_clock: Clock = time.monotonic
_sleep: Sleep = asyncio.sleep


# -- reading headers ------------------------------------------------------------------------------

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PART = re.compile(rf"({_NUMBER})(ns|us|µs|μs|ms|s|m|h|d)")
_DURATION = re.compile(rf"(?:{_NUMBER}(?:ns|us|µs|μs|ms|s|m|h|d))+")


def parse_duration(text: Any, *, wall: float | None = None) -> float | None:
    """Seconds in a reset header: a Go duration (``20ms``, ``1s``, ``6m0s``, ``1h2m3.5s``), plain seconds
    (``12.5``), or a Unix time (seconds until it, ``wall`` being now); None for anything else
    (a sign, an exponent, garbage, a value that is not finite)."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    if not text or len(text) > 64:
        return None
    if re.fullmatch(_NUMBER, text):
        value = float(text)
        if not math.isfinite(value):
            return None
        if value >= EPOCH_FLOOR:
            return max(0.0, value - (time.time() if wall is None else wall))
        return value
    if not _DURATION.fullmatch(text):
        return None
    total = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
    return total if math.isfinite(total) else None


def parse_count(text: Any) -> int | None:
    """A whole number ≥ 0 in a header; for a header sent twice (``60, 60``) the smaller. None for
    anything else (a sign, a fraction, garbage, more than ``MAX_COUNT``)."""
    if not isinstance(text, str) or len(text) > 128:
        return None
    parts = [p.strip() for p in text.split(",")]
    if not parts or not all(p.isascii() and p.isdigit() and len(p) <= 13 for p in parts):
        return None
    value = min(int(p) for p in parts)
    return value if value <= MAX_COUNT else None


def retry_after(headers: Any, *, wall: float | None = None) -> float | None:
    """Seconds a server asked to wait: ``retry-after-ms``, else ``retry-after`` (seconds or an HTTP date)."""
    found = _lowered(headers)
    ms = parse_duration(found.get("retry-after-ms"))
    if ms is not None and ms < EPOCH_FLOOR:
        return ms / 1000
    value = found.get("retry-after")
    seconds = parse_duration(value, wall=wall)
    if seconds is not None or not isinstance(value, str):
        return seconds
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - (time.time() if wall is None else wall))


@dataclass(frozen=True)
class Reading:
    """What one answer says about one limit: its size per minute, what is left, seconds until it is full again."""

    limit: int | None
    remaining: int | None
    reset: float | None


def read_headers(headers: Any, *, wall: float | None = None) -> dict[str, Reading]:
    """The ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` of an answer, by kind; a header that
    does not parse counts as absent, a limit of 0 too (it would stop every call), and a reset is
    at most ``MAX_RESET``."""
    found = _lowered(headers)
    out: dict[str, Reading] = {}
    for kind in KINDS:
        limit = parse_count(found.get(f"x-ratelimit-limit-{kind}")) or None
        remaining = parse_count(found.get(f"x-ratelimit-remaining-{kind}"))
        reset = parse_duration(found.get(f"x-ratelimit-reset-{kind}"), wall=wall)
        if limit is not None and remaining is not None:
            remaining = min(remaining, limit)
        if reset is not None:
            reset = min(reset, MAX_RESET)
        if (limit, remaining, reset) != (None, None, None):
            out[kind] = Reading(limit, remaining, reset)
    return out


def _lowered(headers: Any) -> dict[str, Any]:
    if headers is None:
        return {}
    try:
        return {str(k).lower(): v for k, v in headers.items()}
    except (AttributeError, TypeError):
        return {}


# -- what a call costs ----------------------------------------------------------------------------


def estimate_prompt_tokens(messages: Any) -> int:
    """About four ASCII characters a token, one token per other character, and ``PER_MESSAGE`` a message."""
    total = 0
    for message in messages if isinstance(messages, list | tuple) else ():
        content = message.get("content") if isinstance(message, Mapping) else None
        texts: list[str] = [content] if isinstance(content, str) else []
        if isinstance(content, list):  # content parts: count the text ones
            texts = [p["text"] for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str)]
        for text in texts:
            ascii_chars = len(text.encode("ascii", "ignore"))
            total += -(-ascii_chars // 4) + len(text) - ascii_chars
        total += PER_MESSAGE
    return total


def completion_budget(kwargs: Mapping[str, Any]) -> int | None:
    """The request's completion-token limit, under either name, from its parameters or ``extra_body``."""
    extra = kwargs.get("extra_body") or {}
    for source in (kwargs, extra if isinstance(extra, Mapping) else {}):
        for name in ("max_completion_tokens", "max_tokens"):
            value = source.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def rates_text(requests_per_minute: float | None, tokens_per_minute: float | None) -> str:
    """``≤ 500 requests/min, ≤ 200,000 tokens/min`` (either part alone; empty without both)."""
    parts = []
    if requests_per_minute is not None:
        parts.append(f"≤ {_number(requests_per_minute)} requests/min")
    if tokens_per_minute is not None:
        parts.append(f"≤ {_number(tokens_per_minute)} tokens/min")
    return ", ".join(parts)


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.6g}"


# -- pacing ---------------------------------------------------------------------------------------


class _Pace:
    """One limit: refills at ``HEADROOM`` × the limit per minute, keeps at most ``CATCH_UP`` seconds' worth,
    may run into debt. It starts empty: a run begins with no burst."""

    def __init__(self, per_minute: float, now: float):
        self.per_minute = per_minute
        self.rate = per_minute * HEADROOM / WINDOW
        self.cap = self.rate * CATCH_UP
        self.level = 0.0
        self.at = now

    def retune(self, per_minute: float, now: float) -> None:
        self._refill(now)
        self.per_minute, self.rate = per_minute, per_minute * HEADROOM / WINDOW
        self.cap = self.rate * CATCH_UP

    def wait(self, now: float) -> float:
        self._refill(now)
        return 0.0 if self.level >= -1e-9 else -self.level / self.rate

    def add(self, amount: float, now: float) -> None:
        """``amount`` back (a cost when negative), up to the cap."""
        self._refill(now)
        self.level = min(self.cap, self.level + amount)

    def _refill(self, now: float) -> None:
        if now > self.at:
            self.level = min(self.cap, self.level + (now - self.at) * self.rate)
            self.at = now


@dataclass
class _Snapshot:
    """The server's count for one limit as the latest answer stated it.

    ``sent`` is the limiter's running total (requests, or estimated tokens) just after the answered
    call was admitted: whatever was admitted since the server may not have counted yet.
    """

    remaining: float
    limit: float | None
    seen: float
    until: float
    sent: float

    def wait(self, cost: float, sent_now: float, now: float) -> float:
        if now >= self.until:
            return 0.0  # the server is back to its full limit: nothing to hold back for
        span = self.until - self.seen
        refill = (
            (self.limit - self.remaining) / span if self.limit and self.limit > self.remaining and span > 0 else 0.0
        )
        left = self.remaining - (sent_now - self.sent) + refill * (now - self.seen)
        short = cost + RESERVE - left  # the call must leave the server RESERVE: remaining never reaches zero
        if short <= 1e-9:
            return 0.0
        return self.until - now if refill <= 0 else min(self.until - now, short / refill + 1e-6)


@dataclass
class Permit:
    """One admitted call: its token estimate, the running totals just after it, the headers of its answer."""

    tokens: int
    sent_requests: float
    sent_tokens: float
    key: int
    headers: Any = None

    def saw(self, headers: Any) -> None:
        self.headers = headers


class RateLimiter:
    """Requests and tokens per minute for one model, shared by its calls in one process (see the module).

    ``clock`` (seconds, monotonic) and ``sleep`` default to the module's ``_clock`` and ``_sleep`` when the
    limiter is made (``time.monotonic``, ``asyncio.sleep``); tests pass fakes.
    """

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        name: str = "",
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ):
        self.name = name
        self._clock = clock or _clock
        self._sleep = sleep or _sleep
        self._configured: dict[str, float | None] = {"requests": requests_per_minute, "tokens": tokens_per_minute}
        self._learned: dict[str, float | None] = dict.fromkeys(KINDS)
        self._paces: dict[str, _Pace | None] = dict.fromkeys(KINDS)
        self._snapshots: dict[str, _Snapshot | None] = dict.fromkeys(KINDS)
        self._sent = dict.fromkeys(KINDS, 0.0)
        self._cool_until = -math.inf
        self._exempt: set[int] = set()
        self._completion_mean: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._changed: asyncio.Event | None = None
        #: calls admitted, calls held back by a limit, 429s seen
        self.admitted = 0
        self.held = 0
        self.refused = 0
        now = self._born = self._clock()
        for kind in KINDS:
            self._repace(kind, now)

    # -- what applies -------------------------------------------------------------------------

    @property
    def requests_per_minute(self) -> float | None:
        """The requests-per-minute limit in force: the config's, the server's, or the lower of both."""
        return self._effective("requests")

    @property
    def tokens_per_minute(self) -> float | None:
        return self._effective("tokens")

    @property
    def learned(self) -> dict[str, float | None]:
        """The limits the server stated, by kind (None: not stated)."""
        return dict(self._learned)

    def describe(self) -> str:
        """``≤ 500 requests/min, ≤ 200,000 tokens/min``, saying which come from the server's headers."""
        parts = []
        for kind in KINDS:
            value = self._effective(kind)
            if value is None:
                continue
            text = rates_text(value, None) if kind == "requests" else rates_text(None, value)
            configured = self._configured[kind]
            if configured is None or (self._learned[kind] or math.inf) < configured:
                text += " (from the server's x-ratelimit headers)"
            parts.append(text)
        return ", ".join(parts) or "no rate limits"

    def tighten(self, requests_per_minute: float | None, tokens_per_minute: float | None) -> None:
        """Apply the lower of these and the configured limits (another config entry for the same model and key)."""
        now = self._clock()
        for kind, value in zip(KINDS, (requests_per_minute, tokens_per_minute), strict=True):
            configured = self._configured[kind]
            if value is not None and (configured is None or value < configured):
                self._configured[kind] = value
                self._repace(kind, now)

    def estimate(self, kwargs: Mapping[str, Any]) -> int:
        """Tokens a request is charged before it is sent: its prompt estimate plus its completion budget."""
        budget = completion_budget(kwargs)
        if budget is None:
            budget = math.ceil(self._completion_mean) if self._completion_mean is not None else DEFAULT_COMPLETION
        return estimate_prompt_tokens(kwargs.get("messages")) + budget

    # -- a call's turn --------------------------------------------------------------------------

    async def acquire(self, kwargs: Mapping[str, Any]) -> Permit:
        """Wait until the call described by ``kwargs`` (the chat request's parameters) may go, and charge it."""
        tokens = self.estimate(kwargs)
        key = id(kwargs)
        exempt = key in self._exempt
        self._exempt.discard(key)
        lock, changed = self._primitives()
        if not lock.locked() and self._wait(tokens, self._clock(), exempt) <= 0:
            return self._admit(tokens, key)
        async with lock:  # first come, first served among the calls held back
            counted = False
            while True:
                changed.clear()
                wait = self._wait(tokens, self._clock(), exempt)
                if wait <= 0:
                    return self._admit(tokens, key)
                if not counted:
                    self.held, counted = self.held + 1, True
                await self._nap(wait, changed)

    def answered(self, permit: Permit, usage: Any = None, headers: Any = None) -> None:
        """A call came back with an answer: its real usage replaces its estimate, its headers are read."""
        now = self._clock()
        prompt, completion = _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")
        if prompt + completion > 0:
            pace = self._paces["tokens"]
            if pace is not None:
                pace.add(permit.tokens - prompt - completion, now)
            mean = self._completion_mean
            self._completion_mean = completion if mean is None else 0.9 * mean + 0.1 * completion
        self._read(permit, headers, now)
        self._wake()

    def failed(self, permit: Permit, error: BaseException) -> None:
        """A call failed: its headers are read; after a 429 its tokens come back (the server ran nothing)
        and the other calls wait out the ``Retry-After`` (the refused call waits it in its own retry)."""
        now = self._clock()
        response = getattr(error, "response", None)
        headers = getattr(response, "headers", None)
        status = getattr(error, "status_code", None)
        if headers is not None:
            self._read(permit, headers, now)
        if status == 429:
            self.refused += 1
            pace = self._paces["tokens"]
            if pace is not None:
                pace.add(permit.tokens, now)
            delay = retry_after(headers)
            if delay is not None and 0 < delay <= MAX_COOLDOWN:
                self._cool_until = max(self._cool_until, now + delay)
                self._exempt.add(permit.key)
        self._wake()

    # -- inside ----------------------------------------------------------------------------------

    def _effective(self, kind: str) -> float | None:
        values = [v for v in (self._configured[kind], self._learned[kind]) if v is not None]
        return min(values) if values else None

    def _repace(self, kind: str, now: float, used: float = 0.0) -> None:
        """Pace ``kind`` at its effective limit. A new pace starts ``used`` in debt: what went out in the
        last minute before the limit was known (by the server's count, or this limiter's own when it is
        younger than a minute), so a server that counts over a sliding minute never sees more than its limit."""
        value, pace = self._effective(kind), self._paces[kind]
        if value is None:
            self._paces[kind] = None
        elif pace is None:
            pace = self._paces[kind] = _Pace(value, now)
            pace.add(-used, now)
        elif pace.per_minute != value:
            pace.retune(value, now)

    def _wait(self, tokens: int, now: float, exempt: bool) -> float:
        waits = [0.0 if exempt else self._cool_until - now]
        for kind, cost in zip(KINDS, (1, tokens), strict=True):
            pace, snapshot = self._paces[kind], self._snapshots[kind]
            if pace is not None:
                waits.append(pace.wait(now))
            if snapshot is not None:
                if now >= snapshot.until:
                    self._snapshots[kind] = None
                else:
                    waits.append(snapshot.wait(cost, self._sent[kind], now))
        return max(waits)

    def _admit(self, tokens: int, key: int) -> Permit:
        now = self._clock()
        for kind, cost in zip(KINDS, (1, tokens), strict=True):
            pace = self._paces[kind]
            if pace is not None:
                pace.add(-cost, now)
            self._sent[kind] += cost
        self.admitted += 1
        return Permit(tokens, self._sent["requests"], self._sent["tokens"], key)

    def _read(self, permit: Permit, headers: Any, now: float) -> None:
        for kind, reading in read_headers(headers).items():
            if reading.limit is not None and reading.limit != self._learned[kind]:
                self._learned[kind] = reading.limit
                used = reading.limit - reading.remaining if reading.remaining is not None else 0.0
                ours = self._sent[kind] if now - self._born < WINDOW else 0.0
                self._repace(kind, now, max(used, ours))
                log.info("rate limits of %s: %s", self.name or "a model", self.describe())
            if reading.remaining is None or reading.reset is None:
                continue
            sent = permit.sent_requests if kind == "requests" else permit.sent_tokens
            current = self._snapshots[kind]
            if current is None or sent >= current.sent:  # an answer to an older call says less
                limit = reading.limit or self._learned[kind]
                self._snapshots[kind] = _Snapshot(reading.remaining, limit, now, now + reading.reset, sent)

    def _primitives(self) -> tuple[asyncio.Lock, asyncio.Event]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._lock is None or self._changed is None:
            self._loop, self._lock, self._changed = loop, asyncio.Lock(), asyncio.Event()
        return self._lock, self._changed

    async def _nap(self, seconds: float, changed: asyncio.Event) -> None:
        """Sleep ``seconds``, or less when an answer changes what the limits allow."""
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        waker = asyncio.ensure_future(changed.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()

    def _wake(self) -> None:
        if self._changed is not None and self._loop is not None and not self._loop.is_closed():
            try:
                if asyncio.get_running_loop() is self._loop:
                    self._changed.set()
            except RuntimeError:  # no running loop: nobody is waiting
                pass


def _count(usage: Any, name: str) -> int:
    value = getattr(usage, name, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


#: limiters by model and credentials; an entry lives as long as a backend holds it
_LIMITERS: weakref.WeakValueDictionary[tuple[Any, ...], RateLimiter] = weakref.WeakValueDictionary()


def limiter_for(settings: Any) -> RateLimiter:
    """The limiter of the model ``settings`` name, shared by every backend of the same model, endpoints and
    key variable in this process (a provider counts them together); several config entries for one model
    get the lowest limits any of them sets."""
    key = (settings.backend, settings.model_name, tuple(sorted(settings.base_urls)), settings.api_key_env)
    rpm, tpm = settings.requests_per_minute, settings.tokens_per_minute
    limiter = _LIMITERS.get(key)
    if limiter is None:
        limiter = RateLimiter(rpm, tpm, name=settings.key)
        _LIMITERS[key] = limiter
    else:
        limiter.tighten(rpm, tpm)
    return limiter
