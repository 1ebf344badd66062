"""The model-call cache: a corrupt file is set aside and the run goes on; an unusable folder is one line,
exit 2, before anything is written; the key covers every setting that changes what an entry reads as."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripted_server import DEFAULT_MODEL, Reply, ScriptedServer
from specalign.errors import ConfigError
from specalign.models import CallCache, Completion, Message, create_model, settings_from_config
from specbench_world import world

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "specalign.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def filled_cache(path: Path, n: int = 2000) -> None:
    cache = CallCache(path)
    for i in range(n):
        cache.put(f"k{i}", Completion(text="x" * 300))
    cache.close()


def corrupt(path: Path, how: str) -> None:
    if how == "garbage":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"this is not a database\n" * 100)
    else:  # truncated: a valid header, most pages gone
        filled_cache(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_a_corrupt_cache_is_set_aside_with_a_warning_and_the_run_goes_on(tmp_path, how):
    cache_dir = tmp_path / "cache"
    corrupt(cache_dir / "calls.sqlite", how)
    with ScriptedServer(world) as server:
        spec = f"openai:{DEFAULT_MODEL}@{server.base_url}"
        r = cli(
            "run",
            "--model",
            spec,
            "--judge",
            spec,
            "-s",
            "child",
            "--limit",
            "1",
            "--cache-dir",
            str(cache_dir),
            "--out",
            str(tmp_path / "run"),
            cwd=tmp_path,
        )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "was corrupt: moved it to" in r.stderr, r.stderr
    names = sorted(p.name for p in cache_dir.iterdir())
    assert any(n.startswith("calls.sqlite.corrupt-") for n in names), names
    assert len(CallCache(cache_dir / "calls.sqlite")) == 2  # the fresh cache holds this run's calls


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_cache_command_on_a_corrupt_file_is_no_traceback(tmp_path, how):
    corrupt(tmp_path / "calls.sqlite", how)
    for args in ((), ("--clear",)):
        r = cli("cache", "--cache-dir", str(tmp_path), *args, cwd=tmp_path)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr


def test_corruption_found_during_a_run_sets_the_file_aside_and_goes_on(tmp_path):
    path = tmp_path / "calls.sqlite"
    filled_cache(path)
    cache = CallCache(path)
    with open(path, "r+b") as f:  # the file goes bad under an open cache
        f.truncate(path.stat().st_size // 3)
    assert cache.get("k1999") is None and cache.get("k1") is None  # misses, not crashes
    cache.put("new", Completion(text="y"))
    assert cache.get("new").text == "y" and len(cache) == 1
    cache.close()
    assert any(p.name.startswith("calls.sqlite.corrupt-") for p in tmp_path.iterdir())


def test_a_file_shaped_cache_dir_is_one_line_before_the_run_directory_is_made(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with ScriptedServer(world) as server:
        spec = f"openai:{DEFAULT_MODEL}@{server.base_url}"
        r = cli(
            "run",
            "--model",
            spec,
            "--judge",
            spec,
            "-s",
            "child",
            "--limit",
            "1",
            "--cache-dir",
            str(blocker),
            "--out",
            str(tmp_path / "run"),
            cwd=tmp_path,
        )
        assert server.request_count == 0
    assert r.returncode == 2, r.stderr
    error = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "--no-cache" in error[0] and "not a folder" in error[0], r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()
    r = cli("cache", "--cache-dir", str(blocker), "--clear", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_cache_dir_is_a_config_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match="--no-cache"):
            CallCache(folder / "calls.sqlite")
    finally:
        folder.chmod(0o755)


async def test_entries_differing_only_in_thought_markers_do_not_share_cache_entries(tmp_path):
    """The backend writes a separate reasoning text between the markers, so an entry made with one
    pair of markers would put the thought inside the answer read with another."""
    with ScriptedServer(lambda body: Reply("the answer", reasoning_content="the thought")) as server:
        base = {"model_name": DEFAULT_MODEL, "base_url": server.base_url}
        think = settings_from_config("think", base, "models.yaml")
        reason = settings_from_config(
            "reason", {**base, "thought_start": "<reasoning>", "thought_end": "</reasoning>"}, "models.yaml"
        )
        cache = CallCache(tmp_path / "calls.sqlite")
        texts = []
        for settings in (think, reason, think, reason):
            model = create_model(settings, cache)
            texts.append((await model.generate([Message(role="user", content="hi")])).text)
            await model.aclose()
        cache.close()
    assert server.chat_count == 2  # one call per pair of markers, then cache hits
    assert texts[0] == texts[2] == "<think>the thought</think>the answer"
    assert texts[1] == texts[3] == "<reasoning>the thought</reasoning>the answer"


def test_default_markers_keep_the_keys_made_before(tmp_path):
    from specalign.models._cache import cache_key

    settings = settings_from_config("m", {"model_name": "m", "base_url": "http://127.0.0.1:9/v1"}, "x.yaml")
    model = create_model(settings)
    request = model.request([Message(role="user", content="hi")])
    assert model.key_for(request) == cache_key(
        {"backend": model.backend.identity(), "request": request.model_dump(mode="json")}
    )


def test_a_cache_sqlite_cannot_write_is_a_config_error(tmp_path, monkeypatch):
    """What a read-only folder or file gives, even where the tests run as root."""
    import sqlite3

    from specalign.models import _cache

    def readonly(*_a, **_k):
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(_cache.sqlite3, "connect", readonly)
    with pytest.raises(ConfigError, match="readonly database.*--cache-dir.*--no-cache"):
        CallCache(tmp_path / "calls.sqlite")
