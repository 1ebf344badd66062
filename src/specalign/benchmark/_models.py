"""Pydantic models of a benchmark: scenarios, their specifications and prompts."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Label = Literal["safe", "unsafe"]
#: a prompt's label; ``unlabeled`` (live traffic, a user's own prompts) counts in the full set only
PromptLabel = Literal["safe", "unsafe", "unlabeled"]
SpecKind = Literal["safety", "behavioral"]


class Spec(BaseModel):
    """One specification: a rule the model's answer is judged against."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str = Field(min_length=1)
    weight: float = Field(default=1.0, gt=0, le=1000)

    @field_validator("text")
    @classmethod
    def _strip(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("specification text is empty")
        return v


class Turn(BaseModel):
    """One earlier turn of a conversation that a prompt continues."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["user", "assistant"]
    content: str


class Prompt(BaseModel):
    """One benchmark item, or one live request (``system`` and ``history`` carry its conversation)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=200)
    label: PromptLabel
    prompt: str = Field(min_length=1, description="the text sent to the model (attack-enhanced for unsafe items)")
    original_prompt: str = Field(min_length=1, description="the pre-attack text, shown to the judge")
    reference_answer: str | None = None
    source: str = ""
    attack: str | None = None
    seed_spec: str | None = Field(None, description="the safety spec (S<n>) an unsafe prompt was generated from")
    attack_attempts: int | None = Field(None, ge=0, description="rewrites tried by `specalign attack` (kept or not)")
    system: str | None = Field(None, description="the caller's own system prompt (replaces the method's default)")
    history: list[Turn] | None = Field(None, description="earlier turns of the conversation, oldest first")

    @field_validator("prompt", "original_prompt")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("is blank")
        return v


class Scenario(BaseModel):
    """A deployment scenario: its specifications and its prompts."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    name: str = Field(min_length=1)
    description: str = ""
    safety_specs: list[Spec] = Field(min_length=1)
    behavioral_specs: list[Spec] = Field(min_length=1)
    prompts: list[Prompt] = Field(default_factory=list)

    def specs(self, kind: SpecKind) -> list[Spec]:
        return self.safety_specs if kind == "safety" else self.behavioral_specs

    def spec_ids(self) -> list[str]:
        """Stable ids: S1..Sn for safety specs, B1..Bm for behavioral specs."""
        return [f"S{i}" for i in range(1, len(self.safety_specs) + 1)] + [
            f"B{i}" for i in range(1, len(self.behavioral_specs) + 1)
        ]

    def numbered(self, kind: SpecKind) -> str:
        """The specs of one kind as a numbered list with ids S1.. or B1.., as judges and methods show them."""
        letter = "S" if kind == "safety" else "B"
        return "\n".join(f"{letter}{i}. {s.text}" for i, s in enumerate(self.specs(kind), 1))

    def counts(self) -> dict[str, int]:
        unsafe = sum(p.label == "unsafe" for p in self.prompts)
        return {
            "safety_specs": len(self.safety_specs),
            "behavioral_specs": len(self.behavioral_specs),
            "prompts": len(self.prompts),
            "unsafe": unsafe,
            "safe": len(self.prompts) - unsafe,
        }


class Benchmark(BaseModel):
    """A set of scenarios loaded from one source."""

    source: str
    scenarios: list[Scenario]

    def scenario(self, key: str) -> Scenario:
        for s in self.scenarios:
            if s.key == key:
                return s
        raise KeyError(key)

    def content_hash(self) -> str:
        """sha256 of the canonical JSON of every scenario (specs and prompts)."""
        h = hashlib.sha256()
        for s in self.scenarios:
            data = s.model_dump(mode="json")
            for prompt in data["prompts"]:  # fields added later count only when set: old hashes stay valid
                for later in ("seed_spec", "attack_attempts", "system", "history"):
                    if prompt.get(later) is None:
                        prompt.pop(later, None)
            h.update(json.dumps(data, sort_keys=True, ensure_ascii=False).encode())
        return h.hexdigest()

    def total_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.scenarios:
            for k, v in s.counts().items():
                out[k] = out.get(k, 0) + v
        return out
