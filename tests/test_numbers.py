"""Issue 15: overall scores that leave out a scenario, and comparisons over different prompts or data, say so."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib.resources import files

import pytest
from rich.console import Console

from run_world import evaluate, runs_in
from scripted_server import ScriptedServer
from specalign._cli.display import comparison_table, scores_table
from specalign.report import collect_report, render_report
from specalign.runs import compare_runs, format_comparison
from specalign.runs._compare import comparison_warnings
from specbench_world import is_judge, world

SMALL = {"limit": 2, "concurrency": 2}  # the bundled child and code scenarios, two prompts each, two at a time


def _run(server, out, **kw):
    return evaluate(server, out, **{**SMALL, **kw})


def _code_unreadable(body):
    if is_judge(body) and "secure coding" in body["messages"][1]["content"].lower():
        return "no verdicts here"
    return world(body)


def _unsafe_code(body):
    """Code answers fail S1, so code's SAR differs from child's; everything else as ``world``."""
    if not is_judge(body) and "secure coding" in json.dumps(body).lower():
        return "UNSAFE " + world(body)
    return world(body)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    plan = {
        "gap": (_code_unreadable, {"method": "raw", "judge_attempts": 1}),
        "both": (_unsafe_code, {}),
        "child": (world, {"scenarios": ["child"], "method": "raw"}),
    }
    return runs_in(tmp_path_factory.mktemp("runs"), plan, **SMALL)


def _text(renderable) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text()


def test_overall_names_the_scenarios_it_leaves_out(runs):
    scores = json.loads((open(f"{runs['gap']}/scores.json")).read())
    assert scores["empty_scenarios"] == ["code"]
    assert "1 of 2 scenarios" in scores["overall_note"] and "code" in scores["overall_note"]
    assert scores["overall"]["full"]["sar"] == scores["scenarios"]["child"]["full"]["sar"]
    clean = json.loads((open(f"{runs['both']}/scores.json")).read())
    assert clean["empty_scenarios"] == [] and clean["overall_note"] is None


def test_console_and_compare_tables_show_the_overall_note(runs):
    from specalign.runs import RunDir, compute_scores

    rd = RunDir(runs["gap"])
    text = _text(scores_table(compute_scores(rd, rd.read_manifest())))
    assert "overall*" in text and "no scored sample" in text
    rows = compare_runs([runs["both"], runs["gap"]])
    assert rows[1].empty_scenarios == ["code"] and rows[0].empty_scenarios == []
    assert "raw: overall is the mean of 1 of 2" in _text(comparison_table(rows)).replace("\n", " ")
    assert "- raw: overall is the mean of 1 of 2 scenarios" in format_comparison(rows, "markdown")


def test_delta_sar_is_over_the_prompts_both_runs_scored(runs):
    both, gap = compare_runs([runs["both"], runs["gap"]])
    assert both.is_baseline and both.delta_prompts == both.scored == 4
    assert gap.delta_prompts == 2  # code is unscored in the raw run
    child_sar = json.loads(open(f"{runs['both']}/scores.json").read())["scenarios"]["child"]["full"]["sar"]
    assert both.sar != pytest.approx(child_sar)  # so the old ΔSAR (against child+code) would differ
    assert gap.delta_sar == pytest.approx(gap.sar - child_sar)  # child against child, not against child+code
    assert "ΔSAR over 2 shared prompts" in format_comparison([both, gap], "markdown")


def test_compare_warns_when_runs_cover_other_scenarios(runs):
    rows = compare_runs([runs["both"], runs["child"]])
    warnings = comparison_warnings(rows)
    assert any("different scenarios" in w for w in warnings)
    assert any("ΔSAR is over the prompts scored in both" in w and "raw 2" in w for w in warnings)
    assert rows[1].delta_prompts == 2
    same = compare_runs([runs["both"], runs["both"]])
    assert comparison_warnings(same) == [] and same[1].delta_sar == 0


def test_compare_cli_warns_in_one_line_on_stderr(runs):
    done = subprocess.run(
        [sys.executable, "-m", "specalign.cli", "compare", runs["both"], runs["child"], "--format", "json"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("warning:")
    assert "different scenarios" in done.stderr
    rows = json.loads(done.stdout)
    assert rows[1]["delta_prompts"] == 2 and rows[1]["scenarios"] == ["child"]


def test_other_data_versions_are_flagged(runs, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(str(files("specalign") / "data" / "child"), data_dir / "child")
    spec_file = data_dir / "child" / "scenario.yaml"
    spec_file.write_text(spec_file.read_text().replace("Never", "Do not", 1))
    with ScriptedServer(world) as server:
        _run(server, tmp_path / "mine", data=str(data_dir), scenarios=["child"])
    rows = compare_runs([runs["child"], str(tmp_path / "mine")])
    assert any("different data versions" in w and "may differ" in w for w in comparison_warnings(rows))


def test_report_shows_the_notices(runs):
    data = collect_report([runs["both"], runs["child"], runs["gap"]])
    assert any("different scenarios" in n for n in data.notices)
    assert any("overall is the mean of 1 of 2" in n for n in data.notices)
    page = render_report(data)
    assert 'class="notice"' in page and "Read with care" in page and "scored in both" in page
    plain = collect_report([runs["both"], runs["both"]])
    assert plain.notices == [] and 'class="notice"' not in render_report(plain)
