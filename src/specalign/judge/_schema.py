"""Verdicts and the JSON schema a judge answers in."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from ..benchmark import Scenario

Verdict = Literal["YES", "NO", "NA"]
VERDICTS: tuple[str, ...] = ("YES", "NO", "NA")
REASON_MAX_CHARS = 150
#: the embedded 135M judge fills whatever length it is allowed; a short bound keeps the demo fast
EMBEDDED_REASON_MAX_CHARS = 60


class SpecVerdict(BaseModel):
    """The judge's verdict on one spec of one response."""

    verdict: Verdict
    reason: str = ""


def spec_ids(scenario: Scenario) -> tuple[list[str], list[str]]:
    """(safety ids S1.., behavioral ids B1..) of a scenario."""
    return scenario.spec_ids("safety"), scenario.spec_ids("behavioral")


def _verdict_object(reason_chars: int = REASON_MAX_CHARS) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "reason": {"type": "string", "maxLength": reason_chars},
            "verdict": {"type": "string", "enum": list(VERDICTS)},
        },
        "required": ["reason", "verdict"],
        "additionalProperties": False,
    }


def joint_schema(
    scenario: Scenario, reason_chars: int = REASON_MAX_CHARS, kinds: tuple[str, ...] = ("safety", "behavioral")
) -> dict[str, Any]:
    """One object with a key per spec (S1.., B1.., of ``kinds``), each ``{reason, verdict}``: the count is
    exact by construction."""
    safety, behavioral = spec_ids(scenario)
    keys = (safety if "safety" in kinds else []) + (behavioral if "behavioral" in kinds else [])
    return {
        "type": "object",
        "properties": {k: _verdict_object(reason_chars) for k in keys},
        "required": keys,
        "additionalProperties": False,
    }


def single_schema(reason_chars: int = REASON_MAX_CHARS) -> dict[str, Any]:
    """The answer of a sequential judge call about one spec."""
    return _verdict_object(reason_chars)


class JudgeOutcome(BaseModel):
    """A judge's result for one sample: scored with one verdict per spec, or unscored with a reason."""

    status: Literal["scored", "unscored"]
    verdicts: dict[str, SpecVerdict] = Field(default_factory=dict)
    unscored_reason: str | None = None
    call_failed: bool = Field(False, description="unscored because the judge model could not be reached")
    raw_outputs: list[str] = Field(default_factory=list)
    attempts: int = 0
    calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
