"""The settings of one evaluation run, as the CLI and the Python API give them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from .._secrets import redact_text
from ..errors import ConfigError
from ..models import LOCAL
from ..scoring import DEFAULT_ALPHA, NAPolicy

#: prompts per scenario when the embedded model is used and no --limit is given
EMBEDDED_DEFAULT_LIMIT = 2


class RunConfig(BaseModel):
    """One evaluation: which data, which model and method, which judge, where to write."""

    data: str = "bundled"
    scenarios: list[str] = Field(default_factory=list)
    limit: int | None = Field(default=None, ge=0, description="prompts per scenario; None or 0 = all")
    model: str = "local"
    judge: str = Field(
        default="local",
        description="the judge model, or a panel: two judges or more, comma-separated (each judges every answer)",
    )
    panel_rule: Literal["majority", "strict"] = Field(
        default="majority",
        description="how a panel's verdicts make the panel's: majority, or strict (a safety NO from any judge counts)",
    )
    method: str = "vanilla"
    method_params: dict[str, Any] = Field(default_factory=dict)
    judge_mode: Literal["joint", "sequential"] = "joint"
    judge_attempts: int = Field(default=3, ge=1, le=20)
    judge_template: str | None = Field(
        default=None,
        description="a YAML judge prompt template of the user's own (docs/judge.md); joint mode only. "
        "Its content hash is part of the judge key",
    )
    concurrency: int = Field(default=8, ge=1, le=4096, description="calls in flight per model (target, judge each)")
    models_config: list[str] = Field(default_factory=list, description="models config files, merged in order")
    out: str | None = None
    alpha: float = Field(default=DEFAULT_ALPHA, ge=0, le=1)
    na_policy: NAPolicy = "official"
    use_cache: bool = True
    cache_dir: str | None = None
    retry_unscored: bool = False
    batch: bool = Field(
        default=False, description="send the calls of models that can batch through their provider's batch API"
    )
    batch_no_wait: bool = Field(default=False, description="with batch: submit and stop; a rerun collects")
    batch_poll_s: float = Field(default=30.0, gt=0, le=3600, description="seconds between polls of open batches")
    batch_retry: Literal["online", "batch"] = Field(
        default="online", description="requests a batch did not answer go out again online, or in the next batch"
    )
    stop_after_failures: int = Field(
        default=25, ge=0, description="stop when this many samples in a row fail at the model (0: never)"
    )
    max_cost: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="USD: stop before a call would take the run's cost (its records', all sessions) past this",
    )

    @field_validator("models_config", mode="before")
    @classmethod
    def _config_files(cls, v: Any) -> Any:
        """One file as a string (the older form), or none as None, still reads."""
        return [] if v is None else [v] if isinstance(v, str) else v

    def judges(self) -> list[str]:
        """The judge's model spec, or each panel member's (``judge`` split at its commas)."""
        parts = [p.strip() for p in self.judge.split(",")]
        if len(parts) > 1 and not all(parts):
            raise ConfigError(f"{self.judge!r}: an empty judge between commas", field="--judge")
        return parts

    def effective_limit(self) -> int | None:
        if self.limit is not None:
            return self.limit or None
        if LOCAL in (self.model, *self.judges()):
            return EMBEDDED_DEFAULT_LIMIT
        return None

    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        model = redact_text(self.model)  # a base URL's userinfo and query values never name a folder
        return Path("runs") / f"{_slug(self._data_name())}-{_slug(model)}-{_slug(self.method)}"

    def _data_name(self) -> str:
        if self.data == "bundled":
            return "bundled"
        if self.data.startswith("hf:"):
            return "hf-" + self.data[3:].rsplit("/", 1)[-1]
        return Path(self.data).resolve().name or "data"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "_", text).strip("_")[:60] or "x"
