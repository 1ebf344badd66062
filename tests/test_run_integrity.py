"""Run directories under attack: two processes, outputs over inputs, foreign folders, broken records and
manifests, a crashing worker, hostile option values. Every refusal is one line and exit 2; nothing is lost."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from repo_paths import REPO
from run_world import evaluate, model_spec, records, run_cli, run_config, slowed, start_cli
from scripted_server import ScriptedServer
from specalign.errors import RunDirError
from specalign.runs import Evaluation, RunDir
from specbench_world import world
from waiting import wait_until, wait_until_async


def _one_line_error(p: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 2 and a single 'error:' line on stderr holding every needle; no traceback."""
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and len(lines) == 1 and lines[0].startswith("error:"), p.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def _snapshot(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def server():
    """One server for the module: its address is part of the model's identity, so runs can be resumed."""
    with ScriptedServer(world) as s:
        yield s


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, server) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    evaluate(server, out)
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(finished_run, dst)
    return dst


# -- 1. one process per run directory ----------------------------------------------------------------------------
def _holds_lock(out: Path) -> bool:
    lock = out / ".lock"
    return lock.is_file() and lock.read_text().strip() != ""


def _child_run(server: ScriptedServer, out: Path, n: int) -> list[str]:
    """``specalign run`` of ``n`` child prompts, two at a time, no cache."""
    spec = model_spec(server)
    return ["run", "-s", "child", "-n", str(n), "-m", spec, "-j", spec, "-o", str(out), "-c", "2", "--no-cache"]


def test_second_run_on_the_same_directory_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    release = threading.Event()

    def held(body: dict) -> str:  # the first run's calls wait until the second run has been turned away
        release.wait(60)
        return world(body)

    with ScriptedServer(held) as server:
        args = _child_run(server, out, 6)
        first = start_cli(*args)
        wait_until(lambda: _holds_lock(out), 60, f"the first run to hold {out / '.lock'}", process=first)
        second = run_cli(*args)
        release.set()
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    _one_line_error(second, str(out), "in use", f"pid {first.pid}")
    gens, judged = records(out / "generations.jsonl"), records(out / "judgments.jsonl")
    assert len(gens) == len({g["sample_id"] for g in gens}) == 6  # each sample generated once
    assert len(judged) == len({j["sample_id"] for j in judged}) == 6


def test_lock_of_a_killed_run_does_not_block_the_next(tmp_path):
    out = tmp_path / "run"
    with ScriptedServer(slowed(0.05)) as server:
        args = _child_run(server, out, 8)
        killed = start_cli(*args)
        wait_until(lambda: records(out / "judgments.jsonl"), 60, "a first judged sample", process=killed)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert str(killed.pid) in (out / ".lock").read_text()  # the holder's note stays; the lock itself is gone
        again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert len({j["sample_id"] for j in records(out / "judgments.jsonl")}) == 8


def test_in_process_holder_blocks_a_run_and_score_write(run_copy):
    holder = RunDir(run_copy)
    holder.lock("test")
    try:
        before = _snapshot(run_copy)
        with ScriptedServer(world) as server:
            with pytest.raises(RunDirError, match="in use"):
                evaluate(server, run_copy)
            assert server.chat_count == 0
        _one_line_error(run_cli("score", str(run_copy), "--write"), "in use", f"pid {os.getpid()}")
        assert run_cli("score", str(run_copy), "--json").returncode == 0  # reading needs no lock
        assert _snapshot(run_copy) == before
    finally:
        holder.unlock()
    assert run_cli("score", str(run_copy), "--write").returncode == 0


# -- 2. outputs that are inputs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["export", "report"])
@pytest.mark.parametrize("how", ["judgments.jsonl", "generations.jsonl", "new-file-inside.html", "symlink", "hardlink"])
def test_output_over_an_input_is_refused_and_nothing_is_written(run_copy, tmp_path, command, how):
    if how == "symlink":
        output = tmp_path / "link.jsonl"
        output.symlink_to(run_copy / "judgments.jsonl")
    elif how == "hardlink":
        output = tmp_path / "hard.jsonl"
        os.link(run_copy / "generations.jsonl", output)
    else:
        output = run_copy / how
    before = _snapshot(run_copy)
    p = run_cli(command, str(run_copy), "-o", str(output), *(["-f", "jsonl"] if command == "export" else []))
    _one_line_error(p, "--output")
    assert _snapshot(run_copy) == before and not (run_copy / "new-file-inside.html").exists()


def test_report_to_a_pipe_writes_to_it_and_never_replaces_it(run_copy, tmp_path):
    """A special file (a pipe here; /dev/null, /dev/stdout alike) is written to, never renamed over."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    p = run_cli("report", str(run_copy), "-o", str(fifo))
    if reader.is_alive():  # the pipe was never opened (replaced instead): let the reader go
        with open(fifo, "wb"):
            pass
    reader.join(10)
    assert p.returncode == 0, p.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and got and got[0].startswith(b"<!DOCTYPE html>")


# -- 3. --out at a folder that is not a run ------------------------------------------------------------------------
@pytest.mark.parametrize("content", ["notes", "records-without-manifest"])
def test_out_at_a_foreign_folder_is_refused(tmp_path, content):
    out = tmp_path / "mine"
    out.mkdir()
    if content == "notes":
        (out / "notes.txt").write_text("keep me")
    else:
        (out / "generations.jsonl").write_text('{"sample_id": "child/x"}\n')
    before = _snapshot(out)
    with ScriptedServer(world) as server:
        spec = model_spec(server)
        p = run_cli("run", "-s", "child", "-n", "1", "-m", spec, "-j", spec, "-o", str(out))
        assert server.chat_count == 0
    _one_line_error(p, str(out), "not a run directory")
    assert _snapshot(out) == before and sorted(os.listdir(out)) == sorted(before)


def test_out_at_an_empty_folder_or_inside_the_data_is_decided_right(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(REPO / "src" / "specalign" / "data", data)
    empty = tmp_path / "empty"
    empty.mkdir()
    with ScriptedServer(world) as server:
        assert evaluate(server, empty, scenarios=["child"], limit=1).scores.counts["scored"] == 1
        spec = model_spec(server)
        for out in (data, data / "child" / "runs", data / "child" / "prompts.yaml"):
            p = run_cli("run", "-d", str(data), "-s", "child", "-n", "1", "-m", spec, "-j", spec, "-o", str(out))
            assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert not (data / "child" / "runs").exists()


# -- 4. records that parse but are broken --------------------------------------------------------------------------
def _break_records(run: Path) -> list[str]:
    """Five kinds of broken judgment and one broken generation; returns the samples they were about."""
    judged = (run / "judgments.jsonl").read_text().splitlines()
    broken = []
    j = json.loads(judged[0])
    j["verdicts"].pop("B1")  # a spec without its verdict
    broken.append(j["sample_id"])
    judged[0] = json.dumps(j)
    j = json.loads(judged[1])
    j["calls"] = "many"  # a field of the wrong type
    broken.append(j["sample_id"])
    judged[1] = json.dumps(j)
    j = json.loads(judged[2])
    broken.append(j["sample_id"])
    j["verdicts"]["S1"] = {"verdict": "MAYBE", "reason": ""}
    judged[2] = json.dumps(j)
    judged += ["{not json", "[1, 2]", json.dumps({**j, "scenario": "nowhere", "sample_id": "nowhere/x"})]
    (run / "judgments.jsonl").write_text("\n".join(judged) + "\n")
    gens = (run / "generations.jsonl").read_text().splitlines()
    g = json.loads(gens[-1])
    g["usage"] = "lots"
    broken.append(g["sample_id"])
    gens[-1] = json.dumps(g)
    (run / "generations.jsonl").write_text("\n".join(gens) + "\n")
    return broken


def test_broken_records_are_skipped_with_a_warning_and_redone_by_the_next_run(run_copy, tmp_path, server):
    broken = set(_break_records(run_copy))
    score = run_cli("score", str(run_copy), "--json")
    assert score.returncode == 0 and "Traceback" not in score.stderr, score.stderr
    rep = json.loads(score.stdout)
    assert rep["counts"]["pending"] == len(broken) and rep["counts"]["scored"] == 6 - len(broken)
    warnings = [ln for ln in score.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 7 and len(rep["skipped_records"]) == 7
    assert any("judgments.jsonl:1:" in w and "B1" in w for w in warnings)
    assert any("generations.jsonl:6:" in w and "usage" in w for w in warnings)
    for command, out in (("export", tmp_path / "v.csv"), ("report", tmp_path / "r.html")):
        p = run_cli(command, str(run_copy), "-o", str(out))
        assert p.returncode == 0 and "Traceback" not in p.stderr and "judgments.jsonl:7:" in p.stderr, p.stderr
    assert run_cli("compare", str(run_copy)).returncode == 0
    n0 = server.chat_count
    result = evaluate(server, run_copy, use_cache=False)
    redone = {r.json["messages"][-1]["content"] for r in server.chat_requests[n0:]}
    assert result.scores.counts == {"selected": 6, "scored": 6, "unscored": 0, "pending": 0}
    assert len(redone) == len(broken) + 1  # one judgment per broken sample, plus the broken generation again
    rescore = run_cli("score", str(run_copy), "--json")
    remaining = [ln for ln in rescore.stderr.splitlines() if ln.startswith("warning:")]
    assert len(remaining) == 3  # only the lines no later record replaced: not JSON, not an object, no scenario


def test_a_huge_record_line_is_skipped_without_reading_it_whole(run_copy, monkeypatch):
    from specalign.runs import _store

    monkeypatch.setattr(_store, "MAX_RECORD_BYTES", 4096)
    with open(run_copy / "judgments.jsonl", "a") as f:
        f.write('{"sample_id": "' + "x" * 20000 + '"}\n')
    rd = RunDir(run_copy)
    rd.read_manifest()
    assert len(list(rd.judgments())) == 6
    assert "longer than" in rd.problem_lines()[0] and "judgments.jsonl:7:" in rd.problem_lines()[0]


@pytest.mark.parametrize(
    "change, needles",
    [
        (lambda m: m.update(format_version=99), ["manifest.json", "format_version 99", "reads 1"]),
        (lambda m: m.update(format_version="1"), ["manifest.json", "format_version"]),
        (lambda m: m["judge"].pop("key"), ["manifest.json", "judge.key"]),
        (lambda m: m["data"]["scenarios"].pop("code"), ["manifest.json", "code"]),
        (lambda m: m.update(alpha=7), ["manifest.json", "alpha"]),
        (lambda m: m.update(na_policy="sometimes"), ["manifest.json", "na_policy"]),
        (
            lambda m: m["data"]["scenarios"]["child"].update(behavioral_weights=[1.0]),
            ["manifest.json", "behavioral_weights"],
        ),
        (lambda m: m.update(method="vanilla"), ["manifest.json", "method"]),
    ],
)
def test_malformed_manifest_is_one_line_naming_file_and_field(run_copy, tmp_path, change, needles):
    manifest = json.loads((run_copy / "manifest.json").read_text())
    change(manifest)
    (run_copy / "manifest.json").write_text(json.dumps(manifest))
    before = _snapshot(run_copy)
    for args in (
        ["score", str(run_copy)],
        ["export", str(run_copy), "-o", str(tmp_path / "v.csv")],
        ["report", str(run_copy), "-o", str(tmp_path / "r.html")],
        ["compare", str(run_copy)],
    ):
        _one_line_error(run_cli(*args), *needles)
    with ScriptedServer(world) as server:
        spec = model_spec(server)
        p = run_cli("run", "-s", "child", "-s", "code", "-n", "3", "-m", spec, "-j", spec, "-o", str(run_copy))
        assert server.chat_count == 0
    _one_line_error(p, *needles)
    assert _snapshot(run_copy) == before and not (tmp_path / "v.csv").exists() and not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("selection", ['{"a": 1}', "[1]", '["child/x", "child/x"]', '["elsewhere/1"]', "nope"])
def test_malformed_selection_is_one_line_and_a_run_rewrites_it(run_copy, tmp_path, selection, server):
    (run_copy / "selection.json").write_text(selection)
    _one_line_error(run_cli("score", str(run_copy)), "selection.json")
    _one_line_error(run_cli("export", str(run_copy), "-o", str(tmp_path / "v.csv")), "selection.json")
    assert not (tmp_path / "v.csv").exists()
    n0 = server.chat_count
    result = evaluate(server, run_copy)
    assert server.chat_count == n0
    assert result.scores.counts["scored"] == 6 and len(json.loads((run_copy / "selection.json").read_text())) == 6


# -- 6. one failing worker -----------------------------------------------------------------------------------------
class Boom(RuntimeError):
    pass


def test_a_worker_crash_cancels_the_others_keeps_finished_records_and_surfaces_once(tmp_path):
    out = tmp_path / "run"
    with ScriptedServer(slowed(0.02)) as server:
        ev = Evaluation(run_config(server, out, scenarios=["child"], limit=12, concurrency=3, use_cache=False))
        original = ev.method.run
        crash_prompt = ev.samples[6][1].id
        earlier = {f"{scenario.key}/{prompt.id}" for scenario, prompt in ev.samples[:6]}

        def earlier_judged() -> bool:
            return earlier <= {j["sample_id"] for j in records(out / "judgments.jsonl")}

        async def run(target, scenario, prompt, **kw):
            if prompt.id == crash_prompt:
                await wait_until_async(earlier_judged, 60, "the samples before it to be judged")  # others finish first
                raise Boom("unexpected")
            return await original(target, scenario, prompt, **kw)

        ev.method.run = run
        with pytest.raises(Boom):
            asyncio.run(ev.run())
        n = server.chat_count
        wait_until(lambda: server.open_connections == 0, 30, "the run to close its connections")
        assert server.chat_count == n  # nothing kept calling after the error
    gens, judged = records(out / "generations.jsonl"), records(out / "judgments.jsonl")
    assert judged and {j["sample_id"] for j in judged} <= {g["sample_id"] for g in gens}
    assert f"child/{crash_prompt}" not in {g["sample_id"] for g in gens}
    assert not (out / ".lock").read_text()  # released


def test_a_failing_progress_callback_is_not_swallowed(tmp_path):
    calls = []

    def progress(stats):
        calls.append(stats.done)
        if len(calls) == 2:
            raise Boom("display broke")

    with ScriptedServer(world) as server:
        with pytest.raises(Boom):
            asyncio.run(Evaluation(run_config(server, tmp_path / "run", scenarios=["child"])).run(progress))
    assert len(records(tmp_path / "run" / "judgments.jsonl")) >= 2


# -- 7. hostile option values --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, field",
    [
        (["run", "--limit", "-1"], "--limit"),
        (["run", "--alpha", "nan"], "--alpha"),
        (["run", "--alpha", "1e999"], "--alpha"),
        (["run", "--concurrency", "0"], "--concurrency"),
        (["run", "--concurrency", "99999999999999999999"], "--concurrency"),
        (["run", "--stop-after-failures", "-3"], "--stop-after-failures"),
        (["run", "--out", ""], "--out"),
        (["run", "--data", ""], "--data"),
        (["run", "--judge-mode", "loud"], "--judge-mode"),
        (["run", "--method", ""], "--method"),
        (["run", "--na-policy", "x"], "--na-policy"),
        (["score", "RUN", "--alpha", "nan"], "--alpha"),
        (["score", "RUN", "--alpha", "-1"], "--alpha"),
        (["report", "RUN", "--alpha", "inf", "-o", "OUT.html"], "--alpha"),
        (["report", "RUN", "-o", ""], "--output"),
        (["report", "RUN", "-o", "."], "--output"),
        (["export", "RUN", "-o", "OUT.txt"], "--output"),
        (["export", "RUN", "-o", "OUT.csv", "--format", "xml"], "--format"),
        (["compare", "RUN", "--alpha", "nan"], "--alpha"),
        (["compare", "RUN", "--format", "yaml"], "--format"),
        (["cache", "--cache-dir", ""], "--cache-dir"),
    ],
)
def test_hostile_option_values_are_one_line_exit_2_and_write_nothing(finished_run, tmp_path, args, field):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    args = [str(finished_run) if a == "RUN" else str(cwd / a[3:]) if a.startswith("OUT") else a for a in args]
    before = _snapshot(finished_run)
    p = run_cli(*args, timeout=60, cwd=cwd)
    _one_line_error(p, field)
    assert os.listdir(cwd) == [] and _snapshot(finished_run) == before


@pytest.mark.parametrize("out", ["/dev/full", "FILE", "FILE/run"])
def test_out_that_cannot_be_a_directory_is_one_line(tmp_path, out):
    (tmp_path / "file").write_text("x")
    out = out.replace("FILE", str(tmp_path / "file"))
    with ScriptedServer(world) as server:
        spec = model_spec(server)
        p = run_cli("run", "-s", "child", "-n", "1", "-m", spec, "-j", spec, "-o", out)
        assert server.chat_count == 0
    _one_line_error(p, out)
    assert (tmp_path / "file").read_text() == "x"


def test_cache_command_creates_nothing_to_show_an_empty_cache(tmp_path):
    folder = tmp_path / "no" / "cache"
    p = run_cli("cache", "--cache-dir", str(folder))
    assert p.returncode == 0 and "0 cached calls" in p.stdout
    assert not (tmp_path / "no").exists()


def test_without_selection_json_every_command_keeps_to_the_selected_scenarios(run_copy, tmp_path, server):
    evaluate(server, run_copy, scenarios=["child"])  # the same directory, now one scenario
    (run_copy / "selection.json").unlink()
    for args in (
        ["report", str(run_copy), "-o", str(tmp_path / "r.html")],
        ["score", str(run_copy), "--json"],
        ["export", str(run_copy), "-o", str(tmp_path / "v.csv")],
    ):
        p = run_cli(*args)
        assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert json.loads(run_cli("score", str(run_copy), "--json").stdout)["counts"]["selected"] == 3


def test_a_planted_lock_link_is_refused_and_its_target_untouched(run_copy, tmp_path, server):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (run_copy / ".lock").unlink(missing_ok=True)
    (run_copy / ".lock").symlink_to(victim)
    with pytest.raises(RunDirError, match=r"\.lock"):
        evaluate(server, run_copy)
    assert victim.read_text() == "keep"


def test_a_pipe_planted_as_a_record_file_fails_at_once(run_copy, server):
    (run_copy / "generations.jsonl").unlink()
    os.mkfifo(run_copy / "generations.jsonl")
    spec = model_spec(server)
    n0 = server.chat_count
    p = run_cli("run", "-s", "child", "-s", "code", "-n", "3", "-m", spec, "-j", spec, "-o", str(run_copy), timeout=60)
    assert p.returncode == 2 and "generations.jsonl" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert server.chat_count == n0


def test_a_record_holding_a_lone_surrogate_is_written_repaired_not_fatal(tmp_path, caplog):
    """The last line of defence: text that got past every repair does not stop the run for good."""
    from specalign.runs._records import GenerationRecord  # noqa: PLC0415
    from specalign.runs._store import RecordWriter  # noqa: PLC0415

    record = GenerationRecord(
        sample_id="s/p",
        scenario="s",
        prompt_id="p\ud800",
        label="safe",
        status="ok",
        prompt_sent="hi",
        response="bad \udc00 text",
    )
    writer = RecordWriter(tmp_path / "generations.jsonl")
    with caplog.at_level("WARNING", logger="specalign.runs"):
        writer.append(record)
    writer.close()
    row = json.loads((tmp_path / "generations.jsonl").read_text(encoding="utf-8"))
    assert row["prompt_id"] == "p\ufffd" and row["response"] == "bad \ufffd text"
    assert "lone surrogate" in caplog.text


def test_warnings_about_broken_records_show_escape_sequences_as_text(run_copy):
    """A record's field names come from the file: a warning that quotes them must not drive the terminal."""
    lines = (run_copy / "judgments.jsonl").read_text().splitlines()
    j = json.loads(lines[0])
    j["verdicts"]["\x1b]0;pwned\x07\x1b[2J"] = {"verdict": "MAYBE", "reason": ""}
    (run_copy / "judgments.jsonl").write_text("\n".join([json.dumps(j), *lines[1:]]) + "\n")
    score = run_cli("score", str(run_copy), "--json")
    assert score.returncode == 0, score.stderr
    assert "\x1b" not in score.stderr and "\\x1b]0;pwned\\x07" in score.stderr
