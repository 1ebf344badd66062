"""Pydantic models of a benchmark: scenarios, their specifications and prompts."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: a scenario key: a safe folder and file name on every system, and one segment of a sample id
KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
KEY_RULE = "1 to 64 letters, digits, '-' or '_', starting with a letter or digit"
_KEY_RE = re.compile(KEY_PATTERN)
#: names Windows reserves for devices, whatever the extension or case
_RESERVED = {"con", "prn", "aux", "nul", *(f"{d}{i}" for d in ("com", "lpt") for i in range(10))}

Label = Literal["safe", "unsafe"]
#: a prompt's label; ``unlabeled`` (live traffic, a user's own prompts) counts in the full set only
PromptLabel = Literal["safe", "unsafe", "unlabeled"]
SpecKind = Literal["safety", "behavioral"]
#: the kinds of spec, in the order a scenario lists, judges and scores them
SPEC_KINDS: tuple[SpecKind, SpecKind] = ("safety", "behavioral")
#: the letter that starts each kind's spec ids (S1.., B1..)
SPEC_LETTERS: dict[SpecKind, str] = {"safety": "S", "behavioral": "B"}


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

    @field_validator("id")
    @classmethod
    def _printable_id(cls, v: str) -> str:
        if not v.strip() or any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in v):
            raise ValueError(f"an id must be printable text on one line, got {v!r}")
        return v

    @field_validator("prompt", "original_prompt")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("is blank")
        return v


class Scenario(BaseModel):
    """A deployment scenario: its specifications and its prompts."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(description=f"the scenario's key: {KEY_RULE}")
    name: str = Field(min_length=1)
    description: str = ""
    safety_specs: list[Spec] = Field(min_length=1)
    behavioral_specs: list[Spec] = Field(min_length=1)
    prompts: list[Prompt] = Field(default_factory=list)
    refusal: str = Field(
        default="",
        max_length=4000,
        description="what a guardrail says instead of an answer that breaks a safety spec (the gateway's "
        "--enforce); empty: the gateway's own text. Not part of the data's hash: it changes no answer or verdict",
    )

    @field_validator("key")
    @classmethod
    def _safe_key(cls, v: str) -> str:
        check_key(v)
        return v

    def specs(self, kind: SpecKind) -> list[Spec]:
        return self.safety_specs if kind == "safety" else self.behavioral_specs

    def spec_ids(self, kind: SpecKind | None = None) -> list[str]:
        """Stable ids: S1..Sn for safety specs, B1..Bm for behavioral specs; both kinds, safety first, when
        ``kind`` is None."""
        if kind is None:
            return spec_ids_of("safety", len(self.safety_specs)) + spec_ids_of("behavioral", len(self.behavioral_specs))
        return spec_ids_of(kind, len(self.specs(kind)))

    def numbered(self, kind: SpecKind) -> str:
        """The specs of one kind as a numbered list with ids S1.. or B1.., as judges and methods show them."""
        return "\n".join(f"{spec_id(kind, i)}. {s.text}" for i, s in enumerate(self.specs(kind), 1))

    def counts(self) -> dict[str, int]:
        unsafe = sum(p.label == "unsafe" for p in self.prompts)
        return {
            "safety_specs": len(self.safety_specs),
            "behavioral_specs": len(self.behavioral_specs),
            "prompts": len(self.prompts),
            "unsafe": unsafe,
            "safe": len(self.prompts) - unsafe,
        }


def spec_id(kind: SpecKind, index: int) -> str:
    """The id of a scenario's ``index``-th spec of ``kind``, counted from 1: ``S<index>`` for safety specs,
    ``B<index>`` for behavioral ones. Every spec id in specalign is made here."""
    if index < 1:
        raise ValueError(f"spec indices count from 1, got {index}")
    return f"{SPEC_LETTERS[kind]}{index}"


def spec_ids_of(kind: SpecKind, count: int) -> list[str]:
    """The ids of ``count`` specs of ``kind``, in order: S1..S<count> or B1..B<count>."""
    return [spec_id(kind, i) for i in range(1, count + 1)]


def check_key(key: str) -> None:
    """Raise ``ValueError`` unless ``key`` is a safe scenario key (no ``.``, ``..``, separators, NUL ...)."""
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        shown = key if isinstance(key, str) and len(key) <= 80 else f"{str(key)[:80]}..."
        raise ValueError(f"not a valid scenario key {shown!r}: use {KEY_RULE} (pattern {KEY_PATTERN})")
    if key.lower() in _RESERVED:
        raise ValueError(f"not a valid scenario key {key!r}: a device name on Windows")


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
            data = s.model_dump(mode="json", exclude={"refusal"})
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
