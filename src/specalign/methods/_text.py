"""Thought/response splitting for reasoning models."""

from __future__ import annotations

from pydantic import BaseModel



class SplitText(BaseModel):
    thought: str
    response: str
    thought_unclosed: bool = False


def split_thought(text: str, start: str = "<think>", end: str = "</think>") -> SplitText:
    """Split a reasoning model's output at the last end-of-thought marker.

    Text before the marker is the thought (an opening marker is dropped), the rest is the
    response. A thought that opens and never closes gives an empty response and is flagged.
    """
    if end and end in text:
        thought, _, response = text.rpartition(end)
        thought = thought.strip()
        if start and thought.startswith(start):
            thought = thought[len(start):].strip()
        return SplitText(thought=thought, response=response.strip())
    stripped = text.lstrip()
    if start and stripped.startswith(start):
        return SplitText(thought=stripped[len(start):].strip(), response="", thought_unclosed=True)
    return SplitText(thought="", response=text.strip())
