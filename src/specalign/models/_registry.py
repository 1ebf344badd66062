"""Backends by kind. Built-ins register here the same way a plugin would."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigError
from ._base import ModelBackend
from ._cache import CallCache
from ._model import Model
from ._settings import ModelSettings

BackendFactory = Callable[[ModelSettings], ModelBackend]
_FACTORIES: dict[str, BackendFactory] = {}


def register_backend(kind: str, factory: BackendFactory) -> None:
    """Make ``backend: <kind>`` in model settings build backends with ``factory``."""
    _FACTORIES[kind] = factory


def _openai(settings: ModelSettings) -> ModelBackend:
    from ._openai import OpenAIBackend  # noqa: PLC0415  (imports the SDK lazily)

    return OpenAIBackend(settings)


def _llamacpp(settings: ModelSettings) -> ModelBackend:
    from ._llamacpp import LlamaCppBackend  # noqa: PLC0415  (imports llama_cpp lazily)

    return LlamaCppBackend(settings)


register_backend("openai", _openai)
register_backend("llamacpp", _llamacpp)


def create_model(settings: ModelSettings, cache: CallCache | None = None) -> Model:
    """Build the backend named by ``settings.backend`` and wrap it as a :class:`Model`."""
    factory = _FACTORIES.get(settings.backend)
    if factory is None:
        raise ConfigError(
            f"unknown backend {settings.backend!r} (have: {', '.join(sorted(_FACTORIES))})", field="backend"
        )
    return Model(settings, factory(settings), cache)
