"""Benchmarks: scenarios, specifications and prompts, from any source."""

from ._loader import BUNDLED, load_benchmark, select_prompts, select_scenarios
from ._models import Benchmark, Label, Prompt, PromptLabel, Scenario, Spec, SpecKind, Turn

__all__ = [
    "BUNDLED",
    "Benchmark",
    "Label",
    "Prompt",
    "PromptLabel",
    "Scenario",
    "Spec",
    "SpecKind",
    "Turn",
    "load_benchmark",
    "select_prompts",
    "select_scenarios",
]
