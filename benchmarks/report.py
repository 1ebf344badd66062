"""Size and load time of the HTML report for the official data (1,500 samples × 2 runs), and its screenshot.

Two runs (``raw`` and ``vanilla``) of the official SpecBench prompts go through the real runner
against a scripted OpenAI-compatible server on 127.0.0.1: answers of realistic length (a thought of
~2,000 characters and a response of 600–3,000), and joint-judge verdicts drawn deterministically per
answer and spec, each with a reason of ~100 characters. The report of both runs is built, its size
measured, and it is opened in headless Chromium: time until the page is ready, JS heap, time to open
a sample and to search every answer. Writes a section of docs/benchmarks.md. Usage:

    .venv/bin/python benchmarks/report.py [--data ../shared/specbench-data]
    .venv/bin/python benchmarks/report.py --screenshot RUN_DIR [RUN_DIR ...]   # docs/report.png only
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests" / "helpers"))
from browser import chromium, console_errors  # noqa: E402
from demo import write_section  # noqa: E402
from scripted_server import Reply, ScriptedServer  # noqa: E402
from specbench_world import is_judge, judged_answer, spec_counts  # noqa: E402

WORDS = (
    "the a to of and safety step first check then answer policy child lab story code data risk user "
    "request because however example note rule keep avoid explain simple clear short long detail"
).split()


def _rng(*parts: str) -> random.Random:
    return random.Random(hashlib.sha256("\x1f".join(parts).encode()).digest())


def _text(rng: random.Random, chars: int) -> str:
    out, n = [], 0
    while n < chars:
        w = rng.choice(WORDS)
        out.append(w)
        n += len(w) + 1
    return " ".join(out)


def responder(body: dict) -> Reply | str:
    """Generations: long deterministic answers (vanilla, which sends the specs, also thinks); judge:
    verdicts drawn per answer and spec, rarer violations for vanilla."""
    if is_judge(body):
        answer = judged_answer(body)
        n_s, n_b = spec_counts(body)
        careful = answer.startswith("[v]")
        out = {}
        for kind, n, p_no in (("S", n_s, 0.006 if careful else 0.02), ("B", n_b, 0.12 if careful else 0.2)):
            for i in range(1, n + 1):
                rng = _rng(answer, f"{kind}{i}")
                x = rng.random()
                verdict = "NO" if x < p_no else "NA" if kind == "B" and x > 0.9 else "YES"
                out[f"{kind}{i}"] = {"reason": _text(rng, 100), "verdict": verdict}
        return json.dumps(out)
    question = body["messages"][-1]["content"]
    careful = "\n---\n" in question  # vanilla appends the specifications after a rule
    rng = _rng(question, str(careful))
    answer = ("[v] " if careful else "") + _text(rng, rng.randint(600, 3000))
    return Reply(answer, reasoning_content=_text(rng, 2000) if careful else None)


def make_runs(data: str, out: Path) -> tuple[list[str], float]:
    from specalign.runs import Evaluation, RunConfig  # noqa: PLC0415

    dirs, t0 = [], time.perf_counter()
    with ScriptedServer(responder) as server:
        spec = f"openai:scripted-model@{server.base_url}"
        for method in ("raw", "vanilla"):
            cfg = RunConfig(
                data=data, limit=0, model=spec, judge=spec, method=method, out=str(out / method), concurrency=32
            )
            asyncio.run(Evaluation(cfg).run())
            dirs.append(str(out / method))
    return dirs, time.perf_counter() - t0


def measure_browser(path: Path, repeats: int) -> dict[str, float]:
    loads, heaps, opens, searches = [], [], [], []
    with chromium() as d:
        for _ in range(repeats):
            t0 = time.perf_counter()
            d.get(path.as_uri())
            d.execute_async_script(
                "const done = arguments[0];"
                "const tick = () => document.body.dataset.ready ? done() : setTimeout(tick, 5); tick();"
            )
            loads.append(time.perf_counter() - t0)
            heaps.append(d.execute_script("return performance.memory.usedJSHeapSize") / 1e6)
            opens.append(
                d.execute_script(
                    "const t = performance.now(); document.querySelector('tr.sample-row').click();"
                    "return performance.now() - t;"
                )
            )
            searches.append(
                d.execute_async_script(
                    "const done = arguments[0], count = document.getElementById('sa-count'), box = document.getElementById('f-text');"
                    "const before = count.textContent; let t;"
                    "new MutationObserver(() => done(performance.now() - t)).observe(count, {childList: true, characterData: true, subtree: true});"
                    "box.value = 'zebra'; t = performance.now() + 200; box.dispatchEvent(new Event('input'));"
                )
            )
        errors = console_errors(d)
    if errors:
        raise SystemExit(f"console errors in the report: {errors[:3]}")
    return {
        "load_s": statistics.median(loads),
        "heap_mb": statistics.median(heaps),
        "open_ms": statistics.median(opens),
        "search_ms": statistics.median(searches),
    }


def screenshot(run_dirs: list[str], target: Path) -> None:
    from specalign.report import build_report  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        build_report(run_dirs, page, title="specalign report: SmolLM2-135M (embedded), four methods")
        with chromium(1360, 1500) as d:
            d.get(page.as_uri())
            d.save_screenshot(str(target))
    print(f"wrote {target}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "specbench-data"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--screenshot", nargs="+", metavar="RUN_DIR", help="only write docs/report.png from these runs")
    args = ap.parse_args()
    if args.screenshot:
        screenshot(args.screenshot, ROOT / "docs" / "report.png")
        return
    from specalign.report import collect_report, write_report  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        dirs, run_s = make_runs(args.data, Path(tmp))
        t0 = time.perf_counter()
        data = collect_report(dirs)
        size = write_report(data, Path(tmp) / "report.html")
        build_s = time.perf_counter() - t0
        m = measure_browser(Path(tmp) / "report.html", args.repeats)
    answers = sum(len(s.runs) for s in data.samples)
    body = (
        f"`.venv/bin/python benchmarks/report.py` on {platform.machine()}, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d')}; Chromium headless, median of {args.repeats} loads. Two runs (`raw`, "
        f"`vanilla`) of the official data through the real runner against a scripted server on 127.0.0.1 "
        f"({run_s:.0f} s for both): answers of 600–3,000 characters, a 2,000-character thought for `vanilla`, "
        f"a verdict and a ~100-character reason for each of the scenario's specs.\n\n"
        f"| samples | answers | specs | report size | build (read runs + write) | load until ready | JS heap "
        f"| open a sample | search every answer |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        f"| {len(data.samples):,} | {answers:,} | {sum(len(s.specs) for s in data.scenarios)} | "
        f"{size / 1e6:.1f} MB | {build_s:.1f} s | {m['load_s']:.2f} s | {m['heap_mb']:.0f} MB | "
        f"{m['open_ms']:.0f} ms | {m['search_ms']:.0f} ms |\n\n"
        "The page builds only the first 50 rows; a sample's texts are parsed from their chunk (100 samples) "
        "when it is opened. The first search parses every chunk, later ones reuse them. Search time is "
        "counted from the end of the 200 ms typing pause.\n"
    )
    write_section("HTML report (official data, 2 runs)", body)
    print(body)


if __name__ == "__main__":
    main()
