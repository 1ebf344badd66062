"""The shape of the code, checked: the pipeline's layering, private modules staying private, and the
public API. Read from the source with ``ast`` (an import-linter contract in test form)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "specalign"

#: top to bottom: a unit may import units of lower layers only (never the same layer, never above)
LAYERS: list[set[str]] = [
    {"cli"},  # the entry point's module: re-exports _cli
    {"_cli"},
    {"serve", "report"},
    {"authoring"},
    {"runs"},
    {"methods"},
    {"judge"},
    {"models", "scoring"},
    {"benchmark"},
    {"_registry"},
    {"errors", "_secrets", "_unicode", "_terminal", "specalign"},  # "specalign": __version__ only
]
LAYER_OF = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module or module.name) for every specalign import in ``path``."""
    name, is_package = _module_name(path), path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found += [(node.lineno, module)] + [(node.lineno, f"{module}.{a.name}") for a in node.names]
    return [(line, t) for line, t in found if t == "specalign" or t.startswith("specalign.")]


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] != "__version__" else "specalign"


FILES = sorted(SRC.rglob("*.py"))


def test_every_unit_has_a_layer():
    units = {_unit(_module_name(p)) for p in FILES}
    assert units <= set(LAYER_OF), f"give these a layer in LAYERS: {sorted(units - set(LAYER_OF))}"


def test_layers_are_respected():
    """cli → serve, report → authoring → runs → methods → judge → models, scoring → benchmark → errors."""
    wrong = []
    for path in FILES:
        if path == SRC / "__init__.py":
            continue  # the top-level face re-exports every layer, lazily
        here = _unit(_module_name(path))
        for line, target in _imports(path):
            there = _unit(target)
            if there != here and there in LAYER_OF and LAYER_OF[there] <= LAYER_OF[here]:
                wrong.append(f"{path.relative_to(SRC)}:{line}: {here} imports {target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(set(wrong)))


def _private_owner(module: str) -> str | None:
    """The package that owns ``module`` privately (``specalign.runs`` for ``specalign.runs._store.x``), or None."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    return None


def test_no_module_imports_another_packages_private_module():
    wrong = []
    for path in FILES:
        importer = _module_name(path)
        for line, target in _imports(path):
            owner = _private_owner(target)
            if owner is not None and not (importer == owner or importer.startswith(owner + ".")):
                wrong.append(f"{path.relative_to(SRC)}:{line}: {importer} imports {target}, private to {owner}")
    assert not wrong, "private modules used from outside their package:\n" + "\n".join(sorted(set(wrong)))


PUBLIC_API = [
    "Benchmark",
    "GenerationMethod",
    "Judge",
    "Message",
    "Model",
    "ModelSettings",
    "Prompt",
    "RunConfig",
    "RunDir",
    "Scenario",
    "Spec",
    "__version__",
    "compute_scores",
    "create_method",
    "create_model",
    "load_benchmark",
    "parse_model_spec",
    "register_backend",
    "register_method",
    "run_evaluation",
    "score_sample",
]


def test_the_top_level_public_api_is_pinned():
    """Adding or removing a public name is a decision: change this list and CHANGELOG.md with it."""
    import specalign

    assert sorted(specalign.__all__) == PUBLIC_API
    for name in PUBLIC_API:
        assert getattr(specalign, name) is not None


PACKAGES = ["authoring", "benchmark", "judge", "methods", "models", "report", "runs", "serve"]


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_exports_only_names_that_exist_and_no_private_ones(package):
    module = importlib.import_module(f"specalign.{package}")
    names = getattr(module, "__all__", None)
    assert names, f"specalign.{package} declares no __all__"
    assert len(names) == len(set(names))
    assert not [n for n in names if n.startswith("_")]
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"specalign.{package}.__all__ names what it lacks: {missing}"
