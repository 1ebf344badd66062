"""One loader for every data source: bundled, a directory (either layout), or the hub."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from ._hub import load_hub
from ._models import Benchmark, Prompt, Scenario
from ._official import is_official_layout, load_official_dir
from ._specalign_layout import BUNDLED_DIR, is_specalign_layout, load_specalign_dir

BUNDLED = "bundled"


def load_benchmark(source: str = BUNDLED) -> Benchmark:
    """Load ``bundled``, ``hf:<repo>`` or a directory in the official or the specalign layout."""
    if source == BUNDLED:
        return Benchmark(source=BUNDLED, scenarios=load_specalign_dir(BUNDLED_DIR))
    if source.startswith("hf:"):
        return Benchmark(source=source, scenarios=load_hub(source[3:]))
    root = Path(source).expanduser()
    if not root.exists():
        raise DataError("no such directory (expected 'bundled', 'hf:<repo>' or a data directory)", path=source)
    if not root.is_dir():
        raise DataError("not a directory (expected a folder of scenario folders)", path=source)
    if (root / "data").is_dir() and not _has_layout(root):
        root = root / "data"
    if is_official_layout(root):
        scenarios = load_official_dir(root)
    elif is_specalign_layout(root):
        scenarios = load_specalign_dir(root)
    else:
        raise DataError(
            "no scenarios found: expected <Scenario>/specifications.json (official) or <key>/scenario.yaml folders",
            path=source,
        )
    return Benchmark(source=str(root.resolve()), scenarios=scenarios)


def _has_layout(root: Path) -> bool:
    return is_official_layout(root) or is_specalign_layout(root)


def select_scenarios(bench: Benchmark, keys: list[str] | None) -> list[Scenario]:
    """The scenarios named by ``keys`` (case-insensitive), in benchmark order; all when empty."""
    if not keys:
        return list(bench.scenarios)
    by_lower = {s.key.lower(): s for s in bench.scenarios}
    wanted = []
    for k in keys:
        s = by_lower.get(k.lower())
        if s is None:
            have = ", ".join(s.key for s in bench.scenarios)
            raise DataError(f"unknown scenario {k!r} (this source has: {have})", path=bench.source, field="scenario")
        if s not in wanted:
            wanted.append(s)
    return [s for s in bench.scenarios if s in wanted]


def select_prompts(scenario: Scenario, limit: int | None) -> list[Prompt]:
    """The first ``limit`` prompts, unsafe:safe as close to the scenario's ratio as whole numbers allow.

    All prompts when ``limit`` is None or 0. With SpecBench's 2:1 ratio, 2 gives 1 + 1 and 3 gives 2 + 1.
    """
    prompts = scenario.prompts
    if not limit or limit >= len(prompts):
        return list(prompts)
    if any(p.label == "unlabeled" for p in prompts):  # no ratio to keep
        return list(prompts[:limit])
    unsafe = [p for p in prompts if p.label == "unsafe"]
    safe = [p for p in prompts if p.label == "safe"]
    total = len(prompts)
    n_unsafe = min(len(unsafe), (2 * limit * len(unsafe) + total) // (2 * total))  # nearest, halves up
    n_safe = min(len(safe), limit - n_unsafe)
    n_unsafe = limit - n_safe
    chosen = {p.id for p in unsafe[:n_unsafe] + safe[:n_safe]}
    return [p for p in prompts if p.id in chosen]
