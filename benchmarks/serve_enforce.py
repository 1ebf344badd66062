"""What `specalign serve --enforce` adds to a request's latency.

One gateway without and one with `--enforce`, against a scripted upstream that streams a fixed answer and a
scripted enforcement judge that answers after a fixed latency (20 ms). Sequential requests, non-streamed
(total time) and streamed (time to the first content token). Writes the "Gateway enforcement latency"
section of docs/benchmarks.md.

    nice -n 10 .venv/bin/python benchmarks/serve_enforce.py [-n 40]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests" / "helpers"))
from demo import write_section  # noqa: E402
from gateway_proc import running_gateway  # noqa: E402
from scripted_server import Reply, ScriptedServer  # noqa: E402
from specbench_world import spec_counts  # noqa: E402

MODEL = "scripted-model"
JUDGE_LATENCY = 0.020
WORDS = [f"word{i} " for i in range(40)]  # a ~280-character answer in 40 deltas
PIECES = [{"reasoning_content": "plan"}, *({"content": w} for w in WORDS)]


def judge(body: dict) -> str:
    n_s, _ = spec_counts(body)
    if body.get("response_format"):
        return json.dumps({f"S{i}": {"reason": "ok", "verdict": "YES"} for i in range(1, n_s + 1)})
    lines = "\n".join(f"{i}. ok <YES>" for i in range(1, n_s + 1))
    return f"<safety_specifications>\n{lines}\n</safety_specifications>"


def one(client: httpx.Client, url: str, stream: bool) -> float:
    body = {"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": "a story about owls"}]}
    t0 = time.perf_counter()
    if not stream:
        r = client.post(f"{url}/chat/completions", json=body)
        assert r.status_code == 200, r.text
        return time.perf_counter() - t0
    with client.stream("POST", f"{url}/chat/completions", json=body) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {") and '"content":"' in line and '"content":""' not in line:
                return time.perf_counter() - t0
    raise AssertionError("no content arrived")


def run(up: ScriptedServer, url: str, n: int, stream: bool) -> list[float]:
    up.script(*[Reply("x", chunks=PIECES) for _ in range(n + 3)])
    with httpx.Client(timeout=30) as client:
        for _ in range(3):  # warm-up
            one(client, url, stream)
        return [one(client, url, stream) for _ in range(n)]


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20)[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=40, help="requests per configuration")
    args = ap.parse_args()
    results: dict[tuple[bool, bool], list[float]] = {}
    with ScriptedServer() as up, ScriptedServer(judge, latency=JUDGE_LATENCY) as j, tempfile.TemporaryDirectory() as d:
        config = Path(d) / "models.yaml"
        config.write_text(
            f"up:\n  model_name: {MODEL}\n  base_url: {up.base_url}\n  max_retries: 0\n"
            f"judge:\n  model_name: {MODEL}\n  base_url: {j.base_url}\n  max_retries: 0\n"
        )
        base = ("-s", "child", "--method", "vanilla", "-m", "up", "--models-config", str(config))
        for enforce in (False, True):
            extra = ("--enforce", "--enforce-judge", "judge") if enforce else ()
            with running_gateway(*base, *extra) as gw:
                for stream in (False, True):
                    results[(enforce, stream)] = run(up, gw.base_url, args.n, stream)
    rows = []
    for stream, what in ((False, "non-streamed, total time"), (True, "streamed, time to first token")):
        off, on = results[(False, stream)], results[(True, stream)]
        med = (statistics.median(on) - statistics.median(off)) * 1000
        tail = (p95(on) - p95(off)) * 1000
        rows.append(
            f"| {what} | {statistics.median(off) * 1000:.1f} / {p95(off) * 1000:.1f} | "
            f"{statistics.median(on) * 1000:.1f} / {p95(on) * 1000:.1f} | {med:+.1f} / {tail:+.1f} |"
        )
    body = (
        f"`benchmarks/serve_enforce.py`: {args.n} sequential requests per row, one gateway without and one with "
        f"`--enforce` (default window 400, so the {sum(map(len, WORDS))}-character answer is one check), a scripted "
        f"upstream streaming it in {len(WORDS)} deltas and a scripted judge answering after "
        f"{JUDGE_LATENCY * 1000:.0f} ms; {platform.machine()}, {platform.python_version()}, clients, gateway and "
        "servers on one machine. Milliseconds, median / p95.\n\n"
        "| request | without | with `--enforce` | added |\n|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "Streamed, the first token waits for its window to be judged: with an answer shorter than the window that "
        "is the whole answer plus one judge call, so the time to first token becomes about the total time.\n"
    )
    print(body)
    write_section("Gateway enforcement latency", body)


if __name__ == "__main__":
    main()
