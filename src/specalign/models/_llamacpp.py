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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError, ModelUnavailable
from ._base import ChatRequest, Completion, Message, ModelBackend, Usage
from ._settings import LOCAL, ModelSettings, embedded_gguf_path

INSTALL_HINT = "pip install 'specalign[local]'"
DEFAULT_MAX_TOKENS = 512
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
    formatter: Any = None


_LOADED: dict[tuple[str, int], _Shared] = {}
_LOAD_LOCK = threading.Lock()
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

    async def chat(self, request: ChatRequest) -> Completion:
        return await asyncio.to_thread(self._chat_blocking, request)

    def _chat_blocking(self, request: ChatRequest) -> Completion:
        shared = self.shared()
        kwargs = map_params(request, int(self.settings.params.get("seed", 0) or 0))
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        with shared.lock:
            if request.json_schema is not None:
                kwargs["grammar"] = _grammar_for(request.json_schema, shared.llama)
            kwargs["max_tokens"] = self._fit_max_tokens(shared, request.messages, kwargs["max_tokens"])
            try:
                response = shared.llama.create_chat_completion(messages=messages, **kwargs)
            except ValueError as e:
                raise ModelError(self._overflow_message(e)) from None
            except Exception as e:
                raise ModelError(f"llama.cpp failed: {type(e).__name__}: {e}") from None
        choice = response["choices"][0]
        usage = response.get("usage") or {}
        return Completion(
            text=choice["message"].get("content") or "",
            usage=Usage(prompt_tokens=usage.get("prompt_tokens", 0),
                        completion_tokens=usage.get("completion_tokens", 0)),
            finish_reason=choice.get("finish_reason"),
        )

    def _fit_max_tokens(self, shared: _Shared, messages: tuple[Message, ...], max_tokens: int) -> int:
        """Clamp ``max_tokens`` to the room left in the context; ModelError if under 16 tokens remain."""
        n_ctx = self.settings.n_ctx
        prompt = _prompt_tokens(shared, messages)
        room = n_ctx - prompt
        if room < MIN_GENERATION_TOKENS:
            raise ModelError(f"prompt of {prompt} tokens does not fit the context window of {n_ctx}")
        return room if max_tokens <= 0 else min(max_tokens, room)

    def _overflow_message(self, error: ValueError) -> str:
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        found = re.search(r"Requested tokens \((\d+)\) exceed context window", text)
        if found:
            return f"prompt of {found.group(1)} tokens does not fit the context window of {self.settings.n_ctx}"
        return f"llama.cpp rejected the request: {text}"


def _prompt_tokens(shared: _Shared, messages: tuple[Message, ...]) -> int:
    """Tokens of the chat prompt as llama.cpp renders it (call with ``shared.lock`` held)."""
    llama = shared.llama
    template = chat_template_of(llama)
    if template is None:  # rough: contents plus a few tokens of markup per message
        return sum(len(llama.tokenize(m.content.encode(), add_bos=False, special=True)) + 8 for m in messages)
    if shared.formatter is None:
        from llama_cpp import llama_chat_format  # noqa: PLC0415

        def text(token: int) -> str:
            return llama.detokenize([token], special=True).decode("utf-8", "replace") if token >= 0 else ""

        shared.formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template, eos_token=text(llama.token_eos()), bos_token=text(llama.token_bos()))
    try:
        rendered = shared.formatter(messages=[{"role": m.role, "content": m.content} for m in messages])
    except Exception:  # the template refuses these messages: llama.cpp will say why on the real call
        return 0
    return len(llama.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True))
