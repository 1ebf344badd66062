"""Benchmarks: scenarios, specifications and prompts, from any source."""

from ._loader import BUNDLED, load_benchmark, select_prompts, select_scenarios
from ._models import Benchmark, Label, Prompt, Scenario, Spec, SpecKind

__all__ = [
    "BUNDLED",
    "Benchmark",
    "Label",
    "Prompt",
    "Scenario",
    "Spec",
    "SpecKind",
    "load_benchmark",
    "select_prompts",
    "select_scenarios",
]
