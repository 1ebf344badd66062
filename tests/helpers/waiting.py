"""Waiting on a condition, not on the clock.

A test that needs a run to be part-way (some records written, some requests received, a lock taken)
polls for exactly that, briefly, and fails naming what it waited for when it never comes: it does
not sleep a guessed number of seconds and hope the machine kept up.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

POLL = 0.01  # seconds between two looks


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 60,
    what: str = "the condition",
    process: subprocess.Popen | None = None,
) -> T:
    """Poll ``predicate`` until it returns something true, and return that.

    Fails after ``timeout`` seconds naming ``what``; with ``process``, fails at once (with its stderr)
    when that process ends before the condition holds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            _, stderr = process.communicate()
            raise AssertionError(f"the process ended (exit {process.returncode}) before {what}: {stderr}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL)


async def wait_until_async(predicate: Callable[[], T], timeout: float = 60, what: str = "the condition") -> T:
    """:func:`wait_until` inside an event loop: the loop's other tasks run while it waits."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(POLL)
