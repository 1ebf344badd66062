"""Text that can always be written: lone UTF-16 surrogates (from a model's output, or a ``"\\ud800"``
escape in its JSON) cannot be encoded as UTF-8, so every record writer and cache would fail on them."""

from __future__ import annotations

import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def repair_text(text: str) -> tuple[str, bool]:
    """``text`` with every lone surrogate (not encodable as UTF-8) replaced by U+FFFD, and whether any was."""
    fixed = _SURROGATE.sub("\ufffd", text)
    return fixed, fixed != text


def repair_json(value: Any) -> Any:
    """A decoded JSON value with every string (keys too) repaired: a ``"\\ud800"`` escape in a model's
    JSON decodes to a lone surrogate even when the text itself was valid."""
    if isinstance(value, str):
        return repair_text(value)[0]
    if isinstance(value, list):
        return [repair_json(v) for v in value]
    if isinstance(value, dict):
        return {repair_json(k): repair_json(v) for k, v in value.items()}
    return value
