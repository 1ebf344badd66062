"""Runs through provider batch APIs (``specalign run --batch``): calls wait for a batch instead of going out.

Every sample of the run is in flight at once. A call to a model that can batch (its backend implements
:class:`~specalign.models.BatchCapable` and its settings allow it) does not go out: it joins the queue and
waits. When every sample in flight waits on the queue, the queue is sent as one batch per model, and the
samples go on as the answers come back. A method of several calls therefore batches stage by stage (one
batch round per stage); vanilla is one round for its answers and one for the judge.

Nothing is lost to a kill: a batch's id is written to ``batches.jsonl`` as soon as the provider returns it,
and its answers go to ``batch-results.sqlite`` (and the call cache) before the batch is marked collected.
A rerun first collects the batches still open — polling, never submitting the same requests again — and
then replays the samples, whose calls find their answers stored.

Requests a batch did not answer (failed with a retryable error, expired, cancelled) go out again: online
(``retry="online"``, the default) or in the next batch (``retry="batch"``), at most ``MAX_BATCH_ATTEMPTS``
times in all. A request that failed for good (a 400) fails its call as an online error would: the sample's
generation fails, or its judgment is unscored.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..errors import ModelError
from ..models import (
    BatchCapable,
    BatchItemError,
    BatchRequest,
    BatchState,
    CallCache,
    ChatRequest,
    Completion,
    Model,
)
from ._records import now
from ._store import RunDir

log = logging.getLogger("specalign.runs")

BATCHES = "batches.jsonl"
BATCH_RESULTS = "batch-results.sqlite"
#: a request is sent in a batch at most this many times before it fails like an online call
MAX_BATCH_ATTEMPTS = 3
BatchRetry = Literal["online", "batch"]


class BatchRecord(BaseModel):
    """One line of ``batches.jsonl``: a batch submitted, or collected."""

    event: Literal["submitted", "collected"]
    batch_id: str
    model: str = Field(description="the model's key (for people)")
    backend: str = Field(description="a digest of the backend's identity: which model a rerun polls it with")
    custom_ids: list[str] = Field(default_factory=list, description="submitted: the requests' cache keys")
    status: str | None = None
    completed: int = 0
    failed: int = 0
    at: str = Field(default_factory=now)


class BatchProgress(BaseModel):
    """What the progress display shows of the batches."""

    submitted: int = 0
    open: dict[str, str] = Field(default_factory=dict, description="batch id → its state and counts")
    requests: int = 0
    answered: int = 0
    failed: int = 0
    retried_online: int = 0


def open_batches(run_dir: RunDir) -> list[BatchRecord]:
    """The batches ``batches.jsonl`` records as submitted and not collected."""
    found: dict[str, BatchRecord] = {}
    for r in run_dir.read_records(BATCHES, BatchRecord):
        if r.event == "submitted":
            found[r.batch_id] = r
        else:
            found.pop(r.batch_id, None)
    return list(found.values())


def ledger_damage(run_dir: RunDir) -> str | None:
    """Where ``batches.jsonl`` cannot be read (``path:line``), if anywhere: a broken line, or a torn last one.

    Either may have been a batch's "submitted" record: that batch may still be open at the provider.
    """
    path = run_dir.path / BATCHES
    if not path.is_file():
        return None
    open_batches(run_dir)  # reads it through, which reports its broken lines
    if broken := run_dir.problems.get(BATCHES):
        return broken[0].split(": broken record", 1)[0]
    try:
        data = path.read_bytes()
    except OSError:
        return None  # reading it through above would have failed first
    if not data or data.endswith(b"\n"):
        return None
    return f"{path}:{len(data.splitlines())}"


class _Waiting:
    __slots__ = ("futures", "model", "request")

    def __init__(self, model: BatchedModel, request: ChatRequest):
        self.model, self.request = model, request
        self.futures: list[asyncio.Future[Completion]] = []


class BatchQueue:
    """The calls waiting for a batch, the batches open, and when to send the next ones."""

    def __init__(
        self,
        run_dir: RunDir,
        store: CallCache,
        *,
        poll_s: float = 30.0,
        retry: BatchRetry = "online",
        no_wait: bool = False,
        on_change: Callable[[BatchProgress], None] | None = None,
    ):
        self.run_dir = run_dir
        self.store = store
        self.poll_s = poll_s
        self.retry = retry
        self.no_wait = no_wait
        self.on_change = on_change
        self.progress = BatchProgress()
        self._waiting: dict[str, _Waiting] = {}  # cache key → the calls waiting for its answer
        self._failed: dict[str, BatchItemError] = {}  # answered with an error for good
        self._online: set[str] = set()  # to be retried online
        self._attempts: dict[str, int] = {}
        self._paid: set[str] = set()  # answers handed out once: identical calls share one (and its cost)
        self._active = 0  # samples in flight
        self._flushing: asyncio.Task[None] | None = None
        self._writer = run_dir.open_writer(BATCHES)
        for r in run_dir.read_records(BATCHES, BatchRecord):
            if r.event == "submitted":
                for cid in r.custom_ids:
                    self._attempts[cid] = self._attempts.get(cid, 0) + 1
        #: submitted by an earlier run and not collected, by batch id
        self._open: dict[str, BatchRecord] = {r.batch_id: r for r in open_batches(run_dir)}

    def close(self) -> None:
        self._writer.close()

    # -- samples and their calls ------------------------------------------------------------------------------------
    def enter(self) -> None:
        self._active += 1

    def leave(self) -> None:
        self._active -= 1
        self._maybe_flush()

    def answered(self, key: str) -> Completion | None:
        """A stored batch answer of this call (read back as a call made, not a cache hit)."""
        hit = self.store.get(key)
        return None if hit is None else hit.model_copy(update={"cached": False})

    def first_answer(self, key: str) -> bool:
        """True the first time a batch answer is handed out: identical calls were sent once and are paid once."""
        if key in self._paid:
            return False
        self._paid.add(key)
        return True

    def failure(self, key: str) -> BatchItemError | None:
        return self._failed.get(key)

    def goes_online(self, key: str) -> bool:
        return key in self._online

    async def wait_for(self, model: BatchedModel, key: str, request: ChatRequest) -> Completion:
        """Wait until a batch answers this call."""
        waiting = self._waiting.get(key)
        if waiting is None:
            waiting = self._waiting[key] = _Waiting(model, request)
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        waiting.futures.append(future)
        self._maybe_flush()
        return await future

    def _blocked(self) -> bool:
        """Every sample in flight waits for a batch."""
        return bool(self._waiting) and sum(len(w.futures) for w in self._waiting.values()) >= self._active

    def _maybe_flush(self) -> None:
        """Send the waiting calls once no sample can go on without them."""
        if self._flushing is None and self._blocked():
            self._flushing = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # the samples started in this turn of the loop join before the batch goes
        if not self._blocked():
            self._flushing = None
            return
        waiting, self._waiting = self._waiting, {}
        try:
            await self._send_and_collect(waiting)
        except BaseException as e:  # an access error, a full disk, a cancel: every waiting call gets it
            for w in waiting.values():
                for f in w.futures:
                    if not f.done():
                        f.set_exception(e if isinstance(e, Exception) else asyncio.CancelledError())
            if not isinstance(e, Exception):
                raise
        finally:
            self._flushing = None
        self._maybe_flush()

    async def _send_and_collect(self, waiting: dict[str, _Waiting]) -> None:
        groups: dict[str, list[str]] = {}
        for key, w in waiting.items():
            groups.setdefault(w.model.batch_identity, []).append(key)
        submitted = []
        for keys in groups.values():
            model = waiting[keys[0]].model
            step = model.batch_backend.max_batch_requests
            for i in range(0, len(keys), step):
                chunk = keys[i : i + step]
                batch_id = await model.batch_backend.submit_batch(
                    [BatchRequest(custom_id=k, request=waiting[k].request) for k in chunk]
                )
                self._log(
                    BatchRecord(
                        event="submitted",
                        batch_id=batch_id,
                        model=model.settings.key,
                        backend=model.batch_identity,
                        custom_ids=chunk,
                    )
                )
                for k in chunk:
                    self._attempts[k] = self._attempts.get(k, 0) + 1
                self.progress.submitted += 1
                self.progress.requests += len(chunk)
                submitted.append((model, batch_id))
        if self.no_wait:
            self.stopped = True
            raise BatchesSubmitted(len(submitted))
        results = await self.collect([(m.batch_backend, m.settings.key, m.batch_identity, b) for m, b in submitted])
        for key in waiting.keys() - results.keys():
            self._take(key, BatchItemError(message="missing from the batch's results", kind="missing"))
        for key, w in waiting.items():
            outcome = results.get(key)
            for f in w.futures:
                if f.done():
                    continue
                if isinstance(outcome, Completion):
                    f.set_result(outcome)
                else:  # not answered: the call asks again (online, the next batch, or fails for good)
                    f.set_result(_ASK_AGAIN)

    async def resume(self, models: list[BatchedModel]) -> None:
        """Collect the batches earlier runs submitted and did not collect (polling; nothing is sent again).
        With ``no_wait``, batches still running stop the run here."""
        if not self._open:
            return
        by_identity = {m.batch_identity: m for m in models}
        ours = []
        for r in self._open.values():
            m = by_identity.get(r.backend)
            if m is None:
                log.warning(
                    "warning: batch %s of model %s is not this run's model: its answers are not collected",
                    r.batch_id,
                    r.model,
                )
                continue
            ours.append((m.batch_backend, m.settings.key, r.backend, r.batch_id))
        if self.no_wait:
            states = [await backend.batch_status(b) for backend, _, _, b in ours]
            running = [st for st in states if not st.ended]
            if running:
                for st in running:
                    self.progress.open[st.id] = _state_text(st)
                raise BatchesRunning(len(running))
        self.progress.submitted += len(ours)
        await self.collect(ours)
        self._open.clear()

    async def collect(
        self, open_batches: list[tuple[BatchCapable, str, str, str]]
    ) -> dict[str, Completion | BatchItemError]:
        """Poll ``(backend, model key, identity, batch id)`` until each ends; store and return their answers."""
        out: dict[str, Completion | BatchItemError] = {}
        pending = list(open_batches)
        while pending:
            still = []
            for backend, model_key, identity, batch_id in pending:
                state = await backend.batch_status(batch_id)
                self.progress.open[batch_id] = _state_text(state)
                if not state.ended:
                    still.append((backend, model_key, identity, batch_id))
                    continue
                results = await backend.batch_results(batch_id)
                for key, result in results.items():
                    self._take(key, result)
                    out[key] = result
                self._log(
                    BatchRecord(
                        event="collected",
                        batch_id=batch_id,
                        model=model_key,
                        backend=identity,
                        status=state.status,
                        completed=state.completed,
                        failed=state.failed,
                    )
                )
                del self.progress.open[batch_id]
            self._changed()
            pending = still
            if pending:
                await asyncio.sleep(self.poll_s)
        return out

    def _take(self, key: str, result: Completion | BatchItemError) -> None:
        if isinstance(result, Completion):
            self.store.put(key, result)
            self.progress.answered += 1
            return
        self.progress.failed += 1
        if not result.retryable or self._attempts.get(key, 0) >= MAX_BATCH_ATTEMPTS and self.retry == "batch":
            self._failed[key] = result
        elif self.retry == "online":
            self._online.add(key)

    def _log(self, record: BatchRecord) -> None:
        self._writer.append(record)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self.progress)

    def count_online_retry(self) -> None:
        self.progress.retried_online += 1


class BatchesRunning(Exception):
    """``--no-wait`` and batches of an earlier run still running: nothing to do until they end."""

    def __init__(self, n: int):
        super().__init__(f"{n} batch{'es' if n != 1 else ''} still running")
        self.n = n


class BatchesSubmitted(Exception):
    """``--no-wait``: the batches are submitted and the run stops; a rerun of the same command collects."""

    def __init__(self, n: int):
        super().__init__(f"{n} batch{'es' if n != 1 else ''} submitted")
        self.n = n


_ASK_AGAIN: Any = object()


class BatchedModel(Model):
    """A model whose calls not answered before wait for a batch (see the module)."""

    def __init__(self, model: Model, queue: BatchQueue):
        super().__init__(model.settings, model.backend, model.cache)
        assert isinstance(model.backend, BatchCapable)
        self.batch_backend: BatchCapable = model.backend
        self.queue = queue
        self.batch_identity = backend_digest(model)

    async def _call(self, request: ChatRequest) -> Completion:
        key = self.key_for(request)
        meter = self.meter
        while True:
            if self.cache is not None and (hit := self.cache.get(key)) is not None:
                self.cache_hits += 1
                if meter is not None:
                    meter.cached(self, hit)
                return hit
            completion = self.queue.answered(key)
            held, batched = 0.0, True
            if completion is None:
                failure = self.queue.failure(key)
                if failure is not None:
                    raise ModelError(
                        f"batch request failed: {failure.message}", kind=failure.kind, status=failure.status
                    )
                batched = not self.queue.goes_online(key)
                held = meter.reserve(self, request, batch=batched) if meter is not None else 0.0
                try:
                    if not batched:
                        self.queue.count_online_retry()
                        completion = await self.backend.chat(request)
                    else:
                        completion = await self.queue.wait_for(self, key, request)
                except BaseException:
                    if meter is not None:
                        meter.release(held)
                    raise
                if completion is _ASK_AGAIN:
                    if meter is not None:
                        meter.release(held)
                    continue
            if meter is not None:
                if not batched or self.queue.first_answer(key):
                    meter.settle(held, self, completion, batch=batched)
                else:  # an identical call's answer: sent and paid once
                    meter.release(held)
                    meter.cached(self, completion)
            self.calls_made += 1
            self.usage = self.usage + completion.usage
            if self.cache is not None:
                self.cache.put(key, completion)
            return completion


def backend_digest(model: Model) -> str:
    """A short digest of the backend's identity (kind, URLs, model): the batches a rerun can poll with it."""
    blob = json.dumps(model.backend.identity(), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def can_batch(model: Model) -> bool:
    """Whether ``model``'s calls can go through its provider's batch API."""
    backend = model.backend
    return isinstance(backend, BatchCapable) and getattr(backend, "batch_enabled", lambda: True)()


def _state_text(state: BatchState) -> str:
    return f"{state.status} {state.completed + state.failed}/{state.total}"
