"""Backends by kind (group ``specalign.backends``). Built-ins register here the same way a plugin would."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from .._registry import Registry
from ..errors import ConfigError
from ._base import ModelBackend
from ._cache import CallCache
from ._model import Model
from ._settings import ModelSettings

ENTRY_POINT_GROUP = "specalign.backends"
#: builds a backend from a model's settings; a :class:`ModelBackend` subclass taking the settings is one
BackendFactory = Callable[[ModelSettings], ModelBackend]
F = TypeVar("F", bound=BackendFactory)


def _adopt(registry: Registry[BackendFactory], entry_point: str, obj: Any) -> None:
    """An entry point that names a factory (not a module) registers it under the entry point's name."""
    if not callable(obj):
        raise ConfigError(
            f"plugin {entry_point!r} (entry point group {ENTRY_POINT_GROUP}) names {obj!r}, not a module "
            f"or a backend factory (a ModelBackend subclass, or a function of the model's settings)"
        )
    registry.register(entry_point, obj)


BACKENDS: Registry[BackendFactory] = Registry("backend", ENTRY_POINT_GROUP, field="backend", adopt=_adopt)


@overload
def register_backend(kind: str) -> Callable[[F], F]: ...
@overload
def register_backend(kind: str, factory: F) -> F: ...
def register_backend(kind: str, factory: F | None = None) -> F | Callable[[F], F]:
    """Make ``backend: <kind>`` in model settings (and the spec ``<kind>:MODEL``) build backends with ``factory``.

    ``factory`` takes the model's :class:`ModelSettings` and returns a :class:`ModelBackend` (a
    backend class whose constructor takes the settings is one). Without ``factory``, a decorator.
    """
    if factory is None:

        def decorate(f: F) -> F:
            BACKENDS.register(kind, f)
            return f

        return decorate
    BACKENDS.register(kind, factory)
    return factory


def available_backends() -> list[str]:
    """Every backend kind, built-ins and plugins, sorted."""
    return BACKENDS.names()


def _openai(settings: ModelSettings) -> ModelBackend:
    from ._openai import OpenAIBackend  # noqa: PLC0415  (imports the SDK lazily)

    return OpenAIBackend(settings)


def _llamacpp(settings: ModelSettings) -> ModelBackend:
    from ._llamacpp import LlamaCppBackend  # noqa: PLC0415  (imports llama_cpp lazily)

    return LlamaCppBackend(settings)


def _anthropic(settings: ModelSettings) -> ModelBackend:
    from ._anthropic import AnthropicBackend  # noqa: PLC0415  (imports the SDK lazily)

    return AnthropicBackend(settings)


register_backend("openai", _openai)
register_backend("llamacpp", _llamacpp)
register_backend("anthropic", _anthropic)


def create_model(settings: ModelSettings, cache: CallCache | None = None) -> Model:
    """Build the backend named by ``settings.backend`` and wrap it as a :class:`Model`."""
    return Model(settings, BACKENDS.get(settings.backend, field="backend")(settings), cache)
