"""``specalign serve``: the OpenAI-compatible gateway, from the command line."""

from __future__ import annotations

import importlib.util
import re
from typing import Optional

import typer

MODEL_HELP = "'local' (embedded SmolLM2-135M), 'gguf:PATH', 'openai:MODEL@BASE_URL', or a key of --models-config."


def serve_cmd(
    scenario: list[str] = typer.Option(..., "--scenario", "-s",
                                       help="Scenario key of --data, or a scenario folder; repeat or comma-separate "
                                            "to let clients choose (the first is the default)."),
    method: Optional[list[str]] = typer.Option(
        None, "--method", help="Method (see `specalign methods`); repeat or comma-separate to let clients choose "
                               "(the first is the default; default align3)."),
    model: str = typer.Option("local", "--model", "-m", help="Upstream model: " + MODEL_HELP),
    data: str = typer.Option("bundled", "--data", "-d", help="Where scenario keys are looked up ('bundled', a data directory, 'hf:...')."),
    method_param: Optional[list[str]] = typer.Option(None, "--method-param", "-p",
                                                     help="Method hyper-parameter KEY=VALUE or METHOD.KEY=VALUE."),
    models_config: Optional[list[str]] = typer.Option(None, "--models-config",
                                                      help="YAML of model settings; repeat to merge several files."),
    served_model_name: Optional[str] = typer.Option(None, "--served-model-name",
                                                    help="The model id clients send (default: the upstream's name)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. Anything but loopback needs a token."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port (0: any free port)."),
    token_env: str = typer.Option("SPECALIGN_SERVE_TOKEN", "--token-env",
                                  help="Environment variable holding the bearer token clients must send."),
    max_concurrency: int = typer.Option(256, "--max-concurrency", min=1,
                                        help="Requests in flight (beyond it: 429), and the upstream model's calls in "
                                             "flight (its config's max_concurrency may lower that per endpoint)."),
    max_request_bytes: int = typer.Option(1_000_000, "--max-request-bytes", min=1024, help="Largest request body (413 beyond)."),
    max_tokens_limit: int = typer.Option(8192, "--max-tokens-limit", min=1, help="Largest max_tokens a request may ask for."),
    shutdown_timeout: float = typer.Option(60.0, "--shutdown-timeout", min=0,
                                           help="On SIGTERM/Ctrl-C, seconds to let in-flight requests finish."),
    monitor: float = typer.Option(0.0, "--monitor", min=0.0, max=1.0,
                                  help="Share of answers to judge against the specs in the background (0: off)."),
    judge: str = typer.Option("local", "--judge", "-j", help="Judge model for --monitor: " + MODEL_HELP),
    judge_mode: str = typer.Option("joint", "--judge-mode", help="joint or sequential."),
    monitor_window: int = typer.Option(200, "--monitor-window", min=1, help="Judged answers per method and scenario in the sliding window."),
    monitor_out: Optional[str] = typer.Option(None, "--monitor-out",
                                              help="Folder for the judged samples, one run directory per method "
                                                   "(default runs/live-<model>); open with `specalign report`."),
    monitor_workers: int = typer.Option(2, "--monitor-workers", min=1, help="Judge calls in flight."),
    monitor_queue: int = typer.Option(1000, "--monitor-queue", min=1, help="Answers waiting for the judge before new ones are dropped."),
    monitor_drain: float = typer.Option(30.0, "--monitor-drain", min=0,
                                        help="At shutdown, seconds to finish waiting judgments (the rest are recorded unscored)."),
) -> None:
    """Serve a model behind a scenario's specs and a deliberation method, as an OpenAI-compatible API.

    Clients change only their base_url (and send the token as API key when one is set). Routes:
    /v1/chat/completions (streaming too), /v1/models, /health, /metrics (Prometheus), /status.

    Example: specalign serve --scenario child   (Align3 on the embedded model, offline)

    Example: specalign serve -s child --model qwen3 --models-config models.yaml   (an entry with prefill: true)

    Example: specalign serve -s child,code --method align3,vanilla -m openai:gpt-4.1-mini -p align3.no_prefill=multi_turn --monitor 0.1 --judge openai:gpt-4.1
    """
    from .cli import _method_names, _params_by_method  # noqa: PLC0415
    from .errors import ConfigError  # noqa: PLC0415

    for module in ("fastapi", "uvicorn"):
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"the gateway needs {module}: pip install 'specalign[serve]'", field="serve")
    if judge_mode not in ("joint", "sequential"):
        raise ConfigError(f"must be 'joint' or 'sequential', got {judge_mode!r}", field="--judge-mode")
    scenarios = [s.strip() for item in scenario for s in item.split(",") if s.strip()]
    methods = _method_names(method or ["align3"])
    params = {k: v for k, v in _params_by_method(methods, method_param or []).items() if v}
    out = monitor_out or f"runs/live-{re.sub(r'[^A-Za-z0-9._]+', '_', model).strip('_')[:60]}"
    config = _config(dict(
        data=data, scenarios=scenarios, methods=methods, method_params=params, model=model,
        models_config=models_config or [], served_model_name=served_model_name, host=host, port=port, token_env=token_env,
        max_concurrency=max_concurrency, max_request_bytes=max_request_bytes, max_tokens_limit=max_tokens_limit,
        graceful_shutdown_s=shutdown_timeout,
        monitor=dict(rate=monitor, judge=judge, judge_mode=judge_mode, window=monitor_window,
                     out=out if monitor > 0 else None, workers=monitor_workers, queue=monitor_queue,
                     drain_s=monitor_drain),
    ))
    from .serve import serve  # noqa: PLC0415

    serve(config)


def _config(values: dict):  # noqa: ANN202
    from pydantic import ValidationError  # noqa: PLC0415

    from .errors import ConfigError  # noqa: PLC0415
    from .serve import ServeConfig  # noqa: PLC0415

    try:
        return ServeConfig(**values)
    except ValidationError as e:
        first = e.errors()[0]
        field = "--" + "-".join(str(x) for x in first["loc"]).replace("_", "-")
        raise ConfigError(first["msg"], field=field) from None
