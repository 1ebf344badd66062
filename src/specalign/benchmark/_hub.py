"""The Hugging Face copy of SpecBench (``hf:zzzhr97/SpecBench``), via the optional ``datasets`` package."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from ..errors import DataError
from ._files import check_unique_keys, validation_message
from ._models import Prompt, Scenario

HINT = "use --data with a local copy in the official layout (e.g. --data ../shared/specbench-data) or the bundled data"


def load_hub(repo: str) -> list[Scenario]:
    try:
        import datasets  # noqa: PLC0415  (optional, heavy)
    except ImportError:
        raise DataError(
            f"loading hf:{repo} needs the 'datasets' package (pip install 'specalign[hub]'); or {HINT}"
        ) from None
    try:
        dd = datasets.load_dataset(repo)
    except Exception as e:  # offline, unknown repo, ...: one clear line
        offline = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("HF_DATASETS_OFFLINE")
        why = "offline mode is on" if offline else f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        raise DataError(f"cannot load Hugging Face dataset {repo!r} ({why}); {HINT}") from None
    scenarios = []
    for split in dd:
        try:
            scenarios.append(_scenario(split, dd[split]))
        except ValidationError as e:
            field, msg = validation_message(e)
            raise DataError(msg, path=f"hf:{repo}", field=f"{split}.{field}") from None
    check_unique_keys(
        [(s.key, Path(split)) for s, split in zip(scenarios, dd, strict=False)], f"hf:{repo}", what="splits"
    )
    return scenarios


def _scenario(split: str, rows) -> Scenario:
    first = rows[0]
    safety = [first[k] for k in sorted(_cols(first, "safety_spec_"), key=_num) if first[k]]
    behavioral = [first[k] for k in sorted(_cols(first, "behavioral_spec_"), key=_num) if first[k]]
    prompts = [
        Prompt(
            id=f"{split}-{i:03d}",
            label=r["label"],
            prompt=r["adversarial_prompt"],
            original_prompt=r.get("prompt") or r["adversarial_prompt"],
            reference_answer=r.get("answer") or None,
            source=r.get("source", ""),
        )
        for i, r in enumerate(rows)
    ]
    return Scenario.model_validate(
        {
            "key": first.get("scenario") or split,
            "name": first.get("scenario") or split,
            "description": first.get("scenario_description", ""),
            "safety_specs": [{"text": s} for s in safety],
            "behavioral_specs": [{"text": s} for s in behavioral],
            "prompts": prompts,
        }
    )


def _cols(row: dict, prefix: str) -> list[str]:
    return [k for k in row if k.startswith(prefix)]


def _num(col: str) -> int:
    return int(col.rsplit("_", 1)[1])
