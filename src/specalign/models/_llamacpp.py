"""In-process llama.cpp backend (``llama-cpp-python``), e.g. the embedded SmolLM2-135M model.

A model runs as a pool of K llama.cpp contexts (``parallel``), each on its own thread with cores / K
compute threads, so K calls decode at once. A call takes the free context whose KV cache shares the
longest prefix with its prompt: a sample's successive stages stay on one cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import itertools
import json
import logging
import os
import re
import threading
from collections import deque
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .._unicode import repair_text
from ..errors import ConfigError, ModelError, ModelUnavailable
from ._base import REPAIRED, ChatRequest, Completion, Delta, Message, ModelBackend, Usage
from ._settings import LOCAL, ModelSettings, embedded_gguf_path, resolve_chat_template

INSTALL_HINT = "pip install 'specalign[local]'"
DEFAULT_MAX_TOKENS = 512
#: llama-cpp-python's own default for chat completions (its raw completions default to 0.8)
DEFAULT_TEMPERATURE = 0.2
MIN_GENERATION_TOKENS = 16
_HASH_CHUNK = 1 << 20

#: request params passed to ``create_chat_completion`` under their own name
_PARAMS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "max_tokens",
    "stop",
    "seed",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
)
#: other spellings of the same params (OpenAI-, vLLM- or HF-style)
_ALIASES = {"repetition_penalty": "repeat_penalty", "max_completion_tokens": "max_tokens"}


#: most contexts the embedded model gets by default (one per core, one thread each, up to this)
EMBEDDED_MAX_PARALLEL = 8
T = TypeVar("T")


@dataclass(eq=False)
class _Context:
    """One llama.cpp context and the one thread every call into it runs on.

    llama.cpp's compute threads (an OpenMP team) belong to the thread that calls it. Calls from
    ever-new threads, as ``asyncio.to_thread`` makes, leave old teams spinning beside new ones, and
    generation ran at about two thirds of its speed; so each context keeps one thread for life.
    """

    llama: Any
    thread: ThreadPoolExecutor
    formatters: dict[str, Any] = field(default_factory=dict)
    busy: bool = False
    #: set while the context waits, briefly, for the next stage of the call that just left it
    hold: threading.Event | None = None
    last_used: int = 0
    calls: int = 0

    def cached_prefix(self, tokens: list[int]) -> int:
        """Leading tokens of ``tokens`` already in this context's KV cache (read it only while idle)."""
        import numpy as np  # noqa: PLC0415  (a llama-cpp-python dependency)

        n = min(int(self.llama.n_tokens), len(tokens))
        if n == 0:
            return 0
        differ = np.flatnonzero(self.llama.input_ids[:n] != np.asarray(tokens[:n]))
        return int(differ[0]) if differ.size else n

    def continued_by(self, tokens: list[int]) -> bool:
        """Whether ``tokens`` extend what this context holds (a later stage of the same conversation)."""
        held = int(self.llama.n_tokens)
        return held > 0 and self.cached_prefix(tokens) * 10 >= held * 9


@dataclass(eq=False)
class _Waiter:
    future: asyncio.Future[_Context]
    loop: asyncio.AbstractEventLoop
    tokens: list[int]


class _Pool:
    """K contexts of one model, each run by its own thread.

    A call takes the free context with the longest cached prefix of its prompt (ties: the least
    recently used, so a context one sample just left stays free for its next stage). When every
    context is busy, calls wait in arrival order; a context that a prefill stage leaves while others
    wait is held for up to ``HOLD_S`` for the next stage of that conversation, which would otherwise
    find its KV cache taken and evaluate its whole prompt again.
    """

    HOLD_S = 0.05

    def __init__(self, contexts: list[_Context]):
        self.contexts = contexts
        self.peak_in_use = 0
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()
        self._clock = itertools.count(1)

    @property
    def size(self) -> int:
        return len(self.contexts)

    @property
    def in_use(self) -> int:
        """Contexts running a call now."""
        return sum(c.busy for c in self.contexts)

    async def run(self, tokens: list[int], fn: Callable[[_Context], T], *, stage: bool = False) -> T:
        """``fn(context)`` on the chosen context's own thread; ``stage``: a later call may continue it."""
        ctx = await self._acquire(tokens)
        try:
            future = ctx.thread.submit(fn, ctx)
        except BaseException:
            self._release(ctx, False)
            raise
        future.add_done_callback(lambda _: self._release(ctx, stage))  # when it really ends, even if cancelled
        return await asyncio.wrap_future(future)

    async def _acquire(self, tokens: list[int]) -> _Context:
        loop = asyncio.get_running_loop()
        with self._lock:
            ctx = self._claim(tokens) if self._waiters else self._take(tokens, held=True)
            if ctx is not None:
                return ctx
            waiter = _Waiter(loop.create_future(), loop, tokens)
            self._waiters.append(waiter)
        return await waiter.future

    def _claim(self, tokens: list[int]) -> _Context | None:
        """A held context whose conversation ``tokens`` continue. Holds the lock."""
        held = [c for c in self.contexts if c.hold is not None and not c.busy]
        return next((self._mark_busy(c) for c in held if c.continued_by(tokens)), None)

    def _take(self, tokens: list[int], *, held: bool) -> _Context | None:
        """The best free context, marked busy; None if none is free. Holds the lock."""
        free = [c for c in self.contexts if not c.busy and (held or c.hold is None)]
        if not free:
            return None
        return self._mark_busy(max(free, key=lambda c: (c.cached_prefix(tokens), -c.last_used)))

    def _mark_busy(self, ctx: _Context) -> _Context:
        if ctx.hold is not None:
            ctx.hold.set()
            ctx.hold = None
        ctx.busy = True
        ctx.calls += 1
        self.peak_in_use = max(self.peak_in_use, self.in_use)
        return ctx

    def _release(self, ctx: _Context, stage: bool) -> None:
        """Free ``ctx`` (from any thread): hold it for a next stage if calls wait, else hand it over."""
        with self._lock:
            ctx.busy = False
            ctx.last_used = next(self._clock)
            hold = ctx.hold = threading.Event() if stage and self._waiters else None
            handed = self._hand_over()
        self._deliver_all(handed)
        if hold is not None:
            ctx.thread.submit(self._end_hold, ctx, hold)  # its thread is idle: let it keep the time

    def _end_hold(self, ctx: _Context, hold: threading.Event) -> None:
        if hold.wait(self.HOLD_S):
            return  # the next stage took it
        with self._lock:
            if ctx.hold is not hold:
                return
            ctx.hold = None
            handed = self._hand_over()
        self._deliver_all(handed)

    def _hand_over(self) -> list[tuple[_Waiter, _Context]]:
        """Match waiting calls, first come first served, with free contexts. Holds the lock."""
        handed = []
        while self._waiters:
            if self._waiters[0].future.done():  # cancelled while waiting
                self._waiters.popleft()
                continue
            ctx = self._take(self._waiters[0].tokens, held=False)
            if ctx is None:
                break
            handed.append((self._waiters.popleft(), ctx))
        return handed

    def _deliver_all(self, handed: list[tuple[_Waiter, _Context]]) -> None:
        for waiter, ctx in handed:
            try:
                waiter.loop.call_soon_threadsafe(self._deliver, waiter.future, ctx)
            except RuntimeError:  # its event loop is closed
                self._release(ctx, False)

    def _deliver(self, future: asyncio.Future[_Context], ctx: _Context) -> None:
        if future.done():  # cancelled after the hand-over was decided
            self._release(ctx, False)
        else:
            future.set_result(ctx)


_LOADED: dict[tuple[str, int, int, int], _Pool] = {}
_LOAD_LOCK = threading.Lock()
_HASHES: dict[tuple[str, int, int], str] = {}
_GRAMMARS: dict[str, Any] = {}
_GRAMMAR_LOCK = threading.Lock()


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parallelism(settings: ModelSettings) -> int:
    """Contexts (calls at once) for a model: ``parallel:`` if set; else one per core (at most 8) for the
    embedded model, and 1 for any other GGUF (every context holds its own KV cache of ``n_ctx`` tokens).

    A context of one thread runs no OpenMP team, so nothing spins while it waits: K such contexts
    share the cores fairly with other processes (measured in docs/benchmarks.md).
    """
    if settings.parallel:
        return settings.parallel
    return max(1, min(cores(), EMBEDDED_MAX_PARALLEL)) if settings.gguf == LOCAL else 1


def _threads_per_context(settings: ModelSettings, k: int) -> int:
    return settings.n_threads or max(1, cores() // k)


def chat_template_of(llama: Any) -> str | None:
    """The Jinja chat template stored in a loaded model's GGUF metadata, if any."""
    template = (getattr(llama, "metadata", None) or {}).get("tokenizer.chat_template")
    return template or None


def resolve_gguf(settings: ModelSettings) -> Path:
    """The GGUF file named by ``settings.gguf`` (``local`` = the embedded model)."""
    if not settings.gguf:
        raise ModelUnavailable(f"model {settings.key!r} has backend llamacpp but no gguf path")
    path = embedded_gguf_path() if settings.gguf == LOCAL else Path(settings.gguf).expanduser()
    if not path.is_file():
        raise ModelUnavailable(f"GGUF file not found: {path}")
    return path.resolve()


def gguf_fingerprint(path: Path) -> str:
    """sha256 of the file's size, first MiB and last MiB: cheap, and memoized per file version."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256(str(st.st_size).encode())
        with path.open("rb") as f:
            h.update(f.read(_HASH_CHUNK))
            f.seek(max(st.st_size - _HASH_CHUNK, 0))
            h.update(f.read(_HASH_CHUNK))
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp  # noqa: PLC0415
    except ImportError as e:
        raise ModelUnavailable(f"the llamacpp backend needs llama-cpp-python ({e}): {INSTALL_HINT}") from None
    return llama_cpp


def _load_pool(path: Path, settings: ModelSettings) -> _Pool:
    """The process-wide pool for (file, n_ctx, contexts, threads), loaded on first use."""
    k = parallelism(settings)
    threads = _threads_per_context(settings, k)
    key = (str(path), settings.n_ctx, k, threads)
    with _LOAD_LOCK:
        if key not in _LOADED:
            _LOADED[key] = _Pool([_load_context(path, settings, threads, i) for i in range(k)])
        return _LOADED[key]


def _load_context(path: Path, settings: ModelSettings, threads: int, index: int) -> _Context:
    llama_cpp = _import_llama_cpp()
    try:  # the weights are mmapped: K contexts share their pages
        llama = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=settings.n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            seed=int(settings.params.get("seed", 0) or 0),
            verbose=False,
        )
    except Exception as e:  # llama.cpp says ValueError("Failed to load model from file")
        raise ModelUnavailable(f"cannot load GGUF file {path}: {e}") from None
    return _Context(llama, ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama.cpp-{index}"))


def _grammar_for(schema: dict[str, Any], llama: Any) -> Any:
    """A cached llama.cpp grammar constraining output to ``schema``; ModelError if unsupported."""
    text = json.dumps(schema)  # key order matters: it fixes the order of the output's keys
    with _GRAMMAR_LOCK:
        if text in _GRAMMARS:
            return _GRAMMARS[text]
        llama_cpp = _import_llama_cpp()
        try:
            grammar = llama_cpp.LlamaGrammar.from_json_schema(text, verbose=False)
        except Exception as e:  # the converter asserts on what it does not support
            raise ModelError(f"llama.cpp cannot turn this JSON schema into a grammar: {e}") from None
        if not _grammar_parses(llama_cpp, llama, grammar):
            raise ModelError("llama.cpp rejected the grammar made from this JSON schema")
        _GRAMMARS[text] = grammar
        return grammar


def _grammar_parses(llama_cpp: Any, llama: Any, grammar: Any) -> bool:
    """Parse the grammar once in C: an invalid one would otherwise crash the sampler chain."""
    log = logging.getLogger("llama-cpp-python")
    level = log.level
    log.setLevel(logging.CRITICAL)  # the C parser logs its error; we raise our own
    try:
        sampler = llama_cpp.llama_sampler_init_grammar(
            llama._model.vocab, grammar._grammar.encode(), grammar._root.encode()
        )
    finally:
        log.setLevel(level)
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


def map_params(request: ChatRequest, default_seed: int) -> dict[str, Any]:
    """Sampling keyword arguments for ``create_chat_completion``; unknown keys are dropped.

    ``extra_body`` is applied last, as the OpenAI SDK merges it over the request body.
    """
    out: dict[str, Any] = {}
    for source in (request.params, request.extra_body):
        for key, value in source.items():
            name = _ALIASES.get(key, key)
            if name in _PARAMS and value is not None:
                out[name] = value
    if isinstance(out.get("stop"), str):
        out["stop"] = [out["stop"]]
    out.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
    out.setdefault("seed", default_seed)
    out["max_tokens"] = int(out["max_tokens"])
    out["seed"] = int(out["seed"])
    return out


class LlamaCppBackend(ModelBackend):
    """A GGUF model run in this process: a pool of contexts per (file, n_ctx, contexts, threads), shared
    by every backend with those settings (the target and the judge of the demo use one pool)."""

    kind = "llamacpp"
    supports_json_schema = True
    supports_prefill = True

    def __init__(self, settings: ModelSettings):
        if importlib.util.find_spec("llama_cpp") is None:
            raise ModelUnavailable(f"the llamacpp backend needs llama-cpp-python: {INSTALL_HINT}")
        if settings.requests_per_minute is not None or settings.tokens_per_minute is not None:
            raise ConfigError(
                f"model {settings.key!r} runs in this process (llama.cpp): it has no provider rate limits; "
                "remove requests_per_minute / tokens_per_minute from its entry",
                field="requests_per_minute",
            )
        self.settings = settings
        self.path = resolve_gguf(settings)
        if settings.gguf == LOCAL:  # SmolLM2-135M-Instruct does not think: all it writes is answer
            self.__dict__["writes_inline_thought"] = False
        #: the configured chat template, read once: every call renders with the text identity() hashed
        self.template = resolve_chat_template(settings)
        self._identity: dict[str, Any] | None = None
        self._pool: _Pool | None = None

    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            self._identity = {
                "kind": self.kind,
                "model": self.settings.model_name,
                "gguf_sha256_prefix": gguf_fingerprint(self.path),
                "n_ctx": self.settings.n_ctx,
            }
            if self.template:
                self._identity["chat_template_sha256"] = hashlib.sha256(self.template.encode()).hexdigest()[:16]
        return self._identity

    @property
    def parallel(self) -> int:
        """Calls this model runs at once."""
        return parallelism(self.settings)

    def pool(self) -> _Pool:
        """The loaded contexts (loads them now if needed; blocking)."""
        if self._pool is None:
            self._pool = _load_pool(self.path, self.settings)
        return self._pool

    def shared(self) -> _Context:
        """The pool's first context: for tokenizing and rendering, which need no KV cache."""
        return self.pool().contexts[0]

    @property
    def llama(self) -> Any:
        return self.shared().llama

    def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` has for this model (no BOS added)."""
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    async def warm(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.pool)

    async def chat(self, request: ChatRequest) -> Completion:
        return await self._generate(request, None)

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Delta | Completion, None]:
        """The completion's text as llama.cpp decodes it (see :class:`_Watch`), then the completion itself.

        The call is the one :meth:`chat` makes, so the text is the same; a consumer that stops reading
        stops the decoding within a token.
        """
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str] = asyncio.Queue()

        def arrived(text: str) -> None:  # on the context's thread
            loop.call_soon_threadsafe(pieces.put_nowait, text)

        call = asyncio.ensure_future(self._generate(request, arrived))
        sent = ""
        try:
            while not call.done() or not pieces.empty():
                if pieces.empty():
                    waiter = asyncio.ensure_future(pieces.get())
                    await asyncio.wait({waiter, call}, return_when=asyncio.FIRST_COMPLETED)
                    if not waiter.done():
                        waiter.cancel()
                        continue
                    piece = waiter.result()
                else:
                    piece = pieces.get_nowait()
                sent += piece
                yield Delta(text=piece)
            completion = call.result()
        finally:
            if not call.done():
                call.cancel()  # stops the decoding at the next token (_Watch.cancelled)
        if not completion.text.startswith(sent):
            raise ModelError("llama.cpp's streamed text is not the start of its answer", kind="malformed")
        if len(completion.text) > len(sent):
            yield Delta(text=completion.text[len(sent) :])
        yield completion

    async def _generate(self, request: ChatRequest, on_text: Callable[[str], None] | None) -> Completion:
        """One call; ``on_text`` (called on the context's thread) gets the answer's text as it becomes certain."""
        pool = self._pool
        if pool is None:
            pool = await asyncio.get_running_loop().run_in_executor(None, self.pool)
        kwargs = map_params(request, int(self.settings.params.get("seed", 0) or 0))
        kwargs["seed"] += request.sample_index
        kwargs.setdefault("temperature", DEFAULT_TEMPERATURE)
        first = pool.contexts[0]  # tokenizing reads the model only: safe beside a running decode
        if request.json_schema is not None:
            kwargs["grammar"] = _grammar_for(request.json_schema, first.llama)
        tokens = self._render(first, request)
        if tokens is None:  # a GGUF without a chat template: llama-cpp-python's own guess, in one piece
            return await pool.run([], lambda ctx: self._chat_without_template(ctx, request, kwargs))
        kwargs["max_tokens"] = self._fit_max_tokens(len(tokens), kwargs["max_tokens"])
        watch = _Watch(tokens, kwargs.get("stop") or [], on_text)
        try:
            return await pool.run(
                tokens, lambda ctx: self._complete(ctx, tokens, kwargs, watch), stage=request.continue_final
            )
        except asyncio.CancelledError:
            watch.cancelled.set()  # the caller is gone: llama.cpp stops at its next token
            raise

    def _complete(self, ctx: _Context, tokens: list[int], kwargs: dict[str, Any], watch: _Watch) -> Completion:
        """One completion on ``ctx``, on its thread."""
        if not self.settings.kv_reuse:
            ctx.llama.reset()
        reused = _reusable_prefix(ctx, tokens)
        from llama_cpp import StoppingCriteriaList  # noqa: PLC0415

        criteria = StoppingCriteriaList([watch.bind(ctx.llama)])
        response = self._call(ctx.llama.create_completion, prompt=tokens, stopping_criteria=criteria, **kwargs)
        if watch.cancelled.is_set():
            raise ModelError("the call was cancelled", kind="cancelled")
        choice = response["choices"][0]
        return _completion(choice.get("text") or "", _usage(response, reused), choice.get("finish_reason"))

    def _render(self, ctx: _Context, request: ChatRequest) -> list[int] | None:
        """The prompt tokens: the chat template rendered, an assistant prefix left open after it.

        A prefill renders the conversation before the assistant turn with the generation
        prompt, then appends the prefix verbatim: the turn stays unclosed and the template
        cannot rewrite the prefix (as some templates do to ``<think>`` blocks).
        """
        template = self.template or chat_template_of(ctx.llama)
        if template is None:
            if request.continue_final:
                raise ModelError(
                    f"{self.path.name} has no chat template to continue an assistant turn with; "
                    f"set chat_template in the model's config"
                )
            return None
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        prefix = ""
        if request.continue_final:
            prefix = messages.pop()["content"]
        try:
            rendered = _formatter(ctx, template)(messages=messages)
        except Exception as e:  # a template may refuse a conversation (roles must alternate, ...)
            raise ModelError(
                f"the chat template refused these messages: {type(e).__name__}: {e}", kind="rejected"
            ) from None
        text = repair_text(rendered.prompt + prefix)[0]  # a lone surrogate cannot be encoded, nor tokenized
        return ctx.llama.tokenize(text.encode("utf-8"), add_bos=not rendered.added_special, special=True)

    def _chat_without_template(self, ctx: _Context, request: ChatRequest, kwargs: dict[str, Any]) -> Completion:
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        kwargs["max_tokens"] = self._fit_max_tokens(_rough_prompt_tokens(ctx, request.messages), kwargs["max_tokens"])
        response = self._call(ctx.llama.create_chat_completion, messages=messages, **kwargs)
        choice = response["choices"][0]
        return _completion(choice["message"].get("content") or "", _usage(response, 0), choice.get("finish_reason"))

    def _call(self, fn: Any, **kwargs: Any) -> dict[str, Any]:
        """Call llama.cpp; its failures become ModelError (context overflow named as such)."""
        try:
            return fn(**kwargs)
        except ValueError as e:
            raise ModelError(self._overflow_message(e), kind="rejected") from None
        except Exception as e:
            raise ModelError(f"llama.cpp failed: {type(e).__name__}: {e}") from None

    def _fit_max_tokens(self, prompt: int, max_tokens: int) -> int:
        """Clamp ``max_tokens`` to the room left in the context; ModelError if under 16 tokens remain."""
        n_ctx = self.settings.n_ctx
        room = n_ctx - prompt
        if room < MIN_GENERATION_TOKENS:
            raise ModelError(f"prompt of {prompt} tokens does not fit the context window of {n_ctx}", kind="rejected")
        return room if max_tokens <= 0 else min(max_tokens, room)

    def _overflow_message(self, error: ValueError) -> str:
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        found = re.search(r"Requested tokens \((\d+)\) exceed context window", text)
        if found:
            return f"prompt of {found.group(1)} tokens does not fit the context window of {self.settings.n_ctx}"
        return f"llama.cpp rejected the request: {text}"


class _Watch:
    """llama.cpp's stopping criterion for one call: says the text decoded so far, and stops a cancelled call.

    llama.cpp calls it once per sampled token with the tokens before that one. The text it passes on is
    what the completion's own text is bound to start with: the generated tokens decoded as llama-cpp-python
    decodes them (invalid UTF-8 and an unfinished character left out), short of any tail that could still
    be the start of a stop sequence, and nothing once a stop sequence has appeared (the text ends before it).
    """

    def __init__(self, prompt: list[int], stops: list[str] | str, on_text: Callable[[str], None] | None):
        self.prompt = prompt
        self.stops = [stops] if isinstance(stops, str) else [s for s in stops if s]
        self.on_text = on_text
        self.cancelled = threading.Event()
        self._generated: list[int] = []
        self._sent = 0
        self._stopped = False

    def bind(self, llama: Any) -> Callable[[Any, Any], bool]:
        def criterion(input_ids: Any, _logits: Any) -> bool:
            if self.on_text is not None and not self._stopped:
                self._follow(llama, input_ids)
            return self.cancelled.is_set()

        return criterion

    def _follow(self, llama: Any, input_ids: Any) -> None:
        done = len(self.prompt) + len(self._generated)
        if len(input_ids) <= done:
            return
        self._generated += [int(t) for t in input_ids[done:]]
        text = llama.detokenize(self._generated, prev_tokens=self.prompt).decode("utf-8", errors="ignore")
        if any(s in text for s in self.stops):
            self._stopped = True
            return
        certain = len(text) - max((_partial_stop(text, s) for s in self.stops), default=0)
        if certain > self._sent:
            assert self.on_text is not None
            self.on_text(text[self._sent : certain])
            self._sent = certain


def _partial_stop(text: str, stop: str) -> int:
    """The length of the longest end of ``text`` that begins ``stop`` (0: none)."""
    return next((n for n in range(min(len(stop) - 1, len(text)), 0, -1) if text.endswith(stop[:n])), 0)


def _completion(text: str, usage: Usage, finish_reason: str | None) -> Completion:
    """A completion of ``text``, its lone surrogates (if llama.cpp ever gave any) repaired and flagged."""
    text, repaired = repair_text(text)
    return Completion(text=text, usage=usage, finish_reason=finish_reason, flags=[REPAIRED] if repaired else [])


def _usage(response: dict[str, Any], reused: int) -> Usage:
    usage = response.get("usage") or {}
    return Usage(
        prompt_tokens=usage.get("prompt_tokens", 0),
        completion_tokens=usage.get("completion_tokens", 0),
        cached_prompt_tokens=reused,
    )


def _reusable_prefix(ctx: _Context, tokens: list[int]) -> int:
    """Prompt tokens whose KV state llama.cpp will reuse from the previous call (its own prefix match)."""
    common = ctx.cached_prefix(tokens)
    return common - 1 if common == len(tokens) and common else common


def _formatter(ctx: _Context, template: str) -> Any:
    """A cached Jinja renderer for ``template`` with this model's BOS/EOS text."""
    if template not in ctx.formatters:  # a benign race: two threads may build the same one
        from llama_cpp import llama_chat_format  # noqa: PLC0415

        llama = ctx.llama

        def text(token: int) -> str:
            return llama.detokenize([token], special=True).decode("utf-8", "replace") if token >= 0 else ""

        ctx.formatters[template] = llama_chat_format.Jinja2ChatFormatter(
            template=template, eos_token=text(llama.token_eos()), bos_token=text(llama.token_bos())
        )
    return ctx.formatters[template]


def _rough_prompt_tokens(ctx: _Context, messages: tuple[Message, ...]) -> int:
    """Contents plus a few tokens of markup per message (for GGUFs without a template)."""
    llama = ctx.llama
    return sum(len(llama.tokenize(m.content.encode(), add_bos=False, special=True)) + 8 for m in messages)
