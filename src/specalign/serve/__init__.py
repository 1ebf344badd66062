"""``specalign serve``: an OpenAI-compatible gateway that answers with a deliberation method under a
scenario's specs, and optionally judges a sample of its live answers.

Needs the ``serve`` extra (FastAPI, uvicorn). Routes live in ``_app.py``, the request path in
``_gateway.py``, the wire format in ``_protocol.py``, live judging in ``_monitor.py``.
"""

from ._config import DEFAULT_TOKEN_ENV, MonitorConfig, ServeConfig, ShadowConfig
from ._gateway import Gateway
from ._protocol import ChatInput, GatewayError, Reply, parse_chat_request
from ._server import build_gateway, serve, serve_async
from ._shadow import Shadow, build_shadow


def create_app(gateway: Gateway, monitor=None, shadow=None):  # noqa: ANN001, ANN201  (imports FastAPI lazily)
    """The FastAPI app of ``gateway`` (and ``monitor``, ``shadow``)."""
    from ._app import create_app as _create  # noqa: PLC0415

    return _create(gateway, monitor, shadow)


__all__ = [
    "DEFAULT_TOKEN_ENV",
    "ChatInput",
    "Gateway",
    "GatewayError",
    "MonitorConfig",
    "Reply",
    "ServeConfig",
    "Shadow",
    "ShadowConfig",
    "build_shadow",
    "build_gateway",
    "create_app",
    "parse_chat_request",
    "serve",
    "serve_async",
]
