"""``specalign serve``: the OpenAI-compatible gateway, from the command line."""

from __future__ import annotations

import importlib.util
import re

import typer

from .common import (
    MODEL_HELP,
    JudgeMode,
    JudgeModeOption,
    MethodParamOption,
    ModelsConfigOption,
    method_names,
    params_by_method,
    value,
)


def serve(
    scenario: list[str] = typer.Option(
        ...,
        "--scenario",
        "-s",
        help="Scenario key of --data, or a scenario folder; repeat or comma-separate "
        "to let clients choose (the first is the default).",
    ),
    method: list[str] | None = typer.Option(
        None,
        "--method",
        help="Method (see `specalign methods`); repeat or comma-separate to let clients choose "
        "(the first is the default; default align3).",
    ),
    model: str = typer.Option("local", "--model", "-m", help="Upstream model: " + MODEL_HELP),
    data: str = typer.Option(
        "bundled", "--data", "-d", help="Where scenario keys are looked up ('bundled', a data directory, 'hf:...')."
    ),
    method_param: MethodParamOption = None,
    models_config: ModelsConfigOption = None,
    served_model_name: str | None = typer.Option(
        None, "--served-model-name", help="The model id clients send (default: the upstream's name)."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. Anything but loopback needs a token."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port (0: any free port)."),
    token_env: str = typer.Option(
        "SPECALIGN_SERVE_TOKEN", "--token-env", help="Environment variable holding the bearer token clients must send."
    ),
    max_concurrency: int = typer.Option(
        256,
        "--max-concurrency",
        min=1,
        help="Requests in flight (beyond it: 429), and the upstream model's calls in "
        "flight (its config's max_concurrency may lower that per endpoint).",
    ),
    max_request_bytes: int = typer.Option(
        1_000_000, "--max-request-bytes", min=1024, help="Largest request body (413 beyond)."
    ),
    body_timeout: float = typer.Option(
        30.0,
        "--body-timeout",
        min=0.001,
        help="Seconds a client has to send its whole body once its headers are in "
        "(total, not idle time; 408 beyond). A request takes a --max-concurrency "
        "slot only once its body is in.",
    ),
    max_header_bytes: int = typer.Option(
        65_536,
        "--max-header-bytes",
        min=1024,
        help="Largest request line and headers together (431 beyond, checked before the token).",
    ),
    header_timeout: float = typer.Option(
        10.0,
        "--header-timeout",
        min=0.001,
        help="Seconds a client has to send its request line and headers, from the "
        "connection or its first byte (408 beyond).",
    ),
    max_connections: int = typer.Option(
        1024, "--max-connections", min=1, help="Open client connections (beyond: 503 and the new one is closed)."
    ),
    max_tokens_limit: int = typer.Option(
        8192, "--max-tokens-limit", min=1, help="Largest max_tokens a request may ask for."
    ),
    shutdown_timeout: float = typer.Option(
        60.0, "--shutdown-timeout", min=0, help="On SIGTERM/Ctrl-C, seconds to let in-flight requests finish."
    ),
    monitor: float = typer.Option(
        0.0,
        "--monitor",
        min=0.0,
        max=1.0,
        help="Share of answers to judge against the specs in the background (0: off).",
    ),
    judge: str = typer.Option("local", "--judge", "-j", help="Judge model for --monitor: " + MODEL_HELP),
    judge_mode: JudgeModeOption = JudgeMode.joint,
    judge_template: str | None = typer.Option(
        None, "--judge-template", help="Judge --monitor with your own prompt template (docs/judge.md); joint mode only."
    ),
    monitor_window: int = typer.Option(
        200, "--monitor-window", min=1, help="Judged answers per method and scenario in the sliding window."
    ),
    monitor_out: str | None = typer.Option(
        None,
        "--monitor-out",
        help="Folder for the judged samples, one run directory per method "
        "(default runs/live-<model>); open with `specalign report`.",
    ),
    monitor_workers: int = typer.Option(2, "--monitor-workers", min=1, help="Judge calls in flight."),
    monitor_queue: int = typer.Option(
        1000, "--monitor-queue", min=1, help="Answers waiting for the judge before new ones are dropped."
    ),
    monitor_drain: float = typer.Option(
        30.0,
        "--monitor-drain",
        min=0,
        help="At shutdown, seconds to finish waiting judgments (the rest are recorded unscored).",
    ),
) -> None:
    """Serve a model behind a scenario's specs and a deliberation method, as an OpenAI-compatible API.

    Clients change only their base_url (and send the token as API key when one is set). Routes:
    /v1/chat/completions (streaming too), /v1/models, /health, /metrics (Prometheus), /status.

    Limits: headers (--max-header-bytes, --header-timeout; checked before the token), bodies (--max-request-bytes, --body-timeout), --max-connections, --max-concurrency. The effective limits are printed at start-up; see docs/serve.md, "Limits and hostile clients".

    Example: specalign serve --scenario child  # Align3 on the embedded model, offline

    Example: specalign serve -s child --model qwen3 --models-config models.yaml  # an entry with prefill: true

    Example: specalign serve -s child,code --method align3,vanilla -m openai:gpt-4.1-mini -p align3.no_prefill=multi_turn --monitor 0.1 --judge openai:gpt-4.1
    """
    from .._secrets import redact_text  # noqa: PLC0415
    from ..errors import ConfigError  # noqa: PLC0415

    for module in ("fastapi", "uvicorn"):
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"the gateway needs {module}: pip install 'specalign[serve]'", field="serve")
    scenarios = _distinct(scenario, "--scenario", "scenario")
    if not scenarios:
        raise ConfigError("no scenario given: name one or more, comma-separated", field="--scenario")
    methods = method_names(_distinct(method or ["align3"], "--method", "method"))
    params = {k: v for k, v in params_by_method(methods, method_param or []).items() if v}
    out = monitor_out or f"runs/live-{re.sub(r'[^A-Za-z0-9._]+', '_', redact_text(model)).strip('_')[:60]}"
    config = _config(
        dict(
            data=data,
            scenarios=scenarios,
            methods=methods,
            method_params=params,
            model=model,
            models_config=models_config or [],
            served_model_name=served_model_name,
            host=host,
            port=port,
            token_env=token_env,
            max_concurrency=max_concurrency,
            max_request_bytes=max_request_bytes,
            max_tokens_limit=max_tokens_limit,
            body_timeout_s=body_timeout,
            max_header_bytes=max_header_bytes,
            header_timeout_s=header_timeout,
            max_connections=max_connections,
            graceful_shutdown_s=shutdown_timeout,
            monitor=dict(
                rate=monitor,
                judge=judge,
                judge_mode=value(judge_mode),
                judge_template=judge_template,
                window=monitor_window,
                out=out if monitor > 0 else None,
                workers=monitor_workers,
                queue=monitor_queue,
                drain_s=monitor_drain,
            ),
        )
    )
    from ..serve import serve as start  # noqa: PLC0415

    start(config)


#: the option of each configuration field (``monitor.alpha`` and friends have none: Python API only)
OPTIONS = {
    "data": "--data",
    "scenarios": "--scenario",
    "methods": "--method",
    "method_params": "--method-param",
    "model": "--model",
    "models_config": "--models-config",
    "served_model_name": "--served-model-name",
    "host": "--host",
    "port": "--port",
    "token_env": "--token-env",
    "max_concurrency": "--max-concurrency",
    "max_request_bytes": "--max-request-bytes",
    "max_header_bytes": "--max-header-bytes",
    "header_timeout_s": "--header-timeout",
    "body_timeout_s": "--body-timeout",
    "max_connections": "--max-connections",
    "max_tokens_limit": "--max-tokens-limit",
    "graceful_shutdown_s": "--shutdown-timeout",
    "monitor.rate": "--monitor",
    "monitor.judge": "--judge",
    "monitor.judge_mode": "--judge-mode",
    "monitor.judge_template": "--judge-template",
    "monitor.window": "--monitor-window",
    "monitor.out": "--monitor-out",
    "monitor.workers": "--monitor-workers",
    "monitor.queue": "--monitor-queue",
    "monitor.drain_s": "--monitor-drain",
}


def _distinct(items: list[str], option: str, what: str) -> list[str]:
    """The comma-separated or repeated names of ``option``, each once."""
    from ..errors import ConfigError  # noqa: PLC0415

    names = [n.strip() for item in items for n in item.split(",") if n.strip()]
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:
        raise ConfigError(
            f"{twice!r} is given twice; a gateway offers each {what} once (clients choose among "
            f"them with extra_body={{'specalign': {{'{what}': ...}}}})",
            field=option,
        )
    return names


def option_name(loc: tuple) -> str:
    """The command-line option of a configuration field (its dotted name when it has none)."""
    dotted = ".".join(str(x) for x in loc if not isinstance(x, int))
    return OPTIONS.get(dotted) or OPTIONS.get(dotted.split(".")[0]) or dotted


def _config(values: dict):  # noqa: ANN202
    from pydantic import ValidationError  # noqa: PLC0415

    from ..errors import ConfigError  # noqa: PLC0415
    from ..serve import ServeConfig  # noqa: PLC0415

    try:
        return ServeConfig(**values)
    except ValidationError as e:
        first = e.errors()[0]
        given = first.get("input")
        shown = f" (got {given!r})" if isinstance(given, (int, float, str)) and len(repr(given)) < 80 else ""
        raise ConfigError(f"{first['msg']}{shown}", field=option_name(tuple(first["loc"]))) from None
