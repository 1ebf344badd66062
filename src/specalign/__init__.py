"""specalign: measure and improve how well language models follow deployment specifications.

The public API is re-exported lazily from the sub-packages so that ``specalign --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_benchmark": "benchmark",
    "Benchmark": "benchmark",
    "Scenario": "benchmark",
    "Prompt": "benchmark",
    "Spec": "benchmark",
    "Model": "models",
    "ModelSettings": "models",
    "create_model": "models",
    "parse_model_spec": "models",
    "Message": "models",
    "register_backend": "models",
    "GenerationMethod": "methods",
    "register_method": "methods",
    "create_method": "methods",
    "Judge": "judge",
    "score_sample": "scoring",
    "RunConfig": "runs",
    "run_evaluation": "runs",
    "RunDir": "runs",
    "compute_scores": "runs",
}

__all__ = [
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

if TYPE_CHECKING:  # pragma: no cover
    from .benchmark import Benchmark, Prompt, Scenario, Spec, load_benchmark
    from .judge import Judge
    from .methods import GenerationMethod, create_method, register_method
    from .models import Message, Model, ModelSettings, create_model, parse_model_spec, register_backend
    from .runs import RunConfig, RunDir, compute_scores, run_evaluation
    from .scoring import score_sample


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'specalign' has no attribute {name!r}")
    import importlib  # noqa: PLC0415

    return getattr(importlib.import_module(f".{mod}", __name__), name)
