"""Models behind one small async interface: OpenAI-compatible servers and llama.cpp in-process."""

from ._base import ChatRequest, Completion, Message, ModelBackend, Role, Usage
from ._cache import CallCache, cache_key, default_cache_dir
from ._llamacpp import parallelism as local_parallelism
from ._model import Model
from ._registry import create_model, register_backend
from ._settings import (
    EMBEDDED_MAX_TOKENS,
    LOCAL,
    CallLimits,
    ModelsConfig,
    ModelSettings,
    embedded_gguf_path,
    load_models_config,
    parse_model_spec,
    settings_from_config,
)

__all__ = [
    "EMBEDDED_MAX_TOKENS",
    "LOCAL",
    "CallCache",
    "CallLimits",
    "ChatRequest",
    "Completion",
    "Message",
    "Model",
    "ModelBackend",
    "ModelSettings",
    "ModelsConfig",
    "Role",
    "Usage",
    "cache_key",
    "create_model",
    "default_cache_dir",
    "embedded_gguf_path",
    "load_models_config",
    "local_parallelism",
    "parse_model_spec",
    "register_backend",
    "settings_from_config",
]
