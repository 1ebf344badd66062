"""Reading data files with one-line errors that name the file and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import DataError


def read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", path=str(path)) from None
    except OSError as e:
        raise DataError(f"cannot read file ({e.strerror})", path=str(path)) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"not valid UTF-8 (byte {e.start})", path=str(path)) from None


def read_json(path: Path) -> Any:
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}", path=str(path)) from None


def read_yaml(path: Path) -> Any:
    text = read_text(path)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise DataError(f"invalid YAML{where}: {problem}", path=str(path)) from None


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
