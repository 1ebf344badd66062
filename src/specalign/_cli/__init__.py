"""The ``specalign`` command line, one module per command group (``common`` holds what they share)."""

from .main import app, main

__all__ = ["app", "main"]
