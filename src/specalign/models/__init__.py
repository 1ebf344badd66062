"""Models behind one small async interface: OpenAI-compatible servers and llama.cpp in-process.

Backends load like methods: built-ins and :func:`register_backend` calls, plus plugins through the
``specalign.backends`` entry-point group (see docs/plugins.md).
"""

from ._base import ChatRequest, Completion, Delta, Message, ModelBackend, Role, Usage, deltas_of
from ._batch import BatchCapable, BatchItemError, BatchRequest, BatchState
from ._cache import CallCache, default_cache_dir
from ._llamacpp import parallelism as local_parallelism
from ._model import CallObserver, Model, call_stage, prefill_refusal
from ._prices import (
    ASSUMED_COMPLETION_TOKENS,
    CallMeter,
    Price,
    PriceOverride,
    Pricing,
    completion_bound,
    estimated_usage,
    pricing_of,
    provider_of,
    text_tokens,
)
from ._registry import available_backends, create_model, register_backend
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
    "ASSUMED_COMPLETION_TOKENS",
    "BatchCapable",
    "BatchItemError",
    "BatchRequest",
    "BatchState",
    "EMBEDDED_MAX_TOKENS",
    "LOCAL",
    "CallCache",
    "CallLimits",
    "CallMeter",
    "CallObserver",
    "ChatRequest",
    "Completion",
    "Delta",
    "Message",
    "Model",
    "ModelBackend",
    "ModelSettings",
    "ModelsConfig",
    "Price",
    "PriceOverride",
    "Pricing",
    "Role",
    "Usage",
    "available_backends",
    "call_stage",
    "completion_bound",
    "create_model",
    "default_cache_dir",
    "deltas_of",
    "embedded_gguf_path",
    "estimated_usage",
    "load_models_config",
    "local_parallelism",
    "parse_model_spec",
    "prefill_refusal",
    "pricing_of",
    "provider_of",
    "register_backend",
    "settings_from_config",
    "text_tokens",
]
