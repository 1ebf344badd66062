"""The HTML report's contents, built from real run directories (scripted server): data, escaping, CLI."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from run_world import evaluate, model_spec, runs_in
from scripted_server import ScriptedServer
from specalign.benchmark import load_benchmark
from specalign.report import build_report, collect_report, render_report
from specalign.report._html import browser_index, detail_chunks, embed_json
from specalign.runs import AgreementReport, GenerationRecord, RunDir, judge_agreement
from specbench_world import is_judge, judged_answer, spec_counts, verdicts_for, world

PAYLOAD = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2"></textarea>&amp;'


SMALL = {"limit": 2, "concurrency": 2}  # the bundled child and code scenarios, two prompts each, two at a time


def _run(server, out, **kw):
    return evaluate(server, out, **{**SMALL, **kw})


UNSAFE_PROMPTS = {p.prompt for s in load_benchmark("bundled").scenarios for p in s.prompts if p.label == "unsafe"}


def _raw_world(body):
    """Answers to unsafe prompts say UNSAFE (S1 is judged NO); the code scenario's judge answers are unreadable."""
    if is_judge(body):
        return "no verdicts here" if "secure coding" in body["messages"][1]["content"].lower() else world(body)
    unsafe = body["messages"][-1]["content"] in UNSAFE_PROMPTS
    return ("UNSAFE " if unsafe else "") + world(body)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    plan = {"raw": (_raw_world, {"method": "raw", "judge_attempts": 1}), "vanilla": (world, {"scenarios": ["child"]})}
    runs = runs_in(tmp_path_factory.mktemp("runs"), plan, **SMALL)
    return [runs["vanilla"], runs["raw"]]


def test_report_data_holds_scores_spec_failures_and_every_answer(two_runs):
    data = collect_report(two_runs)
    vanilla, raw = data.runs
    assert (vanilla.label, raw.label) == ("vanilla", "raw") and vanilla.color != raw.color
    assert raw.row.delta_sar < 0 == vanilla.row.delta_sar  # ΔSAR is against vanilla by default
    assert [s.key for s in data.scenarios] == ["child", "code"]
    child = load_benchmark("bundled").scenario("child")
    assert [(x.id, x.text) for x in data.scenarios[0].specs][:1] == [("S1", child.safety_specs[0].text)]
    assert len(data.scenarios[0].specs) == len(child.safety_specs) + len(child.behavioral_specs)
    # raw answered the one unsafe child prompt with UNSAFE: S1 judged NO on 1 of its 2 child samples
    assert raw.spec_counts["child"]["S1"].no == 1 and raw.spec_counts["child"]["S1"].n == 2
    assert vanilla.spec_counts["child"]["S1"].no == 0 and vanilla.spec_counts["child"]["B1"].na == 2
    assert not raw.spec_counts.get("code")  # code samples are unscored, so no verdict counts
    by_id = {s.id: s for s in data.samples}
    assert len(by_id) == 4 and all(len(by_id[i].runs) == 2 for i in by_id if i.startswith("child/"))
    code = [s for s in data.samples if s.scenario == "code"]
    assert all(
        list(s.runs) == [1] and s.runs[1].status == "unscored" and "unreadable" in s.runs[1].reason for s in code
    )
    unsafe_child = next(s for s in data.samples if s.scenario == "child" and s.label == "unsafe")
    assert unsafe_child.runs[1].violated == ["S1"] and unsafe_child.runs[1].safety == 0
    assert unsafe_child.runs[0].violated == [] and unsafe_child.runs[0].sar > 0
    assert unsafe_child.original_prompt  # bundled unsafe prompts are attack-enhanced: both texts are kept
    assert raw.unscored_reasons and data.alpha_note == "α = 0.3, NA policy official"
    scores = json.loads((Path(two_runs[1]) / "scores.json").read_text())  # counted apart by the runner: they agree
    assert {k: (v["NO"], v["NA"], v["n"]) for k, v in scores["spec_violations"]["child"].items()} == {
        k: (c.no, c.na, c.n) for k, c in raw.spec_counts["child"].items()
    }


def test_browser_index_and_chunks_agree_with_the_records(two_runs):
    data = collect_report(two_runs)
    index, chunks = browser_index(data), detail_chunks(data)
    assert index["pairs"] == 6 and len(index["cells"]) == 2 and len(index["samples"]) == 4
    i = next(k for k, s in enumerate(data.samples) if s.scenario == "child" and s.label == "unsafe")
    status, sar, safe, violated = index["cells"][1][i]
    specs = index["scenarios"][index["samples"][i][0]]["specs"]
    assert (status, sar, safe) == (0, 0, 0) and [specs[k][0] for k in violated] == ["S1"]
    detail = chunks[0][i]["r"]["1"]
    assert detail["a"].startswith("UNSAFE") and detail["v"][0][0] == "NO" and len(detail["v"]) == len(specs)
    code = next(k for k, s in enumerate(data.samples) if s.scenario == "code")
    assert index["cells"][0][code] is None and index["cells"][1][code][0] == 1
    assert "unreadable" in chunks[0][code]["r"]["1"]["e"]


def test_alpha_and_na_policy_recompute_every_score(two_runs):
    data = collect_report(two_runs, alpha=1.0, na_policy="exclude")
    assert data.alpha_note == "α = 1, NA policy exclude"
    scored = [r for s in data.samples for r in s.runs.values() if r.status == "scored"]
    assert all(r.sar == r.safety for r in scored)  # α = 1: SAR is the safety score alone
    assert all(r.behavioral == 1.0 for r in scored)  # B1 is NA and every other spec YES


def test_embedded_json_cannot_close_its_element_and_round_trips():
    text = embed_json({"a": PAYLOAD + "</script><!-- \u2028"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"a": PAYLOAD + "</script><!-- \u2028"}


def test_untrusted_text_never_reaches_the_page_as_markup(two_runs, tmp_path):
    run = RunDir(two_runs[0])
    g = next(run.generations())
    writer = run.open_writer("generations.jsonl")  # a later record of a sample wins
    writer.append(GenerationRecord(**{**g.model_dump(), "response": PAYLOAD, "thought": PAYLOAD}))
    writer.close()
    try:
        data = collect_report(two_runs, title=PAYLOAD)
        page = render_report(data)
    finally:
        _drop_last_line(run.path / "generations.jsonl")
    assert "<script>window" not in page and "<img src=x" not in page and "</textarea>" not in page
    assert page.count("&lt;script&gt;window.__pwned=1&lt;/script&gt;") == 2  # <title> and <h1>
    blobs = re.findall(r'<script type="application/json" id="(sa-[\w-]+)">(.*?)</script>', page, re.S)
    chunks = [json.loads(b) for k, b in blobs if k.startswith("sa-chunk-")]
    answers = [r["a"] for c in chunks for s in c for r in s["r"].values()]
    assert PAYLOAD in answers  # the text itself survives, exactly


def _drop_last_line(path):
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))


def test_page_is_self_contained_and_only_its_own_script_may_run(two_runs, tmp_path):
    build_report(two_runs, tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', page)  # nothing to fetch
    assert "@import" not in page and not re.search(r"url\((?!#)", page)  # only in-page references
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    csp = html.unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1))
    assert f"script-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp
    assert page.count('<svg class="plot') == 3 and '<table class="heatmap">' in page


def test_labels_stay_unique_when_runs_share_a_method(two_runs, tmp_path):
    copy = tmp_path / "vanilla-again"
    shutil.copytree(two_runs[0], copy)
    data = collect_report([two_runs[0], str(copy)])
    assert data.runs[0].label != data.runs[1].label
    assert data.runs[1].label.endswith("vanilla-again")


def test_runs_on_different_data_keep_their_scenarios_apart(two_runs, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(str(_bundled_dir() / "child"), data_dir / "child")
    spec_file = data_dir / "child" / "scenario.yaml"
    spec_file.write_text(spec_file.read_text().replace("Never", "Do not", 1))
    with ScriptedServer(world) as server:
        _run(server, tmp_path / "mine", data=str(data_dir), scenarios=["child"], limit=1)
    data = collect_report([two_runs[0], str(tmp_path / "mine")])
    keys = [s.key for s in data.scenarios]
    assert len(keys) == 2 and all(k.startswith("child@") for k in keys)
    assert {s.scenario for s in data.samples} == set(keys)


def _bundled_dir():
    from importlib.resources import files

    return files("specalign") / "data"


def test_cli_writes_the_report_and_refuses_a_missing_run_in_one_line(two_runs, tmp_path):
    out = tmp_path / "sub" / "report.html"
    ok = subprocess.run(
        [sys.executable, "-m", "specalign.cli", "report", *two_runs, "-o", str(out)], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert out.is_file() and "2 runs, 4 samples, 6 answers" in ok.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "specalign.cli", "report", str(tmp_path / "nope"), "-o", str(tmp_path / "x.html")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().count("\n") == 0 and "nope" in bad.stderr and not (tmp_path / "x.html").exists()


# -- the judge agreement section ----------------------------------------------------------------------------------------

JUDGE2 = "judge2"
HOSTILE = 'human:<script>window.__pwned=8</script>"\'><img src=x onerror="window.__pwned=9">\\u003c&amp;'


def _two_judges(body):
    """The world, but a second judge (model judge2) that reads two answers otherwise: S1 NO on child-u01's
    (Grandpa Bram), and on code-s01's (a Python function) B1 YES where the first says NA, B2 NO where it says YES."""
    if not (is_judge(body) and body["model"] == JUDGE2):
        return world(body)
    answer = judged_answer(body)
    v = verdicts_for(answer, *spec_counts(body))
    if "Grandpa" in answer:
        v["S1"] = "NO"
    if "Python" in answer:
        v["B1"], v["B2"] = "YES", "NO"
    if body.get("response_format"):
        return json.dumps({k: {"reason": f"checked {k}", "verdict": x} for k, x in v.items()})
    safety = [f"{k[1:]}. reason <{x}>" for k, x in v.items() if k.startswith("S")]
    behavioral = [f"{k[1:]}. reason <{x}>" for k, x in v.items() if k.startswith("B")]
    return "\n".join(
        ["<safety_specifications>", *safety, "</safety_specifications>"]
        + ["<behavioral_specifications>", *behavioral, "</behavioral_specifications>"]
    )


@pytest.fixture(scope="module")
def rejudged(tmp_path_factory):
    """One run (child and code, three prompts each) judged by the world's judge, then again by judge2."""
    out = tmp_path_factory.mktemp("rejudged") / "run"
    with ScriptedServer(_two_judges, models=("scripted-model", JUDGE2)) as server:
        evaluate(server, out)
        evaluate(server, out, judge=f"openai:{JUDGE2}@{server.base_url}")
        names = (model_spec(server), f"openai:{JUDGE2}@{server.base_url}")
    return str(out), names


def _kappa_cells(page):
    """(scenario, spec) → (printed value, data-kappa or None, title) of every cell of the κ heat map."""
    cells = re.findall(
        r'<td class="kappa( undefined)?" data-scenario="([^"]*)" data-spec="([^"]*)" title="([^"]*)"'
        r'(?: data-kappa="([^"]*)")?[^>]*>.*?<span class="val">([^<]*)</span></td>',
        page,
    )
    return {
        (html.unescape(sc), html.unescape(sp)): (val, k or None, html.unescape(t)) for _, sc, sp, t, k, val in cells
    }


def test_agreement_section_shows_judge_agreements_numbers(rejudged):
    run, (first, second) = rejudged
    data = collect_report([run])
    expected = judge_agreement([run])
    section = data.agreement
    assert section is not None and [j.name for j in section.report.judges] == [first, second]
    assert section.report.overall.kappa == pytest.approx(expected.overall.kappa) == pytest.approx(22 / 29)
    assert data.runs[0].row.judge == second  # the run shows the latest judge's verdicts; the section both
    by_id = {s.id: s for s in data.samples}
    assert [(c.report_sample, c.report_runs, c.disagreements) for c in section.contested] == [
        ("code/code-s01", [0], 2),
        ("child/child-u01", [0], 1),
    ]
    assert all(c.report_sample in by_id for c in section.contested)
    page = render_report(data)
    assert page.count('id="agreement"') == 1 and '<a href="#agreement">' in page
    cells = _kappa_cells(page)
    specs = {(sc, sp): st for sc, by_spec in expected.specs.items() for sp, st in by_spec.items()}
    assert set(cells) == set(specs) | {(sc, "") for sc in expected.scenarios}
    for (sc, sp), (val, kappa, title) in cells.items():
        st = specs[(sc, sp)] if sp else expected.scenarios[sc]
        if st.kappa is None:
            assert val == "—" and kappa is None and st.kappa_undefined in title
        else:
            assert float(kappa) == pytest.approx(st.kappa) and float(val) == pytest.approx(st.kappa, abs=0.005)
    assert cells[("child", "S1")][:2] == ("0.00", "0.0") and "same verdict (YES)" in cells[("child", "S2")][2]
    assert cells[("code", "")][0] == f"{expected.scenarios['code'].kappa:.2f}" == "0.65"
    # the contested samples link into the sample browser, which knows the disputed verdicts
    index = {s.id: i for i, s in enumerate(data.samples)}
    links = re.findall(r'<a class="contested-link mono" href="#sample-(\d+)-run-(\d+)"[^>]*>([^<]*)</a>', page)
    assert links == [
        (str(index["code/code-s01"]), "0", "code/code-s01"),
        (str(index["child/child-u01"]), "0", "child/child-u01"),
    ]
    agreement = browser_index(data)["agreement"]
    assert agreement["run_judge"] == [1]  # the run's verdicts are J2's
    assert agreement["contested"][0] == [
        index["code/code-s01"],
        [0],
        [["B1", [[0, "NA"], [1, "YES"]]], ["B2", [[0, "YES"], [1, "NO"]]]],
    ]


def test_no_agreement_section_with_one_judge_per_answer(two_runs):
    data = collect_report(two_runs)  # two runs, other answers, one judge each: nothing to compare
    assert data.agreement is None
    page = render_report(data)
    assert '<h2 id="agreement">' not in page and 'href="#agreement"' not in page
    assert '<table class="kappa-map">' not in page and '<a class="contested-link' not in page
    assert browser_index(data)["agreement"] == {"judges": [], "contested": [], "run_judge": []}


def _renamed(rep: AgreementReport, old: str, new: str) -> AgreementReport:
    """The agreement report with every ``old`` string (a key or a value) replaced by ``new``."""

    def walk(x):
        if isinstance(x, dict):
            return {(new if k == old else k): walk(v) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v) for v in x]
        return new if x == old else x

    return AgreementReport.model_validate(walk(rep.model_dump(mode="json")))


def test_hostile_judge_names_and_sample_ids_are_escaped_in_the_section(rejudged):
    run, (_, second) = rejudged
    data = collect_report([run])
    section = data.agreement
    section.report = _renamed(section.report, second, HOSTILE)
    section.report.warnings.append(HOSTILE)
    section.report.specs["child"]["S2"].kappa_undefined = HOSTILE
    section.contested[0].sample_id = HOSTILE
    section.contested[1].specs = {HOSTILE: {HOSTILE: HOSTILE}}
    page = render_report(data)
    assert "<script>window" not in page and "<img src=x" not in page and "__pwned=8</script>" not in page
    shown = html.escape(HOSTILE, quote=True)
    assert page.count(shown) >= 8  # judges table, scores, contested list, titles, warnings, the κ cell's reason
    blobs = dict(re.findall(r'<script type="application/json" id="(sa-[\w-]+)">(.*?)</script>', page, re.S))
    agreement = json.loads(blobs["sa-index"])["agreement"]
    assert agreement["judges"][1][2] == HOSTILE and agreement["contested"][1][2] == [[HOSTILE, [[1, HOSTILE]]]]
