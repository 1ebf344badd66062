"""A small SVG writer: every text and attribute value is escaped on the way in."""

from __future__ import annotations

import math
from html import escape


def esc(value: object) -> str:
    """Text or attribute value, safe inside HTML and SVG (quotes included)."""
    return escape(str(value), quote=True)


class Svg:
    """Collects elements; ``render`` gives an inline ``<svg>`` scaled to its container's width."""

    def __init__(self, width: int, height: int, label: str, css_class: str = "plot"):
        self.width, self.height, self.label, self.css_class = width, height, label, css_class
        self.parts: list[str] = []

    def el(self, tag: str, text: str | None = None, title: str | None = None, **attrs: object) -> None:
        """Append ``<tag attrs>text<title>title</title></tag>``; ``class_`` and ``font_size`` style names work."""
        attr = "".join(f' {k.rstrip("_").replace("_", "-")}="{esc(v)}"' for k, v in attrs.items() if v is not None)
        inner = (f"<title>{esc(title)}</title>" if title else "") + (esc(text) if text is not None else "")
        self.parts.append(f"<{tag}{attr}>{inner}</{tag}>" if inner else f"<{tag}{attr}/>")

    def raw(self, markup: str) -> None:
        """Append markup built by this module (never model text)."""
        self.parts.append(markup)

    def render(self) -> str:
        return (
            f'<svg class="{esc(self.css_class)}" viewBox="0 0 {self.width} {self.height}" role="img" '
            f'aria-label="{esc(self.label)}" xmlns="http://www.w3.org/2000/svg">' + "".join(self.parts) + "</svg>"
        )


class Linear:
    def __init__(self, lo: float, hi: float, a: float, b: float):
        self.lo, self.hi, self.a, self.b = lo, hi, a, b

    def __call__(self, v: float) -> float:
        span = self.hi - self.lo or 1.0
        return self.a + (v - self.lo) / span * (self.b - self.a)

    def ticks(self) -> list[float]:
        span = self.hi - self.lo
        step = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 1e9) if span / s <= 10)
        first = math.ceil(self.lo / step) * step
        return [first + i * step for i in range(int((self.hi - first) / step + 1e-9) + 1)]


class Log10:
    def __init__(self, lo: float, hi: float, a: float, b: float):
        self.lo, self.hi, self.a, self.b = math.log10(lo), math.log10(hi), a, b

    def __call__(self, v: float) -> float:
        return self.a + (math.log10(v) - self.lo) / ((self.hi - self.lo) or 1.0) * (self.b - self.a)

    def ticks(self) -> list[float]:
        out = []
        for k in range(math.floor(self.lo), math.ceil(self.hi) + 1):
            out += [m * 10**k for m in (1, 2, 5) if self.lo - 1e-9 <= math.log10(m * 10**k) <= self.hi + 1e-9]
        return out


def percent_domain(values: list[float], floor_at: float = 0.0) -> tuple[float, float]:
    """A 0–100 axis range that holds ``values`` (in %) with some room, on multiples of 10."""
    if not values:
        return floor_at, 100.0
    lo = max(floor_at, math.floor((min(values) - 5) / 10) * 10)
    hi = min(100.0, math.ceil((max(values) + 5) / 10) * 10)
    return (lo, hi) if hi > lo else (max(0.0, hi - 10), hi)


def log_domain(values: list[float]) -> tuple[float, float]:
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    return (lo, hi * 10) if hi <= lo else (lo, hi)


def tick_label(v: float) -> str:
    return f"{v:,.0f}" if v >= 1 else f"{v:g}"
