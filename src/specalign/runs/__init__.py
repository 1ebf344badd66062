"""Run directories: manifest, records, scores; the resumable, pipelined evaluation runner."""

from ._config import EMBEDDED_DEFAULT_LIMIT, RunConfig
from ._records import GenerationRecord, JudgmentRecord, Manifest
from ._runner import Evaluation, RunResult, RunStats, run_evaluation
from ._scores import ScoresReport, compute_scores
from ._store import RunDir

__all__ = [
    "EMBEDDED_DEFAULT_LIMIT",
    "Evaluation",
    "GenerationRecord",
    "JudgmentRecord",
    "Manifest",
    "RunConfig",
    "RunDir",
    "RunResult",
    "RunStats",
    "ScoresReport",
    "compute_scores",
    "run_evaluation",
]
