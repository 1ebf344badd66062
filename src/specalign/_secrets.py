"""Keep credentials out of everything specalign stores, displays, logs or returns.

Two mechanisms, used wherever text leaves a model backend:

- :func:`redact_url` / :func:`redact_text` hide the credentials a URL can carry: its userinfo
  (``http://user:pass@host/v1`` → ``http://***@host/v1``), every query value
  (``?api_key=abc`` → ``?api_key=***``) and its fragment. The real URL is only ever given to
  the HTTP client.
- :class:`Scrubber` removes known secrets (API keys, URL passwords and tokens) from free text
  in every form they are commonly written in: raw, ``repr``/JSON-escaped, HTML-escaped and
  URL-encoded (``quote``, ``quote_plus``, either hex case).

Scrubbing must not destroy the text around it, so it depends on the secret's length: a
secret of at least :data:`MIN_SUBSTRING` characters is replaced wherever it occurs; a shorter
one (down to :data:`MIN_TOKEN`) only where it stands as a whole token (not inside a longer
word); a secret shorter than :data:`MIN_TOKEN` is not scrubbed at all: it cannot be told from
ordinary text (a key ``x`` would turn "exceeds" into "e***ceeds"), and it protects nothing.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus, unquote, unquote_plus

REDACTED = "***"
#: secrets this long or longer are scrubbed wherever they occur
MIN_SUBSTRING = 8
#: shorter secrets, down to this length, are scrubbed as whole tokens only; shorter ones not at all
MIN_TOKEN = 4

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_URL = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"'<>`]+")
_NEXT_URL = re.compile(r",(?=[A-Za-z][A-Za-z0-9+.\-]*://)")
_WORD = "A-Za-z0-9_"


def redact_url(url: str) -> str:
    """``url`` without its credentials: userinfo → ``***@``, each query value → ``***``, fragment → ``#***``.

    Works on text that does not parse as a URL too: anything up to the last ``@`` is taken for
    userinfo (a password may hold ``/``, ``?`` or ``#`` unescaped), so nothing before it survives.
    """
    m = _SCHEME.match(url)
    head, rest = (url[: m.end()], url[m.end() :]) if m else ("", url)
    if "@" in rest:
        rest = f"{REDACTED}@{rest.rpartition('@')[2]}"
    rest, hashed, fragment = rest.partition("#")
    rest, asked, query = rest.partition("?")
    out = head + rest
    if asked:
        out += "?" + "&".join(_redact_pair(p) for p in query.split("&"))
    if hashed:
        out += "#" + (REDACTED if fragment else "")
    return out


def _redact_pair(pair: str) -> str:
    name, eq, value = pair.partition("=")
    if not eq:
        return REDACTED if name else ""
    return f"{name}={REDACTED}" if value else f"{name}="


def redact_text(text: str) -> str:
    """``text`` with every URL in it (``scheme://...``) passed through :func:`redact_url`.

    Comma-separated URLs (a model spec's list of endpoints) are redacted one by one.
    """
    if "://" not in text:
        return text
    return _URL.sub(lambda m: ",".join(redact_url(u) for u in _NEXT_URL.split(m.group(0))), text)


def url_secrets(url: str) -> list[str]:
    """The credentials a URL carries (userinfo parts, query values), raw and percent-decoded."""
    m = _SCHEME.match(url)
    rest = url[m.end() :] if m else url
    found: list[str] = []
    if "@" in rest:
        userinfo = rest.rpartition("@")[0]
        found += [userinfo, *userinfo.split(":", 1)]
        rest = rest.rpartition("@")[2]
    rest, _, fragment = rest.partition("#")
    query = rest.partition("?")[2]
    found += [p.partition("=")[2] or (p if "=" not in p else "") for p in query.split("&")]
    found.append(fragment)
    decoded = [d for s in found for d in (unquote(s), unquote_plus(s))]
    return [s for s in dict.fromkeys(found + decoded) if s]


def secret_forms(secret: str) -> set[str]:
    """The ways ``secret`` is commonly written into text: raw, escaped, HTML-escaped and URL-encoded."""
    forms = {
        secret,
        secret.encode("unicode_escape").decode("ascii"),
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        html.escape(secret),
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
    }
    forms |= {_lower_hex(f) for f in forms if "%" in f}
    return {f for f in forms if f}


def _lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), text)


class Scrubber:
    """Removes known secrets from text, in every form :func:`secret_forms` knows, and redacts URLs.

    See the module docstring for the length rule that keeps short secrets from mangling text.
    """

    def __init__(self, secrets: Iterable[str] = ()):
        self._plain: set[str] = set()
        self._tokens: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """Scrub ``secret`` from now on (ignored when shorter than :data:`MIN_TOKEN`)."""
        if len(secret) >= MIN_SUBSTRING:
            self._plain |= secret_forms(secret)
        elif len(secret) >= MIN_TOKEN:
            self._tokens |= secret_forms(secret)
        else:
            return
        self._pattern = self._compile()

    def _compile(self) -> re.Pattern[str] | None:
        alternatives = [re.escape(f) for f in sorted(self._plain, key=len, reverse=True)]
        alternatives += [
            rf"(?<![{_WORD}]){re.escape(f)}(?![{_WORD}])" for f in sorted(self._tokens, key=len, reverse=True)
        ]
        return re.compile("|".join(alternatives)) if alternatives else None

    def __call__(self, text: str) -> str:
        """``text`` with its URLs redacted and every known secret replaced by ``***``."""
        text = redact_text(text)
        return self._pattern.sub(REDACTED, text) if self._pattern is not None else text


def header_value_problem(value: str) -> str | None:
    """Why ``value`` cannot be sent as a token in an HTTP header (None when it can).

    API keys are visible ASCII (``!`` to ``~``): a line break, another control character, a
    space or a non-ASCII character means the variable holds something else (a pasted file,
    a key with its line end, ``Bearer KEY``) and the HTTP layer would reject every call.
    """
    for ch in value:
        if "!" <= ch <= "~":
            continue
        if ch in "\r\n":
            return "a line break"
        if ch == " " or ch == "\t":
            return "a space or tab"
        if ord(ch) < 32 or ord(ch) == 127:
            return "a control character"
        return "a non-ASCII character"
    return None
