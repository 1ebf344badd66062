"""Named extensions (generation methods, model backends): one registry each, built-ins and plugins alike.

Built-ins register when their module is imported. A plugin package declares entry points in the
registry's group (``specalign.methods``, ``specalign.backends``); they are loaded lazily, the first
time a name is not found or the names are listed, so a run that uses only built-ins never imports a
plugin. An entry point names either a module that registers its contents when imported, or the
object itself, which is then registered (see ``adopt``).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from types import ModuleType
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Objects of one kind by name, with the plugins of one entry-point group.

    ``kind`` names the objects in errors (``unknown method 'x' (available: ...)``); ``field`` is the
    error's default field. ``adopt(entry_point_name, obj)`` registers the object an entry point
    loaded (when it is not a module and not registered already); by default it is registered under
    the entry point's name.
    """

    def __init__(
        self, kind: str, group: str, *, field: str, adopt: Callable[[Registry[T], str, Any], None] | None = None
    ):
        self.kind = kind
        self.group = group
        self.field = field
        self._adopt = adopt
        self._entries: dict[str, T] = {}
        self._plugins_loaded = False

    def register(self, name: str, obj: T) -> T:
        """Make ``obj`` available as ``name`` (a later registration under the same name replaces it)."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a {self.kind} needs a non-empty name, got {name!r}")
        self._entries[name] = obj
        return obj

    def unregister(self, name: str) -> None:
        """Forget ``name`` (tests that register their own)."""
        self._entries.pop(name, None)

    def get(self, name: str, *, field: str | None = None) -> T:
        """The object registered as ``name``; a :class:`ConfigError` listing the available names if none is."""
        found = self._entries.get(name)
        if found is None:
            self.load_plugins()
            found = self._entries.get(name)
        if found is None:
            raise ConfigError(self.unknown(name), field=field or self.field)
        return found

    def unknown(self, name: str) -> str:
        """The one-line message for a name nothing is registered under."""
        return f"unknown {self.kind} {name!r} (available: {', '.join(self.names())})"

    def __contains__(self, name: object) -> bool:
        if name in self._entries:
            return True
        self.load_plugins()
        return name in self._entries

    def names(self) -> list[str]:
        """Every registered name, plugins included, sorted."""
        self.load_plugins()
        return sorted(self._entries)

    def items(self) -> dict[str, T]:
        """Every registered object by name, plugins included, sorted by name."""
        self.load_plugins()
        return dict(sorted(self._entries.items()))

    def load_plugins(self) -> None:
        """Load every entry point of the group, once."""
        if self._plugins_loaded:
            return
        for ep in metadata.entry_points(group=self.group):
            self._load(ep)
        self._plugins_loaded = True

    def _load(self, ep: metadata.EntryPoint) -> None:
        where = f"plugin {ep.name!r} ({ep.value}, entry point group {self.group})"
        before = dict(self._entries)
        try:
            obj = ep.load()
        except Exception as e:  # a broken plugin: one line naming it, not a traceback
            detail = (str(e).strip().splitlines() or [""])[0]
            raise ConfigError(f"cannot load {where}: {type(e).__name__}: {detail}".rstrip(": ")) from None
        if not isinstance(obj, ModuleType) and not any(v is obj for v in self._entries.values()):
            if self._adopt is not None:
                self._adopt(self, ep.name, obj)
            else:
                self.register(ep.name, obj)
        shadowed = sorted(n for n in before if self._entries.get(n) is not before[n])
        if shadowed:  # a plugin never replaces a built-in (or an earlier plugin) behind the user's back
            self._entries.update({n: before[n] for n in shadowed})
            raise ConfigError(
                f"{where} registers {self.kind} {', '.join(map(repr, shadowed))}, a name already taken; "
                f"give it another name"
            )
