"""Load on `specalign serve --workers N`: requests/s and added latency at 200 concurrent clients for 1, 2 and
4 workers, against a loopback upstream with a fixed latency. Writes its own section of docs/benchmarks.md.

The upstream, the clients and the measurement are those of benchmarks/serve.py (imported, not copied): N
closed-loop keep-alive connections, started evenly over one round trip, first straight at the upstream, then
through the gateway; the added latency is the difference of the percentiles.

    .venv/bin/python benchmarks/serve_workers.py                       # workers 1, 2, 4; 200 clients
    .venv/bin/python benchmarks/serve_workers.py --workers 1,2 --seconds 3 --no-write
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests" / "helpers"))
from demo import write_section  # noqa: E402
from gateway_proc import running_gateway  # noqa: E402
from serve import MODEL, Upstream, chat_body, load, median_of  # noqa: E402

TITLE = "Gateway workers under load (`--workers`)"


def measure(workers: list[int], clients: int, latency: float, seconds: float, repeat: int) -> list[dict]:
    rows = []
    upstream = Upstream(latency)
    body = chat_body("vanilla")
    try:
        for n in workers:
            args = ["-s", "child", "--method", "vanilla", "-m", f"openai:{MODEL}@{upstream.url}/v1"]
            with running_gateway(*args, "--max-concurrency", "1024", "--workers", str(n)) as gw:
                direct, through = [], []
                for _ in range(repeat):
                    warm = 1.0 + latency
                    path = "/v1/chat/completions"
                    direct.append(asyncio.run(load(upstream.url, path, body, clients, seconds, warm, latency)))
                    through.append(asyncio.run(load(gw.url, path, body, clients, seconds, warm, latency)))
                assert gw.stop() == 0, gw.output
            row = {"workers": n, "clients": clients, "latency": latency}
            row |= {"direct": median_of(direct), "gateway": median_of(through)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        upstream.stop()
    return rows


def ms(x: float) -> str:
    return f"{1000 * x:.1f}"


def table(rows: list[dict]) -> str:
    out = [
        "| workers | clients | upstream latency | requests/s | p50 ms | p99 ms | added p50 ms | added p99 ms | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        d, g = r["direct"], r["gateway"]
        errors = sum(g["errors"].values())
        detail = "" if not errors else " (" + ", ".join(f"{k}: {v}" for k, v in g["errors"].items()) + ")"
        out.append(
            f"| {r['workers']} | {r['clients']} | {ms(r['latency'])} ms | {g['rps']:.0f} | {ms(g['p50'])} | "
            f"{ms(g['p99'])} | {ms(g['p50'] - d['p50'])} | {ms(g['p99'] - d['p99'])} | {errors}{detail} |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--latency", type=float, default=0.05, help="seconds the upstream takes per chat call")
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds per level (after a warm-up)")
    ap.add_argument("--repeat", type=int, default=1, help="repetitions per level; the table shows medians")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args()
    workers = [int(x) for x in args.workers.split(",")]
    rows = measure(workers, args.clients, args.latency, args.seconds, args.repeat)
    direct = statistics.median(r["direct"]["rps"] for r in rows)
    body = (
        f"`.venv/bin/python benchmarks/serve_workers.py` ({time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{os.cpu_count()} cores shared by the clients, the gateway's workers and the upstream; Python "
        f"{platform.python_version()}). {args.clients} closed-loop keep-alive clients, started evenly over one "
        f"round trip, send vanilla chat requests through `specalign serve -s child --workers 1` (then 2, then 4) to an upstream "
        f"that answers after {ms(args.latency)} ms, for {args.seconds:g} s after a warm-up; then the same clients "
        f"straight at the upstream (median {direct:.0f} requests/s). *Added* is the gateway's percentile minus "
        f"the direct one. Errors count every non-200 answer and every broken connection. Medians of "
        f"{args.repeat} repetition{'s' if args.repeat != 1 else ''}. Workers are separate processes (one event "
        "loop each) on one port (`SO_REUSEPORT`): they scale with free cores, and on this machine the clients "
        "and the upstream take their share of the two.\n\n"
        f"{table(rows)}\n"
    )
    print(body)
    if not args.no_write:
        write_section(TITLE, body)


if __name__ == "__main__":
    main()
