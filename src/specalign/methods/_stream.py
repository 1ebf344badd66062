"""Streaming a method's answer while its final call is still arriving.

A caller that wants the answer as it comes (the gateway, for ``stream: true``) gives the method a
sink. The calls a method marks ``final`` then stream, and an :class:`AnswerStreamer` passes on only
text that the method's one split (``_text.split_thought``) is bound to keep in the answer:

- the server returned the reasoning apart: the content after it, as it comes;
- the method's prefill closed the thought (``closed``): everything, as it comes;
- the model writes no thought into its content (``inline=False``, the ``inline_thought`` setting): the
  content, as it comes (reasoning the server returns apart still stays thought);
- otherwise: what follows the first end-of-thought marker, once the whole marker has arrived. Until
  then every piece may still turn out to be thought, so it is held; a call that never writes the
  marker has its answer decided only when it ends, and it is sent then, by the caller.

Leading and trailing whitespace are held as the split strips them. The caller sends the rest of the
method's final response when the method is done, after checking that what it streamed starts it.
"""

from __future__ import annotations

from typing import Protocol

from ..models import Delta


class AnswerSink(Protocol):
    """Where streamed answer text goes (the gateway's queue of events)."""

    def answer(self, text: str) -> None:
        """The next piece of the answer, in order."""


class AnswerStreamer:
    """One final call's deltas in, the pieces of its answer that are certain out (see the module docstring)."""

    def __init__(self, sink: AnswerSink, start: str, end: str, *, closed: bool = False, inline: bool = True):
        self.sink = sink
        self.start, self.end, self.closed = start, end, closed
        self.text = ""
        self.seen_thought = False
        self.answer_at: int | None = None
        self._from: int | None = 0 if closed or not inline else None  # where the answer begins in ``text``
        self._done = 0  # how much of ``text`` has been passed on (or skipped)
        self._searched = 0  # how far ``text`` has been searched for the end marker
        self._begun = False
        self._pending = ""

    def feed(self, delta: Delta) -> None:
        if self.closed:
            self.text += delta.text
        elif delta.thought:
            if self.answer_at is None:
                self.seen_thought = True
            self.text += delta.text
            return
        else:
            if self.seen_thought and self.answer_at is None:
                self.answer_at = len(self.text)
                self._from = self.answer_at
            self.text += delta.text
        self._release()

    def _answer_from(self) -> int | None:
        if self._from is not None or self.seen_thought or not self.end:
            return self._from
        found = self.text.find(self.end, max(0, self._searched - len(self.end) + 1))
        self._searched = len(self.text)
        if found >= 0:
            self._from = found + len(self.end)
        return self._from

    def _release(self) -> None:
        at = self._answer_from()
        if at is None:
            return
        piece = self.text[max(at, self._done) :]
        self._done = len(self.text)
        if not self._begun:
            piece = piece.lstrip()
            if not piece:
                return
            self._begun = True
        piece = self._pending + piece
        body = piece.rstrip()
        self._pending = piece[len(body) :]
        if body:
            self.sink.answer(body)
