"""No credential leaks: one canary placed everywhere a user can put one, searched for everywhere specalign writes.

The canary goes into ``OPENAI_API_KEY``, a variable named by ``api_key_env``, base URL userinfo,
a base URL's query string and ``OPENAI_BASE_URL``. Every file the commands write (names included), everything they print,
and every response the gateway sends is searched for it raw, escaped, URL-encoded, and as the
Basic-auth token of the userinfo.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from scripted_server import DEFAULT_MODEL, Reply, ScriptedServer
from specalign._secrets import Scrubber, header_value_problem, redact_text, redact_url, secret_forms, url_secrets
from specalign.errors import ConfigError
from specalign.models import parse_model_spec, settings_from_config
from specalign.runs import RunConfig
from specbench_world import world

REPO = Path(__file__).resolve().parent.parent
#: every form of the canary starts with this (raw, repr, JSON, URL-encoded); searched for case-insensitively
CORE = "CANARYs3cr3t"
CANARY = CORE + "+/=x"  # characters that URL-encoding and escaping change
USER = CORE + "User"
ENC = quote(CANARY, safe="")


def canary_url(port: int) -> str:
    """A base URL carrying the canary in its userinfo and its query string."""
    return f"http://{quote(USER, safe='')}:{ENC}@127.0.0.1:{port}/v1?api_key={ENC}&token={ENC}"


def needles() -> list[bytes]:
    basic = base64.b64encode(f"{USER}:{CANARY}".encode()).decode()
    return [CORE.lower().encode(), basic.lower().encode(), basic.lower().rstrip("=").encode()]


def leaks_in(text: str | bytes) -> list[bytes]:
    data = (text.encode() if isinstance(text, str) else text).lower()
    return [n for n in needles() if n in data]


def leaks_under(root: Path) -> list[str]:
    """Every file and folder under ``root`` whose name or bytes hold the canary."""
    found = []
    for p in sorted(root.rglob("*")):
        if leaks_in(str(p.relative_to(root))):
            found.append(f"name: {p}")
        if p.is_file() and leaks_in(p.read_bytes()):
            found.append(f"content: {p}")
    return found


def cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    full = {**os.environ, **env, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "specalign.cli", *args], capture_output=True, text=True, env=full, cwd=cwd, timeout=300
    )


# -- the building blocks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:pass@host:8000/v1", "http://***@host:8000/v1"),
        ("https://host/v1?api_key=abc&key=def&token", "https://host/v1?api_key=***&key=***&***"),
        ("http://u:p#w@host/v1?key=1#frag", "http://***@host/v1?key=***#***"),  # an unescaped '#' in a password
        ("http://u:p@ss@host/v1", "http://***@host/v1"),
        ("https://api.openai.com/v1", "https://api.openai.com/v1"),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_redact_text_finds_every_url_including_comma_separated_endpoints():
    spec = "openai:m@http://a:SECRET1@h1/v1,http://b:SECRET2@h2/v1?k=SECRET3"
    assert redact_text(spec) == "openai:m@http://***@h1/v1,http://***@h2/v1?k=***"
    assert redact_text("chat call to http://u:SECRET@h/v1 failed") == "chat call to http://***@h/v1 failed"


def test_url_secrets_are_raw_and_decoded():
    found = url_secrets("http://us%40er:p%3Ass@h/v1?api_key=Q%20Q")
    assert {"us@er", "p:ss", "p%3Ass", "Q Q", "Q%20Q"} <= set(found)


def test_scrubber_removes_raw_escaped_and_url_encoded_forms():
    key = "CANARYs3cr3t\nwith é/+"
    scrub = Scrubber([key])
    for form in (key, repr(key)[1:-1], json.dumps(key)[1:-1], quote(key, safe=""), quote(key).lower()):
        assert form in secret_forms(key) or form.lower() in {f.lower() for f in secret_forms(key)}
        out = scrub(f"before {form} after")
        assert "CANARY" not in out and out.startswith("before ") and out.endswith(" after"), out


def test_short_keys_do_not_mangle_text():
    text = "the prompt exceeds the available context size; key x was sent"
    assert Scrubber(["x"])(text) == text  # too short to tell from text: left alone
    assert Scrubber(["size"])(text) == text.replace("size;", "***;")  # whole tokens only
    assert Scrubber(["exceed"])(text) == text  # not inside a longer word
    assert Scrubber(["prompt exceeds"])(text).startswith("the *** the")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("sk-abc123", None),
        ("abc\ndef", "a line break"),
        ("abc\x00", "a control character"),
        ("Bearer sk", "a space or tab"),
        ("sk-é", "a non-ASCII character"),
    ],
)
def test_header_value_problem(value, problem):
    assert header_value_problem(value) == problem


def test_settings_hold_redacted_keys_and_public_urls(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    url = canary_url(9)
    settings = parse_model_spec(f"openai:{DEFAULT_MODEL}@{url}")
    assert settings.base_urls == [url]  # the real URL still reaches the client
    assert not leaks_in(settings.key) and not leaks_in(json.dumps(settings.public_dict()))
    assert settings.key == f"openai:{DEFAULT_MODEL}@http://***@127.0.0.1:9/v1?api_key=***&token=***"
    cfg = settings_from_config("m", {"model_name": "m", "base_url": url}, "models.yaml")
    assert not leaks_in(json.dumps(cfg.public_dict()))
    assert not leaks_in(str(RunConfig(model=f"openai:{DEFAULT_MODEL}@{url}").out_dir()))


@pytest.mark.parametrize(
    "url",
    [
        "ftp://h/v1",
        "127.0.0.1:8000/v1",
        "http:///v1",
        f"{USER}:{ENC}@host/v1",
        "http://[::1/v1",
        "http://h:port/v1",
        "http://h /v1",
        f"http://{USER}:{CANARY}@h/v1",
    ],
)
def test_a_base_url_that_is_not_http_is_one_line_without_its_credentials(url):
    with pytest.raises(ConfigError, match="not an http") as info:
        parse_model_spec(f"openai:m@{url}")
    assert not leaks_in(str(info.value))


@pytest.mark.parametrize("key", ["abc\ndef", "abc\rdef", "abc\x7fdef", "abcdéf", "Bearer abcdef"])
def test_a_malformed_key_is_refused_before_anything_is_written(tmp_path, key):
    """Exit 2, one line naming the variable and not the key; no run directory, no call."""
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
            cwd=tmp_path,
            env={"OPENAI_API_KEY": key},
        )
        assert server.request_count == 0
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "OPENAI_API_KEY" in lines[0], r.stderr
    assert "abc" not in r.stderr and "def" not in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_malformed_key_in_an_api_key_env_variable_names_that_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-abc\n")
    assert settings_from_config("m", {"model_name": "m", "base_url": "http://h/v1"}, "x.yaml")  # stripped: fine
    monkeypatch.setenv("MY_KEY", "sk-a\nbc")
    with pytest.raises(ConfigError, match="MY_KEY") as info:
        settings_from_config("m", {"model_name": "m", "base_url": "http://h/v1", "api_key_env": "MY_KEY"}, "x.yaml")
    assert "sk-a" not in str(info.value)


# -- the canary, end to end -----------------------------------------------------------------------


def test_canary_never_reaches_run_files_reports_exports_or_the_console(tmp_path):
    inputs, work = tmp_path / "in", tmp_path / "work"
    inputs.mkdir()
    work.mkdir()
    env = {"OPENAI_API_KEY": CANARY, "CANARY_KEY": CANARY, "SPECALIGN_CACHE_DIR": str(work / "cache")}
    outputs: list[str] = []

    def run(*args: str, code: int = 0) -> subprocess.CompletedProcess:
        r = cli(*args, cwd=work, env=env)
        outputs.extend([r.stdout, r.stderr])
        assert r.returncode == code, r.stderr
        return r

    with ScriptedServer(world) as server:
        url = canary_url(server.port)
        spec = f"openai:{DEFAULT_MODEL}@{url}"
        models = inputs / "models.yaml"
        models.write_text(
            f'target:\n  model_name: {DEFAULT_MODEL}\n  base_url: "{url}"\n'
            f"  api_key_env: CANARY_KEY\n  max_retries: 0\n"
        )
        # the first call fails at the upstream, which echoes the key and the URL into its message
        server.script(Reply.error(500, f"upstream exploded; key {CANARY} at {url} ({ENC})"))
        run(
            "run",
            "--models-config",
            str(models),
            "--model",
            "target",
            "--judge",
            spec,
            "-s",
            "child",
            "--limit",
            "2",
            "--concurrency",
            "1",
            "--out",
            str(work / "run1"),
        )
        gens = [json.loads(x) for x in (work / "run1" / "generations.jsonl").read_text().splitlines()]
        errors = [g["error"] for g in gens if g["status"] == "error"]
        assert len(errors) == 1 and "http://***@127.0.0.1" in errors[0] and "***" in errors[0], errors
        env["OPENAI_BASE_URL"] = url  # the SDK's own variable: a fifth place for the canary
        run("run", "--model", f"openai:{DEFAULT_MODEL}", "--judge", spec, "-s", "child", "--limit", "1")  # default out
        defaults = list((work / "runs").iterdir())
        assert len(defaults) == 1, defaults
        server.script(Reply.error(401, f"Incorrect API key provided: {CANARY}"))
        denied = run(
            "run",
            "--model",
            spec,
            "--judge",
            spec,
            "-s",
            "code",
            "--limit",
            "1",
            "--no-cache",
            "--out",
            str(work / "denied"),
            code=3,
        )
        assert "authentication failed for http://***@127.0.0.1" in denied.stderr, denied.stderr
        calls = [r for r in server.requests if r.method == "POST"]
        assert calls and all(r.headers["authorization"].startswith("Basic ") for r in calls)  # userinfo, as before
        assert all(r.path == f"/v1/chat/completions?api_key={ENC}&token={ENC}" for r in calls), (
            "the query string reaches the upstream"
        )
    run1, default = str(work / "run1"), str(defaults[0])
    run("score", run1)
    run("score", default, "--json")
    run("report", run1, default, "-o", str(work / "report.html"))
    run("export", run1, default, "-o", str(work / "verdicts.csv"), "--with-text")
    run("export", run1, default, "-o", str(work / "verdicts.jsonl"), "--with-text")
    for fmt in ("table", "json", "csv", "markdown"):
        run("compare", run1, default, "--format", fmt)
    run("cache")
    assert (work / "report.html").stat().st_size > 0 and (work / "verdicts.csv").stat().st_size > 0
    assert leaks_under(work) == []
    assert [leaks_in(o) for o in outputs if leaks_in(o)] == []


def test_canary_never_reaches_gateway_responses_logs_or_monitor_files(tmp_path):
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from gateway_proc import running_gateway

    env = {"OPENAI_API_KEY": CANARY}
    responses: list[str] = []

    def record(r) -> None:  # noqa: ANN001
        responses.append(str(r.status_code) + "\n" + "\n".join(f"{k}: {v}" for k, v in r.headers.items()))
        responses.append(r.text)

    with ScriptedServer(world) as up, ScriptedServer(world) as judge:
        spec, judge_spec = (f"openai:{DEFAULT_MODEL}@{canary_url(s.port)}" for s in (up, judge))
        with running_gateway(
            "-s",
            "child",
            "--method",
            "vanilla",
            "-m",
            spec,
            "--monitor",
            "1",
            "--judge",
            judge_spec,
            env=env,
            cwd=tmp_path,
        ) as gw:

            def ask(text: str, **kw) -> httpx.Response:  # noqa: ANN003
                body = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": text}], **kw}
                r = httpx.post(f"{gw.base_url}/chat/completions", json=body, timeout=60)
                record(r)
                return r

            assert ask("a fine question").status_code == 200
            assert ask("a streamed question", stream=True).status_code == 200
            up.script(Reply.error(400, f"rejected: key {CANARY} for {canary_url(up.port)}"))
            assert ask("rejected upstream").status_code == 400
            up.script(*[Reply.error(500, f"boom {CANARY}", headers={"Retry-After": "0"})] * 6)
            failed = ask("failing upstream")
            assert failed.status_code == 502 and "http://***@127.0.0.1" in failed.text, failed.text
            up.script(Reply.error(401, f"Incorrect API key provided: {CANARY}"))
            assert ask("denied upstream").status_code == 502
            for path in ("/health", "/v1/models", f"/v1/models/{DEFAULT_MODEL}", "/metrics", "/status", "/nope"):
                record(httpx.get(gw.url + path, timeout=30))
            assert gw.stop() == 0
            printed = gw.output
    assert [r for r in responses if leaks_in(r)] == []
    assert not leaks_in(printed), printed
    live = list((tmp_path / "runs").iterdir())
    assert live and all(p.name.startswith("live-") for p in live)
    assert leaks_under(tmp_path) == []
