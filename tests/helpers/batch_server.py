"""OpenAI's Files and Batch APIs on 127.0.0.1, for tests: a ScriptedServer that also takes batches.

    with BatchServer(lambda body: "hello") as server:
        ...  # upload a JSONL file, create a batch of it (server.base_url, the SDK or any client)
        server.run_to_end()  # or step() one stage at a time; advance="poll" / "instant" move on their own
        assert server.batches[batch_id].status == "completed"

The batch's requests are answered as :class:`ScriptedServer` answers a chat call (its script queue, then
``responder``; a ``Reply.error`` becomes a failed request), and ``POST /v1/chat/completions`` still works, so a
test can compare the two on one server. Objects and files have the real API's shapes:

- ``POST /v1/files`` (multipart, ``purpose`` and ``file``), ``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``;
- ``POST /v1/batches``, ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``, ``GET /v1/batches``;
- a batch goes ``validating`` → ``in_progress`` → ``finalizing`` → ``completed``, or ``failed`` (its input file
  did not validate: ``errors.data`` with ``code``, ``line``, ``message``, ``param``), ``expired``
  (:meth:`BatchServer.expire`) or ``cancelling`` → ``cancelled``;
- output lines ``{id, custom_id, response: {status_code, request_id, body}, error: null}``; requests answered
  with an HTTP error go to the error file in the same shape, requests never run (expired, cancelled) go
  there as ``{response: null, error: {code: batch_expired | batch_cancelled, message}}``.

Like the real API, an upload is only checked for its purpose and file type; its lines are checked when the
batch validates. Every request is recorded (an upload as ``{"purpose", "filename", "content"}``).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

from scripted_server import (
    DEFAULT_MODEL,
    RecordedRequest,
    Reply,
    Responder,
    ScriptedServer,
    _completion,
    _error,
    _Handler,
    _headers,
    _route,
    _Server,
)

ENDPOINTS = ("/v1/chat/completions",)
COMPLETION_WINDOW = 24 * 3600
MAX_REQUESTS = 50_000
MAX_FILE_BYTES = 200 * 1024 * 1024
ENDED = ("completed", "failed", "expired", "cancelled")

Advance = Literal["manual", "poll", "instant"]


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def obj(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "expires_at": self.created_at + 30 * 86400,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


@dataclass
class Batch:
    """One batch and what its requests got; ``results[custom_id]`` is its output or error line."""

    id: str
    input_file_id: str
    endpoint: str
    metadata: dict[str, str] | None
    status: str = "validating"
    times: dict[str, int | None] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None

    @property
    def pending(self) -> list[tuple[str, dict[str, Any]]]:
        return [(c, b) for c, b in self.requests if c not in self.results]

    def counts(self) -> dict[str, int]:
        failed = sum(1 for r in self.results.values() if not _succeeded(r))
        return {"total": len(self.requests), "completed": len(self.results) - failed, "failed": failed}

    def obj(self) -> dict[str, Any]:
        stamps = ("in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled")
        created = self.times["created"] or 0
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": created,
            "expires_at": created + COMPLETION_WINDOW,
            **{f"{s}_at": self.times.get(s) for s in stamps},
            "request_counts": self.counts(),
            "metadata": self.metadata,
        }


class BatchServer(ScriptedServer):
    """A :class:`ScriptedServer` with the Files and Batch APIs.

    ``advance``: ``manual`` moves batches only on :meth:`step`, :meth:`run_to_end`, :meth:`expire`;
    ``poll`` moves a batch one stage each time it is read (``GET /v1/batches/{id}``); ``instant`` takes a
    batch to its end as soon as it is created or cancelled (the answer to the create still says
    ``validating``). ``per_step``: requests answered by one in-progress step (None: all of them).
    """

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        advance: Advance = "manual",
        per_step: int | None = None,
        models: tuple[str, ...] = (DEFAULT_MODEL,),
        api_key: str | None = None,
    ):
        super().__init__(responder, models=models, api_key=api_key)
        self.advance = advance
        self.per_step = per_step
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, Batch] = {}
        self._faults: deque[tuple[Reply, bool, str]] = deque()
        self._state = threading.RLock()

    def start(self) -> BatchServer:
        httpd = _Server(("127.0.0.1", 0), _BatchHandler)
        httpd.scripted = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> BatchServer:
        return self.start()

    # -- driving batches ------------------------------------------------------------------

    def step(self, batch_id: str | None = None) -> None:
        """Move one batch (or every batch not ended) one stage on."""
        with self._state:
            for batch in self._chosen(batch_id):
                self._step(batch)

    def run_to_end(self, batch_id: str | None = None) -> None:
        """Step a batch (or every batch) until it has ended."""
        with self._state:
            for batch in self._chosen(batch_id):
                while batch.status not in ENDED:
                    self._step(batch)

    def expire(self, batch_id: str | None = None) -> None:
        """The completion window runs out: requests not run yet are left undone (``batch_expired``)."""
        with self._state:
            for batch in self._chosen(batch_id):
                if batch.status in ("validating", "in_progress", "finalizing"):
                    self._end(batch, "expired")

    def fail_next(self, *replies: Reply, after: bool = False, path: str = "/") -> None:
        """Answer the next Files/Batch API requests that ``path`` matches (a route prefix, ``/batches``, or a
        method and one, ``POST /batches``) with ``replies`` (errors, broken bodies). ``after``: do what each
        request asks first, then answer with the reply (an answer lost on the way back)."""
        with self._lock:
            self._faults.extend((r, after, path) for r in replies)

    def tamper(self, file_id: str, change: Callable[[bytes], bytes]) -> None:
        """Replace a stored file's bytes with ``change(bytes)`` (a hostile or broken provider)."""
        with self._state:
            self.files[file_id].content = change(self.files[file_id].content)

    def file_lines(self, file_id: str | None) -> list[dict[str, Any]]:
        """A stored JSONL file's lines, decoded."""
        if file_id is None:
            return []
        return [json.loads(line) for line in self.files[file_id].content.splitlines() if line.strip()]

    @property
    def batch_requests(self) -> list[RecordedRequest]:
        """Every Files and Batch API request received."""
        with self._lock:
            return [r for r in self.requests if _route(r.path).startswith(("/files", "/batches"))]

    def _chosen(self, batch_id: str | None) -> list[Batch]:
        return [self.batches[batch_id]] if batch_id is not None else list(self.batches.values())

    # -- the state machine ----------------------------------------------------------------

    def _step(self, batch: Batch) -> None:
        if batch.status == "validating":
            errors, requests = self._validate(batch)
            if errors:
                batch.errors = errors
                batch.status, batch.times["failed"] = "failed", _now()
            else:
                batch.requests = requests
                batch.status, batch.times["in_progress"] = "in_progress", _now()
        elif batch.status == "in_progress":
            todo = batch.pending
            for custom_id, body in todo[: self.per_step] if self.per_step is not None else todo:
                batch.results[custom_id] = self._run(custom_id, body)
            if not batch.pending:
                batch.status, batch.times["finalizing"] = "finalizing", _now()
        elif batch.status == "finalizing":
            self._end(batch, "completed")
        elif batch.status == "cancelling":
            self._end(batch, "cancelled")

    def _validate(self, batch: Batch) -> tuple[list[dict[str, Any]], list[tuple[str, dict[str, Any]]]]:
        """The input file's lines as the real API checks them: errors (code, line, message, param), or requests."""
        content = self.files[batch.input_file_id].content
        lines = content.splitlines()
        errors: list[dict[str, Any]] = []
        requests: list[tuple[str, dict[str, Any]]] = []
        seen: set[str] = set()
        model: str | None = None

        def error(code: str, line: int | None, message: str, param: str | None = None) -> None:
            errors.append({"code": code, "line": line, "message": message, "param": param})

        if not content.strip():
            error("empty_file", None, "The batch input file is empty.")
        if len(lines) > MAX_REQUESTS:
            error("too_many_tasks", None, f"The batch input file has more than {MAX_REQUESTS} requests.")
        for n, raw in enumerate(lines, 1):
            try:
                line = json.loads(raw)
            except ValueError:
                error("invalid_json_line", n, "This line is not parseable as valid JSON.")
                continue
            if not isinstance(line, dict):
                error("invalid_json_line", n, "This line is not a JSON object.")
                continue
            missing = [k for k in ("custom_id", "method", "url", "body") if k not in line]
            if missing:
                error("missing_required_parameter", n, f"Missing required parameter: '{missing[0]}'.", missing[0])
                continue
            custom_id, body = line["custom_id"], line["body"]
            if not isinstance(custom_id, str) or not custom_id:
                error("invalid_value", n, "custom_id must be a non-empty string.", "custom_id")
            elif custom_id in seen:
                error(
                    "duplicate_custom_id",
                    n,
                    "The custom_id for this request is a duplicate of another request. The custom_id parameter "
                    "must be unique for each individual request in a batch.",
                    "custom_id",
                )
            if line["method"] != "POST":
                error("invalid_value", n, "Only POST requests are supported in a batch.", "method")
            if line["url"] != batch.endpoint:
                error("url_mismatch", n, "The URL provided for this request does not match the batch endpoint.", "url")
            if not isinstance(body, dict):
                error("invalid_value", n, "body must be a JSON object.", "body")
                continue
            if model is None:
                model = body.get("model")
            elif body.get("model") != model:
                error("model_mismatch", n, "All requests in a batch must use the same model.", "body.model")
            if isinstance(custom_id, str) and custom_id:
                seen.add(custom_id)
                requests.append((custom_id, body))
        return errors, requests

    def _run(self, custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """One request of a batch, answered as the chat route would answer it."""
        if not isinstance(body.get("messages"), list):
            status, answer = 400, _error("'messages' is a required property", "invalid_request_error", None)
        elif body.get("model") not in self.models:
            msg = f"The model `{body.get('model')}` does not exist or you do not have access to it."
            status, answer = 404, _error(msg, "invalid_request_error", "model_not_found")
        else:
            reply = self._next_reply(body)
            if reply.reset:
                status, answer = 500, _error("The server had an error processing your request.", "server_error", None)
            elif reply.body is not None or reply.status != 200:
                status, answer = reply.status, _json_body(reply.body)
            else:
                text = reply.text if reply.text is not None else self._text_for(body)
                status, answer = 200, _completion(body, text, reply)
        response = {"status_code": status, "request_id": f"req_{uuid.uuid4().hex}", "body": answer}
        return {"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": custom_id, "response": response, "error": None}

    def _end(self, batch: Batch, status: str) -> None:
        """Write the result files and end the batch; requests never run go to the error file."""
        code, message = {
            "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
            "cancelled": ("batch_cancelled", "This request was not executed because the batch was cancelled."),
        }.get(status, ("", ""))
        done = [r for c, _ in batch.requests if (r := batch.results.get(c)) is not None]
        undone = [
            {
                "id": f"batch_req_{uuid.uuid4().hex}",
                "custom_id": c,
                "response": None,
                "error": {"code": code, "message": message},
            }
            for c, _ in batch.pending
        ]
        output = [r for r in done if _succeeded(r)]
        failed = [r for r in done if not _succeeded(r)] + (undone if code else [])
        if output:
            batch.output_file_id = self._store(f"batch_{batch.id}_output.jsonl", "batch_output", _jsonl(output)).id
        if failed:
            batch.error_file_id = self._store(f"batch_{batch.id}_error.jsonl", "batch_output", _jsonl(failed)).id
        batch.status, batch.times[status] = status, _now()

    def _store(self, filename: str, purpose: str, content: bytes) -> StoredFile:
        stored = StoredFile(f"file-{uuid.uuid4().hex[:24]}", filename, purpose, content)
        self.files[stored.id] = stored
        return stored

    def _fault(self, method: str, path: str) -> tuple[Reply, bool] | None:
        """The first queued fault for a ``method`` request to ``path``, taken off the queue."""
        with self._lock:
            for fault in self._faults:
                if f"{method} {_route(path)}".startswith(fault[2]) or _route(path).startswith(fault[2]):
                    self._faults.remove(fault)
                    return fault[0], fault[1]
            return None

    # -- the API --------------------------------------------------------------------------

    def _upload(self, form: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        purpose, upload = form.get("purpose"), form.get("file")
        if not isinstance(upload, tuple):
            return 400, _error("'file' is a required property", "invalid_request_error", None)
        purposes = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
        if purpose not in purposes:
            return 400, _error(f"'{purpose}' is not one of {list(purposes)} - 'purpose'", "invalid_request_error", None)
        filename, content = upload
        if purpose == "batch" and not filename.endswith(".jsonl"):
            return 400, _error("Invalid file format for Batch API. Must be .jsonl", "invalid_request_error", None)
        if len(content) > MAX_FILE_BYTES:
            return 400, _error("File is too large.", "invalid_request_error", None)
        with self._state:
            return 200, self._store(filename, purpose, content).obj()

    def _create(self, body: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict):
            return 400, _error("We could not parse the JSON body of your request.", "invalid_request_error", None)
        for name in ("input_file_id", "endpoint", "completion_window"):
            if name not in body:
                return 400, _error(f"Missing required parameter: '{name}'.", "invalid_request_error", name)
        if body["completion_window"] != "24h":
            msg = f"Invalid value: '{body['completion_window']}'. Supported values are: '24h'."
            return 400, _error(msg, "invalid_request_error", "completion_window")
        if body["endpoint"] not in ENDPOINTS:
            return 400, _error(f"Invalid value: '{body['endpoint']}'.", "invalid_request_error", "endpoint")
        metadata = body.get("metadata")
        if metadata is not None and not _valid_metadata(metadata):
            return 400, _error(
                "Invalid metadata: at most 16 string pairs, keys ≤ 64 and values ≤ 512 characters.",
                "invalid_request_error",
                "metadata",
            )
        with self._state:
            file = self.files.get(body["input_file_id"])
            if file is None:
                return 404, _error(f"No such File object: {body['input_file_id']}", "invalid_request_error", None)
            if file.purpose != "batch":
                return 400, _error(
                    "The input file must be uploaded with purpose 'batch'.", "invalid_request_error", "input_file_id"
                )
            batch = Batch(
                f"batch_{uuid.uuid4().hex[:24]}", file.id, body["endpoint"], metadata, times={"created": _now()}
            )
            self.batches[batch.id] = batch
            answer = batch.obj()
            if self.advance == "instant":
                self.run_to_end(batch.id)
            return 200, answer

    def _cancel(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        with self._state:
            batch = self.batches.get(batch_id)
            if batch is None:
                return 404, _error(f"No batch found with id '{batch_id}'.", "invalid_request_error", None)
            if batch.status in ENDED:
                msg = f"Cannot cancel a batch with status '{batch.status}'."
                return 400, _error(msg, "invalid_request_error", None)
            if batch.status != "cancelling":
                batch.status, batch.times["cancelling"] = "cancelling", _now()
            answer = batch.obj()
            if self.advance == "instant":
                self.run_to_end(batch.id)
            return 200, answer

    def _read(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        with self._state:
            batch = self.batches.get(batch_id)
            if batch is None:
                return 404, _error(f"No batch found with id '{batch_id}'.", "invalid_request_error", None)
            if self.advance == "poll":
                self._step(batch)
            return 200, batch.obj()

    def _list(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        try:
            limit = min(100, max(1, int(query.get("limit", "20"))))
        except ValueError:
            return 400, _error("Invalid value for 'limit'.", "invalid_request_error", "limit")
        with self._state:
            newest = list(reversed(self.batches.values()))
        after = query.get("after")
        if after is not None:
            ids = [b.id for b in newest]
            newest = newest[ids.index(after) + 1 :] if after in ids else []
        page = newest[:limit]
        data = [b.obj() for b in page]
        return 200, {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(newest) > limit,
        }


class _BatchHandler(_Handler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802
        path = _route(self.path)
        if not path.startswith(("/files", "/batches")):
            super().do_GET()
            return
        srv: BatchServer = self.server.scripted  # type: ignore[assignment]
        srv._record(RecordedRequest("GET", self.path, _headers(self), None))
        if not self._authorized():
            return
        parts = path.strip("/").split("/")
        query = dict(parse_qsl(self.path.partition("?")[2]))
        if parts == ["batches"]:
            self._answer(srv, lambda: srv._list(query))
        elif len(parts) == 2 and parts[0] == "batches":
            self._answer(srv, lambda: srv._read(parts[1]))
        elif len(parts) in (2, 3) and parts[0] == "files" and parts[2:] in ([], ["content"]):
            self._file(srv, parts[1], content=len(parts) == 3)
        else:
            self._json(404, _error(f"Invalid URL (GET {self.path})", "invalid_request_error", None))

    def do_POST(self) -> None:  # noqa: N802
        path = _route(self.path)
        if not path.startswith(("/files", "/batches")):
            super().do_POST()
            return
        srv: BatchServer = self.server.scripted  # type: ignore[assignment]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        parts = path.strip("/").split("/")
        if parts == ["files"]:
            form = _multipart(self.headers.get("Content-Type", ""), raw)
            filename, content = form["file"] if isinstance(form.get("file"), tuple) else (None, None)
            kept = {"purpose": form.get("purpose"), "filename": filename, "content": content}
            srv._record(RecordedRequest("POST", self.path, _headers(self), kept))
            if self._authorized():
                self._answer(srv, lambda: srv._upload(form))
            return
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        srv._record(RecordedRequest("POST", self.path, _headers(self), body))
        if not self._authorized():
            return
        if parts == ["batches"]:
            self._answer(srv, lambda: srv._create(body))
        elif len(parts) == 3 and parts[0] == "batches" and parts[2] == "cancel":
            self._answer(srv, lambda: srv._cancel(parts[1]))
        else:
            self._json(404, _error(f"Invalid URL (POST {self.path})", "invalid_request_error", None))

    def _answer(self, srv: BatchServer, act: Callable[[], tuple[int, Any]]) -> None:
        """Do what the request asks and answer, unless a queued fault answers instead (before or after doing it)."""
        fault = srv._fault(self.command, self.path)
        if fault is not None and not fault[1]:
            self._reply(fault[0])
            return
        status, answer = act()
        if fault is not None:
            self._reply(fault[0])
        else:
            self._json(status, answer)

    def _reply(self, reply: Reply) -> None:
        if reply.reset:
            self._reset()
        else:
            body = reply.body if reply.body is not None else {}
            payload = (
                body
                if isinstance(body, bytes)
                else body.encode()
                if isinstance(body, str)
                else json.dumps(body).encode()
            )
            self._send(reply.status, payload, reply.headers)

    def _file(self, srv: BatchServer, file_id: str, *, content: bool) -> None:
        fault = srv._fault(self.command, self.path)
        if fault is not None:
            self._reply(fault[0])
            return
        with srv._state:
            stored = srv.files.get(file_id)
        if stored is None:
            self._json(404, _error(f"No such File object: {file_id}", "invalid_request_error", None))
        elif content:
            self._send(200, stored.content, {"Content-Type": "application/octet-stream"})
        else:
            self._json(200, stored.obj())


def _multipart(content_type: str, raw: bytes) -> dict[str, Any]:
    """A multipart/form-data body's fields (RFC 7578): text fields as str, file fields as (filename, bytes)."""
    kind, _, params = content_type.partition(";")
    boundary = dict(_param(p) for p in params.split(";") if "=" in p).get("boundary")
    form: dict[str, Any] = {}
    if kind.strip().lower() != "multipart/form-data" or not boundary:
        return form
    for part in raw.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        head, sep, payload = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            continue
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head.decode().split("\r\n"))}
        disposition = dict(_param(p) for p in headers.get("content-disposition", "").split(";") if "=" in p)
        name, filename = disposition.get("name"), disposition.get("filename")
        if name:
            payload = payload.removesuffix(b"\r\n")
            form[name] = (filename, payload) if filename is not None else payload.decode()
    return form


def _param(text: str) -> tuple[str, str]:
    key, _, value = text.strip().partition("=")
    return key.lower(), value.strip('"')


def _valid_metadata(metadata: Any) -> bool:
    return (
        isinstance(metadata, dict)
        and len(metadata) <= 16
        and all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512 for k, v in metadata.items()
        )
    )


def _succeeded(result: dict[str, Any]) -> bool:
    response = result.get("response")
    return result.get("error") is None and isinstance(response, dict) and response.get("status_code") == 200


def _json_body(body: dict[str, Any] | str | bytes | None) -> Any:
    """A scripted reply's body as the JSON value a result line carries."""
    if body is None or isinstance(body, dict):
        return body or {}
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    try:
        return json.loads(text)
    except ValueError:
        return text


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def _now() -> int:
    return int(time.time())
