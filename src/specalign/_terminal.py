"""Text for a terminal: what a model, a server or a data file wrote is shown, never obeyed."""

from __future__ import annotations

import logging
import sys
import unicodedata

from rich.markup import escape


def shown(text: str) -> str:
    """``text`` safe to print on a terminal: control characters (an escape sequence in a scenario or
    a model's answer could retitle or rewrite the screen) and format characters such as bidirectional
    overrides are shown as ``\\x1b``-style codes."""
    return "".join(_safe_char(c) for c in str(text))


def _safe_char(c: str) -> str:
    category = unicodedata.category(c)
    if c in "\n\t" or category not in ("Cc", "Cf") or c == "\u200d":  # keep the emoji joiner
        return c
    return repr(c)[1:-1] if category == "Cc" else f"\\u{ord(c):04x}"


def plain(text: str) -> str:
    """User or model text for a rich table or console line: terminal-safe and markup-escaped."""
    return escape(shown(text))


class SafeFormatter(logging.Formatter):
    """A log formatter whose lines are terminal-safe: log messages quote server errors and judge output."""

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(shown(line) for line in super().format(record).split("\n"))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (a test's capture, a redirected stream)."""

    @property
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001
        pass


def log_warnings_to_stderr(
    name: str = "specalign", fmt: str = "%(message)s", level: int = logging.WARNING, *, propagate: bool = True
) -> None:
    """Send ``name``'s log records at ``level`` and above to stderr through :class:`SafeFormatter`, once
    (in place of Python's last-resort handler, which writes them raw)."""
    logger = logging.getLogger(name)
    if not any(isinstance(h.formatter, SafeFormatter) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(SafeFormatter(fmt))
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
