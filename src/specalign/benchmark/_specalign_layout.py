"""The specalign layout: ``<dir>/<key>/scenario.yaml`` and ``prompts.yaml`` (the bundled data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import DataError
from ._files import check_unique_ids, check_unique_keys, read_yaml, validation_message
from ._models import Prompt, Scenario

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "data"


def is_specalign_layout(root: Path) -> bool:
    return any((d / "scenario.yaml").is_file() for d in root.iterdir() if d.is_dir())


def load_specalign_dir(root: Path) -> list[Scenario]:
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and (d / "scenario.yaml").is_file())
    if not dirs:
        raise DataError("no scenario folders (<key>/scenario.yaml) found", path=str(root))
    scenarios = [load_scenario_dir(d) for d in dirs]
    check_unique_keys([(s.key, d) for s, d in zip(scenarios, dirs, strict=False)], root)
    return scenarios


def load_scenario_dir(folder: Path) -> Scenario:
    spath = folder / "scenario.yaml"
    head = read_yaml(spath)
    if not isinstance(head, dict):
        raise DataError("expected a mapping with key, name, safety_specs, behavioral_specs", path=str(spath))
    head = dict(head)
    if "prompts" in head:  # it would be dropped without a word
        raise DataError("prompts go in prompts.yaml beside scenario.yaml, not here", path=str(spath), field="prompts")
    head.setdefault("key", folder.name)
    for kind in ("safety_specs", "behavioral_specs"):
        head[kind] = [_spec(x, spath, f"{kind}[{i}]") for i, x in enumerate(_list(head.get(kind), spath, kind))]
    prompts = _load_prompts(folder / "prompts.yaml")
    try:
        return Scenario.model_validate({**head, "prompts": []}).model_copy(update={"prompts": prompts})
    except ValidationError as e:
        field, msg = validation_message(e)
        raise DataError(msg, path=str(spath), field=field) from None


def _load_prompts(path: Path) -> list[Prompt]:
    if not path.exists():
        return []
    items = read_yaml(path)
    if items is None:
        items = []
    if not isinstance(items, list):
        raise DataError("expected a list of prompts", path=str(path))
    prompts = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError("expected a mapping", path=str(path), field=f"[{i}]")
        item = dict(item)
        item.setdefault("original_prompt", item.get("prompt"))
        try:
            prompts.append(Prompt.model_validate(item))
        except ValidationError as e:
            field, msg = validation_message(e, prefix=f"[{i}]")
            ident = item.get("id")
            raise DataError(msg + (f" (id {ident!r})" if ident else ""), path=str(path), field=field) from None
    check_unique_ids([p.id for p in prompts], path)
    return prompts


def _list(value: Any, path: Path, field: str) -> list:
    if value is None:
        raise DataError("required field is missing", path=str(path), field=field)
    if not isinstance(value, list):
        raise DataError("expected a list", path=str(path), field=field)
    if not value:
        raise DataError("list is empty: a scenario needs at least one specification", path=str(path), field=field)
    return value


def _spec(x: Any, path: Path, field: str) -> dict:
    if isinstance(x, str):
        return {"text": x}
    if isinstance(x, dict):
        return x
    raise DataError("expected a string or a mapping with 'text' (and optional 'weight')", path=str(path), field=field)
