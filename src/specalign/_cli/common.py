"""What the commands share: consoles, help strings, options, choices, ``-p`` parsing, opening models."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

if TYPE_CHECKING:
    from ..models import Model

T = TypeVar("T")

out = Console()
err = Console(stderr=True)

# -- help strings ---------------------------------------------------------------------------------------------------

DATA_HELP = "Data source: 'bundled', a directory in the official SpecBench layout, or 'hf:zzzhr97/SpecBench'."
MODEL_HELP = (
    "'local' (embedded SmolLM2-135M), 'gguf:PATH', 'openai:MODEL@BASE_URL', 'BACKEND:MODEL' for a plugin backend, "
    "or a key of --models-config."
)
MODELS_CONFIG_HELP = "YAML of model settings; repeat to merge several files."
METHOD_PARAM_HELP = "Method hyper-parameter KEY=VALUE or METHOD.KEY=VALUE (YAML value; repeatable)."
JUDGE_MODE_HELP = "joint (one call per sample) or sequential (one per spec)."
CACHE_DIR_HELP = "Cache folder (default $SPECALIGN_CACHE_DIR or ~/.cache/specalign)."
RUN_DIRS_HELP = "Run directories written by `specalign run`."
BASELINE_HELP = "Run directory or method name that ΔSAR is against (default vanilla, else the first)."


# -- choices: a value outside them is a usage error (one line, exit 2) ---------------------------------------------


class NaPolicy(str, Enum):
    """How NA counts in the behavioral score."""

    official = "official"
    exclude = "exclude"


class BatchRetry(str, Enum):
    online = "online"
    batch = "batch"


class PanelRule(str, Enum):
    majority = "majority"
    strict = "strict"


class JudgeMode(str, Enum):
    joint = "joint"
    sequential = "sequential"


class CompareFormat(str, Enum):
    table = "table"
    markdown = "markdown"
    csv = "csv"
    json = "json"


class ExportFormat(str, Enum):
    csv = "csv"
    jsonl = "jsonl"


class ReviewOnly(str, Enum):
    specs = "specs"
    prompts = "prompts"
    attacks = "attacks"


def value(choice: Enum | None) -> Any:
    """The plain value of a choice (None stays None): what the library functions take."""
    return None if choice is None else choice.value


# -- options used by several commands --------------------------------------------------------------------------------

DataOption = Annotated[str, typer.Option("--data", "-d", help=DATA_HELP)]
ModelsConfigOption = Annotated[list[str] | None, typer.Option("--models-config", help=MODELS_CONFIG_HELP)]
MethodParamOption = Annotated[list[str] | None, typer.Option("--method-param", "-p", help=METHOD_PARAM_HELP)]
JudgeModeOption = Annotated[JudgeMode, typer.Option("--judge-mode", help=JUDGE_MODE_HELP)]
CacheDirOption = Annotated[str | None, typer.Option("--cache-dir", help=CACHE_DIR_HELP)]
RunDirsArgument = Annotated[list[str], typer.Argument(help=RUN_DIRS_HELP)]
BaselineOption = Annotated[str | None, typer.Option("--baseline", "-b", help=BASELINE_HELP)]
RecomputeAlphaOption = Annotated[
    float | None, typer.Option("--alpha", min=0.0, max=1.0, help="Recompute with another α.")
]
RecomputeNaPolicyOption = Annotated[
    NaPolicy | None, typer.Option("--na-policy", help="Recompute with another NA policy: official or exclude.")
]
BootstrapOption = Annotated[
    int | None,
    typer.Option(
        "--bootstrap",
        min=0,
        max=1_000_000,
        help="Bootstrap resamples for the 95% intervals and p-values (default 2000, fixed seed; 0: none).",
    ),
]


# -- parsing ---------------------------------------------------------------------------------------------------------


def path_value(value: str | None, field: str) -> str | None:
    """A path option as given; an empty one is refused (it would silently mean the default or '.')."""
    from ..errors import ConfigError  # noqa: PLC0415

    if value is not None and not value.strip():
        raise ConfigError("an empty path", field=field)
    return value


def method_names(items: list[str]) -> list[str]:
    """The methods named by repeated or comma-separated ``--method`` values, each once."""
    from ..errors import ConfigError  # noqa: PLC0415

    names = [n.strip() for item in items for n in item.split(",") if n.strip()]
    if len(set(names)) != len(names):
        raise ConfigError("a method is named twice (run an ablation with its own --out instead)", field="--method")
    if not names:
        raise ConfigError(
            f"no method named in {', '.join(map(repr, items))} (see `specalign methods`)", field="--method"
        )
    return names


def params_by_method(methods: list[str], items: list[str]) -> dict[str, dict]:
    """``-p KEY=VALUE`` goes to every named method with that parameter; ``METHOD.KEY=VALUE`` to one."""
    from ..benchmark import parse_yaml  # noqa: PLC0415
    from ..errors import ConfigError  # noqa: PLC0415
    from ..methods import available_methods  # noqa: PLC0415

    known = available_methods()
    params: dict[str, dict] = {m: {} for m in methods}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE or METHOD.KEY=VALUE, got {item!r}", field="--method-param")
        scope, dot, name = key.rpartition(".")
        if dot and scope not in methods:
            raise ConfigError(f"{scope!r} is not one of the methods run ({', '.join(methods)})", field="--method-param")
        targets = (
            [scope]
            if dot
            else [m for m in methods if len(methods) == 1 or (m in known and name in known[m].Params.model_fields)]
        )
        if not targets:
            raise ConfigError(f"no method run here has a parameter {name!r}", field="--method-param")
        for m in targets:
            try:
                params[m][name] = parse_yaml(raw)
            except ValueError as e:
                raise ConfigError(f"{key}: {e}", field="--method-param") from None
    return params


# -- models ----------------------------------------------------------------------------------------------------------


def with_models(specs: Sequence[str | None], models_config: list[str] | None, work: Callable[..., Awaitable[T]]) -> T:
    """Open the models named by ``specs`` (None: no model; a spec named twice is one model), run
    ``work(*models)`` to its end with :func:`asyncio.run`, and close every model opened, whatever happens."""
    import asyncio  # noqa: PLC0415

    from ..models import CallCache, create_model, load_models_config, parse_model_spec  # noqa: PLC0415

    opened: dict[str, Model] = {}
    models: list[Model | None] = []
    try:
        config = load_models_config(models_config) if any(s is not None for s in specs) else None
        for spec in specs:
            if spec is not None and spec not in opened:
                opened[spec] = create_model(parse_model_spec(spec, config), CallCache.default())
            models.append(None if spec is None else opened[spec])
    except BaseException:
        asyncio.run(_close(list(opened.values())))
        raise

    async def go() -> T:
        try:
            return await work(*models)
        finally:
            await _close(list(opened.values()))

    return asyncio.run(go())


async def _close(models: list[Model]) -> None:
    """Close each model, all of them even when one fails (the first failure is raised after)."""
    failure: BaseException | None = None
    for model in models:
        try:
            await model.aclose()
        except BaseException as e:  # close the rest first
            failure = failure or e
    if failure is not None:
        raise failure
