"""Issue 18 §1: ``specalign run --batch``. Calls of models that can batch wait for provider batches (one per
round: vanilla's answers, then the judge's verdicts), against the protocol-faithful batch server; results flow
into the same records and scores as an online run; a run killed while batches are in flight resumes by polling
them and submits nothing twice; ``--no-wait`` submits and stops; failed, expired and cancelled requests go out
again online or in the next batch.

The scripted world (child and code, three prompts each; see specbench_world) passes every answer: safety 1,
SAR 0.93."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from batch_server import BatchServer
from run_world import records, run_config, run_evaluation, start_cli
from scripted_server import Reply, ScriptedServer
from specalign.runs import BatchesSubmitted, BatchRecord, RunDir
from specbench_world import is_judge, world
from waiting import wait_until

N = 6  # samples: 2 scenarios × 3 prompts


def _config(tmp_path: Path, *servers: tuple[str, ScriptedServer, bool]) -> str:
    """A models config naming each server's model (``batch: true`` where asked)."""
    entries = {
        name: {"model_name": "scripted-model", "base_url": s.base_url, **({"batch": True} if batch else {})}
        for name, s, batch in servers
    }
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(entries))
    return str(path)


def _batched(tmp_path: Path, server: BatchServer, **overrides: Any):
    cfg = run_config(
        server,
        tmp_path / "run",
        model="bm",
        judge="bm",
        models_config=[_config(tmp_path, ("bm", server, True))],
        batch=True,
        batch_poll_s=0.01,
        **overrides,
    )
    return run_evaluation(cfg)


def _creates(server: ScriptedServer) -> list[dict]:
    return [r.json for r in server.requests if r.method == "POST" and r.path.rstrip("/").endswith("/batches")]


def _online_chats(server: ScriptedServer) -> int:
    return sum(1 for r in server.requests if r.path.endswith("/chat/completions"))


def _submitted_ids(run: Path) -> list[str]:
    return [cid for r in records(run / "batches.jsonl") if r["event"] == "submitted" for cid in r["custom_ids"]]


def test_a_batched_run_scores_as_an_online_run_does(tmp_path):
    with ScriptedServer(world) as online:
        expected = run_evaluation(run_config(online, tmp_path / "online"))
    with BatchServer(world, advance="poll") as server:
        res = _batched(tmp_path, server)
        assert _online_chats(server) == 0  # every call went through a batch
        assert len(_creates(server)) == 2  # the answers, then the verdicts
        server.requests.clear()
        again = _batched(tmp_path, server)  # everything done: nothing submitted, nothing called
        assert server.requests == [] and again.stats.resumed == N
    assert res.scores.counts["scored"] == N
    assert res.scores.overall["full"].sar == pytest.approx(expected.scores.overall["full"].sar)
    ledger = records(tmp_path / "run" / "batches.jsonl")
    assert [r["event"] for r in ledger] == ["submitted", "collected", "submitted", "collected"]
    assert [len(r["custom_ids"]) for r in ledger if r["event"] == "submitted"] == [N, N]
    assert {r["status"] for r in ledger if r["event"] == "collected"} == {"completed"}
    # the same records as online, the calls counted as made (not as cache hits)
    gens = records(tmp_path / "run" / "generations.jsonl")
    assert len(gens) == N and all(g["status"] == "ok" and g["calls"] == 1 and g["cached_calls"] == 0 for g in gens)
    assert res.stats.batch is not None and res.stats.batch.answered == 2 * N


def test_killed_while_batches_are_in_flight_it_resumes_by_polling(tmp_path):
    """SIGKILL while the first batch is in flight (the server holds it); the rerun polls that batch, submits
    only the judge's round, and every request is submitted once."""
    with BatchServer(world, advance="manual") as server:
        models = _config(tmp_path, ("bm", server, True))
        out = tmp_path / "run"
        args = ["run", "-s", "child", "-s", "code", "-n", "3", "--model", "bm", "--judge", "bm"]
        args += ["--models-config", models, "--out", str(out), "--batch", "--batch-poll", "0.05"]
        proc = start_cli(*args)
        try:
            wait_until(lambda: (out / "batches.jsonl").is_file() and (out / "batches.jsonl").read_text().strip(), 60)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        assert len(_creates(server)) == 1
        server.run_to_end()
        cfg = run_config(server, out, model="bm", judge="bm", models_config=[models], batch=True, batch_poll_s=0.01)
        server.advance = "poll"
        res = run_evaluation(cfg)
        assert len(_creates(server)) == 2 and _online_chats(server) == 0
    ids = _submitted_ids(out)
    assert len(ids) == 2 * N and len(set(ids)) == 2 * N  # nothing submitted twice
    assert res.scores.counts["scored"] == N


def test_no_wait_submits_and_stops_and_reruns_collect(tmp_path, cli):
    with BatchServer(world, advance="manual") as server:
        models = _config(tmp_path, ("bm", server, True))
        out = str(tmp_path / "run")
        args = ["run", "-s", "child", "-s", "code", "-n", "3", "--model", "bm", "--judge", "bm"]
        args += ["--models-config", models, "--out", out, "--batch", "--no-wait", "--batch-poll", "0.01"]
        first = cli(*args)
        assert first.returncode == 0, first.stderr
        assert "1 batch submitted" in first.stderr and "rerun the same command" in first.stderr
        online = cli(*[a for a in args if a not in ("--batch", "--no-wait", "--batch-poll", "0.01")])
        assert online.returncode == 2 and "not collected" in online.stderr and "paid twice" in online.stderr
        still = cli(*args)  # the batch is still running: nothing new is submitted

        assert still.returncode == 0 and "1 batch still running" in still.stderr
        assert len(_creates(server)) == 1
        server.run_to_end()
        second = cli(*args)  # collects the answers, submits the verdicts' batch
        assert second.returncode == 0 and "1 batch submitted" in second.stderr
        server.run_to_end()
        third = cli(*args, "--json")
        assert third.returncode == 0, third.stderr
        assert json.loads(third.stdout)["counts"]["scored"] == N
        assert len(_creates(server)) == 2


@pytest.mark.parametrize("damage", ["torn", "garbled"])
def test_an_unreadable_ledger_line_stops_the_run_before_it_pays_twice(tmp_path, cli, damage):
    """A broken "submitted" line hides an open batch: resending its requests would pay for them twice."""
    with BatchServer(world, advance="manual") as server:
        models = _config(tmp_path, ("bm", server, True))
        out = tmp_path / "run"
        args = ["run", "-s", "child", "-n", "2", "--model", "bm", "--judge", "bm", "--models-config", models]
        args += ["--out", str(out), "--batch", "--no-wait", "--batch-poll", "0.01"]
        assert cli(*args).returncode == 0
        ledger = out / "batches.jsonl"
        line = ledger.read_text()
        ledger.write_text(line[: len(line) // 2] if damage == "torn" else "{not json\n")  # a kill mid-write, or rot
        for again in (args, [a for a in args if a not in ("--batch", "--no-wait", "--batch-poll", "0.01")]):
            p = cli(*again)
            assert p.returncode == 2 and "Traceback" not in p.stderr
            err = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
            assert len(err) == 1 and "batches.jsonl:1" in err[0]
            assert "pay for them twice" in err[0] and "created_by=specalign" in err[0]
        assert len(_creates(server)) == 1 and _online_chats(server) == 0  # nothing sent again
        ledger.unlink()  # every batch given up, as the message says: the run goes on and sends them again
        again = cli(*args)
        assert again.returncode == 0 and "1 batch submitted" in again.stderr and len(_creates(server)) == 2


@pytest.mark.parametrize("retry", ["online", "batch"])
def test_failed_requests_go_out_again(tmp_path, retry):
    """Two generation requests fail inside the first batch (503): they go out again online, or in the next
    batch with the judge's requests of the others; a 400 fails its sample as an online 400 would."""
    busy: set[str] = set()

    def responder(body: dict[str, Any]) -> str | Reply:
        if is_judge(body):
            return world(body)
        text = json.dumps(body, sort_keys=True)
        if "Grandpa Bram" in text:  # child's first prompt: a request the provider refuses for good
            return Reply.error(400, "this request is malformed", type="invalid_request_error")
        if len(busy) < 2 and text not in busy:
            busy.add(text)
            return Reply.error(503, "busy")
        return world(body)

    with BatchServer(responder, advance="poll") as server:
        res = _batched(tmp_path, server, batch_retry=retry)
        online = _online_chats(server)
    gens = {g["sample_id"]: g for g in records(tmp_path / "run" / "generations.jsonl")}
    failed = [sid for sid, g in gens.items() if g["status"] == "error"]
    assert len(failed) == 1 and "malformed" in gens[failed[0]]["error"]
    assert res.scores.counts["scored"] == N - 1
    if retry == "online":
        assert online == 2  # the busy ones, once each online
    else:
        assert online == 0
        ids = _submitted_ids(tmp_path / "run")
        assert len(ids) > len(set(ids))  # the busy ones were submitted again


def test_an_expired_batch_is_finished_online(tmp_path):
    with BatchServer(world, advance="manual") as server:
        cfg = run_config(
            server,
            tmp_path / "run",
            model="bm",
            judge="bm",
            models_config=[_config(tmp_path, ("bm", server, True))],
            batch=True,
            batch_poll_s=0.01,
        )

        def expire_then_poll() -> None:
            wait_until(lambda: server.batches, 30)
            server.expire()
            server.advance = "poll"

        t = threading.Thread(target=expire_then_poll)
        t.start()
        res = run_evaluation(cfg)
        t.join()
        assert _online_chats(server) == N  # the expired answers, online; the verdicts in a batch
    assert res.scores.counts["scored"] == N
    collected = [r for r in records(tmp_path / "run" / "batches.jsonl") if r["event"] == "collected"]
    assert collected[0]["status"] == "expired"


def test_only_the_models_that_can_batch_do(tmp_path):
    """An online target (a plain server) and a batching judge: answers online, verdicts in one batch."""
    with ScriptedServer(world) as target, BatchServer(world, advance="poll") as judge:
        models = _config(tmp_path, ("tm", target, False), ("jm", judge, True))
        cfg = run_config(
            target, tmp_path / "run", model="tm", judge="jm", models_config=[models], batch=True, batch_poll_s=0.01
        )
        res = run_evaluation(cfg)
        assert _online_chats(target) == N and _online_chats(judge) == 0 and len(_creates(judge)) == 1
    assert res.scores.counts["scored"] == N


def test_batch_mistakes_are_one_line_errors(tmp_path, cli):
    with ScriptedServer(world) as server:
        models = _config(tmp_path, ("tm", server, False))
        base = ["run", "-s", "child", "-n", "1", "--models-config", models, "--model", "tm", "--judge", "tm"]
        for extra, needle in (
            (["--batch"], "--batch: neither the model nor the judge can use a provider batch API"),
            (["--no-wait"], "go with --batch"),
        ):
            done = cli(*base, "--out", str(tmp_path / "x"), *extra)
            assert done.returncode == 2, done.stderr
            assert needle in done.stderr and len(done.stderr.strip().splitlines()) == 1
        assert server.requests == []


def test_no_wait_api_raises_batches_submitted(tmp_path):
    with BatchServer(world, advance="manual") as server:
        with pytest.raises(BatchesSubmitted):
            _batched(tmp_path, server, batch_no_wait=True)
    ledger = RunDir(tmp_path / "run").read_records("batches.jsonl", BatchRecord)
    assert [r.event for r in ledger] == ["submitted"]


def test_a_panels_judges_share_one_round(tmp_path):
    """Two judges (two models of one server): the answers' batch, then both judges' batches in one round."""
    with BatchServer(world, advance="poll", models=("scripted-model", "second")) as server:
        entries = {
            "bm": {"model_name": "scripted-model", "base_url": server.base_url, "batch": True},
            "b2": {"model_name": "second", "base_url": server.base_url, "batch": True},
        }
        (tmp_path / "models.yaml").write_text(yaml.safe_dump(entries))
        cfg = run_config(
            server,
            tmp_path / "run",
            model="bm",
            judge="bm,b2",
            models_config=[str(tmp_path / "models.yaml")],
            batch=True,
            batch_poll_s=0.01,
        )
        res = run_evaluation(cfg)
        assert len(_creates(server)) == 3 and _online_chats(server) == 0
    events = [r["event"] for r in records(tmp_path / "run" / "batches.jsonl")]
    assert events == ["submitted", "collected", "submitted", "submitted", "collected", "collected"]
    assert res.scores.counts["scored"] == N
