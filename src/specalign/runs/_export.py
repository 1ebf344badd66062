"""Per-sample export: one row per sample × spec verdict (CSV or JSON lines), ready for pandas."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..benchmark import SPEC_KINDS, neutralise_cell, spec_id
from ..errors import ConfigError, RunDirError
from ..scoring import SampleScore, score_sample
from ._records import GenerationRecord, JudgmentRecord, Manifest
from ._scores import latest_records
from ._store import GENERATIONS, JUDGMENTS, MANIFEST, SCORES, SELECTION, RunDir

if TYPE_CHECKING:
    from ..benchmark import Benchmark

ExportFormat = Literal["csv", "jsonl"]
COLUMNS = [
    "run_dir",
    "model",
    "method",
    "judge",
    "sample_id",
    "scenario",
    "prompt_id",
    "label",
    "status",
    "reason",
    "safety",
    "behavioral",
    "sar",
    "spec_id",
    "spec_kind",
    "spec_text",
    "verdict",
    "verdict_reason",
    "completion_tokens",
    "calls",
    "flags",
]
TEXT_COLUMNS = ["prompt", "thought", "response"]
RUN_FILES = (MANIFEST, SELECTION, GENERATIONS, JUDGMENTS, SCORES)


def verdict_rows(run_dir: str, *, with_text: bool = False) -> Iterator[dict[str, Any]]:
    """Rows for one run: a row per spec of every scored sample, one row (no spec) for any other sample.

    ``status`` is ``scored``, ``unscored`` (with ``reason``), ``generation_error`` or ``pending``.
    Scores use the run's α and NA policy.
    """
    rd = RunDir(run_dir)
    manifest = rd.read_manifest()
    gens, judged = latest_records(rd, manifest.judge["key"])
    texts = _spec_texts(manifest)
    for sid in rd.read_selection() or sorted(gens):
        g, j = gens.get(sid), judged.get(sid)
        base = _base_row(rd, manifest, sid, g, j, with_text)
        if base["status"] != "scored":
            yield {
                **base,
                "spec_id": None,
                "spec_kind": None,
                "spec_text": None,
                "verdict": None,
                "verdict_reason": None,
            }
            continue
        for spec, v in j.verdicts.items():  # type: ignore[union-attr]
            yield {
                **base,
                "spec_id": spec,
                "spec_kind": "safety" if spec.startswith("S") else "behavioral",
                "spec_text": texts.get((base["scenario"], spec)),
                "verdict": v.verdict,
                "verdict_reason": v.reason,
            }


def _base_row(
    rd: RunDir, manifest: Manifest, sid: str, g: GenerationRecord | None, j: JudgmentRecord | None, with_text: bool
) -> dict[str, Any]:
    scenario, _, prompt_id = sid.partition("/")
    row: dict[str, Any] = {
        "run_dir": str(rd.path),
        "model": manifest.model.get("key"),
        "method": manifest.method["name"],
        "judge": manifest.judge["model"].get("key"),
        "sample_id": sid,
        "scenario": scenario,
        "prompt_id": prompt_id,
        "label": g.label if g else None,
        "status": "pending",
        "reason": None,
        "safety": None,
        "behavioral": None,
        "sar": None,
        "completion_tokens": g.usage.completion_tokens if g else None,
        "calls": (g.calls + g.cached_calls) if g else None,
        "flags": ",".join(g.flags) if g else "",
    }
    if with_text:
        row.update(
            prompt=g.prompt_sent if g else None, thought=g.thought if g else None, response=g.response if g else None
        )
    status, reason, score = sample_outcome(manifest, g, j)
    row.update(status=status, reason=reason)
    if score is not None:
        row.update(safety=score.safety, behavioral=score.behavioral, sar=score.sar)
    return row


SampleStatus = Literal["scored", "unscored", "generation_error", "pending"]


def sample_outcome(
    manifest: Manifest, g: GenerationRecord | None, j: JudgmentRecord | None
) -> tuple[SampleStatus, str | None, SampleScore | None]:
    """(status, reason, score) of one sample, scored with the run's α and NA policy."""
    if g is not None and g.status != "ok":
        return "generation_error", g.error, None
    if j is not None and j.status != "scored":
        return "unscored", j.unscored_reason, None
    if g is None or j is None:
        return "pending", None, None
    info = manifest.data.scenarios[g.scenario]
    score = score_sample(
        [j.verdicts[k].verdict for k in info.spec_ids("safety")],
        [j.verdicts[k].verdict for k in info.spec_ids("behavioral")],
        weights=info.behavioral_weights,
        alpha=manifest.alpha,
        na_policy=manifest.na_policy,
    )
    return "scored", None, score


def run_benchmark(manifest: Manifest) -> Benchmark | None:
    """The run's data, if it is still where it was and unchanged; else None."""
    from ..benchmark import load_benchmark  # noqa: PLC0415

    try:
        bench = load_benchmark(manifest.data.source)
    except Exception:  # noqa: BLE001  (moved or unreadable data: go on without texts)
        return None
    return bench if bench.content_hash() == manifest.data.sha256 else None


def _spec_texts(manifest: Manifest) -> dict[tuple[str, str], str]:
    bench = run_benchmark(manifest)
    if bench is None:
        return {}
    out = {}
    for s in bench.scenarios:
        for kind in SPEC_KINDS:
            out.update({(s.key, spec_id(kind, i)): spec.text for i, spec in enumerate(s.specs(kind), 1)})
    return out


def export_verdicts(
    run_dirs: list[str], path: str, fmt: ExportFormat | None = None, *, with_text: bool = False, raw_cells: bool = False
) -> int:
    """Write the rows of ``run_dirs`` to ``path`` (format from the extension unless given); returns the row count.

    In CSV, a text cell a spreadsheet would run as a formula (it starts with ``=``, ``+``, ``-``, ``@``, a tab
    or a carriage return; or with ``'``) gets a leading ``'``, unless ``raw_cells``. JSON lines are never changed.
    """
    fmt = fmt or _format_of(path)
    columns = COLUMNS + (TEXT_COLUMNS if with_text else [])
    target = Path(path)
    _check_not_a_run_file(target, run_dirs)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("w", encoding="utf-8", newline="") as f:
            return _write(f, run_dirs, fmt, columns, with_text, raw_cells)
    except OSError as e:
        raise RunDirError(f"cannot write {target}: {e.strerror or e}") from None


def _check_not_a_run_file(target: Path, run_dirs: list[str]) -> None:
    """Refuse an output that is a run directory or one of its files: writing it would destroy what is read."""
    t = target.resolve()
    for run_dir in run_dirs:
        d = Path(run_dir).resolve()
        if t == d or (t.parent == d and t.name in RUN_FILES):
            raise ConfigError(
                f"{target} is a file of the run {run_dir} that is being exported: write elsewhere", field="--output"
            )


def _write(
    f: Any, run_dirs: list[str], fmt: ExportFormat, columns: list[str], with_text: bool, raw_cells: bool = False
) -> int:
    n = 0
    writer = csv.DictWriter(f, fieldnames=columns) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    for run_dir in run_dirs:
        for row in verdict_rows(run_dir, with_text=with_text):
            if writer is not None:
                writer.writerow(row if raw_cells else {k: neutralise_cell(v) for k, v in row.items()})
            else:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def _format_of(path: str) -> ExportFormat:
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise ConfigError(f"cannot tell the format of {path!r}: use .csv or .jsonl, or --format", field="--output")
