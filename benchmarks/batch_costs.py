"""An online run and a batch run of the official SpecBench data, on this repository's protocol-faithful batch
server (tests/helpers/batch_server.py), priced at a real model's genai-prices figures; then a batch run killed
while its first batch is in flight, and its resume. Writes the section "Batch runs and cost" of
docs/benchmarks.md. Usage:

    .venv/bin/python benchmarks/batch_costs.py [--data ../shared/specbench-data]

The servers answer from the scripted world of the tests (short answers, a verdict per spec), so the dollars are
those of these scripted token counts at gpt-4.1-mini's (target) and gpt-4.1's (judge) prices: the point is
what the run records and what batching halves, not what a real model would write.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests" / "helpers"))
from batch_server import BatchServer  # noqa: E402
from demo import write_section  # noqa: E402
from specalign.runs import Evaluation, RunConfig  # noqa: E402
from specbench_world import world  # noqa: E402

TARGET, JUDGE = "gpt-4.1-mini", "gpt-4.1"


def models_config(folder: Path, server: BatchServer) -> str:
    """The two models at the batch server, priced as OpenAI's models of those names, batches allowed."""
    entries = {
        name: {"model_name": name, "base_url": server.base_url, "batch": True, "price": {"provider": "openai"}}
        for name in (TARGET, JUDGE)
    }
    path = folder / "models.yaml"
    path.write_text(yaml.safe_dump(entries))
    return str(path)


def config(data: str, out: Path, models: str, **more) -> RunConfig:
    return RunConfig(
        data=data, limit=0, model=TARGET, judge=JUDGE, models_config=[models], out=str(out), concurrency=32, **more
    )


def summary(res, seconds: float, server: BatchServer) -> dict:
    cost = res.scores.cost
    usage = res.scores.usage
    creates = [r for r in server.requests if r.method == "POST" and r.path.rstrip("/").endswith("/batches")]
    chats = sum(1 for r in server.requests if r.path.endswith("/chat/completions"))
    return {
        "scored": res.scores.counts["scored"],
        "calls": usage["generation"].calls + usage["judge"].calls,
        "online_calls": chats,
        "batches": len(creates),
        "batched_calls": cost.generation.batched_calls + cost.judge.batched_calls,
        "usd": cost.total,
        "usd_generation": cost.generation.total,
        "usd_judge": cost.judge.total,
        "sar": res.scores.overall["full"].sar,
        "wall_s": seconds,
    }


def run(cfg: RunConfig, server: BatchServer) -> dict:
    t0 = time.perf_counter()
    res = asyncio.run(Evaluation(cfg).run())
    return summary(res, time.perf_counter() - t0, server)


def killed_and_resumed(data: str, folder: Path) -> dict:
    """SIGKILL a `specalign run --batch` while its first batch is in flight; resume it in this process."""
    out = folder / "killed"
    with BatchServer(world, advance="manual", models=(TARGET, JUDGE)) as server:
        models = models_config(folder, server)
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SPECALIGN_CACHE_DIR": str(folder / "cache-k")}
        cmd = [sys.executable, "-m", "specalign.cli", "run", "--data", data, "--limit", "0"]
        cmd += ["--model", TARGET, "--judge", JUDGE, "--models-config", models, "--out", str(out)]
        cmd += ["--batch", "--batch-poll", "0.2"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ledger = out / "batches.jsonl"
        deadline = time.monotonic() + 600
        while not (ledger.is_file() and ledger.read_text().strip()):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the batch run did not submit its first batch")
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        before = sum(1 for r in server.requests if r.method == "POST" and r.path.rstrip("/").endswith("/batches"))
        server.run_to_end()
        server.advance = "poll"
        os.environ["SPECALIGN_CACHE_DIR"] = str(folder / "cache-k")
        t0 = time.perf_counter()
        res = asyncio.run(Evaluation(config(data, out, models, batch=True, batch_poll_s=0.05)).run())
        wall = time.perf_counter() - t0
        creates = sum(1 for r in server.requests if r.method == "POST" and r.path.rstrip("/").endswith("/batches"))
        chats = sum(1 for r in server.requests if r.path.endswith("/chat/completions"))
    submitted = [
        cid
        for line in ledger.read_text().splitlines()
        if (r := json.loads(line))["event"] == "submitted"
        for cid in r["custom_ids"]
    ]
    return {
        "batches_before_kill": before,
        "batches_in_all": creates,
        "requests_submitted": len(submitted),
        "distinct_requests": len(set(submitted)),
        "online_calls": chats,
        "scored": res.scores.counts["scored"],
        "resume_wall_s": wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "specbench-data"))
    args = ap.parse_args()
    data = str(Path(args.data).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        figures = {}
        for mode in ("online", "batch"):
            os.environ["SPECALIGN_CACHE_DIR"] = str(folder / f"cache-{mode}")  # each run starts cold
            with BatchServer(world, advance="poll", models=(TARGET, JUDGE)) as server:
                models = models_config(folder, server)
                extra = {"batch": True, "batch_poll_s": 0.05} if mode == "batch" else {}
                figures[mode] = run(config(data, folder / mode, models, **extra), server)
            print(mode, figures[mode], flush=True)
        resumed = killed_and_resumed(data, folder)
        print("killed", resumed, flush=True)
    on, ba = figures["online"], figures["batch"]
    from specalign.models import pricing_of, settings_from_config  # noqa: PLC0415

    prices = {}
    for name in (TARGET, JUDGE):
        p = pricing_of(settings_from_config(name, {"model_name": name}, "x")).price
        assert p is not None
        prices[name] = p
    price_line = "; ".join(
        f"`{n}` ${p.input:g} / ${p.output:g} per million input / output tokens online, "
        f"${p.batch_input:g} / ${p.batch_output:g} batched"
        for n, p in prices.items()
    )
    body = (
        f"`.venv/bin/python benchmarks/batch_costs.py` on {platform.machine()}, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d')}. The official SpecBench data (all {on['scored']:,} prompts), target "
        f"`{TARGET}` and judge `{JUDGE}` (joint) on the repository's protocol-faithful OpenAI server with the "
        "Files and Batch APIs (`tests/helpers/batch_server.py`; answers from the tests' scripted world, so the "
        "token counts are those of short scripted answers), priced at genai-prices' figures for the two OpenAI "
        f"models (`price: {{provider: openai}}`): {price_line}.\n\n"
        "| run | scored | calls | online calls | batches | batched calls | generation $ | judge $ | total $ | SAR |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        + "".join(
            f"| {name} | {f['scored']:,} | {f['calls']:,} | {f['online_calls']:,} | {f['batches']} | "
            f"{f['batched_calls']:,} | {f['usd_generation']:.4f} | {f['usd_judge']:.4f} | {f['usd']:.4f} | "
            f"{100 * f['sar']:.2f} |\n"
            for name, f in (("online", on), ("`--batch`", ba))
        )
        + f"\nThe batch run costs {ba['usd'] / on['usd']:.2f}× the online run, with the same SAR: every call went "
        f"through {ba['batches']} batches (the answers, then the verdicts).\n\n"
        f"**Killed while a batch is in flight.** A `specalign run --batch` process was SIGKILLed once its first "
        f"batch was submitted ({resumed['batches_before_kill']} batch); the server then finished that batch, and "
        f"the same run resumed: it polled and collected the open batch, submitted only the verdicts' batch "
        f"({resumed['batches_in_all']} batches in all), made {resumed['online_calls']} online calls, and scored "
        f"{resumed['scored']:,} samples. Requests submitted: {resumed['requests_submitted']:,}, distinct: "
        f"{resumed['distinct_requests']:,} — nothing was submitted twice.\n"
    )
    write_section("Batch runs and cost (official data, batch server)", body)
    print(body)


if __name__ == "__main__":
    main()
