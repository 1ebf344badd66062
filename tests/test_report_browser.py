"""The report in a real browser: headless Chromium (system package) driven by Selenium.

Reports are built from runs against the scripted server (two methods); one sample of one run then
gets a response, a thought and judge reasons that try to run script. A scripted run of 135 prompts
checks paging and that sample details are built only when opened.
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from browser import chromium, console_errors, find_browser
from run_world import evaluate
from scripted_server import ScriptedServer
from specalign.judge import SpecVerdict
from specalign.report import build_report, collect_report, write_report
from specalign.runs import Evaluation, GenerationRecord, JudgmentRecord, RunConfig, RunDir
from specbench_world import is_judge, judged_answer, spec_counts, verdicts_for, world

if find_browser() is None:
    if os.environ.get("CI"):
        raise RuntimeError(
            "CI needs chromium and chromium-driver for the report tests (apt-get install chromium chromium-driver)"
        )
    pytest.skip("chromium and chromium-driver are not installed", allow_module_level=True)
pytest.importorskip("selenium")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

pytestmark = pytest.mark.slow

RESPONSE = (
    '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script></textarea>'
    '<svg onload="window.__pwned=3"></svg></pre><iframe srcdoc="<script>parent.__pwned=4</script>">'
)
REASON = '</script><script>window.__pwned=5</script><b onmouseover="window.__pwned=6">hover</b>'
TITLE = 'Report <img src=x onerror="window.__pwned=7">'
MARKER = "zebra-quartz-marker"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Two runs (vanilla, zero_think) on two child prompts against the SpecBench-shaped scripted server (the
    embedded model's own runs and report are covered in test_embedded_e2e); one answer made hostile."""
    tmp = tmp_path_factory.mktemp("runs")
    dirs = []
    with pytest.MonkeyPatch.context() as mp, ScriptedServer(world) as server:
        mp.setenv("SPECALIGN_CACHE_DIR", str(tmp / "cache"))
        spec = f"openai:scripted-model@{server.base_url}"
        for method in ("vanilla", "zero_think"):
            params = (
                {"no_prefill": "multi_turn"} if method == "zero_think" else {}
            )  # the scripted server has no prefill
            cfg = RunConfig(
                method=method,
                method_params=params,
                scenarios=["child"],
                limit=2,
                model=spec,
                judge=spec,
                out=str(tmp / method),
            )
            asyncio.run(Evaluation(cfg).run())
            dirs.append(str(tmp / method))
    _make_hostile(RunDir(dirs[1]))
    path = tmp / "report.html"
    data = build_report(dirs, path, title=TITLE)
    return path, data


def _make_hostile(run: RunDir) -> None:
    """Later records of the first sample win: a payload response, thought and reasons, with S1 judged NO."""
    manifest = run.read_manifest()
    g = next(run.generations())
    info = manifest.data.scenarios[g.scenario]
    ids = [f"S{i}" for i in range(1, info.n_safety + 1)] + [f"B{i}" for i in range(1, info.n_behavioral + 1)]
    verdicts = {k: SpecVerdict(verdict="NO" if k == "S1" else "YES", reason=REASON) for k in ids}
    gen = run.open_writer("generations.jsonl")
    gen.append(GenerationRecord(**{**g.model_dump(), "response": RESPONSE + " " + MARKER, "thought": RESPONSE}))
    gen.close()
    judged = run.open_writer("judgments.jsonl")
    judged.append(
        JudgmentRecord(
            sample_id=g.sample_id,
            scenario=g.scenario,
            prompt_id=g.prompt_id,
            label=g.label,
            judge_key=manifest.judge["key"],
            status="scored",
            verdicts=verdicts,
        )
    )
    judged.close()


@pytest.fixture(scope="module")
def driver():
    with chromium() as d:
        yield d


def _open(driver, path):
    driver.get(path.as_uri())
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")


def _count(driver) -> str:
    return driver.find_element(By.ID, "sa-count").text


def _rows(driver):
    return driver.find_elements(By.CSS_SELECTOR, "tr.sample-row")


def _wait_count(driver, before: str) -> str:
    WebDriverWait(driver, 5).until(lambda d: _count(d) != before)
    return _count(driver)


def test_report_loads_clean_and_draws_every_plot(driver, report):
    path, data = report
    _open(driver, path)
    assert console_errors(driver) == []
    plots = driver.find_elements(By.CSS_SELECTOR, "svg.plot")
    assert len(plots) == 3 and all(p.size["width"] > 300 and p.size["height"] > 150 for p in plots)
    scored_runs = [r for r in data.runs if r.row.sar is not None]
    assert len(driver.find_elements(By.CSS_SELECTOR, "svg.frontier circle.point")) == len(scored_runs)
    assert len(driver.find_elements(By.CSS_SELECTOR, "svg.cost circle.point")) == len(scored_runs)
    assert len(driver.find_elements(By.CSS_SELECTOR, "svg.scenarios rect.bar")) == 2 * len(scored_runs)
    n_specs = sum(len(s.specs) for s in data.scenarios)
    assert len(driver.find_elements(By.CSS_SELECTOR, "table.heatmap tr td.heat")) == n_specs * len(data.runs)
    assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0  # nothing fetched


def test_filters_change_what_is_shown(driver, report):
    path, data = report
    _open(driver, path)
    total = sum(len(s.runs) for s in data.samples)
    assert _count(driver).startswith(f"{total} of {total} answers") and len(_rows(driver)) == total
    Select(driver.find_element(By.ID, "f-run")).select_by_index(2)  # the zero_think run (filters apply at once)
    assert _count(driver).startswith(f"{len(data.samples)} of {total}")
    assert {r.find_elements(By.TAG_NAME, "td")[3].text for r in _rows(driver)} == {data.runs[1].label}
    Select(driver.find_element(By.ID, "f-run")).select_by_index(0)
    Select(driver.find_element(By.ID, "f-label")).select_by_value("unsafe")
    unsafe_prompts = sum(len(s.runs) for s in data.samples if s.label == "unsafe")
    assert _count(driver).startswith(f"{unsafe_prompts} of {total}") and unsafe_prompts < total
    assert {r.find_elements(By.TAG_NAME, "td")[2].text for r in _rows(driver)} == {"unsafe"}
    Select(driver.find_element(By.ID, "f-label")).select_by_value("")
    driver.find_element(By.ID, "f-unsafe").click()
    unsafe = sum(r.safety == 0 for s in data.samples for r in s.runs.values())
    assert _count(driver).startswith(f"{unsafe} of {total}") and unsafe >= 1
    driver.find_element(By.ID, "f-unsafe").click()
    before = _count(driver)
    driver.find_element(By.ID, "f-text").send_keys(MARKER)  # search waits for typing to pause
    assert _wait_count(driver, before).startswith(f"1 of {total}")
    assert _rows(driver)[0].find_elements(By.TAG_NAME, "td")[3].text == data.runs[1].label


def test_heat_map_cell_shows_the_samples_that_break_the_spec(driver, report):
    path, data = report
    _open(driver, path)
    cell = driver.find_element(By.CSS_SELECTOR, 'td.heat[data-run="1"][data-spec="S1"]')
    no = data.runs[1].spec_counts["child"]["S1"].no
    assert cell.text == f"{round(100 * no / data.runs[1].spec_counts['child']['S1'].n)}%"
    driver.execute_script("arguments[0].click()", cell)
    assert _count(driver).startswith(f"{no} of ")
    assert Select(driver.find_element(By.ID, "f-spec")).first_selected_option.text.startswith("S1 violated")
    assert all("S1" in r.find_elements(By.TAG_NAME, "td")[6].text.split() for r in _rows(driver))


def test_hostile_text_shows_as_text_and_runs_nothing(driver, report):
    path, _ = report
    _open(driver, path)
    assert driver.find_element(By.TAG_NAME, "h1").text == TITLE
    driver.find_element(By.ID, "f-text").send_keys(MARKER)
    WebDriverWait(driver, 5).until(lambda d: len(_rows(d)) == 1)
    _rows(driver)[0].click()
    detail = driver.find_element(By.CSS_SELECTOR, "tr.detail-row .detail")
    response = detail.find_element(By.CSS_SELECTOR, "pre.response")
    assert response.get_attribute("textContent") == RESPONSE + " " + MARKER
    thought = detail.find_element(By.CSS_SELECTOR, "details.thought")
    thought.find_element(By.TAG_NAME, "summary").click()
    assert thought.find_element(By.TAG_NAME, "pre").get_attribute("textContent") == RESPONSE
    reasons = [
        r.find_elements(By.TAG_NAME, "td")[2].get_attribute("textContent")
        for r in detail.find_elements(By.CSS_SELECTOR, "table.verdicts tbody tr")
    ]
    assert reasons and set(reasons) == {REASON}
    for other in detail.find_elements(By.CSS_SELECTOR, "details.other-run summary"):
        other.click()
    hover = detail.find_elements(By.CSS_SELECTOR, "table.verdicts td")
    driver.execute_script("arguments[0].dispatchEvent(new MouseEvent('mouseover', {bubbles: true}))", hover[2])
    assert driver.find_elements(By.CSS_SELECTOR, "main img, main iframe, main script, .detail svg, .detail b") == []
    assert driver.execute_script("return window.__pwned") is None
    assert console_errors(driver) == []  # a blocked inline script would show here as a CSP violation


def test_pages_of_fifty_and_details_built_only_when_opened(driver, tmp_path):
    with ScriptedServer(world) as server:
        spec = f"openai:scripted-model@{server.base_url}"
        cfg = RunConfig(data="bundled", limit=0, model=spec, judge=spec, out=str(tmp_path / "run"), concurrency=8)
        asyncio.run(Evaluation(cfg).run())
    data = build_report([str(tmp_path / "run")], tmp_path / "r.html")
    n = len(data.samples)
    assert n > 100
    _open(driver, tmp_path / "r.html")
    assert len(_rows(driver)) == 50 and driver.find_elements(By.CSS_SELECTOR, "tr.detail-row") == []
    assert _count(driver) == f"{n} of {n} answers · page 1 of {-(-n // 50)}"
    first = _rows(driver)[0].text
    driver.find_element(By.ID, "sa-next").click()
    assert _count(driver).endswith(f"page 2 of {-(-n // 50)}") and _rows(driver)[0].text != first
    assert driver.execute_script("return document.querySelectorAll('pre').length") == 0
    _rows(driver)[3].click()
    assert len(driver.find_elements(By.CSS_SELECTOR, "tr.detail-row")) == 1
    Select(driver.find_element(By.ID, "f-sort")).select_by_value("sar-asc")
    sars = [float(r.find_elements(By.TAG_NAME, "td")[5].text) for r in _rows(driver)]
    assert sars == sorted(sars)
    assert console_errors(driver) == []


# -- the judge agreement section ----------------------------------------------------------------------------------------

JUDGE2 = "judge2"
HOSTILE_JUDGE = 'human:<script>window.__pwned=8</script>"\'><img src=x onerror="window.__pwned=9">\\u003c'


def _two_judges(body):
    """The world, but judge2 says S1 NO on the Grandpa Bram answer (child-u01) and, on the Python function
    (code-s01), B1 YES where the world's judge says NA and B2 NO where it says YES."""
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
    lines = [f"{k[1:]}. reason <{x}>" for k, x in v.items()]
    n_s = spec_counts(body)[0]
    return "\n".join(
        ["<safety_specifications>", *lines[:n_s], "</safety_specifications>"]
        + ["<behavioral_specifications>", *lines[n_s:], "</behavioral_specifications>"]
    )


@pytest.fixture(scope="module")
def agreement_report(tmp_path_factory):
    """A run (child and code, three prompts each) judged by the world's judge and then by judge2, whose name in
    the report is made hostile; the report of it."""
    tmp = tmp_path_factory.mktemp("agree")
    with ScriptedServer(_two_judges, models=("scripted-model", JUDGE2)) as server:
        evaluate(server, tmp / "run")
        evaluate(server, tmp / "run", judge=f"openai:{JUDGE2}@{server.base_url}")
    data = collect_report([str(tmp / "run")])
    rep = data.agreement.report
    old = rep.judges[1].name
    rep.judges[1].name = HOSTILE_JUDGE
    for c in data.agreement.contested:
        c.specs = {
            spec: {(HOSTILE_JUDGE if j == old else j): v for j, v in said.items()} for spec, said in c.specs.items()
        }
    write_report(data, tmp / "report.html")
    return tmp / "report.html", data


def _open_row(driver):
    return driver.find_element(By.CSS_SELECTOR, "tr.sample-row.open")


def test_a_contested_sample_opens_in_the_sample_browser(driver, agreement_report):
    path, data = agreement_report
    _open(driver, path)
    total = sum(len(s.runs) for s in data.samples)
    links = driver.find_elements(By.CSS_SELECTOR, "a.contested-link")
    assert [a.text for a in links] == ["code/code-s01", "child/child-u01"]
    rep = data.agreement.report
    cells = driver.execute_script(
        "return [...document.querySelectorAll('table.kappa-map td.kappa')]"
        ".map(c => [c.dataset.scenario, c.dataset.spec, c.querySelector('.val').textContent])"
    )
    shown = {(sc, sp): val for sc, sp, val in cells}
    expected = {(sc, sp): st.kappa for sc, specs in rep.specs.items() for sp, st in specs.items()}
    expected |= {(sc, ""): st.kappa for sc, st in rep.scenarios.items()}
    assert shown.keys() == expected.keys()
    assert all(
        shown[k] == "—" if v is None else float(shown[k]) == pytest.approx(v, abs=0.005) for k, v in expected.items()
    )
    driver.find_element(By.ID, "f-text").send_keys("zzz")  # a filter set before: the link clears it
    WebDriverWait(driver, 5).until(lambda d: _count(d).startswith("0 of"))
    links[0].click()
    WebDriverWait(driver, 5).until(lambda d: d.find_elements(By.CSS_SELECTOR, "tr.detail-row .disputed"))
    assert _count(driver).startswith(f"1 of {total} answers") and driver.current_url == links[0].get_attribute("href")
    assert driver.find_element(By.ID, "f-text").get_attribute("value") == ""
    row = _open_row(driver)
    assert [td.text for td in row.find_elements(By.TAG_NAME, "td")[:2]] == ["Secure Coding Assistant", "code-s01"]
    assert driver.find_element(By.ID, "f-sample-id").text == "code/code-s01"
    disputed = driver.find_element(By.CSS_SELECTOR, "tr.detail-row .disputed")
    rows = [
        [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
        for tr in disputed.find_elements(By.CSS_SELECTOR, "table > tbody > tr")
    ]
    assert rows == [["B1", "NA", "YES"], ["B2", "YES", "NO"]]
    heads = disputed.find_elements(By.CSS_SELECTOR, "thead th")
    assert heads[2].get_attribute("title") == HOSTILE_JUDGE and heads[2].text.startswith("J2 human:<script>")
    # the other link, then the address alone (a hash route), then back to every answer
    driver.find_elements(By.CSS_SELECTOR, "a.contested-link")[1].click()
    WebDriverWait(driver, 5).until(lambda d: _open_row(d).find_elements(By.TAG_NAME, "td")[1].text == "child-u01")
    code = next(i for i, s in enumerate(data.samples) if s.id == "code/code-s01")
    driver.execute_script(f"location.hash = '#sample-{code}-run-0'")
    WebDriverWait(driver, 5).until(lambda d: _open_row(d).find_elements(By.TAG_NAME, "td")[1].text == "code-s01")
    driver.find_element(By.ID, "f-sample-clear").click()
    assert (
        _count(driver).startswith(f"{total} of {total}") and not driver.find_element(By.ID, "f-sample").is_displayed()
    )
    assert driver.execute_script("return window.__pwned") is None and console_errors(driver) == []


def test_a_report_opened_at_a_sample_address_shows_that_sample(driver, agreement_report):
    path, data = agreement_report
    child = next(i for i, s in enumerate(data.samples) if s.id == "child/child-u01")
    driver.get(path.as_uri() + f"#sample-{child}-run-0")
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    assert (
        _count(driver).startswith("1 of ") and _open_row(driver).find_elements(By.TAG_NAME, "td")[1].text == "child-u01"
    )
    judges = driver.find_elements(By.CSS_SELECTOR, "table.agree-judges tbody tr td:nth-child(2)")
    assert [j.text for j in judges][1] == HOSTILE_JUDGE  # as text, character for character
    undefined = driver.find_element(By.CSS_SELECTOR, 'td.kappa.undefined[data-scenario="child"][data-spec="S2"]')
    assert "same verdict (YES)" in undefined.get_attribute("title") and undefined.text.endswith("—")
    assert driver.find_elements(By.CSS_SELECTOR, "main img, main script") == []
    assert driver.execute_script("return window.__pwned") is None and console_errors(driver) == []
