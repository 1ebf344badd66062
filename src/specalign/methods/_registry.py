"""One registry of generation methods, used by built-ins and plugins alike."""

from __future__ import annotations

from importlib import metadata
from typing import Any

from pydantic import ValidationError

from ..errors import ConfigError
from ._base import GenerationMethod

_METHODS: dict[str, type[GenerationMethod]] = {}
_PLUGINS_LOADED = False
ENTRY_POINT_GROUP = "specalign.methods"


def register_method(cls: type[GenerationMethod]) -> type[GenerationMethod]:
    """Class decorator: make ``cls`` available as ``--method <cls.name>``."""
    _METHODS[cls.name] = cls
    return cls


def _load_plugins() -> None:
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        ep.load()  # importing the module registers its methods


def available_methods() -> dict[str, type[GenerationMethod]]:
    _load_plugins()
    return dict(sorted(_METHODS.items()))


def create_method(name: str, params: dict[str, Any] | None = None) -> GenerationMethod:
    """Instantiate the method registered as ``name`` with validated hyper-parameters."""
    methods = available_methods()
    cls = methods.get(name)
    if cls is None:
        raise ConfigError(f"unknown method {name!r} (available: {', '.join(methods)})", field="method")
    try:
        return cls(params)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "params"
        got = "" if first["type"] == "missing" else f" (got {first.get('input')!r})"
        extra = f"; {cls.name} takes {', '.join(cls.Params.model_fields)}" if first["type"] == "extra_forbidden" else ""
        raise ConfigError(f"{first['msg']}{got}{extra}", field=f"method {name}: {where}") from None
    except ValueError as e:
        raise ConfigError(str(e).splitlines()[0], field=f"method {name}") from None
