"""Run directories: manifest, records, scores; the resumable, pipelined evaluation runner."""

from ._compare import ComparisonRow, compare_runs, comparison_row, format_comparison
from ._config import EMBEDDED_DEFAULT_LIMIT, RunConfig
from ._export import export_verdicts, verdict_rows
from ._records import GenerationRecord, JudgmentRecord, Manifest, Session
from ._runner import Evaluation, RunResult, RunStats, run_evaluation
from ._scores import ScoresReport, compute_scores
from ._store import RunDir

__all__ = [
    "EMBEDDED_DEFAULT_LIMIT",
    "ComparisonRow",
    "Evaluation",
    "GenerationRecord",
    "JudgmentRecord",
    "Manifest",
    "RunConfig",
    "RunDir",
    "RunResult",
    "RunStats",
    "ScoresReport",
    "Session",
    "compare_runs",
    "comparison_row",
    "compute_scores",
    "export_verdicts",
    "format_comparison",
    "run_evaluation",
    "verdict_rows",
]
