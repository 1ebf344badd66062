"""Every test-time deliberation method on the bundled benchmark with the embedded model, and KV reuse.

Writes two sections of docs/benchmarks.md: the method comparison table (the paper's Table 2 shape:
scores, ΔSAR against vanilla, average completion tokens, calls, wall time) and the prompt tokens
llama.cpp evaluates per Align3 stage with and without KV-cache reuse. Usage:

    .venv/bin/python benchmarks/ttd.py                       # paper budgets: N=15, TPO 5×3, Self-Refine 3
    .venv/bin/python benchmarks/ttd.py --bon-n 5 --tpo-samples 3 --tpo-iterations 1   # a 2-core budget
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo import write_section  # noqa: E402

METHODS = ["vanilla", "zero_think", "more_think", "align3", "self_refine", "best_of_n", "tpo"]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=2, help="prompts per scenario (default 2: 1 unsafe + 1 safe)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--bon-n", type=int, default=15)
    ap.add_argument("--tpo-samples", type=int, default=5)
    ap.add_argument("--tpo-iterations", type=int, default=2)
    ap.add_argument("--self-refine-iters", type=int, default=3)
    ap.add_argument("--kv-prompts", type=int, default=5, help="prompts for the KV-reuse figure (one per scenario)")
    ap.add_argument("--skip-methods", action="store_true", help="only the KV-reuse figure")
    ap.add_argument("--keep", metavar="DIR", help="write the run directories (and the call cache) to DIR and keep them")
    return ap.parse_args()


def method_params(args: argparse.Namespace) -> dict[str, dict]:
    return {
        "best_of_n": {"n": args.bon_n},
        "tpo": {"samples": args.tpo_samples, "iterations": args.tpo_iterations},
        "self_refine": {"max_iters": args.self_refine_iters},
    }


def compare_methods(args: argparse.Namespace, tmp: Path) -> str:
    from specalign.runs import Evaluation, RunConfig, compare_runs, format_comparison  # noqa: PLC0415

    params = method_params(args)
    dirs = []
    for name in args.methods.split(","):
        cfg = RunConfig(method=name, method_params=params.get(name, {}), limit=args.limit, out=str(tmp / name))
        t0 = time.perf_counter()
        res = asyncio.run(Evaluation(cfg).run())
        print(f"{name}: {time.perf_counter() - t0:.0f} s, {res.stats.model_calls} calls", flush=True)
        dirs.append(str(tmp / name))
    rows = compare_runs(dirs)
    scorer = {r.label: r.avg_scorer_tokens for r in rows if r.avg_scorer_tokens}
    notes = "".join(
        f"\n- `{k}`: the judge also spent {v:,.0f} completion tokens per sample scoring candidates."
        for k, v in scorer.items()
    )
    return format_comparison(rows, "markdown") + notes


def kv_reuse(args: argparse.Namespace) -> str:
    from specalign.benchmark import load_benchmark  # noqa: PLC0415
    from specalign.methods import create_method  # noqa: PLC0415
    from specalign.models import EMBEDDED_MAX_TOKENS, create_model, parse_model_spec  # noqa: PLC0415

    bench = load_benchmark("bundled")
    prompts = [(s, s.prompts[0]) for s in bench.scenarios][: args.kv_prompts]
    lines = [
        "| KV reuse | stage | prompt tokens | evaluated (not from cache) | completion tokens | wall s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for reuse in (True, False):
        base = parse_model_spec("local")
        model = create_model(
            base.model_copy(update={"params": {"max_tokens": EMBEDDED_MAX_TOKENS}, "kv_reuse": reuse}), None
        )
        method = create_method("align3")
        totals: dict[str, list[float]] = {}
        t0 = time.perf_counter()
        for scenario, prompt in prompts:
            out = asyncio.run(method.run(model, scenario, prompt))
            for step in out.steps:
                row = totals.setdefault(step.role, [0, 0, 0])
                row[0] += step.usage.prompt_tokens
                row[1] += step.usage.prompt_tokens - step.usage.cached_prompt_tokens
                row[2] += step.usage.completion_tokens
        wall = time.perf_counter() - t0
        n = len(prompts)
        for role, (p, e, c) in totals.items():
            lines.append(f"| {'on' if reuse else 'off'} | {role} | {p / n:,.0f} | {e / n:,.0f} | {c / n:,.0f} | |")
        all_p = sum(v[0] for v in totals.values()) / n
        all_e = sum(v[1] for v in totals.values()) / n
        lines.append(
            f"| {'on' if reuse else 'off'} | **all stages** | {all_p:,.0f} | {all_e:,.0f} | | {wall / n:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    command = "benchmarks/ttd.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}"
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        os.environ["SPECALIGN_CACHE_DIR"] = str(Path(tmp) / "cache")  # start cold; methods share calls
        if not args.skip_methods:
            t0 = time.perf_counter()
            table = compare_methods(args, Path(tmp))
            total = time.perf_counter() - t0
            p = method_params(args)
            body = (
                f"Measured by `.venv/bin/python {command.strip()}` on {machine}; {total / 60:.0f} min in all. "
                f"Embedded SmolLM2-135M as target and judge (joint), bundled data, {args.limit} prompts per "
                f"scenario ({5 * args.limit} samples), overall scores in %, ΔSAR against vanilla. Budgets: "
                f"Best-of-N n={p['best_of_n']['n']}, TPO {p['tpo']['samples']} samples × "
                f"{p['tpo']['iterations'] + 1} rounds, Self-Refine max_iters={p['self_refine']['max_iters']}; "
                "at most 200 completion tokens per call. Tokens are the target's average completion tokens "
                "per sample (the paper's convention); calls are target calls per sample. Methods ran one after "
                "another with one call cache, so a call another method already made (vanilla's answer is "
                "sample 0 of Best-of-N and TPO and the first draft of Self-Refine) is reused: it counts in "
                "tokens and calls, not in wall time. A 135M model cannot follow specs or judge them well; "
                "the table shows what each method costs and that it runs end to end, not which is best. "
                "Best-of-N and TPO score candidates with the same judge that then evaluates them, so their "
                "gain is an upper bound (they optimise the measure itself).\n\n" + table
            )
            write_section("Test-time deliberation methods (embedded model)", body)
            print(body)
        kv = kv_reuse(args)
        body = (
            f"Measured by `.venv/bin/python {command.strip()}` on {machine}. Align3 on {args.kv_prompts} "
            "bundled prompts (the first of each scenario), embedded model, llama.cpp in-process, at most 200 "
            "tokens per stage; averages per prompt. Each stage continues the previous stage's text, so with "
            "reuse llama.cpp evaluates only the new tokens (the injected stage text and the last "
            "continuation); without it (`kv_reuse: false`) it evaluates the whole prompt again.\n\n" + kv
        )
        write_section("KV-cache reuse across Align3 stages", body)
        print(body)


if __name__ == "__main__":
    main()
