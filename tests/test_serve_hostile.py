"""`specalign serve` against hostile clients, over raw sockets: header and body limits before auth,
slow clients, malformed JSON, disconnects, and HTTP that is not quite HTTP. Every refusal is bounded,
in OpenAI's error shape, and counted in /metrics."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import openai
import pytest

from gateway_proc import running_gateway, serve_command
from scripted_server import ScriptedServer
from specbench_world import world
from test_serve import MODEL, TOKEN, ask, client, metrics_of, upstream_spec

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "a story"}]}


def address(gw) -> tuple[str, int]:  # noqa: ANN001
    host, port = gw.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def connect(gw, timeout: float = 10.0) -> socket.socket:  # noqa: ANN001
    sock = socket.create_connection(address(gw), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response (status, lower-cased headers, body) read up to its Content-Length or the close."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict((k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:]))
    length = int(headers.get("content-length", -1))
    while length < 0 or len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def exchange(gw, data: bytes) -> tuple[int, dict[str, str], bytes]:  # noqa: ANN001
    with connect(gw) as sock:
        sock.sendall(data)
        return read_response(sock)


def closed(sock: socket.socket, within: float) -> bool:
    """Whether the peer closes ``sock`` within ``within`` seconds (anything it sends first is skipped)."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True


def error_of(status: int, headers: dict[str, str], body: bytes) -> dict:
    assert headers.get("content-type", "").startswith("application/json"), (status, headers, body)
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert b"Traceback" not in body
    return err


def chat_request(body: bytes, *, extra: str = "", content_type: str = "application/json") -> bytes:
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


@pytest.fixture(scope="module")
def upstream():
    with ScriptedServer(world) as server:
        yield server


# -- headers ----------------------------------------------------------------------------------------


def test_header_size_is_capped_before_auth(upstream):
    with running_gateway(
        "-s",
        "child",
        "--method",
        "vanilla",
        "-m",
        upstream_spec(upstream),
        "--max-header-bytes",
        "8192",
        env={"SPECALIGN_SERVE_TOKEN": TOKEN},
    ) as gw:
        status, headers, body = exchange(
            gw, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
        )
        assert status == 431 and error_of(status, headers, body)["code"] == "headers_too_large"
        assert headers["connection"] == "close"
        status, headers, body = exchange(
            gw, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(2000)) + b"\r\n"
        )
        assert status == 431, "many small headers add up"
        before = rss_mb(gw.proc.pid)
        socks, sent = [connect(gw) for _ in range(4)], [0] * 4
        for i, sock in enumerate(socks):  # four unfinished 20 MB headers: each is cut off near the cap
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Big: ")
            try:
                for _ in range(320):
                    sock.sendall(b"a" * 65536)
                    sent[i] += 65536
            except (BrokenPipeError, ConnectionResetError):
                pass
            sock.close()
        assert max(sent) < 20 << 20, "the gateway closed the connection"
        assert rss_mb(gw.proc.pid) - before < 40
        status, headers, body = exchange(gw, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Ok: " + b"a" * 6000 + b"\r\n\r\n")
        assert status == 200
        m = metrics_of(gw, {"Authorization": f"Bearer {TOKEN}"})
    assert m['specalign_requests_rejected_total{reason="headers_too_large"}'] >= 3
    assert 'specalign_requests_rejected_total{reason="auth"}' not in m, "refused before the token was looked at"


def test_header_read_time_is_capped(upstream):
    with running_gateway(
        "-s", "child", "--method", "vanilla", "-m", upstream_spec(upstream), "--header-timeout", "1"
    ) as gw:
        with connect(gw) as sock:  # sends nothing at all
            t0 = time.monotonic()
            assert closed(sock, 5) and time.monotonic() - t0 < 3
        with connect(gw) as sock:  # dribbles headers
            sock.sendall(b"GET /health HTTP/1.1\r\n")
            t0 = time.monotonic()
            try:
                for i in range(20):
                    sock.sendall(b"X-Slow-%d: 1\r\n" % i)
                    time.sleep(0.2)
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert time.monotonic() - t0 < 2.5
        with connect(gw) as sock:  # keep-alive: the clock starts again with each request
            for _ in range(3):
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                assert read_response(sock)[0] == 200
                time.sleep(0.6)
        with connect(gw) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            status, headers, body = read_response(sock)
            assert status == 408 and error_of(status, headers, body)["code"] == "header_timeout"
        assert metrics_of(gw)['specalign_requests_rejected_total{reason="header_timeout"}'] == 3


# -- bodies ------------------------------------------------------------------------------------------


def slow_body(gw, stop: threading.Event) -> socket.socket:  # noqa: ANN001
    """A connection that sends a chat request's headers, then one body byte every 0.3 s."""
    body = json.dumps(CHAT).encode()
    sock = connect(gw)
    sock.sendall(chat_request(body)[: -len(body)])

    def drip() -> None:
        for b in body:
            if stop.wait(0.3):
                return
            try:
                sock.sendall(bytes([b]))
            except OSError:
                return

    threading.Thread(target=drip, daemon=True).start()
    return sock


def test_slow_bodies_take_no_slot_and_time_out(upstream):
    stop = threading.Event()
    with running_gateway(
        "-s",
        "child",
        "--method",
        "vanilla",
        "-m",
        upstream_spec(upstream),
        "--max-concurrency",
        "1",
        "--body-timeout",
        "1.5",
    ) as gw:
        slow = [slow_body(gw, stop) for _ in range(3)]
        try:
            time.sleep(0.3)
            assert ask(client(gw), "not slow").choices[0].message.content.startswith("ANSWER[")
            t0 = time.monotonic()
            for sock in slow:
                status, headers, body = read_response(sock)
                assert status == 408 and error_of(status, headers, body)["code"] == "body_timeout"
            assert time.monotonic() - t0 < 3
        finally:
            stop.set()
            for sock in slow:
                sock.close()
        m = metrics_of(gw)
    assert m['specalign_requests_rejected_total{reason="body_timeout"}'] == 3
    assert m['specalign_requests_total{code="408",method="",scenario=""}'] == 3
    assert 'specalign_requests_rejected_total{reason="busy"}' not in m


def test_sigterm_with_a_slow_body_exits_promptly(upstream):
    stop = threading.Event()
    with running_gateway("-s", "child", "--method", "vanilla", "-m", upstream_spec(upstream)) as gw:
        sock = slow_body(gw, stop)
        time.sleep(0.5)
        t0 = time.monotonic()
        try:
            assert gw.stop(timeout=20) == 0
            assert time.monotonic() - t0 < 5
            status, headers, body = read_response(sock)
            assert status == 503 and error_of(status, headers, body)["code"] == "shutting_down"
        finally:
            stop.set()
            sock.close()
    assert "Traceback" not in gw.output and "ERROR" not in gw.output


def test_shutdown_timeout_cuts_slow_answers_with_a_503():
    with (
        ScriptedServer(world, latency=10) as slow,
        running_gateway(
            "-s", "child", "--method", "vanilla", "-m", upstream_spec(slow), "--shutdown-timeout", "0.5"
        ) as gw,
    ):
        with connect(gw) as sock:
            sock.sendall(chat_request(json.dumps(CHAT).encode()))
            deadline = time.monotonic() + 10
            while slow.chat_count == 0:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            t0 = time.monotonic()
            assert gw.stop(timeout=20) == 0
            assert time.monotonic() - t0 < 5
            status, headers, body = read_response(sock)
        assert status == 503 and error_of(status, headers, body)["code"] == "shutting_down"
    assert "Traceback" not in gw.output


# -- malformed JSON --------------------------------------------------------------------------------

MALFORMED = [
    (b"[" * 100_000 + b"]" * 100_000, None, "invalid_json"),
    (b'{"model": "m", "messages": ' + b"[" * 200 + b"]" * 200 + b"}", "messages", "invalid_json"),
    (
        b'{"model": "scripted-model", "temperature": NaN, "messages": [{"role": "user", "content": "x"}]}',
        "temperature",
        "invalid_number",
    ),
    (
        b'{"model": "scripted-model", "top_p": -Infinity, "messages": [{"role": "user", "content": "x"}]}',
        "top_p",
        "invalid_number",
    ),
    (
        b'{"model": "scripted-model", "max_tokens": 1e999, "messages": [{"role": "user", "content": "x"}]}',
        "max_tokens",
        "invalid_number",
    ),
    (
        b'{"model": "scripted-model", "messages": [{"role": "user", "content": "a \\ud800 b"}]}',
        "messages[0].content",
        "invalid_string",
    ),
    (b'{"model": "scripted-model", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}', None, "invalid_json"),
    (b'{"model": "scripted-model", "seed": "7", "messages": [{"role": "user", "content": "x"}]}', "seed", None),
    (b'{"model": "scripted-model", "max_tokens": ' + b"9" * 5000 + b', "messages": []}', None, "invalid_json"),
    (
        b'{"model": "' + b"m" * 100_000 + b'", "messages": [{"role": "user", "content": "x"}]}',
        "model",
        "model_not_found",
    ),
]


def test_malformed_json_is_a_counted_400(upstream):
    with running_gateway("-s", "child", "--method", "vanilla", "-m", upstream_spec(upstream)) as gw:
        n = upstream.chat_count
        for raw, param, code in MALFORMED:
            status, headers, body = exchange(gw, chat_request(raw))
            err = error_of(status, headers, body)
            expected = 404 if code == "model_not_found" else 400
            assert (status, err["param"], err["code"]) == (expected, param, code), (raw[:80], err)
            assert err["type"] == "invalid_request_error" and len(err["message"]) < 400
        emoji = b'{"model": "scripted-model", "messages": [{"role": "user", "content": "\\ud83e\\udd89 story"}]}'
        assert exchange(gw, chat_request(emoji))[0] == 200, "a surrogate pair is a character"
        assert upstream.chat_count == n + 1
        m = metrics_of(gw)
    assert m['specalign_requests_total{code="400",method="",scenario=""}'] == len(MALFORMED) - 1
    assert m['specalign_requests_total{code="404",method="",scenario=""}'] == 1
    assert m['specalign_requests_rejected_total{reason="invalid"}'] == len(MALFORMED)
    assert "Traceback" not in gw.output


# -- disconnects -----------------------------------------------------------------------------------


class HangingUpstream:
    """An upstream that answers GET and takes POSTs without ever answering; it records when the
    gateway closes such a connection."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.received = threading.Event()
        self.closed = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            if data.startswith(b"GET"):
                body = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode()
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                    b"Connection: close\r\n\r\n%s" % (len(body), body)
                )
                return
            self.received.set()
            conn.settimeout(30)
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass
            self.closed.set()

    def close(self) -> None:
        self.listener.close()


def test_client_disconnect_cancels_the_upstream_call():
    up = HangingUpstream()
    try:
        with running_gateway("-s", "child", "--method", "vanilla", "-m", f"openai:{MODEL}@{up.base_url}") as gw:
            with connect(gw) as sock:
                sock.sendall(chat_request(json.dumps(CHAT).encode()))
                assert up.received.wait(10), "the request reached the upstream"
            assert up.closed.wait(5), "the gateway hung up on the upstream once its client left"
            with connect(gw) as sock:  # leaves half-way through its body
                sock.sendall(chat_request(json.dumps(CHAT).encode())[:-10])
                time.sleep(0.2)
            deadline = time.monotonic() + 5
            while (m := metrics_of(gw)).get('specalign_client_disconnects_total{stage="body"}') != 1:
                assert time.monotonic() < deadline, m
                time.sleep(0.05)
    finally:
        up.close()
    assert m['specalign_requests_total{code="499",method="vanilla",scenario="child"}'] == 1
    assert m['specalign_requests_total{code="499",method="",scenario=""}'] == 1
    assert m['specalign_client_disconnects_total{stage="body"}'] == 1
    assert not any('code="200"' in k for k in m) and m["specalign_requests_in_flight"] == 0


def test_a_bug_is_an_openai_shaped_500(monkeypatch):
    """In process: whatever fails inside the gateway, the client gets JSON and the request is counted."""
    import asyncio

    from specalign.serve import Gateway, ServeConfig, create_app

    gateway = Gateway(
        ServeConfig(scenarios=["child"], methods=["vanilla"], model=f"openai:{MODEL}@http://127.0.0.1:9/v1")
    )

    async def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("a bug")

    monkeypatch.setattr(gateway, "answer", broken)

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(gateway))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            return await c.post("/v1/chat/completions", json=CHAT)

    r = asyncio.run(call())
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    assert "Traceback" not in r.text and "a bug" not in r.text
    assert gateway.metrics.requests.get(code="500", method="vanilla", scenario="child") == 1
    assert gateway.in_flight == 0


# -- HTTP that is not quite HTTP ---------------------------------------------------------------------


def test_hostile_http_gets_bounded_json_errors(upstream):
    with running_gateway(
        "-s",
        "child",
        "--method",
        "vanilla",
        "-m",
        upstream_spec(upstream),
        "--max-request-bytes",
        "4096",
        env={"SPECALIGN_SERVE_TOKEN": TOKEN},
    ) as gw:
        auth = f"Authorization: Bearer {TOKEN}\r\n"
        ok = json.dumps(CHAT).encode()
        cases = [
            (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400, "invalid_http"),
            (
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
                400,
                "invalid_http",
            ),
            (
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"0\r\n\r\n",
                400,
                "invalid_http",
            ),
            (
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                400,
                "invalid_http",
            ),
            (b"GARBAGE\r\n\r\n", 400, "invalid_http"),
            (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Bad\x00Name: 1\r\n\r\n", 400, "invalid_http"),
            (chat_request(ok, extra=auth, content_type="text/plain"), 415, "unsupported_media_type"),
            (
                chat_request(ok, extra=auth).replace(b"Content-Type: application/json\r\n", b""),
                415,
                "unsupported_media_type",
            ),
            (chat_request(b"x" * 5000, extra=auth), 413, "request_too_large"),
            (
                f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\n".encode()
                + b"".join(b"400\r\n" + b"x" * 1024 + b"\r\n" for _ in range(5))
                + b"0\r\n\r\n",
                413,
                "request_too_large",
            ),
            (
                f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
                "Content-Length: 99999999999\r\nExpect: 100-continue\r\n\r\n".encode(),
                413,
                "request_too_large",
            ),
            (chat_request(ok, extra="Authorization: Basic dXNlcjpwYXNz\r\n"), 401, "invalid_api_key"),
            (chat_request(ok, extra=auth + "Authorization: Bearer wrong\r\n"), 401, "invalid_api_key"),
            (b"CONNECT evil:443 HTTP/1.1\r\nHost: evil:443\r\n\r\n", 400, "invalid_http"),
            (b"GET /he\xffalth HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid_http"),
            (b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n", 400, "invalid_http"),
            (
                b"OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: x\r\nOrigin: http://evil.example\r\n"
                b"Access-Control-Request-Method: POST\r\n\r\n",
                405,
                "method_not_allowed",
            ),
            (chat_request(ok, extra="Authorization: Bearer\r\n"), 401, "invalid_api_key"),
            (chat_request(ok, extra="Authorization: Bearer \xe9\xe8\xff\r\n"), 401, "invalid_api_key"),
            (f"GET /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode(), 405, "method_not_allowed"),
            (f"DELETE /metrics HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode(), 405, "method_not_allowed"),
            (f"GET /v1/../metrics HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode(), 404, "not_found"),
            (f"GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode(), 404, "not_found"),
            (
                f"GET /v1/models/..%2f..%2fetc%2fpasswd HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode(),
                404,
                "model_not_found",
            ),
            (f"GET /{'a' * 5000} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode(), 404, "not_found"),
            (f"GET /v1/models/{'a' * 30000} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode(), 404, "model_not_found"),
        ]
        for raw, status, code in cases:
            got, headers, body = exchange(gw, raw if isinstance(raw, bytes) else raw.encode("latin-1"))
            err = error_of(got, headers, body)
            assert (got, err["code"]) == (status, code), (raw[:120], got, body[:300])
            assert len(body) < 1000
        with connect(gw) as sock:  # a header value in latin-1 bytes, and 500 small headers: fine
            sock.sendall(
                f"GET /v1/models HTTP/1.1\r\nHost: x\r\n{auth}X-Name: ".encode()
                + b"\xe9t\xe9\xff\r\n"
                + b"".join(b"X-H%d: v\r\n" % i for i in range(500))
                + b"\r\n"
            )
            assert read_response(sock)[0] == 200
        m = metrics_of(gw, {"Authorization": f"Bearer {TOKEN}"})
    assert m['specalign_requests_rejected_total{reason="bad_http"}'] == 9
    assert m['specalign_requests_rejected_total{reason="content_type"}'] == 2
    assert m['specalign_requests_rejected_total{reason="too_large"}'] == 3
    assert "Traceback" not in gw.output


def test_trailers_and_chunk_framing_are_bounded(upstream):
    with running_gateway(
        "-s", "child", "--method", "vanilla", "-m", upstream_spec(upstream), "--max-request-bytes", "4096"
    ) as gw:
        before, sent = rss_mb(gw.proc.pid), 0
        with connect(gw) as sock:  # an empty chunked body, then a trailer that never ends
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: "
            )
            try:
                for _ in range(320):
                    sock.sendall(b"a" * 65536)
                    sent += 65536
            except (BrokenPipeError, ConnectionResetError):
                pass
        assert sent < 20 << 20 and rss_mb(gw.proc.pid) - before < 40
        with connect(gw) as sock:  # one-byte chunks with 1000-byte extensions: 300 KB on the wire for 300 bytes
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" + (b"1;" + b"e" * 1000 + b"\r\n \r\n") * 300
            )
            status, headers, body = read_response(sock)
        assert status == 413 and error_of(status, headers, body)["code"] == "request_too_large"
        m = metrics_of(gw)
    assert m['specalign_requests_total{code="413",method="",scenario=""}'] == 2
    assert "Traceback" not in gw.output


def test_connection_cap(upstream):
    with running_gateway(
        "-s", "child", "--method", "vanilla", "-m", upstream_spec(upstream), "--max-connections", "4"
    ) as gw:
        held = [connect(gw) for _ in range(4)]
        try:
            time.sleep(0.2)
            with connect(gw) as sock:
                status, headers, body = read_response(sock)
            assert status == 503 and error_of(status, headers, body)["code"] == "too_many_connections"
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.2)
        assert httpx.get(gw.url + "/health").status_code == 200
        assert metrics_of(gw)['specalign_requests_rejected_total{reason="connections"}'] == 1


# -- the command line ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, option",
    [
        ("scenarios", [], "--scenario"),
        ("graceful_shutdown_s", -1, "--shutdown-timeout"),
        ("max_concurrency", 0, "--max-concurrency"),
        ("header_timeout_s", 0, "--header-timeout"),
        ("max_header_bytes", 10, "--max-header-bytes"),
    ],
)
def test_configuration_errors_name_the_real_option(field, value, option):
    from specalign._cli.serve import _config
    from specalign.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        _config({"scenarios": ["child"], field: value})
    assert str(e.value).startswith(f"{option}: "), str(e.value)


def test_every_configuration_field_has_its_option():
    from specalign._cli.serve import OPTIONS
    from specalign.serve import MonitorConfig, ServeConfig

    sections = {"monitor", "shadow", "enforce"}
    fields = {f for f in ServeConfig.model_fields if f not in sections}
    fields |= {f"monitor.{f}" for f in MonitorConfig.model_fields if f not in ("alpha", "na_policy", "seed")}
    for section in ("shadow", "enforce"):
        model = ServeConfig.model_fields[section].annotation
        fields |= {f"{section}.{f}" for f in model.model_fields}  # type: ignore[union-attr]
    assert fields == set(OPTIONS)


def test_monitor_errors_name_the_real_option():
    from specalign._cli.serve import _config
    from specalign.errors import ConfigError

    for monitor, option in [
        ({"rate": 2}, "--monitor"),
        ({"drain_s": -1}, "--monitor-drain"),
        ({"workers": 0}, "--monitor-workers"),
        ({"alpha": 3}, "monitor.alpha"),
    ]:
        with pytest.raises(ConfigError) as e:
            _config({"scenarios": ["child"], "monitor": monitor})
        assert str(e.value).startswith(f"{option}: "), str(e.value)


@pytest.mark.parametrize(
    "args, needle",
    [
        (
            ["-s", "child", "--method", "vanilla,vanilla"],
            "--method: 'vanilla' is given twice; a gateway offers each method",
        ),
        (["-s", "child,child"], "--scenario: 'child' is given twice"),
        (["-s", ","], "--scenario: no scenario given"),
        (["-s", "child", "--max-header-bytes", "999999999"], "--max-header-bytes: Input should be less than or equal"),
    ],
)
def test_cli_messages_are_serves_own(args, needle):
    import subprocess

    r = subprocess.run(serve_command(*args), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and needle in r.stderr, r.stderr
    assert "ablation" not in r.stderr and "--scenarios" not in r.stderr


def test_limits_are_printed_at_start(upstream):
    with running_gateway("-s", "child", "--method", "vanilla", "-m", upstream_spec(upstream)) as gw:
        deadline = time.monotonic() + 5
        while "limits:" not in gw.output and time.monotonic() < deadline:
            time.sleep(0.05)
    assert (
        "limits: 256 requests in flight, body <= 1000000 bytes, max_tokens <= 8192, headers <= 65536 bytes in "
        "10 s, body in 30 s, <= 1024 connections"
    ) in gw.output
    assert openai is not None
