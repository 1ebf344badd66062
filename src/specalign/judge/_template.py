"""A judge prompt of the user's own: a YAML template with named placeholders (docs/judge.md).

The template is parsed once, on load, into literal text and placeholders; a prompt is the literal text
with each placeholder's value put in its place. Values are never read as template syntax, so a
response holding ``{prompt}`` or ``{response.__class__}`` is inserted as those characters, verbatim.
Only ``{name}`` with a name listed in :data:`PLACEHOLDERS` is a placeholder; ``{{`` and ``}}`` are
literal braces (as in Python's ``str.format``, so a prompt written for ``str.format`` pastes as it is).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..benchmark import Prompt, Scenario, Spec, read_yaml
from ..errors import ConfigError
from ._prompts import RESPONSE_MAX_CHARS, fence_id

TemplateFormat = Literal["tags", "json"]
FORMATS: tuple[str, ...] = ("tags", "json")

#: every placeholder a template may use, and what it stands for
PLACEHOLDERS: dict[str, str] = {
    "safety_specs": "the safety specifications as the official code lists them: '<1>', a newline, the text, "
    "a newline, then '<2>' ...",
    "behavioral_specs": "the behavioral specifications, listed the same way",
    "safety_specs_by_id": "the safety specifications one per line as 'S1. text' (specalign's numbering)",
    "behavioral_specs_by_id": "the behavioral specifications one per line as 'B1. text'",
    "n_safety": "the number of safety specifications",
    "n_behavioral": "the number of behavioral specifications",
    "prompt": "the request as the judge sees it: the original (pre-attack) prompt",
    "response": "the judged answer, verbatim: its first 8,000 characters (the thought is never shown)",
    "reference_answer": "the item's reference answer (empty when it has none)",
    "note": "the text `notes` gives for the item's label",
    "fence": "16 hex digits derived from the request and the answer, which the answer cannot predict: "
    "fence the answer with it",
    "scenario": "the scenario's name",
    "scenario_description": "the scenario's description",
}
#: placeholders a template must use (the last two: either form of each spec list)
REQUIRED: tuple[tuple[str, ...], ...] = (
    ("prompt",),
    ("response",),
    ("safety_specs", "safety_specs_by_id"),
    ("behavioral_specs", "behavioral_specs_by_id"),
)
#: the keys of ``notes``; ``unsafe`` and ``safe`` are required when the template uses ``{note}``
NOTE_KINDS: tuple[str, ...] = ("unsafe", "safe", "safe_without_reference")
#: placeholders a note may use
NOTE_PLACEHOLDERS: tuple[str, ...] = ("reference_answer",)
_FIELDS = ("name", "version", "format", "system", "user", "notes")
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")

#: literal text (False, text) or a placeholder (True, name)
Segment = tuple[bool, str]


def parse_placeholders(text: str, allowed: tuple[str, ...] | dict[str, str], *, path: str, where: str) -> list[Segment]:
    """``text`` as literal text and placeholders, or a ConfigError naming ``path`` and the field ``where``."""
    segments: list[Segment] = []
    literal: list[str] = []
    pos = 0
    for m in _TOKEN.finditer(text):
        literal.append(text[pos : m.start()])
        pos = m.end()
        token = m.group(0)
        if token in ("{{", "}}"):
            literal.append(token[0])
        elif m.group(1) is None:
            line = text.count("\n", 0, m.start()) + 1
            raise ConfigError(
                f"a lone {token!r} on line {line} (write {token * 2} for a literal brace)", path=path, field=where
            )
        elif m.group(1) in allowed:
            segments.append((False, "".join(literal)))
            literal = []
            segments.append((True, m.group(1)))
        else:
            name = m.group(1)
            shown = name if len(name) <= 40 else name[:40] + "..."
            raise ConfigError(
                f"unknown placeholder {{{shown}}} (known: {', '.join(allowed)}; write {{{{ and }}}} for literal braces)",
                path=path,
                field=where,
            )
    literal.append(text[pos:])
    segments.append((False, "".join(literal)))
    return [s for s in segments if s[0] or s[1]]


def fill(segments: list[Segment], values: dict[str, str]) -> str:
    """The text with each placeholder replaced by its value, the values inserted as they are."""
    return "".join(values[text] if is_placeholder else text for is_placeholder, text in segments)


def official_list(specs: list[Spec]) -> str:
    """Specs numbered as the official code numbers them: ``<1>``, newline, text, newline, ``<2>`` ..."""
    return "".join(f"<{i}>\n{s.text}\n" for i, s in enumerate(specs, 1))


@dataclass(frozen=True)
class JudgeTemplate:
    """A joint judge prompt from the user's file: system and user texts, the answer format, per-label notes.

    ``sha256`` hashes what decides the prompts and their reading (format, system, user, notes), not the
    name, version or file: it is part of the judge key.
    """

    name: str
    format: TemplateFormat
    user: str
    system: str | None = None
    version: str | None = None
    notes: dict[str, str] = field(default_factory=dict)
    source: str = ""
    sha256: str = ""
    _system: list[Segment] = field(default_factory=list, repr=False, compare=False)
    _user: list[Segment] = field(default_factory=list, repr=False, compare=False)
    _notes: dict[str, list[Segment]] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Any, source: str, default_name: str = "template") -> JudgeTemplate:
        """A template from a decoded YAML document, checked: a ConfigError names ``source`` and the field."""
        if not isinstance(data, dict):
            raise ConfigError("expected a mapping with at least format and user", path=source)
        for key in data:
            if key not in _FIELDS:
                raise ConfigError(f"unknown field (known: {', '.join(_FIELDS)})", path=source, field=str(key))
        fmt = data.get("format")
        if fmt is None:
            raise ConfigError("required field is missing: tags or json", path=source, field="format")
        if fmt not in FORMATS:
            raise ConfigError(f"must be tags or json, got {str(fmt)[:40]!r}", path=source, field="format")
        user = _text(data, "user", source, required=True)
        system = _text(data, "system", source) or None
        name = _label(data, "name", source) or default_name
        version = _label(data, "version", source)
        notes = _notes(data.get("notes"), source)
        segs_user = parse_placeholders(user, PLACEHOLDERS, path=source, where="user")
        segs_system = parse_placeholders(system or "", PLACEHOLDERS, path=source, where="system")
        used = {t for is_ph, t in segs_user + segs_system if is_ph}
        for names in REQUIRED:
            if not used & set(names):
                which = " or ".join(f"{{{n}}}" for n in names)
                raise ConfigError(f"the template never uses {which}", path=source, field="user")
        if "note" in used:
            for kind in ("unsafe", "safe"):
                if kind not in notes:
                    raise ConfigError("required when the template uses {note}", path=source, field=f"notes.{kind}")
        elif notes:
            raise ConfigError("given, but no {note} placeholder uses the notes", path=source, field="notes")
        segs_notes = {
            k: parse_placeholders(v, NOTE_PLACEHOLDERS, path=source, where=f"notes.{k}") for k, v in notes.items()
        }
        content = {"format": fmt, "system": system, "user": user, "notes": notes}
        sha = hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        return cls(
            name=name,
            format=fmt,
            user=user,
            system=system,
            version=version,
            notes=notes,
            source=source,
            sha256=sha,
            _system=segs_system,
            _user=segs_user,
            _notes=segs_notes,
        )

    def check_mode(self, mode: str) -> None:
        """A template holds one joint prompt: sequential judging (a prompt per spec) is refused."""
        if mode != "joint":
            raise ConfigError(
                f"a judge template holds a joint prompt only; judge mode {mode!r} is not supported with it "
                "(use --judge-mode joint)",
                path=self.source,
                field="--judge-mode",
            )

    def values(self, scenario: Scenario, prompt: Prompt, response: str) -> dict[str, str]:
        """Every placeholder's value for one sample."""
        reference = prompt.reference_answer or ""
        values = {
            "safety_specs": official_list(scenario.safety_specs),
            "behavioral_specs": official_list(scenario.behavioral_specs),
            "safety_specs_by_id": scenario.numbered("safety"),
            "behavioral_specs_by_id": scenario.numbered("behavioral"),
            "n_safety": str(len(scenario.safety_specs)),
            "n_behavioral": str(len(scenario.behavioral_specs)),
            "prompt": prompt.original_prompt,
            "response": response[:RESPONSE_MAX_CHARS],
            "reference_answer": reference,
            "fence": fence_id(prompt, response),
            "scenario": scenario.name,
            "scenario_description": scenario.description,
        }
        values["note"] = fill(self._notes[self.note_kind(prompt)], values) if self._notes else ""
        return values

    def note_kind(self, prompt: Prompt) -> str:
        """Which of ``notes`` an item gets: ``unsafe`` for unsafe items; for the others ``safe``, or
        ``safe_without_reference`` when the item has no reference answer and the template gives that note."""
        if prompt.label == "unsafe":
            return "unsafe"
        if not prompt.reference_answer and "safe_without_reference" in self.notes:
            return "safe_without_reference"
        return "safe"

    def render(self, scenario: Scenario, prompt: Prompt, response: str) -> tuple[str | None, str]:
        """(system text or None, user text) for one sample."""
        values = self.values(scenario, prompt, response)
        system = fill(self._system, values) if self.system else None
        return system, fill(self._user, values)

    def describe(self) -> dict[str, Any]:
        """What a manifest records of the template: never its text (the file and the hash identify it)."""
        return {
            "name": self.name,
            "version": self.version,
            "format": self.format,
            "sha256": self.sha256,
            "file": self.source,
        }


def load_judge_template(path: str | Path) -> JudgeTemplate:
    """The template in a YAML file, checked; a bad file is a one-line DataError or ConfigError naming it."""
    path = Path(path)
    return JudgeTemplate.from_dict(read_yaml(path), str(path), default_name=path.stem or "template")


def _text(data: dict, key: str, source: str, *, required: bool = False) -> str:
    value = data.get(key)
    if value is None:
        if required:
            raise ConfigError("required field is missing", path=source, field=key)
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"must be text, got {type(value).__name__}", path=source, field=key)
    if required and not value.strip():
        raise ConfigError("is blank", path=source, field=key)
    return value


def _label(data: dict, key: str, source: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"must be text, got {type(value).__name__}", path=source, field=key)
    text = str(value).strip()
    if not text or "\n" in text or len(text) > 200:
        raise ConfigError("must be one line of at most 200 characters", path=source, field=key)
    return text


def _notes(value: Any, source: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"must be a mapping of {', '.join(NOTE_KINDS)}", path=source, field="notes")
    out: dict[str, str] = {}
    for k, v in value.items():
        if k not in NOTE_KINDS:
            raise ConfigError(f"unknown note (known: {', '.join(NOTE_KINDS)})", path=source, field=f"notes.{k}")
        if not isinstance(v, str):
            raise ConfigError(f"must be text, got {type(v).__name__}", path=source, field=f"notes.{k}")
        out[k] = v
    return out
