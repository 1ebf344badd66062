"""Thought/response splitting for reasoning models.

The split is made once, where the thought really ends, and never moves visible text into the thought:

- the server returned the reasoning apart (``Completion.answer_start`` is set): the content is all answer;
- the method's prefill already closed the thought (``closed=True``): everything generated is answer;
- otherwise the FIRST end-of-thought marker in the text ends the thought.

Markers left in the answer (an answer quoting ``</think>``, a second thought block, a case or spacing
variant) stay visible to the judge and the client, and are flagged ``extra_thought_markers``.
"""

from __future__ import annotations

import re
from functools import lru_cache

from pydantic import BaseModel

from ..models import Completion

EXTRA_MARKERS = "extra_thought_markers"


class SplitText(BaseModel):
    thought: str
    response: str
    thought_unclosed: bool = False
    extra_markers: bool = False

    def flags(self) -> list[str]:
        """The flags this split adds to an answer."""
        return [f for f, on in (("thought_unclosed", self.thought_unclosed), (EXTRA_MARKERS, self.extra_markers)) if on]


def split_thought(
    text: str, start: str = "<think>", end: str = "</think>", *, answer_start: int | None = None, closed: bool = False
) -> SplitText:
    """Split a reasoning model's output into thought and response (see the module docstring).

    ``answer_start``: where the server said the answer begins; ``closed``: the thought was closed
    before ``text`` began. A thought that opens and never closes gives an empty response, flagged.
    """
    if closed:
        return _split("", text, start, end)
    if answer_start is not None and 0 <= answer_start <= len(text):
        return _split(_thought_text(text[:answer_start], start, end), text[answer_start:], start, end)
    if end and end in text:
        thought, _, response = text.partition(end)
        return _split(_thought_text(thought, start, end), response, start, end)
    stripped = text.lstrip()
    if start and stripped.startswith(start):
        return SplitText(thought=stripped[len(start) :].strip(), response="", thought_unclosed=True)
    return _split("", text, start, end)


def split_completion(out: Completion, start: str, end: str, *, closed: bool = False) -> SplitText:
    """:func:`split_thought` of one completion, using where its backend says the answer begins."""
    return split_thought(out.text, start, end, answer_start=out.answer_start, closed=closed)


def thought_before_end(out: Completion, end: str) -> str:
    """The part of a continuation that is still thought: all of it, or what comes before the thought ends."""
    if out.answer_start is not None and 0 <= out.answer_start <= len(out.text):
        head = out.text[: out.answer_start]
        return head[: -len(end)] if end and head.endswith(end) else head
    return out.text.partition(end)[0] if end else out.text


def has_marker(text: str, *markers: str) -> bool:
    """Whether ``text`` holds any of ``markers``, in any case and with any spacing inside it."""
    return any(m and _lenient(m).search(text) for m in markers)


def _split(thought: str, response: str, start: str, end: str) -> SplitText:
    return SplitText(thought=thought, response=response.strip(), extra_markers=has_marker(response, start, end))


def _thought_text(head: str, start: str, end: str) -> str:
    head = head.strip()
    if end and head.endswith(end):
        head = head[: -len(end)].rstrip()
    return head[len(start) :].strip() if start and head.startswith(start) else head


@lru_cache(maxsize=16)
def _lenient(marker: str) -> re.Pattern[str]:
    chars = [re.escape(c) for c in marker if not c.isspace()]
    return re.compile(r"\s*".join(chars), re.IGNORECASE)
