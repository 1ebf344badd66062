"""The embedded model's parallel contexts: the default demo against llama.cpp's own batched rates.

In one run, on a quiet machine:
1. ``llama-batched-bench`` (llama.cpp's own tool, built from the llama-cpp-python sdist by
   ``tools/build-llama-cpp.sh``, all cores) measures prompt (PP) and generation (TG) rates at
   1..K parallel sequences;
2. the default demo (``specalign run``: 10 samples, vanilla, the embedded model as target and joint
   judge) runs with each number of contexts K in ``--ks`` ("auto" = the default), each in a fresh
   process with a cold call cache; ratio = demo wall / (prompt tokens / PP + completion tokens / TG)
   with the rates at batch size K;
3. two default demos run at once (two processes, their own run and cache directories).

Writes section "Parallel contexts for the embedded model" of docs/benchmarks.md. With ``--threads``,
instead: llama.cpp's generation rate alone and with a second process on the same cores, by threads per
process and OpenMP wait policy (section "llama.cpp threads beside another process"). With ``--kv``:
Align3's KV-cache reuse on 5 prompts one after another in one context, and all at once on the
default contexts (section "Align3's KV-cache reuse on parallel contexts"). Usage:
    flock /tmp/specalign-cpu.lock .venv/bin/python benchmarks/local_parallel.py [--ks 1,auto,3,4]
    flock /tmp/specalign-cpu.lock .venv/bin/python benchmarks/local_parallel.py --threads --kv
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "tools" / "build-llama-cpp.sh"
SECTION = "Parallel contexts for the embedded model"
THREADS_SECTION = "llama.cpp threads beside another process"
KV_SECTION = "Align3's KV-cache reuse on parallel contexts"
#: (prompt, generated) tokens per sequence: like one demo call (~1,050 prompt tokens, ~390 generated),
#: and short, where generation is about twice as fast (little KV cache to attend to)
SHAPES = {"demo": (1024, 256), "short": (128, 128)}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ks", default="1,auto,3,4", help="contexts to run the demo with ('auto': the default)")
    ap.add_argument("--skip-pair", action="store_true", help="skip the two demos at once")
    ap.add_argument("--threads", action="store_true", help="measure threads per process and wait policy instead")
    ap.add_argument("--kv", action="store_true", help="measure Align3's KV reuse, sequential and parallel, instead")
    ap.add_argument("--no-doc", action="store_true", help="print only; do not write docs/benchmarks.md")
    ap.add_argument("--demo-worker", help=argparse.SUPPRESS)  # K, in a child process
    ap.add_argument("--out", help=argparse.SUPPRESS)
    return ap.parse_args()


# -- llama.cpp's own rates -----------------------------------------------------------------------------


def batched_bench_binary() -> Path:
    """llama-batched-bench, built (once, cached) by tools/build-llama-cpp.sh; exits with the reason if not."""
    p = subprocess.run(["bash", str(BUILD), sys.executable], capture_output=True, text=True, cwd=ROOT)
    lines = p.stdout.strip().splitlines()
    binary = Path(lines[-1]) / "llama-batched-bench" if p.returncode == 0 and lines else None
    if binary is None or not binary.is_file():
        why = p.stderr.strip().splitlines()[-1:] or [f"exit status {p.returncode}"]
        sys.exit(
            f"local_parallel: cannot find llama-batched-bench: {BUILD.relative_to(ROOT)} failed ({why[0]}); "
            "it needs cmake and a C/C++ compiler"
        )
    return binary


def batched_rates(
    binary: Path, gguf: Path, batches: list[int], threads: int, shape: tuple[int, int]
) -> dict[int, dict[str, float]]:
    """PP and TG tokens/s at each batch size (independent sequences, prompts not shared)."""
    npp, ntg = shape
    n_ctx = max(batches) * (npp + ntg) + 256
    cmd = [
        str(binary),
        "-m",
        str(gguf),
        "-c",
        str(n_ctx),
        "-b",
        "2048",
        "-ub",
        "512",
        "-npp",
        str(npp),
        "-ntg",
        str(ntg),
        "-npl",
        ",".join(map(str, batches)),
        "-t",
        str(threads),
        "-tb",
        str(threads),
        "-fa",
        "off",
        "--output-format",
        "jsonl",
    ]  # llama-cpp-python's default: no flash attention
    p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    return {r["pl"]: {"pp": r["speed_pp"], "tg": r["speed_tg"]} for r in rows}


def generation_rate(binary: Path, gguf: Path, threads: int, policy: str | None, copies: int) -> list[float]:
    """TG tokens/s of ``copies`` llama-batched-bench processes started together (128 + 128 tokens, B = 1)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    cmd = [
        str(binary),
        "-m",
        str(gguf),
        "-c",
        "512",
        "-b",
        "512",
        "-ub",
        "512",
        "-npp",
        "128",
        "-ntg",
        "256",
        "-npl",
        "1",
        "-t",
        str(threads),
        "-tb",
        str(threads),
        "-fa",
        "off",
        "--output-format",
        "jsonl",
    ]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        for _ in range(copies)
    ]
    outs = [p.communicate()[0] for p in procs]
    return [json.loads(next(line for line in o.splitlines() if line.startswith("{")))["speed_tg"] for o in outs]


def threads_section(binary: Path, gguf: Path, n: int) -> str:
    rows = []
    for threads, policy in ((n, None), (n, "PASSIVE"), (1, None)):
        alone = generation_rate(binary, gguf, threads, policy, 1)[0]
        pair = generation_rate(binary, gguf, threads, policy, 2)
        rows.append(
            f"| {threads} | {policy or 'default'} | {alone:,.0f} | {' + '.join(f'{r:,.0f}' for r in pair)} "
            f"= {sum(pair):,.0f} |"
        )
    return (
        f"Measured by `.venv/bin/python benchmarks/local_parallel.py --threads` on {platform.machine()}, "
        f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}: llama.cpp's `llama-batched-bench`, the embedded "
        "model, one sequence of 128 prompt + 256 generated tokens; generation tokens/s of one process alone and "
        "of two identical processes started together. With more than one thread, llama.cpp computes with an "
        "OpenMP team whose threads wait for each other at every step of the graph: by spinning "
        "(libgomp's default) or by sleeping (`OMP_WAIT_POLICY=PASSIVE`). One thread runs no team.\n\n"
        "| threads per process | OpenMP wait policy | alone | two processes at once |\n|---:|---|---:|---:|\n"
        + "\n".join(rows)
        + "\n"
    )


def kv_section() -> str:
    """Align3 on the first prompt of each bundled scenario: one after another on one context, then all at once."""
    import asyncio  # noqa: PLC0415

    from specalign.benchmark import load_benchmark  # noqa: PLC0415
    from specalign.methods import create_method  # noqa: PLC0415
    from specalign.models import EMBEDDED_MAX_TOKENS, create_model, parse_model_spec  # noqa: PLC0415

    jobs = [(s, s.prompts[0]) for s in load_benchmark("bundled").scenarios]
    lines = [
        "| mode | stage | prompt tokens | evaluated (not from cache) | completion tokens |",
        "|---|---|---:|---:|---:|",
    ]
    walls = {}
    for mode, parallel in (("one at a time, 1 context", 1), ("all at once, default contexts", None)):
        settings = parse_model_spec("local").model_copy(
            update={"params": {"max_tokens": EMBEDDED_MAX_TOKENS}, "parallel": parallel}
        )
        model = create_model(settings, None)
        method = create_method("align3")

        async def run_all(model=model, method=method, parallel=parallel):
            if parallel == 1:
                return [await method.run(model, s, p) for s, p in jobs]
            return await asyncio.gather(*(method.run(model, s, p) for s, p in jobs))

        t0 = time.perf_counter()
        outs = asyncio.run(run_all())
        walls[mode] = (time.perf_counter() - t0, model.backend.parallel)
        totals: dict[str, list[int]] = {}
        for out in outs:
            for step in out.steps:
                row = totals.setdefault(step.role, [0, 0, 0])
                row[0] += step.usage.prompt_tokens
                row[1] += step.usage.prompt_tokens - step.usage.cached_prompt_tokens
                row[2] += step.usage.completion_tokens
        for role, (p, e, c) in totals.items():
            lines.append(f"| {mode} | {role} | {p:,} | {e:,} | {c:,} |")
        p, e = (sum(v[i] for v in totals.values()) for i in (0, 1))
        lines.append(f"| {mode} | **all stages** | {p:,} | {e:,} ({100 * e / p:.0f}%) | |")
    wall_text = "; ".join(f"{m}: {w:.0f} s ({k} context{'s' if k > 1 else ''})" for m, (w, k) in walls.items())
    return (
        f"Measured by `.venv/bin/python benchmarks/local_parallel.py --kv` on {platform.machine()}, "
        f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}. Align3 on the first bundled prompt of each "
        f"scenario ({len(jobs)} prompts), embedded model, at most 200 tokens per stage, totals over the prompts. "
        "All at once, 5 conversations share the contexts: a call takes the context holding the longest prefix "
        "of its prompt, and a context a stage leaves while others wait is held briefly for that conversation's "
        f"next stage. Wall: {wall_text}.\n\n" + "\n".join(lines) + "\n"
    )


# -- the demo ------------------------------------------------------------------------------------------


def demo_worker(k: str, out: str) -> None:
    """The default demo with K contexts, in this fresh process; prints its figures as JSON."""
    t0 = time.perf_counter()
    from specalign.models._llamacpp import parallelism  # noqa: PLC0415
    from specalign.runs import Evaluation, RunConfig  # noqa: PLC0415

    ev = Evaluation(RunConfig(out=str(Path(out) / "run")))
    update = {"parallel": None if k == "auto" else int(k)}
    ev.target_settings = ev.target_settings.model_copy(update=update)
    ev.judge_settings = ev.judge_settings.model_copy(update=update)
    import asyncio  # noqa: PLC0415

    res = asyncio.run(ev.run())
    wall = time.perf_counter() - t0
    usage = res.scores.usage
    print(
        json.dumps(
            {
                "k": parallelism(ev.target_settings),
                "workers": ev._workers(),
                "wall": wall,
                "prompt": sum(u.prompt_tokens for u in usage.values()),
                "cached": sum(u.cached_prompt_tokens for u in usage.values()),
                "completion": sum(u.completion_tokens for u in usage.values()),
                "calls": res.stats.model_calls,
                "scored": res.scores.counts["scored"],
            }
        )
    )


def start_demo(k: str, tmp: Path, name: str) -> subprocess.Popen[str]:
    env = {**os.environ, "SPECALIGN_CACHE_DIR": str(tmp / name / "cache"), "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen(
        [sys.executable, __file__, "--demo-worker", k, "--out", str(tmp / name)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(p: subprocess.Popen[str]) -> dict:
    out, _ = p.communicate()
    if p.returncode != 0:
        sys.exit(f"local_parallel: a demo process failed (exit {p.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def ideal(m: dict, rates: dict[str, float]) -> float:
    return m["prompt"] / rates["pp"] + m["completion"] / rates["tg"]


# -- report --------------------------------------------------------------------------------------------


def report(
    threads: int, rates: dict[str, dict[int, dict[str, float]]], demos: dict[str, dict], pair: list[dict] | None
) -> str:
    demo_rates, short = rates["demo"], rates["short"]
    rate_rows = "\n".join(
        f"| {b} | {r['pp']:,.0f} | {r['tg']:,.0f} | {short[b]['pp']:,.0f} | {short[b]['tg']:,.0f} |"
        for b, r in sorted(demo_rates.items())
    )
    demo_rows = []
    for label, m in demos.items():
        k, b = m["k"], min(m["k"], max(demo_rates))
        name = f"{k}{' (default)' if label == 'auto' else ' (the old mode)' if k == 1 else ''}"
        demo_rows.append(
            f"| {name} | {max(1, threads // k)} | {m['workers']} | {m['wall']:.1f} | {m['prompt']:,} ({m['cached']:,}) "
            f"| {m['completion']:,} | {ideal(m, demo_rates[1]):.1f} | {ideal(m, demo_rates[b]):.1f} "
            f"| **{m['wall'] / ideal(m, demo_rates[b]):.2f}** | {m['wall'] / ideal(m, short[b]):.2f} |"
        )
    (npp, ntg), (spp, stg) = SHAPES["demo"], SHAPES["short"]
    auto = demos.get("auto")
    text = (
        f"Measured by `.venv/bin/python benchmarks/local_parallel.py` on {platform.machine()}, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d')}, the embedded SmolLM2-135M (Q4_1 GGUF), all in one run{omp_note()}.\n\n"
        f"llama.cpp's own `llama-batched-bench` (the llama.cpp of the installed llama-cpp-python, {threads} threads, "
        "flash attention off as llama-cpp-python has it), tokens/s with independent sequences of "
        f"{npp:,} prompt + {ntg} generated tokens (about one demo call) and of {spp} + {stg}:\n\n"
        f"| parallel sequences B | PP, {npp:,} + {ntg} | TG, {npp:,} + {ntg} | PP, {spp} + {stg} "
        f"| TG, {spp} + {stg} |\n"
        "|---:|---:|---:|---:|---:|\n" + rate_rows + "\n\n"
        "The default demo (`specalign run`: 10 samples, vanilla, the embedded model as target and joint judge; "
        "model load included, cold call cache) with K llama.cpp contexts. Ideal = prompt tokens / PP rate + "
        f"completion tokens / TG rate; ratio = wall / ideal at B = K with the {npp:,} + {ntg} rates (the last "
        f"column: with the {spp} + {stg} rates, which overstate generation speed at the demo's context lengths).\n\n"
        "| contexts K | threads each | samples in flight | wall s | prompt tokens (from KV cache) "
        "| completion tokens | ideal at B=1, s | ideal at B=K, s | ratio | ratio, short rates |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(demo_rows) + "\n"
    )
    if pair and auto:
        walls = ", ".join(f"{m['wall']:.1f} s" for m in pair)
        text += (
            f"\nTwo default demos at once (two processes, their own run and cache directories): {walls}, "
            f"against {auto['wall']:.1f} s for one alone ({max(m['wall'] for m in pair) / auto['wall']:.2f}×; "
            "sharing the cores, 2× is a fair share).\n"
        )
    return text


def omp_note() -> str:
    policy = os.environ.get("OMP_WAIT_POLICY")
    return f", OMP_WAIT_POLICY={policy}" if policy else ", libgomp's default wait policy"


def main() -> None:
    args = parse_args()
    if args.demo_worker:
        demo_worker(args.demo_worker, args.out)
        return
    from specalign.models import embedded_gguf_path, parse_model_spec  # noqa: PLC0415
    from specalign.models._llamacpp import cores, parallelism  # noqa: PLC0415

    if args.threads or args.kv:
        sections = [
            (THREADS_SECTION, lambda: threads_section(batched_bench_binary(), embedded_gguf_path(), cores())),
            (KV_SECTION, kv_section),
        ]
        for (title, make), wanted in zip(sections, (args.threads, args.kv), strict=False):
            if wanted:
                body = make()
                if not args.no_doc:
                    write_section(title, body)
                print(body)
        return
    threads = cores()
    auto = parallelism(parse_model_spec("local"))
    ks = [k.strip() for k in args.ks.split(",") if k.strip()]
    ks = [k for k in ks if k == "auto" or "auto" not in ks or int(k) != auto]  # "auto" already runs that K
    batches = sorted({1, *(auto if k == "auto" else int(k) for k in ks)})
    binary = batched_bench_binary()
    gguf = embedded_gguf_path()
    rates = {name: batched_rates(binary, gguf, batches, threads, shape) for name, shape in SHAPES.items()}
    print("llama-batched-bench:", rates, flush=True)
    demos: dict[str, dict] = {}
    pair = None
    with tempfile.TemporaryDirectory() as tmp:
        for k in ks:
            demos[k] = finish(start_demo(k, Path(tmp), f"k{k}"))
            print(k, demos[k], flush=True)
        if not args.skip_pair and "auto" in demos:
            procs = [start_demo("auto", Path(tmp), f"pair{i}") for i in range(2)]
            pair = [finish(p) for p in procs]
            print("pair", pair, flush=True)
    body = report(threads, rates, demos, pair)
    if not args.no_doc:
        write_section(SECTION, body)
    print(body)


if __name__ == "__main__":
    main()
