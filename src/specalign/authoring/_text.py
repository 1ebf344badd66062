"""Small text measures shared by drafting and linting (no model, no extra packages)."""

from __future__ import annotations

import json
import re
from difflib import SequenceMatcher
from typing import Any

from .._unicode import repair_json

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an the of to and or in on for with by from as at be is are any every all its it this that "
    "your you their them they which who".split()
)


def normalise(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def content_words(text: str) -> set[str]:
    """Lower-cased words without stop words, plural ``-s`` dropped ("weapons" and "weapon" match)."""
    return {_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP}


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def similarity(a: str, b: str) -> float:
    """The larger of the character-sequence ratio and the content-word overlap (Jaccard), in [0, 1]."""
    na, nb = normalise(a), normalise(b)
    if not na or not nb:
        return 0.0
    ratio = SequenceMatcher(None, na, nb).ratio()
    wa, wb = content_words(a), content_words(b)
    jaccard = len(wa & wb) / len(wa | wb) if wa | wb else 0.0
    return max(ratio, jaccard)


def near_duplicate(a: str, b: str, threshold: float = 0.8) -> bool:
    return similarity(a, b) >= threshold


def json_object(text: str) -> dict[str, Any] | None:
    """The JSON object in a model's answer (chatter around it and raw control characters tolerated), or None."""
    start, end = text.find("{"), text.rfind("}")
    try:
        data = json.loads(text[start : end + 1], strict=False) if start >= 0 else None
    except (ValueError, RecursionError):  # a model's answer can be nested deeper than Python recurses
        return None
    return repair_json(data) if isinstance(data, dict) else None
