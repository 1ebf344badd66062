"""Load on the gateway: N concurrent clients on loopback, through `specalign serve`, against an upstream
with a fixed latency. Writes its figures to docs/benchmarks.md.

Three processes share the machine: the upstream (a small OpenAI-compatible ASGI app under uvicorn that
answers every chat call after exactly L seconds), the gateway (`specalign serve`), and the clients
(this script: N keep-alive HTTP/1.1 connections, each sending the next request as soon as the last one
was answered). Every level runs twice, first straight at the upstream, then through the gateway, with
the same clients and requests; the latency the gateway adds is the difference.

    .venv/bin/python benchmarks/serve.py                    # levels 1, 10, 50, 200; vanilla and align3
    .venv/bin/python benchmarks/serve.py --levels 200 --seconds 5 --no-write
    .venv/bin/python benchmarks/serve.py --upstream --latency 0.05 --port-file /tmp/p   # the upstream alone
    .venv/bin/python benchmarks/serve.py --screenshot docs/serve-status.png   # the status page, scripted traffic
    .venv/bin/python benchmarks/serve.py --ttft             # time to first token, streamed and not (own section)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests" / "helpers"))
from demo import write_section  # noqa: E402
from gateway_proc import running_gateway  # noqa: E402

MODEL = "bench-model"
ANSWER = " ".join(["The little owl found a lantern and shared its light with every friend in the wood."] * 10)


# -- the upstream -------------------------------------------------------------------------------


def upstream_app(latency: float):  # noqa: ANN201
    """A raw ASGI app: ``/v1/models`` and ``/v1/chat/completions`` answered after ``latency`` seconds."""
    counter = {"n": 0}

    async def app(scope, receive, send):  # noqa: ANN001, ANN202
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body, more = b"", True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        if scope["path"].endswith("/models"):
            payload = {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "bench"}]}
        else:
            req = json.loads(body)
            await asyncio.sleep(latency)
            counter["n"] += 1
            prompt = sum(len(str(m.get("content", "")).split()) for m in req["messages"])
            completion = len(ANSWER.split())
            payload = {
                "id": f"chatcmpl-{counter['n']}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": req["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "logprobs": None,
                        "message": {"role": "assistant", "content": ANSWER},
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            }
        data = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": data})

    return app


def run_upstream(latency: float, port_file: str) -> None:
    import socket

    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    Path(port_file).write_text(str(sock.getsockname()[1]))
    server = uvicorn.Server(uvicorn.Config(upstream_app(latency), log_level="warning", access_log=False, backlog=4096))
    server.run(sockets=[sock])


class Upstream:
    def __init__(self, latency: float):
        self.port_file = Path(tempfile.mkdtemp()) / "port"
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--upstream", "--latency", str(latency), "--port-file", str(self.port_file)]
        )
        deadline = time.monotonic() + 30
        while not self.port_file.exists() or not self.port_file.read_text():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the upstream did not start")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{int(self.port_file.read_text())}"
        time.sleep(0.3)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# -- the clients --------------------------------------------------------------------------------


class Client:
    """One keep-alive HTTP/1.1 connection that posts a chat request, reads the answer, and repeats."""

    def __init__(self, host: str, port: int, path: str, body: bytes):
        self.addr = (host, port)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer unused\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.request = head.encode() + body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def once(self) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(*self.addr)
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        if status != 200 or b'"choices"' not in body:
            return status or 599
        return 200


async def load(
    url: str, path: str, body: bytes, clients: int, seconds: float, warmup: float, spread: float = 0.0
) -> dict:
    """Closed-loop load; client i starts at i × spread / clients (0: all at once, in lockstep)."""
    host, port = url.removeprefix("http://").split(":")
    pool = [Client(host, int(port), path, body) for _ in range(clients)]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    answered = [0]
    t_start = time.perf_counter()
    t_measure, t_end = t_start + warmup, t_start + warmup + seconds

    async def loop(i: int, c: Client) -> None:
        await asyncio.sleep(i * spread / clients)
        while True:
            t0 = time.perf_counter()
            if t0 >= t_end:
                return
            try:
                status = await c.once()
            except (OSError, asyncio.IncompleteReadError) as e:
                status = type(e).__name__
                c.writer = None
            t1 = time.perf_counter()
            answered[0] += 1
            if t0 >= t_measure:
                if status == 200:
                    latencies.append(t1 - t0)
                else:
                    errors[str(status)] = errors.get(str(status), 0) + 1

    await asyncio.gather(*(loop(i, c) for i, c in enumerate(pool)))
    for c in pool:
        if c.writer is not None:
            c.writer.close()
    latencies.sort()
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    return {
        "n": len(latencies),
        "n_all": answered[0],
        "rps": len(latencies) / seconds,
        "p50": q[49],
        "p99": q[98],
        "errors": errors,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def chat_body(method: str) -> bytes:
    req = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a short story about a brave owl who is afraid of the dark."}],
    }
    if method != "vanilla":
        req["specalign"] = {"method": method}
    return json.dumps(req).encode()


def one_level(
    upstream_url: str,
    gw,
    body: bytes,
    n: int,
    seconds: float,
    latency: float,
    spread: float,  # noqa: ANN001
    start: str,
) -> tuple[dict, dict]:
    """The same clients straight at the upstream, then through the gateway."""
    warm = 1.0 + spread
    direct = asyncio.run(
        load(
            upstream_url,
            "/v1/chat/completions",
            chat_body("vanilla"),
            n,
            seconds,
            warm,
            latency if start == "spread" else 0.0,
        )
    )
    cpu0 = cpu_seconds(gw.proc.pid)
    through = asyncio.run(load(gw.url, "/v1/chat/completions", body, n, seconds, warm, spread))
    # CPU over the whole level (warm-up included) per request answered in it
    through["cpu_ms"] = 1000 * (cpu_seconds(gw.proc.pid) - cpu0) / max(1, through["n_all"])
    return direct, through


def median_of(results: list[dict]) -> dict:
    """Per figure, the median over repetitions; errors are summed."""
    out = {k: statistics.median(r[k] for r in results) for k in results[0] if k != "errors"}
    out["errors"] = {}
    for r in results:
        for k, v in r["errors"].items():
            out["errors"][k] = out["errors"].get(k, 0) + v
    return out


def measure(levels: list[int], latency: float, seconds: float, methods: list[str], repeat: int) -> list[dict]:
    rows = []
    upstream = Upstream(latency)
    try:
        params = ["-p", "align3.no_prefill=multi_turn"] if "align3" in methods else []
        with running_gateway(
            "-s",
            "child",
            "--method",
            ",".join(methods),
            "-m",
            f"openai:{MODEL}@{upstream.url}/v1",
            "--max-concurrency",
            "1024",
            *params,
        ) as gw:
            for method in methods:
                body = chat_body(method)
                import httpx

                calls = httpx.post(
                    f"{gw.base_url}/chat/completions", content=body, headers={"content-type": "application/json"}
                ).json()["specalign"]["upstream_calls"]
                runs = [(n, "spread") for n in levels] if method == "vanilla" else []
                runs += [(levels[-1], "spread")] if method != "vanilla" else []
                runs += [(levels[-1], "lockstep")]
                for n, start in runs:
                    spread = latency * calls if start == "spread" else 0.0
                    pairs = [
                        one_level(upstream.url, gw, body, n, seconds, latency, spread, start) for _ in range(repeat)
                    ]
                    row = {
                        "method": method,
                        "clients": n,
                        "start": start,
                        "latency": latency,
                        "calls": calls,
                        "direct": median_of([d for d, _ in pairs]),
                        "gateway": median_of([g for _, g in pairs]),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    finally:
        upstream.stop()
    return rows


def ms(x: float) -> str:
    return f"{1000 * x:.1f}"


def table(rows: list[dict]) -> str:
    out = [
        "| upstream latency | method | clients | starts | upstream calls / request | requests/s | p50 ms | p99 ms | added p50 ms | added p99 ms | gateway CPU ms / request | errors |",
        "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        d, g = r["direct"], r["gateway"]
        calls = r["calls"]
        # the added latency is measured against `calls` direct round trips
        added50, added99 = g["p50"] - calls * d["p50"], g["p99"] - calls * d["p99"]
        errors = sum(g["errors"].values())
        detail = "" if not errors else " (" + ", ".join(f"{k}: {v}" for k, v in g["errors"].items()) + ")"
        out.append(
            f"| {ms(r['latency'])} ms | {r['method']} | {r['clients']} | {r['start']} | {calls} | {g['rps']:.0f} | {ms(g['p50'])} | {ms(g['p99'])} | "
            f"{ms(added50)} | {ms(added99)} | {g['cpu_ms']:.2f} | {errors}{detail} |"
        )
    return "\n".join(out)


def screenshot(target: Path) -> None:
    """The status page after scripted traffic: a world whose judge flags answers that contain UNSAFE."""
    import random

    import httpx

    from browser import chromium
    from scripted_server import ScriptedServer
    from specbench_world import is_judge, judge_reply

    def responder(body: dict) -> str:  # the answer repeats the question's first words, UNSAFE included
        if is_judge(body):
            return judge_reply(body)
        question = next(m["content"] for m in body["messages"] if m["role"] == "user").split("\n---\n")[0]
        return "ANSWER[" + " ".join(question.split()[:6]) + "]"

    rng = random.Random(7)
    with (
        tempfile.TemporaryDirectory() as tmp,
        ScriptedServer(responder) as up,
        running_gateway(
            "-s",
            "child,code",
            "--method",
            "align3,vanilla",
            "-m",
            f"openai:scripted-model@{up.base_url}",
            "-p",
            "align3.no_prefill=multi_turn",
            "--monitor",
            "1",
            "--judge",
            f"openai:scripted-model@{up.base_url}",
            "--monitor-out",
            tmp,
            "--monitor-workers",
            "4",
        ) as gw,
    ):
        topics = ["a dragon who shares", "a lost kitten", "the moon and the sea", "a robot gardener"]
        for _ in range(40):
            method, scenario = rng.choice(["align3", "vanilla"]), rng.choice(["child", "child", "code"])
            unsafe = "UNSAFE " if rng.random() < (0.1 if method == "align3" else 0.3) else ""
            question = (
                f"{unsafe}Tell me about {rng.choice(topics)}"
                if scenario == "child"
                else f"{unsafe}Review this login code"
            )
            httpx.post(
                f"{gw.base_url}/chat/completions",
                timeout=60,
                json={
                    "model": "scripted-model",
                    "messages": [{"role": "user", "content": question}],
                    "specalign": {"method": method, "scenario": scenario},
                },
            )
        deadline = time.monotonic() + 60
        while "specalign_monitor_queue_depth 0" not in httpx.get(gw.url + "/metrics").text:
            if time.monotonic() > deadline:
                raise TimeoutError("the judge did not finish")
            time.sleep(0.2)
        time.sleep(1.0)
        with chromium(1100, 2200) as d:
            d.get(gw.url + "/status")
            d.save_screenshot(str(target))
    print(f"wrote {target}")


# -- time to first token ------------------------------------------------------------------------

TTFT_REASONING = 20  # tokens of reasoning the upstream streams apart before its answer
TTFT_ANSWER = 60  # tokens of answer
TTFT_STAGE = 40  # tokens of each Align3 stage before the last
#: the served name of the upstream model that writes no reasoning
PLAIN_MODEL = "plain-model"


def ttft_upstream(interval: float):  # noqa: ANN201
    """A scripted upstream that writes one token every ``interval`` seconds, streamed or not (then it answers
    after the time the tokens take). Its reasoning comes apart (``reasoning_content``), as vLLM's does with a
    reasoning parser; an Align3 stage before the last (a prefill that stops at ``</think>``) is thought only."""
    from scripted_server import Reply, ScriptedServer

    answer = [f"word{i} " for i in range(TTFT_ANSWER)]
    reasoning = [f"think{i} " for i in range(TTFT_REASONING)]

    def respond(body: dict) -> Reply:
        if body.get("stop"):  # an Align3 stage that the method continues: thought, stopped at the end marker
            tokens = [{"content": f"stage{i} "} for i in range(TTFT_STAGE)]
        elif body.get("model") == PLAIN_MODEL:  # a model that does not think: the answer alone
            tokens = [{"content": t} for t in answer]
        else:
            tokens = [{"reasoning_content": t} for t in reasoning] + [{"content": t} for t in answer]
        if body.get("stream"):
            return Reply("x", chunks=tokens, interval=interval)
        text = "".join(t.get("content", "") for t in tokens)
        thought = "".join(t.get("reasoning_content", "") for t in tokens) or None
        return Reply(text, reasoning_content=thought, delay=interval * len(tokens))

    return ScriptedServer(respond, models=("scripted-model", PLAIN_MODEL))


def time_to_first_token(
    base_url: str, method: str | None, stream: bool, model: str = "scripted-model", max_tokens: int | None = None
) -> tuple[float, float]:
    """Seconds to the first answer token and to the whole answer, for one request."""
    import httpx

    body: dict = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "An owl?"}]}
    if method:
        body["specalign"] = {"method": method}
    if max_tokens:
        body["max_tokens"] = max_tokens
    t0 = time.perf_counter()
    if not stream:
        r = httpx.post(f"{base_url}/chat/completions", json=body, timeout=60)
        assert r.status_code == 200, r.text
        done = time.perf_counter() - t0
        return done, done
    first = None
    with httpx.stream("POST", f"{base_url}/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if first is None and line.startswith("data: {"):
                choices = json.loads(line[6:]).get("choices") or [{}]
                if choices[0].get("delta", {}).get("content"):
                    first = time.perf_counter() - t0
    return first if first is not None else float("nan"), time.perf_counter() - t0


def measure_ttft(rate: float, repeat: int) -> list[dict]:
    interval = 1.0 / rate
    rows = []
    with ttft_upstream(interval) as up:
        config = Path(tempfile.mkdtemp()) / "models.yaml"
        config.write_text(f"up:\n  model_name: scripted-model\n  base_url: {up.base_url}\n  prefill: true\n")
        direct = [time_to_first_token(up.base_url, None, True) for _ in range(repeat)]
        rows.append({"path": "straight at the upstream", "method": "-", "streamed": direct, "whole": None})
        with running_gateway(
            "-s", "child", "--method", "vanilla,align3", "-m", "up", "--models-config", str(config)
        ) as gw:
            for method in ("vanilla", "align3"):
                time_to_first_token(gw.base_url, method, True)  # warm-up
                streamed = [time_to_first_token(gw.base_url, method, True) for _ in range(repeat)]
                whole = [time_to_first_token(gw.base_url, method, False) for _ in range(repeat)]
                rows.append({"path": "through the gateway", "method": method, "streamed": streamed, "whole": whole})
                print(json.dumps(rows[-1]), flush=True)
        # a model that does not think, declared (inline_thought: false) or not: no marker ever says the answer began
        for key, declared in (("plain", "declared `inline_thought: false`"), ("undeclared", "undeclared")):
            entry = f"{key}:\n  model_name: {PLAIN_MODEL}\n  base_url: {up.base_url}\n"
            config.write_text(entry + ("  inline_thought: false\n" if key == "plain" else ""))
            with running_gateway("-s", "child", "--method", "vanilla", "-m", key, "--models-config", str(config)) as gw:
                ask = partial(time_to_first_token, gw.base_url, "vanilla", model=PLAIN_MODEL)
                ask(True)
                streamed, whole = [ask(True) for _ in range(repeat)], [ask(False) for _ in range(repeat)]
            path = f"through the gateway, a model without reasoning, {declared}"
            rows.append({"path": path, "method": "vanilla", "streamed": streamed, "whole": whole})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def measure_local_ttft(repeat: int, max_tokens: int = 64) -> list[dict]:
    """The embedded model in the gateway's own process (llama.cpp streams natively)."""
    with running_gateway("-s", "child", "--method", "vanilla", "-m", "local") as gw:
        import httpx

        model = httpx.get(f"{gw.base_url}/models", timeout=30).json()["data"][0]["id"]
        ask = partial(time_to_first_token, gw.base_url, "vanilla", model=model, max_tokens=max_tokens)
        ask(True)
        streamed, whole = [ask(True) for _ in range(repeat)], [ask(False) for _ in range(repeat)]
    path = f"the embedded model in the gateway's process (`-m local`, {max_tokens} tokens at most)"
    return [{"path": path, "method": "vanilla", "streamed": streamed, "whole": whole}]


def ttft_section(rows: list[dict], rate: float, repeat: int) -> str:
    def med(pairs: list[tuple[float, float]], i: int) -> str:
        return ms(statistics.median(p[i] for p in pairs))

    out = [
        "| path | method | first token, streamed (ms) | whole answer, streamed (ms) | whole answer, not streamed (ms) |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        whole = med(r["whole"], 1) if r["whole"] else "–"
        out.append(f"| {r['path']} | {r['method']} | {med(r['streamed'], 0)} | {med(r['streamed'], 1)} | {whole} |")
    return (
        f"`.venv/bin/python benchmarks/serve.py --ttft` ({time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{os.cpu_count()} cores; Python {platform.python_version()}). A loopback upstream (the tests' scripted "
        f"server) writes {rate:g} tokens/s: {TTFT_REASONING} tokens of reasoning returned apart "
        f"(`reasoning_content`), then {TTFT_ANSWER} tokens of answer; not streamed, it answers after the time the "
        f"tokens take. Align3 runs by prefill (the upstream declares `prefill: true`): two stages of "
        f"{TTFT_STAGE} tokens each, not streamed, then the final stage, streamed. A model without reasoning writes "
        f"the {TTFT_ANSWER} answer tokens alone: undeclared, any of its text might still turn out to be thought, so "
        f"the gateway holds it to the end. The embedded SmolLM2-135M answers a real prompt on this machine's CPU. "
        f"First token: the first `delta.content` the client reads. One client, medians of {repeat} requests.\n\n"
        + "\n".join(out)
        + "\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", action="store_true", help="run only the upstream server (used by the benchmark)")
    ap.add_argument("--port-file")
    ap.add_argument("--latency", type=float, default=0.05, help="(--upstream) seconds per chat call")
    ap.add_argument("--latencies", default="0.05,1.0", help="upstream latencies to measure, seconds, comma-separated")
    ap.add_argument("--levels", default="1,10,50,200", help="concurrent clients, comma-separated")
    ap.add_argument("--seconds", type=float, default=6.0, help="measured seconds per level (after the warm-up)")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions per level; the table shows medians")
    ap.add_argument("--methods", default="vanilla,align3")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    ap.add_argument("--screenshot", metavar="PNG", help="only write a screenshot of the status page")
    ap.add_argument("--ttft", action="store_true", help="only measure time to first token (streamed) and write it")
    ap.add_argument("--token-rate", type=float, default=200.0, help="(--ttft) the upstream's tokens per second")
    args = ap.parse_args()
    if args.ttft:
        repeat = max(args.repeat, 5)
        rows = measure_ttft(args.token_rate, repeat) + measure_local_ttft(repeat)
        body = ttft_section(rows, args.token_rate, repeat)
        print(body)
        if not args.no_write:
            write_section("Gateway time to first token (`specalign serve`, streaming)", body)
        return
    if args.screenshot:
        screenshot(Path(args.screenshot))
        return
    if args.upstream:
        run_upstream(args.latency, args.port_file)
        return
    levels = [int(x) for x in args.levels.split(",")]
    latencies = [float(x) for x in args.latencies.split(",")]
    rows = [
        row for lat in latencies for row in measure(levels, lat, args.seconds, args.methods.split(","), args.repeat)
    ]
    body = (
        f"`.venv/bin/python benchmarks/serve.py` ({time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{os.cpu_count()} cores shared by the clients, the gateway and the upstream; Python "
        f"{platform.python_version()}). The upstream answers every chat call after exactly L "
        f"({' or '.join(ms(x) + ' ms' for x in latencies)}: a stress test, and an LLM-like call). Each level runs {args.seconds:g} s (after a warm-up) straight at the upstream, "
        "then through `specalign serve -s child` with the same clients: closed-loop keep-alive connections, each "
        "sending its next request when the last is answered. *Spread* starts the clients evenly over one round "
        "trip, so requests arrive evenly, as independent users' do; *lockstep* starts them together, so all N "
        "arrive in the same millisecond, every round (the worst case: the gateway handles a burst one request at a "
        "time). *Added* latency is the gateway's percentile minus the "
        "direct one (times the upstream calls per request: align3 runs its three stages as turns here, "
        "`-p align3.no_prefill=multi_turn`, because the upstream declares no prefill). Errors count every non-200 "
        "answer and every broken connection. Figures are medians of "
        f"{args.repeat} repetitions (errors: the sum). Requests/s counts the requests started and answered inside the "
        "measured window, so it undercounts requests that take most of the window (align3 at 4 s). Gateway CPU is "
        "its process's user + system time over the level, warm-up and idle time included, per request: at low "
        "rates the idle event loop dominates it.\n\n"
        f"{table(rows)}\n\n"
        "Straight at the upstream, the same clients get: "
        + ", ".join(
            f"L {ms(r['latency'])} ms × {r['clients']} clients ({r['start']}) {r['direct']['rps']:.0f} req/s "
            f"(p50 {ms(r['direct']['p50'])} ms)"
            for r in rows
            if r["method"] == "vanilla"
        )
        + ".\n"
    )
    print(body)
    if not args.no_write:
        write_section("Gateway under load (`specalign serve`)", body)


if __name__ == "__main__":
    main()
