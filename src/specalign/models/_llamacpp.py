"""In-process llama.cpp backend (``llama-cpp-python``), e.g. the embedded SmolLM2-135M model."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import logging
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError, ModelUnavailable
from ._base import ChatRequest, Completion, Message, ModelBackend, Usage
from ._settings import LOCAL, ModelSettings, embedded_gguf_path, resolve_chat_template

INSTALL_HINT = "pip install 'specalign[local]'"
DEFAULT_MAX_TOKENS = 512
#: llama-cpp-python's own default for chat completions (its raw completions default to 0.8)
DEFAULT_TEMPERATURE = 0.2
MIN_GENERATION_TOKENS = 16
_HASH_CHUNK = 1 << 20

#: request params passed to ``create_chat_completion`` under their own name
_PARAMS = ("temperature", "top_p", "top_k", "min_p", "max_tokens", "stop", "seed", "repeat_penalty",
           "presence_penalty", "frequency_penalty")
#: other spellings of the same params (OpenAI-, vLLM- or HF-style)
_ALIASES = {"repetition_penalty": "repeat_penalty", "max_completion_tokens": "max_tokens"}


@dataclass
class _Shared:
    """One loaded model and the lock that serialises every call into it."""

    llama: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    formatters: dict[str, Any] = field(default_factory=dict)


_LOADED: dict[tuple[str, int], _Shared] = {}
_LOAD_LOCK = threading.Lock()
_EXECUTOR: ThreadPoolExecutor | None = None
_HASHES: dict[tuple[str, int, int], str] = {}
_GRAMMARS: dict[str, Any] = {}
_GRAMMAR_LOCK = threading.Lock()


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


def _llama_thread() -> ThreadPoolExecutor:
    """The one thread every llama.cpp call of this process runs on.

    llama.cpp's compute threads (an OpenMP team) belong to the thread that calls it. Calls from
    ever-new threads, as ``asyncio.to_thread`` makes, leave old teams spinning beside new ones, and
    generation ran at about two thirds of its speed. Calls are serialised per model anyway.
    """
    global _EXECUTOR
    with _LOAD_LOCK:
        if _EXECUTOR is None:
            _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama.cpp")
        return _EXECUTOR


def _load_shared(path: Path, settings: ModelSettings) -> _Shared:
    """The process-wide model for (path, n_ctx), loaded on first use."""
    key = (str(path), settings.n_ctx)
    with _LOAD_LOCK:
        if key not in _LOADED:
            llama_cpp = _import_llama_cpp()
            threads = settings.n_threads or os.cpu_count() or 1
            try:
                llama = llama_cpp.Llama(
                    model_path=str(path), n_ctx=settings.n_ctx, n_threads=threads, n_threads_batch=threads,
                    seed=int(settings.params.get("seed", 0) or 0), verbose=False,
                )
            except Exception as e:  # llama.cpp says ValueError("Failed to load model from file")
                raise ModelUnavailable(f"cannot load GGUF file {path}: {e}") from None
            _LOADED[key] = _Shared(llama)
        return _LOADED[key]


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
            llama._model.vocab, grammar._grammar.encode(), grammar._root.encode())
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
    """A GGUF model run in this process; one loaded copy per (file, n_ctx) is shared."""

    kind = "llamacpp"
    supports_json_schema = True
    supports_prefill = True

    def __init__(self, settings: ModelSettings):
        if importlib.util.find_spec("llama_cpp") is None:
            raise ModelUnavailable(f"the llamacpp backend needs llama-cpp-python: {INSTALL_HINT}")
        self.settings = settings
        self.path = resolve_gguf(settings)
        self._identity: dict[str, Any] | None = None

    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            self._identity = {"kind": self.kind, "model": self.settings.model_name,
                              "gguf_sha256_prefix": gguf_fingerprint(self.path), "n_ctx": self.settings.n_ctx}
            template = resolve_chat_template(self.settings)
            if template:
                self._identity["chat_template_sha256"] = hashlib.sha256(template.encode()).hexdigest()[:16]
        return self._identity

    def shared(self) -> _Shared:
        """The loaded model (loads it now if needed; blocking)."""
        return _load_shared(self.path, self.settings)

    @property
    def llama(self) -> Any:
        return self.shared().llama

    def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` has for this model (no BOS added)."""
        shared = self.shared()
        with shared.lock:
            return len(shared.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    async def warm(self) -> None:
        await asyncio.get_running_loop().run_in_executor(_llama_thread(), self.shared)

    async def chat(self, request: ChatRequest) -> Completion:
        return await asyncio.get_running_loop().run_in_executor(_llama_thread(), self._chat_blocking, request)

    def _chat_blocking(self, request: ChatRequest) -> Completion:
        shared = self.shared()
        kwargs = map_params(request, int(self.settings.params.get("seed", 0) or 0))
        kwargs["seed"] += request.sample_index
        kwargs.setdefault("temperature", DEFAULT_TEMPERATURE)
        with shared.lock:
            if request.json_schema is not None:
                kwargs["grammar"] = _grammar_for(request.json_schema, shared.llama)
            tokens = self._render(shared, request)
            if tokens is None:  # a GGUF without a chat template: llama-cpp-python's own guess
                return self._chat_without_template(shared, request, kwargs)
            kwargs["max_tokens"] = self._fit_max_tokens(len(tokens), kwargs["max_tokens"])
            if not self.settings.kv_reuse:
                shared.llama.reset()
            reused = _reusable_prefix(shared.llama, tokens)
            response = self._call(shared.llama.create_completion, prompt=tokens, **kwargs)
        choice = response["choices"][0]
        return Completion(text=choice.get("text") or "", usage=_usage(response, reused),
                          finish_reason=choice.get("finish_reason"))

    def _render(self, shared: _Shared, request: ChatRequest) -> list[int] | None:
        """The prompt tokens: the chat template rendered, an assistant prefix left open after it.

        A prefill renders the conversation before the assistant turn with the generation
        prompt, then appends the prefix verbatim: the turn stays unclosed and the template
        cannot rewrite the prefix (as some templates do to ``<think>`` blocks).
        """
        template = resolve_chat_template(self.settings) or chat_template_of(shared.llama)
        if template is None:
            if request.continue_final:
                raise ModelError(f"{self.path.name} has no chat template to continue an assistant turn with; "
                                 f"set chat_template in the model's config")
            return None
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        prefix = ""
        if request.continue_final:
            prefix = messages.pop()["content"]
        try:
            rendered = _formatter(shared, template)(messages=messages)
        except Exception as e:  # a template may refuse a conversation (roles must alternate, ...)
            raise ModelError(f"the chat template refused these messages: {type(e).__name__}: {e}", kind="rejected") from None
        text = rendered.prompt + prefix
        return shared.llama.tokenize(text.encode("utf-8"), add_bos=not rendered.added_special, special=True)

    def _chat_without_template(self, shared: _Shared, request: ChatRequest, kwargs: dict[str, Any]) -> Completion:
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        kwargs["max_tokens"] = self._fit_max_tokens(_rough_prompt_tokens(shared, request.messages), kwargs["max_tokens"])
        response = self._call(shared.llama.create_chat_completion, messages=messages, **kwargs)
        choice = response["choices"][0]
        return Completion(text=choice["message"].get("content") or "", usage=_usage(response, 0),
                          finish_reason=choice.get("finish_reason"))

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


def _usage(response: dict[str, Any], reused: int) -> Usage:
    usage = response.get("usage") or {}
    return Usage(prompt_tokens=usage.get("prompt_tokens", 0), completion_tokens=usage.get("completion_tokens", 0),
                 cached_prompt_tokens=reused)


def _reusable_prefix(llama: Any, tokens: list[int]) -> int:
    """Prompt tokens whose KV state llama.cpp will reuse from the previous call (its own prefix match)."""
    current = llama._input_ids[: llama.n_tokens]
    common = 0
    for a, b in zip(current, tokens):
        if a != b:
            break
        common += 1
    return common - 1 if common == len(tokens) and common else common


def _formatter(shared: _Shared, template: str) -> Any:
    """A cached Jinja renderer for ``template`` with this model's BOS/EOS text."""
    if template not in shared.formatters:
        from llama_cpp import llama_chat_format  # noqa: PLC0415

        llama = shared.llama

        def text(token: int) -> str:
            return llama.detokenize([token], special=True).decode("utf-8", "replace") if token >= 0 else ""

        shared.formatters[template] = llama_chat_format.Jinja2ChatFormatter(
            template=template, eos_token=text(llama.token_eos()), bos_token=text(llama.token_bos()))
    return shared.formatters[template]


def _rough_prompt_tokens(shared: _Shared, messages: tuple[Message, ...]) -> int:
    """Contents plus a few tokens of markup per message (for GGUFs without a template)."""
    llama = shared.llama
    return sum(len(llama.tokenize(m.content.encode(), add_bos=False, special=True)) + 8 for m in messages)
