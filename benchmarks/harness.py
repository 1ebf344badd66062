"""How close the harness gets to the physical limit, what resuming costs, memory, local throughput, start-up.

Every figure goes to docs/benchmarks.md with its command, date and machine. The server is
``tests/helpers/fault_server.py`` in its own process (deterministic answers, a fixed latency L, at most C
requests served at once). Usage:

    .venv/bin/python benchmarks/harness.py                       # everything
    .venv/bin/python benchmarks/harness.py --only overhead,resume,memory,local,startup
    .venv/bin/python benchmarks/harness.py --only memory --memory-sizes 10000,100000

- overhead: the official data (1,500 generations + 1,500 joint judgments, pipelined per sample)
  against latency L at ``--concurrency C``; the ideal wall time is 3,000 × L / C, and the server
  reports the most calls it saw in flight (C when ``--concurrency`` is honoured).
- resume: model calls made by rerunning a finished run, and by resuming after SIGKILL at 50%.
- memory: peak RSS of synthetic runs of growing size (one scenario, N prompts) against the server.
- local: completion tokens per second through specalign's llama.cpp backend against
  llama-cpp-python called directly, same model, prompts, sampling and token budget.
- startup: wall time of ``specalign --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from demo import write_section  # noqa: E402

PY = sys.executable
OFFICIAL = ROOT.parent / "shared" / "specbench-data"


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )


class Served:
    """A running fault server: its base URL, and once it stopped, its own counts (``max_in_flight``...)."""

    def __init__(self, url: str):
        self.url = url
        self.stats: dict = {}


@contextmanager
def fault_server(latency: float = 0.0, max_concurrency: int | None = None, faults: str = ""):
    """The fault server in its own process; yields a :class:`Served` (stats filled in at exit)."""
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        args = [
            PY,
            str(ROOT / "tests" / "helpers" / "fault_server.py"),
            "--latency",
            str(latency),
            "--port-file",
            str(port_file),
        ]
        if max_concurrency:
            args += ["--max-concurrency", str(max_concurrency)]
        if faults:
            args += ["--faults", faults]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        served = None
        try:
            for _ in range(200):
                if port_file.exists() and port_file.read_text():
                    break
                time.sleep(0.05)
            served = Served(f"http://127.0.0.1:{port_file.read_text()}/v1")
            yield served
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
            lines = [x for x in (out or "").splitlines() if x.startswith("{")]
            if served is not None and lines:
                served.stats = json.loads(lines[-1])


def models_yaml(path: Path, url: str) -> str:
    """One model entry, as a user writes it: no max_concurrency (``--concurrency`` alone sets the calls in flight)."""
    path.write_text(f"m:\n  model_name: scripted-model\n  base_url: {url}\n  timeout: 60\n")
    return str(path)


def cli(*args: str, timeout: float = 3600) -> tuple[float, dict]:
    """Run ``specalign`` with --json; (wall seconds, the printed result)."""
    t0 = time.perf_counter()
    p = subprocess.run(
        [PY, "-m", "specalign.cli", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"specalign {' '.join(args)} failed ({p.returncode}): {p.stderr[-2000:]}")
    return wall, json.loads(p.stdout)


def run_args(data: str, models: str, out: Path, concurrency: int) -> list[str]:
    return [
        "run",
        "--data",
        data,
        "--limit",
        "0",
        "--model",
        "m",
        "--judge",
        "m",
        "--models-config",
        models,
        "--out",
        str(out),
        "--concurrency",
        str(concurrency),
        "--no-cache",
    ]


# -- overhead ---------------------------------------------------------------------------------------


def overhead(points: list[tuple[float, int]]) -> str:
    rows = []
    for latency, cap in points:
        with tempfile.TemporaryDirectory() as tmp:
            with fault_server(latency) as server:
                models = models_yaml(Path(tmp) / "m.yaml", server.url)
                wall, result = cli(*run_args(str(OFFICIAL), models, Path(tmp) / "run", cap))
            session = json.loads((Path(tmp) / "run" / "manifest.json").read_text())["sessions"][-1]
        calls = session["model_calls"]
        ideal = calls * latency / cap
        peak = server.stats.get("max_in_flight", 0)
        rows.append((latency, cap, calls, ideal, session["wall_s"], peak, wall))
        print(
            f"L={latency} C={cap}: {calls} calls, run {session['wall_s']:.1f} s, ideal {ideal:.1f} s, "
            f"max in flight {peak}",
            flush=True,
        )
    table = [
        "| L (s) | C | model calls | ideal (calls × L / C) | run wall time | measured / ideal | max in flight "
        "(server) | process wall time |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for latency, cap, calls, ideal, run_s, peak, wall in rows:
        table.append(
            f"| {latency:g} | {cap} | {calls:,} | {ideal:.1f} s | {run_s:.1f} s | **{run_s / ideal:.3f}** | "
            f"{peak} | {wall:.1f} s |"
        )
    return (
        "`.venv/bin/python benchmarks/harness.py --only overhead` on " + machine() + ". The official data "
        "(1,500 prompts: 1,500 generations and 1,500 joint judgments, `vanilla`, `--no-cache`) against "
        "`tests/helpers/fault_server.py` in its own process, which answers every request after L seconds and has no "
        "limit of its own. specalign is given `--concurrency C` and nothing else (the models config sets no "
        "`max_concurrency`), one model as target and judge; the server reports the most requests it held at "
        "once. The run wall time is the session's (`manifest.json`); the process wall time adds start-up, "
        "loading the data and writing scores.\n\n"
        + "\n".join(table)
        + "\n\nGoal: within 1.10 of ideal, and exactly C calls in flight. The run keeps "
        "2 × C samples in flight, so a call slot freed by one sample is taken at once by another's waiting call "
        "while the first moves from its answer to its judgment. At 250–320 calls per second the harness and the "
        "pure-Python test server share the machine's two cores, and the ratio rises.\n"
    )


# -- resume -----------------------------------------------------------------------------------------


def resume() -> str:
    with tempfile.TemporaryDirectory() as tmp, fault_server(0.02, 32) as server:
        models = models_yaml(Path(tmp) / "m.yaml", server.url)
        out = Path(tmp) / "run"
        args = run_args(str(OFFICIAL), models, out, 32)
        p = subprocess.Popen(
            [PY, "-m", "specalign.cli", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        )
        judged = out / "judgments.jsonl"
        while not (judged.exists() and judged.read_text().count("\n") >= 750):
            time.sleep(0.02)
        p.send_signal(signal.SIGKILL)
        p.wait()
        done = judged.read_text().count("\n")
        generated = len(
            {json.loads(x)["sample_id"] for x in (out / "generations.jsonl").read_text().split("\n")[:-1] if x}
        )
        _, result = cli(*args)
        session = json.loads((out / "manifest.json").read_text())["sessions"][-1]
        resumed_calls, resumed = session["model_calls"], session["samples_resumed"]
        _, again = cli(*args)
        rerun_calls = json.loads((out / "manifest.json").read_text())["sessions"][-1]["model_calls"]
    left = 1500 - done
    minimum = 2 * (1500 - generated) + (generated - done)  # nothing on disk: 2 calls; generated only: the judge
    return (
        "`.venv/bin/python benchmarks/harness.py --only resume` on " + machine() + ". The official data "
        "against the fault server (L = 0.02 s, C = 32); the first run is killed with SIGKILL once 750 "
        "judgments are on disk, then the same command is run again, twice.\n\n"
        "| rerun | samples finished before | samples left | model calls made | minimum |\n"
        "|---|---:|---:|---:|---:|\n"
        f"| after SIGKILL at 50% | {done:,} | {left:,} | {resumed_calls:,} | {minimum:,} |\n"
        f"| of the finished run | 1,500 | 0 | **{rerun_calls}** | 0 |\n\n"
        f"The resumed session found {resumed:,} samples finished and made no call for them. The minimum is 2 "
        f"calls for each sample with nothing on disk and 1 (the judge) for each of the {generated - done} "
        "samples whose answer was written but not yet judged when the process died; calls in flight at the "
        "kill had no result on disk and are made again.\n"
    )


# -- memory -----------------------------------------------------------------------------------------


def synthetic_data(root: Path, n: int) -> str:
    """One scenario in the official layout with ``n`` prompts (half unsafe)."""
    d = root / "Synthetic"
    d.mkdir(parents=True)
    (d / "scenario.json").write_text(json.dumps({"name": "Synthetic Desk", "description": "memory benchmark"}))
    (d / "specifications.json").write_text(
        json.dumps(
            {
                "safety_specifications": [f"Never do harmful thing number {i}." for i in range(1, 11)],
                "behavioral_specifications": [f"Follow style rule number {i}." for i in range(1, 11)],
            }
        )
    )
    prompts = [
        {
            "adversarial_prompt": f"Synthetic request {i}: explain topic {i % 997} in detail.",
            "prompt": f"Synthetic request {i}",
            "label": "unsafe" if i % 2 else "safe",
            "source": "synthetic",
            "answer": "",
        }
        for i in range(n)
    ]
    (d / "prompts.json").write_text(json.dumps(prompts))
    return str(root)


def peak_rss_of(args: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of one ``specalign`` process."""
    code = (
        "import resource, runpy, sys; sys.argv = ['specalign'] + sys.argv[1:]\n"
        "try:\n    runpy.run_module('specalign.cli', run_name='__main__')\n"
        "finally:\n    print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    )
    t0 = time.perf_counter()
    p = subprocess.run(
        [PY, "-c", code, *args], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}
    )
    wall = time.perf_counter() - t0
    line = [x for x in p.stderr.splitlines() if x.startswith("PEAK_RSS_KB")]
    if p.returncode != 0 or not line:
        raise SystemExit(f"memory run failed ({p.returncode}): {p.stderr[-2000:]}")
    return int(line[-1].split()[1]) / 1024, wall


def memory(sizes: list[int]) -> str:
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp, fault_server(0.0, 64) as server:
            data = synthetic_data(Path(tmp) / "data", n)
            models = models_yaml(Path(tmp) / "m.yaml", server.url)
            rss, wall = peak_rss_of(run_args(data, models, Path(tmp) / "run", 64))
            rows.append((n, rss, wall))
            print(f"N={n}: peak RSS {rss:.0f} MB in {wall:.0f} s", flush=True)
    table = ["| prompts | model calls | peak RSS | wall time | calls / s |", "|---:|---:|---:|---:|---:|"]
    for n, rss, wall in rows:
        table.append(f"| {n:,} | {2 * n:,} | {rss:.0f} MB | {wall:.0f} s | {2 * n / wall:,.0f} |")
    growth = (rows[-1][1] - rows[0][1]) * 1024 * 1024 / (rows[-1][0] - rows[0][0]) if len(rows) > 1 else 0
    return (
        "`.venv/bin/python benchmarks/harness.py --only memory` on " + machine() + ". Synthetic data: one "
        "scenario with 10 safety and 10 behavioral specs and N prompts, against the fault server (no latency, "
        "C = 64), `--concurrency 64 --no-cache`; peak RSS of the `specalign run` process.\n\n"
        + "\n".join(table)
        + f"\n\nBetween the smallest and the largest run, peak RSS grows by about "
        f"{growth:,.0f} bytes per prompt. About 1,450 bytes of that is the prompt itself as loaded from the data "
        "file (measured with tracemalloc). The rest is the few numbers per sample that scoring keeps (a record "
        "may be superseded by a later one, so the latest per sample must be known) and allocator slack. No "
        "prompt, answer or judge text from the records is held.\n"
    )


# -- local throughput -------------------------------------------------------------------------------


def local_worker(path: str, n_prompts: int, max_tokens: int) -> None:
    """One measurement in a fresh process with one model loaded: prints tokens and seconds as JSON."""
    import asyncio  # noqa: PLC0415

    from specalign.benchmark import load_benchmark  # noqa: PLC0415
    from specalign.models import Message, create_model, parse_model_spec  # noqa: PLC0415
    from specalign.models._llamacpp import resolve_gguf  # noqa: PLC0415

    settings = parse_model_spec("local", {}, None)
    # one context with every core, as the direct path: like for like, one call at a time
    settings = settings.model_copy(update={"params": {"max_tokens": max_tokens, "temperature": 0.0}, "parallel": 1})
    prompts = [p.prompt for s in load_benchmark("bundled").scenarios for p in s.prompts][:n_prompts]
    threads = os.cpu_count() or 1  # specalign's default; the direct path gets the same
    if path == "ours":
        model = create_model(settings, None)
        asyncio.run(model.generate([Message(role="user", content="warm up")]))

        async def run_all() -> int:
            return sum(
                [(await model.generate([Message(role="user", content=t)])).usage.completion_tokens for t in prompts]
            )

        t0 = time.perf_counter()
        tokens = asyncio.run(run_all())
    else:
        from llama_cpp import Llama  # noqa: PLC0415

        llm = Llama(
            model_path=str(resolve_gguf(settings)),
            n_ctx=settings.n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
            seed=0,
        )
        llm.create_chat_completion([{"role": "user", "content": "warm up"}], max_tokens=8)
        t0 = time.perf_counter()
        tokens = sum(
            llm.create_chat_completion([{"role": "user", "content": t}], max_tokens=max_tokens, temperature=0.0)[
                "usage"
            ]["completion_tokens"]
            for t in prompts
        )
    print(json.dumps({"tokens": tokens, "seconds": time.perf_counter() - t0, "threads": threads}))


def local(n_prompts: int, max_tokens: int, rounds: int) -> str:
    runs: dict[str, list[tuple[int, float]]] = {"ours": [], "direct": []}
    for r in range(rounds):  # alternate the order, so neither path always goes first
        for name in ("ours", "direct") if r % 2 == 0 else ("direct", "ours"):
            p = subprocess.run(
                [
                    PY,
                    __file__,
                    "--local-worker",
                    name,
                    "--local-prompts",
                    str(n_prompts),
                    "--local-max-tokens",
                    str(max_tokens),
                ],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
            )
            m = json.loads(p.stdout.strip().splitlines()[-1])
            runs[name].append((m["tokens"], m["seconds"]))
            print(name, m, flush=True)
    tps = {k: statistics.median(t / s for t, s in v) for k, v in runs.items()}
    tokens = {k: v[0][0] for k, v in runs.items()}
    return (
        "`.venv/bin/python benchmarks/harness.py --only local` on " + machine() + f". The embedded "
        f"SmolLM2-135M-Instruct (Q8 GGUF), {n_prompts} bundled prompts one after another, greedy, at most "
        f"{max_tokens} completion tokens each, {os.cpu_count()} threads for both. Each measurement runs in a fresh "
        f"process with one model loaded, after a warm-up call; {rounds} rounds in alternating order, median; "
        f"llama-cpp-python {_version('llama-cpp-python')}.\n\n"
        "| path | completion tokens per round | tokens / s (median) | each round |\n|---|---:|---:|---|\n"
        f"| specalign `Model.generate` (llama.cpp backend) | {tokens['ours']:,} | {tps['ours']:.1f} | "
        f"{', '.join(f'{t / s:.1f}' for t, s in runs['ours'])} |\n"
        f"| `Llama.create_chat_completion` directly | {tokens['direct']:,} | {tps['direct']:.1f} | "
        f"{', '.join(f'{t / s:.1f}' for t, s in runs['direct'])} |\n\n"
        f"specalign runs at **{100 * tps['ours'] / tps['direct']:.1f}%** of the direct call's throughput "
        "(goal: within 5%).\n"
    )


def _version(pkg: str) -> str:
    from importlib.metadata import version  # noqa: PLC0415

    return version(pkg)


# -- start-up ---------------------------------------------------------------------------------------


def startup(repeats: int = 15) -> str:
    exe = str(Path(PY).parent / "specalign")
    cmd = [exe, "--help"] if Path(exe).exists() else [PY, "-m", "specalign.cli", "--help"]
    subprocess.run(cmd, capture_output=True)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return (
        "`.venv/bin/python benchmarks/harness.py --only startup` on " + machine() + f". `specalign --help`, "
        f"{repeats} runs after one warm-up: median **{statistics.median(times):.3f} s**, max {max(times):.3f} s "
        "(goal: under 0.5 s). Heavy libraries (openai, llama_cpp, pydantic models of runs) load only in the "
        "commands that use them.\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="overhead,resume,memory,local,startup")
    ap.add_argument("--points", default="0.2:32,1:64,0.05:16,0.5:128", help="L:C pairs for the overhead figure")
    ap.add_argument("--memory-sizes", default="10000,50000,100000")
    ap.add_argument("--local-prompts", type=int, default=10)
    ap.add_argument("--local-max-tokens", type=int, default=128)
    ap.add_argument("--local-rounds", type=int, default=5)
    ap.add_argument("--local-worker", choices=["ours", "direct"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.local_worker:
        local_worker(args.local_worker, args.local_prompts, args.local_max_tokens)
        return
    only = set(args.only.split(","))
    if "startup" in only:
        write_section("Start-up", startup())
    if "overhead" in only:
        points = [(float(p.split(":")[0]), int(p.split(":")[1])) for p in args.points.split(",")]
        write_section("Harness overhead against the physical limit", overhead(points))
    if "resume" in only:
        write_section("Resume cost", resume())
    if "memory" in only:
        write_section("Memory on long runs", memory([int(x) for x in args.memory_sizes.split(",")]))
    if "local" in only:
        write_section(
            "Local throughput: specalign against llama-cpp-python",
            local(args.local_prompts, args.local_max_tokens, args.local_rounds),
        )


if __name__ == "__main__":
    main()
