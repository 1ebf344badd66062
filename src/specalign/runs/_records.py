"""Everything a run writes to disk, as pydantic models."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..benchmark import PromptLabel
from ..judge import SpecVerdict
from ..methods import MethodStep
from ..models import Usage

FORMAT_VERSION = 1


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ScenarioInfo(BaseModel):
    name: str
    n_safety: int
    n_behavioral: int
    behavioral_weights: list[float]


class DataInfo(BaseModel):
    source: str
    sha256: str
    scenarios: dict[str, ScenarioInfo]


class Selection(BaseModel):
    scenarios: list[str]
    limit: int | None
    n_samples: int


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
    alpha: float
    na_policy: str
    environment: dict[str, str] = Field(default_factory=dict)
    sessions: list[Session] = Field(default_factory=list, description="each invocation of the run, oldest first")


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
