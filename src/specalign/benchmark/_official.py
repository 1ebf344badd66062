"""The official SpecBench layout: ``<dir>/<Scenario>/{scenario,specifications,prompts}.json``."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from ..errors import DataError
from ._files import check_unique_keys, read_json, validation_message
from ._models import Prompt, Scenario

OFFICIAL_FILES = ("scenario.json", "specifications.json", "prompts.json")


def is_official_layout(root: Path) -> bool:
    return any((d / "specifications.json").is_file() for d in root.iterdir() if d.is_dir())


def load_official_dir(root: Path) -> list[Scenario]:
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and (d / "specifications.json").is_file())
    if not dirs:
        raise DataError("no scenario folders (<Scenario>/specifications.json) found", path=str(root))
    scenarios = [load_official_scenario(d) for d in dirs]
    check_unique_keys([(s.key, d) for s, d in zip(scenarios, dirs, strict=False)], root)
    return scenarios


def load_official_scenario(folder: Path) -> Scenario:
    meta = _mapping(folder / "scenario.json")
    specs = _mapping(folder / "specifications.json")
    items = read_json(folder / "prompts.json")
    if not isinstance(items, list):
        raise DataError("expected a list of prompts", path=str(folder / "prompts.json"))
    prompts = [_prompt(folder.name, i, item, folder / "prompts.json") for i, item in enumerate(items)]
    spath = folder / "specifications.json"
    for kind in ("safety_specifications", "behavioral_specifications"):
        v = specs.get(kind)
        if v is None:
            raise DataError("required field is missing", path=str(spath), field=kind)
        if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
            raise DataError("expected a list of strings", path=str(spath), field=kind)
        if not v:
            raise DataError("list is empty: a scenario needs at least one specification", path=str(spath), field=kind)
    if "name" not in meta:
        raise DataError("required field is missing", path=str(folder / "scenario.json"), field="name")
    try:
        return Scenario.model_validate(
            {
                "key": folder.name,
                "name": meta["name"],
                "description": meta.get("description", ""),
                "safety_specs": [{"text": s} for s in specs["safety_specifications"]],
                "behavioral_specs": [{"text": s} for s in specs["behavioral_specifications"]],
                "prompts": prompts,
            }
        )
    except ValidationError as e:
        field, msg = validation_message(e)
        loc = e.errors()[0]["loc"]
        path = spath
        if loc and loc[0] in ("name", "description"):  # these come from scenario.json
            path = folder / "scenario.json"
        elif loc and loc[0] == "key":  # the key is the folder's name
            path, field = folder, "folder name"
        elif loc and loc[0] in _SPEC_FIELDS:  # name the field as the file spells it
            field = _SPEC_FIELDS[str(loc[0])] + (f"[{loc[1]}]" if len(loc) > 1 else "")
        raise DataError(msg, path=str(path), field=field) from None


_SPEC_FIELDS = {"safety_specs": "safety_specifications", "behavioral_specs": "behavioral_specifications"}


def _mapping(path: Path) -> dict:
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError("expected a JSON object", path=str(path))
    return data


def _prompt(scenario: str, i: int, item: object, path: Path) -> Prompt:
    if not isinstance(item, dict):
        raise DataError("expected a JSON object", path=str(path), field=f"[{i}]")
    for key in ("adversarial_prompt", "label"):
        if key not in item:
            raise DataError("required field is missing", path=str(path), field=f"[{i}].{key}")
    answer = item.get("answer")
    try:
        return Prompt(
            id=f"{scenario}-{i:03d}",
            label=item["label"],
            prompt=item["adversarial_prompt"],
            original_prompt=item.get("prompt") or item["adversarial_prompt"],
            reference_answer=answer if isinstance(answer, str) and answer.strip() else None,
            source=str(item.get("source", "")),
        )
    except ValidationError as e:
        field, msg = validation_message(e, prefix=f"[{i}]")
        field = field.replace(".prompt", ".adversarial_prompt").replace(".original_prompt", ".prompt")
        raise DataError(msg, path=str(path), field=field) from None
