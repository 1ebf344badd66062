"""Reward functions that tests name as ``scorer=method_rewards:NAME`` (tests/helpers is on sys.path)."""

from __future__ import annotations

import re


def quality(scenario, prompt, response):
    """The number after ``quality=`` in the response; None (unscored) without one."""
    found = re.search(r"quality=(\d+)", response)
    return float(found.group(1)) if found else None


async def by_length(scenario, prompt, response):
    return float(len(response))


def broken(scenario, prompt, response):
    raise RuntimeError("reward model offline")
