"""``specalign serve``: the OpenAI-compatible gateway, from the command line."""

from __future__ import annotations

import importlib.util
import re

import typer

from .common import (
    JUDGE_MODE_HELP,
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
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        max=64,
        help="Gateway processes sharing the port; /metrics, /status and --monitor-out cover all of them.",
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
    shadow: str | None = typer.Option(
        None,
        "--shadow",
        help="Also run this method on a sample of requests, after the reply, and judge both answers "
        "(with --judge, even when --monitor is off): live paired ΔSAR on /status and /metrics, and a "
        "run directory pair under <monitor-out>/shadow for `specalign compare`.",
    ),
    shadow_rate: float = typer.Option(
        0.1, "--shadow-rate", min=0.0, max=1.0, help="Share of answered requests the --shadow method also runs on."
    ),
    shadow_queue: int = typer.Option(
        100, "--shadow-queue", min=1, help="Requests waiting for the --shadow method before new ones are dropped."
    ),
    shadow_workers: int = typer.Option(
        2, "--shadow-workers", min=1, max=256, help="Shadow comparisons (method run and both judgments) in flight."
    ),
    shadow_window: int = typer.Option(
        1000, "--shadow-window", min=1, help="Latest judged pairs per served method that the live ΔSAR covers."
    ),
    shadow_seed: int | None = typer.Option(
        None, "--shadow-seed", help="Seed of the draw that picks the shadowed requests (default: random)."
    ),
    enforce: bool = typer.Option(
        False, "--enforce", help="Judge every answer against the safety specs before returning it (docs/serve.md)."
    ),
    enforce_judge: str | None = typer.Option(
        None, "--enforce-judge", help="Judge model for --enforce, a small fast one (default: --judge). " + MODEL_HELP
    ),
    enforce_judge_mode: JudgeMode = typer.Option(
        JudgeMode.joint, "--enforce-judge-mode", help="How the --enforce judge asks: " + JUDGE_MODE_HELP
    ),
    enforce_action: str = typer.Option(
        "refuse", "--enforce-action", help="On a violation: refuse, regenerate (then refuse) or flag."
    ),
    enforce_attempts: int = typer.Option(
        2, "--enforce-attempts", min=1, max=10, help="Regenerations before refusing (--enforce-action regenerate)."
    ),
    enforce_on_error: str = typer.Option(
        "refuse", "--enforce-on-error", help="When the enforcement judge fails: refuse (fail closed) or pass."
    ),
    enforce_window: int = typer.Option(
        400, "--enforce-window", min=1, help="Characters of a streamed answer per enforcement check."
    ),
    enforce_refusal: str | None = typer.Option(
        None,
        "--enforce-refusal",
        help="The refusal text for scenarios that have none of their own (scenario.yaml's refusal:); "
        "{scenario} becomes the scenario's name.",
    ),
    otel: bool = typer.Option(
        False,
        "--otel",
        help="OpenTelemetry traces (pip install 'specalign[otel]'), exported over OTLP/HTTP as the "
        "standard OTEL_EXPORTER_OTLP_* variables say (default http://localhost:4318).",
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
            workers=workers,
            otel=otel,
            monitor=dict(
                rate=monitor,
                judge=judge,
                judge_mode=value(judge_mode),
                judge_template=judge_template,
                window=monitor_window,
                out=out if monitor > 0 or shadow else None,
                workers=monitor_workers,
                queue=monitor_queue,
                drain_s=monitor_drain,
            ),
            shadow=dict(
                method=shadow.strip() if shadow else None,
                rate=shadow_rate,
                queue=shadow_queue,
                workers=shadow_workers,
                window=shadow_window,
                seed=shadow_seed,
            ),
            enforce=dict(
                enabled=enforce,
                judge=enforce_judge,
                judge_mode=value(enforce_judge_mode),
                action=enforce_action,
                attempts=enforce_attempts,
                on_error=enforce_on_error,
                window=enforce_window,
                refusal=enforce_refusal,
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
    "workers": "--workers",
    "otel": "--otel",
    "monitor.rate": "--monitor",
    "monitor.judge": "--judge",
    "monitor.judge_mode": "--judge-mode",
    "monitor.judge_template": "--judge-template",
    "monitor.window": "--monitor-window",
    "monitor.out": "--monitor-out",
    "monitor.workers": "--monitor-workers",
    "monitor.queue": "--monitor-queue",
    "monitor.drain_s": "--monitor-drain",
    "shadow.method": "--shadow",
    "shadow.rate": "--shadow-rate",
    "shadow.queue": "--shadow-queue",
    "shadow.workers": "--shadow-workers",
    "shadow.window": "--shadow-window",
    "shadow.seed": "--shadow-seed",
    "enforce.judge_mode": "--enforce-judge-mode",
    "enforce.enabled": "--enforce",
    "enforce.judge": "--enforce-judge",
    "enforce.action": "--enforce-action",
    "enforce.attempts": "--enforce-attempts",
    "enforce.on_error": "--enforce-on-error",
    "enforce.window": "--enforce-window",
    "enforce.refusal": "--enforce-refusal",
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
