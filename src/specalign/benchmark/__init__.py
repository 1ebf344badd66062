"""Benchmarks: scenarios, specifications and prompts, from any source."""

from ._files import parse_yaml, read_text, read_yaml
from ._loader import BUNDLED, load_benchmark, select_prompts, select_scenarios
from ._models import (
    SPEC_KINDS,
    SPEC_LETTERS,
    Benchmark,
    Label,
    Prompt,
    PromptLabel,
    Scenario,
    Spec,
    SpecKind,
    Turn,
    check_key,
    spec_id,
    spec_ids_of,
)
from ._sheets import neutralise_cell, read_sheet
from ._specalign_layout import load_scenario_dir

__all__ = [
    "BUNDLED",
    "SPEC_KINDS",
    "SPEC_LETTERS",
    "Benchmark",
    "Label",
    "Prompt",
    "PromptLabel",
    "Scenario",
    "Spec",
    "SpecKind",
    "Turn",
    "check_key",
    "load_benchmark",
    "load_scenario_dir",
    "neutralise_cell",
    "parse_yaml",
    "read_sheet",
    "read_text",
    "read_yaml",
    "select_prompts",
    "select_scenarios",
    "spec_id",
    "spec_ids_of",
]
