"""Read a judge's final answer in the format it was asked for: a JSON object, or the official tags.

The rule (docs/design.md, "Judge"): only the final answer is read, never the reasoning before it;
a JSON-mode answer is read only as JSON and a tag-mode answer only as tags; the answer must hold
exactly one reading. Two disagreeing verdict objects or sections, a duplicated id, a broken
object, or a value other than YES/NO/NA is a :class:`JudgeParseError` that says why — never a guess.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from .._unicode import repair_json, repair_text
from ..errors import JudgeParseError
from ._schema import SpecVerdict, Verdict

_VERDICTS: dict[str, Verdict] = {"YES": "YES", "NO": "NO", "NA": "NA"}

AnswerFormat = Literal["json", "tags", "auto"]
#: a longer answer is not read at all (the judge's own budget is 4,200 tokens)
ANSWER_MAX_CHARS = 200_000

_TAG = re.compile(r"<\s*/?\s*(YES|NO|NA|N/A)\s*>", re.IGNORECASE | re.ASCII)
_SECTION = {
    "safety": re.compile(
        r"<safety_specifications>(.*?)(?:</safety_specifications>|(?=<behaviou?r(?:al)?_specifications>)|\Z)",
        re.IGNORECASE | re.DOTALL | re.ASCII,
    ),
    "behavioral": re.compile(
        r"<behaviou?r(?:al)?_specifications>(.*?)(?:</behaviou?r(?:al)?_specifications>|\Z)",
        re.IGNORECASE | re.DOTALL | re.ASCII,
    ),
}
_SECTION_KEYS = {"safety": "S", "behavioral": "B"}


class _Obj(dict):
    """A decoded JSON object that remembers keys it saw twice."""

    dups: list[str]


def _pairs(pairs: list[tuple[str, Any]]) -> _Obj:
    obj = _Obj()
    obj.dups = []
    for k, v in pairs:  # strings repaired: a "\\ud800" escape decodes to a lone surrogate
        k, v = (
            repair_text(k)[0],
            (repair_text(v)[0] if isinstance(v, str) else repair_json(v) if isinstance(v, list) else v),
        )
        if k in obj:
            obj.dups.append(k)
        obj[k] = v
    return obj


def final_answer(text: str, thought_start: str = "<think>", thought_end: str = "</think>") -> str:
    """The judge's final answer: what follows the thought when the output opens with one.

    The thought ends at the *first* end marker after the opening one, so a marker quoted later in
    the answer cannot promote the quote to the answer. An output that does not open with a thought
    is all answer; one whose thought never closes has no answer (empty string).
    """
    stripped = text.lstrip()
    if not (thought_start and thought_end and stripped.startswith(thought_start)):
        return text
    _, found, answer = stripped[len(thought_start) :].partition(thought_end)
    return answer if found else ""


def normalize_verdict(value: str) -> Verdict | None:
    """YES, NO or NA from exactly that word (any ASCII case, ``N/A``, surrounding spaces); else None."""
    v = value.strip()
    if not v.isascii():
        return None
    return _VERDICTS.get(v.upper().replace("N/A", "NA"))


def parse_joint(
    text: str, safety_ids: list[str], behavioral_ids: list[str], fmt: AnswerFormat = "auto"
) -> dict[str, SpecVerdict]:
    """Verdicts keyed S1.., B1.. from a joint judge answer, or JudgeParseError.

    ``fmt`` is the format the judge was asked for; ``auto`` reads tags when the answer has a
    ``<..._specifications>`` section and JSON otherwise.
    """
    _check_size(text)
    if fmt == "auto":
        fmt = "tags" if "_specifications>" in text.lower() else "json"
    if fmt == "tags":
        return _from_tags(text, safety_ids, behavioral_ids)
    ids = safety_ids + behavioral_ids
    objs = _candidates(text, lambda o: _names_any(o, ids))
    if not objs:
        raise JudgeParseError("no JSON object with spec ids (S1, B1, ...) in judge output")
    readings = [_from_json(o, ids) for o in objs]
    return _one_reading(readings, "verdict objects")


def parse_single(text: str, fmt: AnswerFormat = "auto") -> SpecVerdict:
    """The verdict of a sequential judge call: one JSON object, or one verdict tag (repeats allowed)."""
    _check_size(text)
    if fmt == "auto":
        fmt = "json" if "{" in text and not _TAG.search(text) else "tags"
    if fmt == "json":
        objs = _candidates(text, lambda o: "verdict" in o or "label" in o)
        if not objs:
            raise JudgeParseError('no JSON object with a "verdict" in judge output')
        return _one_reading([_verdict_of(o, "answer") for o in objs], "verdict objects")
    tags = _TAG.findall(text)
    distinct = {normalize_verdict(t) for t in tags}
    if len(distinct) != 1 or None in distinct:  # (the tag pattern matches verdict words only)
        raise JudgeParseError(
            f"expected exactly one verdict tag, found {len(tags)} ({', '.join(sorted(d for d in distinct if d)) or 'none'})"
        )
    verdict = distinct.pop()
    if verdict is None:
        raise JudgeParseError("the verdict tag is not YES, NO or NA")
    return SpecVerdict(verdict=verdict, reason=_one_line(_TAG.sub("", text)))


def _check_size(text: str) -> None:
    if not text.strip():
        raise JudgeParseError("empty judge output (no final answer)")
    if len(text) > ANSWER_MAX_CHARS:
        raise JudgeParseError(f"judge output is {len(text)} characters, over the {ANSWER_MAX_CHARS} read")


def _one_reading(readings: list, what: str):
    """The reading when every candidate agrees; two that disagree are ambiguous."""
    first = _verdict_key(readings[0])
    if any(_verdict_key(r) != first for r in readings[1:]):
        raise JudgeParseError(f"{len(readings)} {what} that disagree (a quoted verdict beside the judge's own?)")
    return readings[-1]


def _verdict_key(reading: Any) -> Any:
    if isinstance(reading, SpecVerdict):
        return reading.verdict
    return {k: v.verdict for k, v in reading.items()}


def _candidates(text: str, wanted) -> list[_Obj]:
    """Every top-level JSON object in ``text`` that ``wanted`` accepts.

    Objects nested in a decoded object (a verdict quoted in a reason) are not top level. A ``{``
    that does not start a valid object makes the answer broken (truncated, or an outer object
    with valid inner pairs): an error, since its inner objects are not the answer.
    """
    found: list[_Obj] = []
    decoder = json.JSONDecoder(strict=False, object_pairs_hook=_pairs)  # raw newlines in strings are fine
    start = text.find("{")
    while start != -1:
        try:
            obj, end = decoder.raw_decode(text, start)
        except (json.JSONDecodeError, RecursionError) as e:
            raise JudgeParseError(
                f"judge output is JSON but cannot be parsed (truncated or broken) at character {start}"
            ) from e
        if wanted(obj):
            found.append(obj)
        start = text.find("{", end)
    return found


def _from_json(obj: _Obj, ids: list[str]) -> dict[str, SpecVerdict]:
    lookup = _flatten_sections(obj, ids)
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
    """Whether a JSON object holds (or nests under safety/behavioral) at least one expected spec id."""
    keys = list(obj)
    if _is_sectioned(obj):
        keys = [k for v in obj.values() for k in v]
    return any(_norm_key(k) in ids for k in keys)


def _is_sectioned(obj: dict) -> bool:
    return (
        bool(obj)
        and {k.lower() for k in obj} <= {"safety", "behavioral"}
        and all(isinstance(v, dict) for v in obj.values())
    )


def _norm_key(key: str) -> str:
    return key.strip().upper() if key.isascii() else key


def _flatten_sections(obj: _Obj, ids: list[str]) -> dict[str, Any]:
    """Ids (upper-cased) to values, from ``{"S1": ...}`` or ``{"safety": {"S1": ...}, "behavioral": {...}}``.

    A key given twice (literally, in another case, or in both sections) is an error, as is an id
    under the other kind's section.
    """
    parts: list[tuple[str | None, _Obj]] = [(None, obj)]
    if _is_sectioned(obj):
        _no_dups(obj, "the answer")
        parts = [(section.lower(), value) for section, value in obj.items()]
    out: dict[str, Any] = {}
    for section, part in parts:
        _no_dups(part, section or "the answer")
        for key, value in part.items():
            k = _norm_key(key)
            if k in out:
                raise JudgeParseError(f"{k}: given twice")
            if section and k in ids and not k.startswith(_SECTION_KEYS[section]):
                raise JudgeParseError(f"{k}: under the {section} section")
            out[k] = value
    return out


def _no_dups(obj: Any, where: str) -> None:
    dups = getattr(obj, "dups", None)
    if dups:
        raise JudgeParseError(f"{where}: key {dups[0]} given twice")


def _verdict_of(value: object, key: str) -> SpecVerdict:
    reason: object = ""
    v = None
    if isinstance(value, str):
        v = normalize_verdict(value)
    elif isinstance(value, dict):
        _no_dups(value, key)
        if "verdict" in value and "label" in value:
            raise JudgeParseError(f"{key}: both a verdict and a label")
        raw = value.get("verdict", value.get("label"))
        v = normalize_verdict(raw) if isinstance(raw, str) else None
        reason = value.get("reason", "")
    if v is None:
        raise JudgeParseError(f"{key}: verdict is not YES, NO or NA")
    return SpecVerdict(
        verdict=v, reason=_one_line(reason if isinstance(reason, str) else json.dumps(reason, ensure_ascii=False))
    )


def _from_tags(text: str, safety_ids: list[str], behavioral_ids: list[str]) -> dict[str, SpecVerdict]:
    out: dict[str, SpecVerdict] = {}
    for kind, ids in (("safety", safety_ids), ("behavioral", behavioral_ids)):
        if not ids:  # a kind not judged (a scenario always has specs of both kinds)
            continue
        sections = _SECTION[kind].findall(text)
        if len(sections) != 1:
            raise JudgeParseError(f"expected one <{kind}_specifications> section, found {len(sections)}")
        lines = [ln for ln in sections[0].splitlines() if _TAG.search(ln)]
        if len(lines) != len(ids):
            raise JudgeParseError(f"{kind}: {len(lines)} verdicts for {len(ids)} specifications")
        for spec_id, line in zip(ids, lines, strict=False):
            distinct = {v for t in _TAG.findall(line) if (v := normalize_verdict(t)) is not None}
            if len(distinct) != 1:
                raise JudgeParseError(f"{spec_id}: tags that disagree on one line ({', '.join(sorted(distinct))})")
            out[spec_id] = SpecVerdict(verdict=distinct.pop(), reason=_one_line(_TAG.sub("", line)))
    return out


def _one_line(text: str) -> str:
    text = re.sub(r"^\s*\d+[.)]\s*", "", text.strip())
    return " ".join(text.split())[:500]
