"""``specalign data``, ``methods`` and ``cache``: what there is to evaluate with, and the call cache."""

from __future__ import annotations

import json

import typer

from .common import CacheDirOption, DataOption, out, path_value


def data(
    data: DataOption = "bundled",
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the scenarios of a data source with spec and prompt counts.

    Example: specalign data --data ../shared/specbench-data
    """
    from ..benchmark import load_benchmark  # noqa: PLC0415

    bench = load_benchmark(data)
    rows = [{"key": s.key, "name": s.name, **s.counts()} for s in bench.scenarios]
    if as_json:
        print(
            json.dumps(
                {
                    "source": bench.source,
                    "sha256": bench.content_hash(),
                    "scenarios": rows,
                    "total": bench.total_counts(),
                },
                indent=2,
            )
        )
        return
    from .display import data_table  # noqa: PLC0415

    t = data_table(bench.source, rows)
    tot = bench.total_counts()
    t.add_section()
    t.add_row(
        "[bold]total[/bold]",
        f"{len(rows)} scenarios",
        *(str(tot[k]) for k in ("safety_specs", "behavioral_specs", "prompts", "unsafe", "safe")),
    )
    out.print(t)


def methods() -> None:
    """List the generation methods and their hyper-parameters.

    Example: specalign methods
    """
    from ..methods import available_methods  # noqa: PLC0415

    for name, cls in available_methods().items():
        defaults = cls.Params().model_dump()
        params = ", ".join(f"{k}={v!r}" for k, v in defaults.items() if k != "system_prompt")
        out.print(f"[bold]{name}[/bold]: {cls.description}" + (f"  [dim]({params})[/dim]" if params else ""))


def cache(
    clear: bool = typer.Option(False, "--clear", help="Delete every cached model call."),
    cache_dir: CacheDirOption = None,
) -> None:
    """Show (or clear) the cache of model calls.

    Example: specalign cache --clear
    """
    from pathlib import Path  # noqa: PLC0415

    from ..models import CallCache, default_cache_dir  # noqa: PLC0415

    folder = Path(path_value(cache_dir, "--cache-dir") or "") if cache_dir is not None else default_cache_dir()
    if _nothing_cached(folder):
        out.print(f"0 cached calls in {folder / 'calls.sqlite'}")  # nothing to show or clear: create nothing
        return
    calls = CallCache(folder / "calls.sqlite")
    if clear:
        out.print(f"removed {calls.clear()} cached calls from {calls.path}")
    else:
        out.print(f"{len(calls)} cached calls in {calls.path}")
    calls.close()


def _nothing_cached(folder) -> bool:  # noqa: ANN001
    """No cache file in an existing or missing folder (an unusable folder is left to the cache to report)."""
    try:
        return not folder.exists() or (folder.is_dir() and not (folder / "calls.sqlite").exists())
    except OSError:
        return False
