"""Reading data files with one-line errors that name the file and the field."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import DataError

#: the largest data file read (the official prompts.json files are well under 1 MiB)
MAX_FILE_BYTES = 256 * 1024 * 1024
_SURROGATE = re.compile("[\ud800-\udfff]")


def read_bytes(path: Path, limit: int | None = None) -> bytes:
    """A regular file's bytes, or one ``DataError``: missing, not a file (a FIFO or device), too big, unreadable."""
    limit = MAX_FILE_BYTES if limit is None else limit
    try:
        if not path.is_file():
            why = (
                "file not found"
                if not path.exists()
                else "a folder, not a file"
                if path.is_dir()
                else "not a regular file"
            )
            raise DataError(why, path=str(path))
        with path.open("rb") as f:
            raw = f.read(limit + 1)
    except OSError as e:
        raise DataError(f"cannot read file ({e.strerror or e})", path=str(path)) from None
    if len(raw) > limit:
        raise DataError(f"file is larger than {limit // (1024 * 1024)} MiB", path=str(path))
    return raw


def read_text(path: Path) -> str:
    raw = read_bytes(path)
    try:
        return raw.decode("utf-8-sig")  # a byte order mark, as Windows editors write, is dropped
    except UnicodeDecodeError as e:
        raise DataError(f"not valid UTF-8 (byte {e.start})", path=str(path)) from None


def read_json(path: Path) -> Any:
    text = read_text(path)
    try:
        return _valid_text(json.loads(text), path)
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}", path=str(path)) from None
    except RecursionError:
        raise DataError("invalid JSON: nested too deeply", path=str(path)) from None
    except ValueError as e:  # e.g. an integer with more digits than Python converts
        raise DataError(f"invalid JSON: {str(e).splitlines()[0][:200]}", path=str(path)) from None


class _PlainLoader(yaml.SafeLoader):
    """YAML without aliases: an alias can expand a small file into gigabytes (billion laughs)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not accepted", event.start_mark)
        return super().compose_node(parent, index)


MAX_YAML_DEPTH = 64


def parse_yaml(text: str) -> Any:
    """Safe YAML without aliases or deep nesting; raises ``ValueError`` with a one-line reason."""
    try:
        data = yaml.load(text, Loader=_PlainLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise ValueError("invalid YAML: nested too deeply") from None
    if _depth(data) > MAX_YAML_DEPTH:
        raise ValueError(f"invalid YAML: nested more than {MAX_YAML_DEPTH} levels deep")
    return data


def _depth(x: Any) -> int:
    stack, deepest = [(x, 1)], 0
    while stack:
        item, d = stack.pop()
        deepest = max(deepest, d)
        if d > MAX_YAML_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, d + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, d + 1) for v in item)
    return deepest


def read_yaml(path: Path) -> Any:
    text = read_text(path)
    try:
        data = parse_yaml(text)
    except ValueError as e:
        raise DataError(str(e), path=str(path)) from None
    return _valid_text(data, path)


def _valid_text(data: Any, path: Path) -> Any:
    """``data`` unchanged, or a ``DataError`` naming the field where a ``\\ud800``-style escape left a lone
    surrogate: not a character, and no file, cache or record could be written with it."""
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise DataError(
                    "a lone UTF-16 surrogate escape (such as \\ud800) is not a character",
                    path=str(path),
                    field=where or None,
                )
        elif isinstance(item, dict):
            for k, v in item.items():
                name = f"{where}.{k}" if where else str(k)
                stack.append((str(k), name))
                stack.append((v, name))
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
    return data


def validation_message(err: ValidationError, prefix: str = "") -> tuple[str, str]:
    """The first error of a pydantic ValidationError as (field path, message)."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    field = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
    msg = first["msg"]
    if first["type"] == "missing":
        msg = "required field is missing"
    elif first["type"] == "extra_forbidden":
        msg = "unknown field"
    elif first["type"] == "value_error":  # our own validators: their message as written
        msg = msg.removeprefix("Value error, ")
    elif first["type"] == "literal_error":
        msg = f"{msg} (got {first.get('input')!r})"
    n = len(err.errors())
    if n > 1:
        msg += f" (and {n - 1} more error{'s' if n > 2 else ''})"
    return field, msg


def check_unique_ids(ids: list[str], path: Path, what: str = "id") -> None:
    seen: set[str] = set()
    for i, x in enumerate(ids):
        if x in seen:
            raise DataError(f"duplicated {what} {x!r}", path=str(path), field=f"[{i}].{what}")
        seen.add(x)


def check_unique_keys(found: list[tuple[str, Path]], root: Path | str, what: str = "folders") -> None:
    """Each scenario key once (ignoring case: folders on macOS and Windows do): else name both folders."""
    seen: dict[str, Path] = {}
    for key, folder in found:
        other = seen.setdefault(key.lower(), folder)
        if other != folder:
            raise DataError(
                f"scenario key {key!r} is declared by two {what}, {other.name} and {folder.name}: keys must be unique",
                path=str(root),
            )
