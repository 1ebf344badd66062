"""Run directories: manifest, records, scores; the resumable, pipelined evaluation runner."""

from ._compare import (
    ComparisonRow,
    cell,
    compare_runs,
    comparison_row,
    comparison_warnings,
    delta_note,
    format_comparison,
    overall_notes,
    row_of,
    set_deltas,
)
from ._config import EMBEDDED_DEFAULT_LIMIT, RunConfig
from ._export import SampleStatus, export_verdicts, run_benchmark, sample_outcome, verdict_rows
from ._records import (
    DataInfo,
    GenerationRecord,
    JudgmentRecord,
    Manifest,
    ScenarioInfo,
    Selection,
    Session,
    build_manifest,
    now,
    sample_id_of,
)
from ._runner import Evaluation, RunResult, RunStats, run_evaluation
from ._scores import ScoresReport, compute_scores, latest_records
from ._store import RecordWriter, RunDir, check_output, check_runs

__all__ = [
    "EMBEDDED_DEFAULT_LIMIT",
    "ComparisonRow",
    "DataInfo",
    "Evaluation",
    "GenerationRecord",
    "JudgmentRecord",
    "Manifest",
    "RecordWriter",
    "RunConfig",
    "RunDir",
    "RunResult",
    "RunStats",
    "SampleStatus",
    "ScenarioInfo",
    "ScoresReport",
    "Selection",
    "Session",
    "build_manifest",
    "cell",
    "check_output",
    "check_runs",
    "compare_runs",
    "comparison_row",
    "comparison_warnings",
    "compute_scores",
    "delta_note",
    "export_verdicts",
    "format_comparison",
    "latest_records",
    "now",
    "overall_notes",
    "row_of",
    "run_benchmark",
    "run_evaluation",
    "sample_id_of",
    "sample_outcome",
    "set_deltas",
    "verdict_rows",
]
