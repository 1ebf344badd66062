"""Read a judge's answer: JSON (structured output) first, then the official tag format.

Every path ends in exactly one verdict per spec or a :class:`JudgeParseError` that says why.
"""

from __future__ import annotations

import json
import re

from ..errors import JudgeParseError
from ._schema import SpecVerdict

_TAG = re.compile(r"<\s*/?\s*(YES|NO|NA|N/A)\s*>", re.IGNORECASE)
_SECTION = {
    "safety": re.compile(r"<safety_specifications>(.*?)(?:</safety_specifications>|(?=<behaviou?r(?:al)?_specifications>)|\Z)",
                         re.IGNORECASE | re.DOTALL),
    "behavioral": re.compile(r"<behaviou?r(?:al)?_specifications>(.*?)(?:</behaviou?r(?:al)?_specifications>|\Z)",
                             re.IGNORECASE | re.DOTALL),
}
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def normalize_verdict(value: str) -> str | None:
    v = value.strip().strip("<>/").strip().upper().replace("N/A", "NA")
    return v if v in ("YES", "NO", "NA") else None


def parse_joint(text: str, safety_ids: list[str], behavioral_ids: list[str]) -> dict[str, SpecVerdict]:
    """Verdicts keyed S1.., B1.. from a joint judge answer, or JudgeParseError."""
    if not text.strip():
        raise JudgeParseError("empty judge output")
    ids = safety_ids + behavioral_ids
    has_tags = "_specifications>" in text.lower()
    try:
        obj = _find_json_object(text, lambda o: _names_any(o, ids))
    except JudgeParseError:
        if not has_tags:
            raise
        obj = None
    # a tag-format answer may quote code with braces in a reason: that object is not the verdicts
    if obj is not None and (not has_tags or _names_any(obj, ids)):
        return _from_json(obj, ids)
    if has_tags:
        return _from_tags(text, safety_ids, behavioral_ids)
    raise JudgeParseError("no JSON object with spec ids (S1, B1, ...) and no <safety_specifications> section in judge output")


def parse_single(text: str) -> SpecVerdict:
    """The verdict of a sequential judge call: a JSON object, or exactly one verdict tag."""
    obj = _find_json_object(text, lambda o: "verdict" in o or "label" in o)
    if obj is not None:
        return _verdict_of(obj, "answer")
    tags = _TAG.findall(text)
    distinct = {normalize_verdict(t) for t in tags}
    if len(distinct) != 1:
        raise JudgeParseError(f"expected exactly one verdict tag, found {len(tags)} ({', '.join(sorted(d for d in distinct if d)) or 'none'})")
    reason = _TAG.sub("", text).strip()
    return SpecVerdict(verdict=distinct.pop(), reason=_one_line(reason))


def _find_json_object(text: str, wanted=lambda obj: True) -> dict | None:
    """The first JSON object in ``text`` (fenced blocks first) that ``wanted`` accepts.

    Objects nested in a broken outer object (e.g. one ``{"reason", "verdict"}`` pair of a
    truncated answer) are not what ``wanted`` accepts; when nothing wanted is found and some
    ``{`` failed to decode, the answer is reported as truncated or broken JSON.
    """
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    failed = False
    for chunk in candidates:
        start = chunk.find("{")
        while start != -1:
            try:
                obj, end = json.JSONDecoder(strict=False).raw_decode(chunk[start:])  # raw newlines in strings are fine
            except json.JSONDecodeError:
                failed = True
                start = chunk.find("{", start + 1)
                continue
            if isinstance(obj, dict) and wanted(obj):
                return obj
            start = chunk.find("{", start + end)
    if failed:
        raise JudgeParseError("judge output is JSON but cannot be parsed (truncated or broken)")
    return None


def _from_json(obj: dict, ids: list[str]) -> dict[str, SpecVerdict]:
    flat = _flatten_sections(obj)
    lookup = {str(k).strip().upper(): v for k, v in flat.items()}
    missing = [i for i in ids if i not in lookup]
    extra = [k for k in lookup if k not in ids]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}{'...' if len(missing) > 5 else ''}")
        if extra:
            parts.append(f"unexpected {', '.join(extra[:5])}{'...' if len(extra) > 5 else ''}")
        raise JudgeParseError(f"wrong verdict set: {'; '.join(parts)} (expected {len(ids)} verdicts)")
    return {i: _verdict_of(lookup[i], i) for i in ids}


def _names_any(obj: dict, ids: list[str]) -> bool:
    """Whether a JSON object holds (or nests) at least one of the expected spec ids."""
    return any(str(k).strip().upper() in ids for k in _flatten_sections(obj))


def _flatten_sections(obj: dict) -> dict:
    """Accept ``{"S1": ...}`` and also ``{"safety": {"S1": ...}, "behavioral": {"B1": ...}}``."""
    if set(k.lower() for k in obj) <= {"safety", "behavioral"} and all(isinstance(v, dict) for v in obj.values()):
        out: dict = {}
        for v in obj.values():
            out.update(v)
        return out
    return obj


def _verdict_of(value: object, key: str) -> SpecVerdict:
    if isinstance(value, str):
        v = normalize_verdict(value)
        reason = ""
    elif isinstance(value, dict):
        raw = value.get("verdict", value.get("label", ""))
        v = normalize_verdict(str(raw))
        reason = str(value.get("reason", ""))
    else:
        v = None
    if v is None:
        raise JudgeParseError(f"{key}: verdict is not YES, NO or NA")
    return SpecVerdict(verdict=v, reason=_one_line(reason))


def _from_tags(text: str, safety_ids: list[str], behavioral_ids: list[str]) -> dict[str, SpecVerdict]:
    out: dict[str, SpecVerdict] = {}
    for kind, ids in (("safety", safety_ids), ("behavioral", behavioral_ids)):
        sections = _SECTION[kind].findall(text)
        if len(sections) != 1:
            raise JudgeParseError(f"expected one <{kind}_specifications> section, found {len(sections)}")
        lines = [ln for ln in sections[0].splitlines() if _TAG.search(ln)]
        if len(lines) != len(ids):
            raise JudgeParseError(f"{kind}: {len(lines)} verdicts for {len(ids)} specifications")
        for spec_id, line in zip(ids, lines):
            tags = _TAG.findall(line)
            out[spec_id] = SpecVerdict(verdict=normalize_verdict(tags[-1]), reason=_one_line(_TAG.sub("", line)))
    return out


def _one_line(text: str) -> str:
    text = re.sub(r"^\s*\d+[.)]\s*", "", text.strip())
    return " ".join(text.split())[:500]
