"""`specalign serve --workers 2`: real gateway processes on 127.0.0.1 sharing one port, one set of metrics,
one monitor picture and one run directory; a scripted upstream stands in for the model and the judge."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import httpx
import pytest

from gateway_proc import running_gateway
from scripted_server import ScriptedServer
from specbench_world import world
from test_serve import MODEL, parse_prometheus, upstream_spec
from waiting import wait_until

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")

WORKER = "x-specalign-worker"


def fresh(method: str, url: str, **kw) -> httpx.Response:  # noqa: ANN003
    """One request on its own connection, so that the kernel may hand it to any worker."""
    with httpx.Client(timeout=30) as c:
        return c.request(method, url, headers={"connection": "close"}, **kw)


def chat(gw, text: str) -> httpx.Response:  # noqa: ANN001
    r = fresh(
        "POST",
        f"{gw.base_url}/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": text}]},
    )
    assert r.status_code == 200, r.text
    return r


def from_each_worker(gw, path: str, n: int = 2) -> dict[str, str]:  # noqa: ANN001
    """``path``'s body as each of ``n`` workers answers it: {pid: body}."""
    seen: dict[str, str] = {}

    def both() -> bool:
        r = fresh("GET", gw.url + path)
        seen.setdefault(r.headers[WORKER], r.text)
        return len(seen) >= n

    wait_until(both, timeout=30, what=f"{path} from {n} workers")
    return seen


def spread_chats(gw, texts: list[str]) -> dict[str, str]:  # noqa: ANN001
    """Send ``texts`` one per connection, then more until both workers have answered; {completion id: pid}."""
    answered: dict[str, str] = {}
    for t in texts:
        r = chat(gw, t)
        answered[r.json()["id"]] = r.headers[WORKER]
    n = [0]

    def both() -> bool:
        if len(set(answered.values())) >= 2:
            return True
        n[0] += 1
        r = chat(gw, f"one more {n[0]}")
        answered[r.json()["id"]] = r.headers[WORKER]
        return False

    wait_until(both, timeout=30, what="answers from both workers")
    return answered


def total(text: str, name: str, **labels: str) -> float:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for k, v in parse_prometheus(text).items() if k.split("{")[0] == name and all(w in k for w in want))


def status_traffic(page: str) -> str:
    return page.split("<h2>Traffic</h2>")[1]


@pytest.fixture
def upstream():
    with ScriptedServer(world) as server:
        yield server


def test_requests_spread_and_metrics_and_status_add_up(upstream):
    with running_gateway("-s", "child", "--method", "vanilla", "-m", upstream_spec(upstream), "--workers", "2") as gw:
        assert "; 2 workers)" in gw.output
        answered = spread_chats(gw, [f"story {i}" for i in range(6)])
        assert len(set(answered.values())) == 2
        pages = from_each_worker(gw, "/metrics")
        for text in pages.values():  # whichever worker answers, the totals are everyone's
            assert total(text, "specalign_requests_total", code="200") == len(answered)
            assert total(text, "specalign_request_duration_seconds_count") == len(answered)
            assert total(text, "specalign_upstream_calls_total") == len(answered)
            assert total(text, "specalign_requests_in_flight") == 0
            assert "specalign_status_" not in text  # the status page's own series stay off /metrics
        status = from_each_worker(gw, "/status")
        tables = {status_traffic(p) for p in status.values()}
        assert len(tables) == 1 and f"<td class=n>{len(answered)}</td>" in tables.pop()
        assert gw.stop() == 0


def test_monitored_samples_of_both_workers_in_one_run_directory(upstream, tmp_path):
    out = tmp_path / "live"
    args = ["-s", "child", "--method", "vanilla", "-m", upstream_spec(upstream), "--workers", "2"]
    args += ["--monitor", "1", "--judge", upstream_spec(upstream), "--monitor-out", str(out)]
    with running_gateway(*args) as gw:
        answered = spread_chats(gw, ["UNSAFE story", "calm story", "UNSAFE tale", "quiet tale"])
        n = len(answered)

        def judged() -> bool:
            text = fresh("GET", gw.url + "/metrics").text
            return total(text, "specalign_monitor_samples_total", outcome="judged") == n

        wait_until(judged, timeout=30, what=f"{n} judged samples")
        metrics = from_each_worker(gw, "/metrics")
        for text in metrics.values():
            assert total(text, "specalign_monitor_window_scored", method="vanilla", scenario="child") == n
            assert total(text, "specalign_spec_verdicts_total", spec="S1", verdict="NO") == 2
        pages = from_each_worker(gw, "/status")
        windows = {p.split("<h2>Spec violations</h2>")[1] for p in pages.values()}
        assert len(windows) == 1, "the windows agree whichever worker answers"
        assert windows.pop().count("<pre>UNSAFE") == 2  # both violations, whichever worker judged them
        from specalign.errors import RunDirError
        from specalign.runs import RunDir

        with pytest.raises(RunDirError, match="in use by another specalign process"):
            RunDir(out / "vanilla").check_unlocked()  # `specalign run` is refused while the gateway writes
        assert gw.stop() == 0
    rd = out / "vanilla"
    gens = [json.loads(x) for x in (rd / "generations.jsonl").read_text().splitlines()]
    ids = {g["prompt_id"] for g in gens}
    assert ids == set(answered) and len(gens) == n
    assert len(set(answered.values())) == 2, "both workers' samples are there"
    assert len((rd / "judgments.jsonl").read_text().splitlines()) == n
    sessions = json.loads((rd / "manifest.json").read_text())["sessions"]
    assert len(sessions) == 2 and sum(s["samples_done"] for s in sessions) == n  # one per worker
    score = subprocess.run(
        [sys.executable, "-m", "specalign.cli", "score", str(rd), "--json"], capture_output=True, text=True, timeout=60
    )
    assert score.returncode == 0, score.stderr
    assert json.loads(score.stdout)["counts"]["scored"] == n


def test_killed_worker_is_restarted_and_sigterm_stops_all(upstream):
    with running_gateway("-s", "child", "--method", "vanilla", "-m", upstream_spec(upstream), "--workers", "2") as gw:
        answered = spread_chats(gw, ["a", "b"])
        pids = set(answered.values())
        victim = int(sorted(pids)[0])
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: "is back" in gw.output, timeout=30, what="the worker's restart", process=None)
        assert re.search(rf"worker \d \(pid {victim}\) exited with -9: restarting it", gw.output)
        now = set(from_each_worker(gw, "/health"))
        assert len(now) == 2 and str(victim) not in now
        text = fresh("GET", gw.url + "/metrics").text  # the dead worker's requests still count
        assert total(text, "specalign_requests_total", code="200") == len(answered)
        assert gw.stop() == 0
    for pid in now:
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)
    assert gw.output.count("Application shutdown complete") >= 2


HOSTILE = [
    'quote"d',
    "back\\slash\\",
    'new\nline} 1\nspecalign_fake_total{x="y"} 9',
    "ü😀\t",
    "lone \ud800 surrogate",
    "x" * 5000,
]


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


def _rendered_values(text: str) -> list[str]:
    samples = parse_prometheus(text)  # every line well formed, no injected series
    assert not any("specalign_fake" in k.split("{")[0] for k in samples)
    pattern = re.compile(r'scenario="((?:[^"\\\n]|\\.)*)"')
    return sorted(
        _unescape(m.group(1)) for k in samples if k.startswith("specalign_requests_total") for m in [pattern.search(k)]
    )


def _expected() -> list[str]:
    return sorted(v.encode("utf-8", "replace").decode() for v in HOSTILE)


def test_hostile_label_values_are_escaped_in_one_process(monkeypatch):
    from specalign.serve._metrics import METRICS_DIR_ENV, GatewayMetrics

    monkeypatch.delenv(METRICS_DIR_ENV, raising=False)
    m = GatewayMetrics()
    for v in HOSTILE:
        m.requests.inc(method="vanilla", scenario=v, code="200")
    assert _rendered_values(m.registry.render()) == _expected()


def test_hostile_label_values_are_escaped_across_workers(tmp_path, monkeypatch):
    from specalign.serve._metrics import METRICS_DIR_ENV, GatewayMetrics

    code = (
        "import json, sys\nfrom specalign.serve._metrics import GatewayMetrics\nm = GatewayMetrics()\n"
        "for v in json.loads(sys.argv[1]):\n    m.requests.inc(method='vanilla', scenario=v, code='200')\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), METRICS_DIR_ENV: str(tmp_path)}
    arg = json.dumps(HOSTILE)  # JSON keeps the lone surrogate as an escape
    for _ in range(2):  # two "workers" count the same series
        subprocess.run([sys.executable, "-c", code, arg], env=env, check=True, timeout=60)
    monkeypatch.setenv(METRICS_DIR_ENV, str(tmp_path))
    text = GatewayMetrics().registry.render()
    assert _rendered_values(text) == _expected()
    assert all(v == 2 for k, v in parse_prometheus(text).items() if k.startswith("specalign_requests_total"))
