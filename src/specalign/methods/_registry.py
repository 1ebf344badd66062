"""One registry of generation methods, used by built-ins and plugins alike (group ``specalign.methods``)."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import ValidationError

from .._registry import Registry
from ..errors import ConfigError
from ._base import GenerationMethod

ENTRY_POINT_GROUP = "specalign.methods"
M = TypeVar("M", bound=type[GenerationMethod])


def _adopt(registry: Registry[type[GenerationMethod]], entry_point: str, obj: Any) -> None:
    """An entry point that names a method class (not a module) registers it under the class's ``name``."""
    if not (
        isinstance(obj, type) and issubclass(obj, GenerationMethod) and isinstance(getattr(obj, "name", None), str)
    ):
        raise ConfigError(
            f"plugin {entry_point!r} (entry point group {ENTRY_POINT_GROUP}) names {obj!r}, not a module "
            f"or a GenerationMethod subclass with a name"
        )
    registry.register(obj.name, obj)


METHODS: Registry[type[GenerationMethod]] = Registry("method", ENTRY_POINT_GROUP, field="method", adopt=_adopt)


def register_method(cls: M) -> M:
    """Class decorator: make ``cls`` available as ``--method <cls.name>``."""
    METHODS.register(cls.name, cls)
    return cls


def available_methods() -> dict[str, type[GenerationMethod]]:
    """Every method by name, built-ins and plugins, sorted."""
    return METHODS.items()


def create_method(name: str, params: dict[str, Any] | None = None) -> GenerationMethod:
    """Instantiate the method registered as ``name`` with validated hyper-parameters."""
    cls = METHODS.get(name)
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
