"""Everything a run writes to disk, as pydantic models."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from .._secrets import redact_text
from ..benchmark import PromptLabel
from ..judge import SpecVerdict
from ..methods import MethodStep
from ..models import Usage
from ..scoring import NAPolicy

#: the layout of run directories this version writes and reads; a newer one is refused, never guessed at
FORMAT_VERSION = 1


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ScenarioInfo(BaseModel):
    name: str
    n_safety: int = Field(ge=0)
    n_behavioral: int = Field(ge=0)
    behavioral_weights: list[float]

    @model_validator(mode="after")
    def _weights(self) -> ScenarioInfo:
        if len(self.behavioral_weights) != self.n_behavioral:
            raise ValueError(f"{len(self.behavioral_weights)} behavioral_weights for n_behavioral {self.n_behavioral}")
        if not all(math.isfinite(w) and w >= 0 for w in self.behavioral_weights):
            raise ValueError("behavioral_weights must be finite and not negative")
        return self

    def spec_ids(self) -> list[str]:
        """S1..Sn then B1..Bm: the verdicts a scored judgment of this scenario holds."""
        return [f"S{i}" for i in range(1, self.n_safety + 1)] + [f"B{i}" for i in range(1, self.n_behavioral + 1)]


class DataInfo(BaseModel):
    source: str
    sha256: str
    scenarios: dict[str, ScenarioInfo]


class Selection(BaseModel):
    scenarios: list[str]
    limit: int | None = Field(ge=0)
    n_samples: int = Field(ge=0)


class Session(BaseModel):
    """One invocation of ``specalign run`` on this directory: when, how long, what it did."""

    started_at: str = Field(default_factory=now)
    wall_s: float = 0.0
    model_calls: int = 0
    samples_done: int = 0
    samples_resumed: int = 0


class Manifest(BaseModel):
    """What a run directory holds and how it was made. No secrets: API keys appear only as env names."""

    format_version: int = FORMAT_VERSION
    specalign_version: str
    created_at: str = Field(default_factory=now)
    updated_at: str = Field(default_factory=now)
    generation_key: str
    data: DataInfo
    selection: Selection
    model: dict[str, Any]
    model_identity: dict[str, Any]
    method: dict[str, Any]
    judge: dict[str, Any]
    past_judges: list[dict[str, Any]] = Field(default_factory=list)
    alpha: float = Field(ge=0, le=1, allow_inf_nan=False)
    na_policy: NAPolicy
    environment: dict[str, str] = Field(default_factory=dict)
    sessions: list[Session] = Field(default_factory=list, description="each invocation of the run, oldest first")

    @field_validator("model", "model_identity", "judge", "past_judges", mode="after")
    @classmethod
    def _no_credentials(cls, value: Any) -> Any:
        """URL credentials redacted, also in manifests written before specalign redacted them."""
        return _redacted(value)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        """What readers index into: the judge's key, model and mode, the method's name, selected scenarios."""
        for field, d, keys in (
            ("judge", self.judge, {"key": str, "model": dict, "mode": str}),
            ("method", self.method, {"name": str}),
        ):
            for key, kind in keys.items():
                if not isinstance(d.get(key), kind):
                    raise ValueError(f"{field}.{key} must be a {kind.__name__}")
        if not isinstance(self.method.get("params", {}), dict):
            raise ValueError("method.params must be a dict")
        if not all(isinstance(p.get("key"), str) for p in self.past_judges):
            raise ValueError("past_judges: every judge needs a key")
        missing = [k for k in self.selection.scenarios if k not in self.data.scenarios]
        if missing:
            raise ValueError(f"selection.scenarios: {missing[0]!r} is not in data.scenarios")
        return self


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value) if "://" in value else value
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


def record_problem(record: GenerationRecord | JudgmentRecord, manifest: Manifest) -> str | None:
    """Why a record that parsed cannot be used with this manifest (None: it can)."""
    info = manifest.data.scenarios.get(record.scenario)
    if info is None:
        return f"scenario {record.scenario!r} is not in manifest.json"
    if record.sample_id != f"{record.scenario}/{record.prompt_id}":
        return f"sample_id {record.sample_id!r} is not scenario/prompt_id"
    if isinstance(record, JudgmentRecord) and record.status == "scored":
        expected = info.spec_ids()
        missing = [k for k in expected if k not in record.verdicts]
        if missing:
            return f"scored without a verdict for {', '.join(missing[:5])}"
        extra = sorted(set(record.verdicts) - set(expected))
        if extra:
            return f"verdicts for specs the scenario does not have: {', '.join(extra[:5])}"
    return None


class GenerationRecord(BaseModel):
    """One sample's generation: the thought and response, or the error that stopped it."""

    sample_id: str
    scenario: str
    prompt_id: str
    label: PromptLabel
    status: Literal["ok", "error"]
    prompt_sent: str
    thought: str = ""
    response: str = ""
    flags: list[str] = Field(default_factory=list)
    error: str | None = None
    usage: Usage = Field(default_factory=Usage)
    scorer_usage: Usage = Field(default_factory=Usage)
    calls: int = 0
    cached_calls: int = 0
    steps: list[MethodStep] = Field(default_factory=list, description="every sub-call of the method, in order")
    stats: dict[str, int] = Field(default_factory=dict)
    elapsed_s: float = 0.0
    created_at: str = Field(default_factory=now)


class JudgmentRecord(BaseModel):
    """One sample's judgment by one judge: scored with a verdict per spec, or unscored with the reason."""

    sample_id: str
    scenario: str
    prompt_id: str
    label: PromptLabel
    judge_key: str
    status: Literal["scored", "unscored"]
    verdicts: dict[str, SpecVerdict] = Field(default_factory=dict)
    unscored_reason: str | None = None
    call_failed: bool = Field(False, description="the judge could not be reached: judged again on the next run")
    raw_outputs: list[str] = Field(default_factory=list)
    attempts: int = 0
    usage: Usage = Field(default_factory=Usage)
    calls: int = 0
    cached_calls: int = 0
    elapsed_s: float = 0.0
    created_at: str = Field(default_factory=now)
