"""The ``specalign`` command (entry point ``specalign.cli:main``; the commands live in ``specalign._cli``)."""

from __future__ import annotations

from ._cli import app, main

__all__ = ["app", "main"]

if __name__ == "__main__":
    main()
