"""``specalign scenario new|lint|curate|attack|review``: build a new scenario, from its specifications to its
reviewed prompts."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from .agreement import review_or_label
from .common import MODEL_HELP, ModelsConfigOption, ReviewOnly, value, with_models

scenario_app = typer.Typer(
    help="Build a new scenario: draft its specifications, lint them, curate, attack and review its prompts.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _shown(text: str) -> str:
    from .._terminal import shown  # noqa: PLC0415

    return shown(text)


def _rich(text: str) -> str:
    return escape(_shown(text))


def _range(text: str, option: str) -> tuple[int, int]:
    from ..errors import ConfigError  # noqa: PLC0415

    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+))?\s*", text)
    if not m:
        raise ConfigError(f"expected N or LOW-HIGH, got {text!r}", field=option)
    low, high = int(m.group(1)), int(m.group(2) or m.group(1))
    if not 1 <= low <= high <= 40:
        raise ConfigError(f"expected 1 ≤ LOW ≤ HIGH ≤ 40, got {text!r}", field=option)
    return low, high


def new(
    name: str = typer.Argument(..., help="The deployment's name, e.g. 'Museum Guide'."),
    description: str = typer.Option(
        ..., "--description", "-d", help="One paragraph: who uses it, for what, what must never happen."
    ),
    key: str | None = typer.Option(None, "--key", help="Folder and scenario key (default: from the name)."),
    model: str = typer.Option(
        "local",
        "--model",
        "-m",
        help="Model that drafts: " + MODEL_HELP,
    ),
    models_config: ModelsConfigOption = None,
    out_dir: str = typer.Option("scenarios", "--out", "-o", help="Data folder to write <key>/scenario.yaml into."),
    safety: str = typer.Option("6-10", "--safety", help="How many safety specs: N or LOW-HIGH."),
    behavioral: str = typer.Option(
        "5-8", "--behavioral", help="How many behavioral specs before the completeness rule."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing scenario.yaml."),
) -> None:
    """Draft safety and behavioral specs for a new scenario and write them for you to edit.

    Safety specs are drafted from specalign's harm categories, kept to those the deployment needs;
    behavioral specs from its design principles; the "answer as fully as possible" rule closes them.

    Example: specalign scenario new "Museum Guide" -d "A guide app for a science museum, used by families and school groups."
    """
    from ..authoring import draft_scenario, write_scenario  # noqa: PLC0415

    n_safety, n_behavioral = _range(safety, "--safety"), _range(behavioral, "--behavioral")
    key = _new_key(name, description, key, out_dir, force)
    scenario = with_models(
        [model],
        models_config,
        lambda drafter: draft_scenario(
            drafter, name, description, key=key, n_safety=n_safety, n_behavioral=n_behavioral
        ),
    )
    path = write_scenario(scenario, out_dir, overwrite=force)
    out.print(f"[bold]{_rich(scenario.name)}[/bold] ({_rich(scenario.key)})")
    for kind, specs, letter in (("safety", scenario.safety_specs, "S"), ("behavioral", scenario.behavioral_specs, "B")):
        out.print(f"{kind} specifications:")
        for i, s in enumerate(specs, 1):
            out.print(f"  {letter}{i}. {_rich(s.text)}")
    err.print(
        f"wrote {path} ({len(scenario.safety_specs)} safety, {len(scenario.behavioral_specs)} behavioral specs). "
        f"Edit it, then: specalign scenario lint {Path(path).parent}"
    )


def _new_key(name: str, description: str, key: str | None, out_dir: str, force: bool) -> str:
    """The new scenario's key, checked with everything else that needs no model, before any model call."""
    from ..authoring import scenario_key  # noqa: PLC0415
    from ..benchmark import check_key  # noqa: PLC0415
    from ..errors import ConfigError, RunDirError  # noqa: PLC0415

    if not name.strip():
        raise ConfigError("a scenario needs a name", field="NAME")
    if not description.strip():
        raise ConfigError("a scenario needs a description", field="--description")
    key = scenario_key(name) if key is None else key
    try:
        check_key(key)
    except ValueError as e:
        raise ConfigError(str(e), field="--key") from None
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out_dir} is not a folder", field="--out")
    if (out / key).exists() and not (out / key).is_dir():
        raise ConfigError(f"{out / key} exists and is not a folder", field="--out")
    target = out / key / "scenario.yaml"
    if (target.exists() or target.is_symlink()) and not force:
        raise RunDirError(f"{target} exists; pass --force to replace it")
    return key


def lint(
    path: str = typer.Argument(..., help="A scenario folder (with scenario.yaml) or a data folder of scenarios."),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Also ask this model for conflicts between behavioral and safety specs."
    ),
    models_config: ModelsConfigOption = None,
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when anything is found."),
) -> None:
    """Check specs: duplicates and near-duplicates, vague specs, conflicts with safety, the completeness rule.

    Rule-based checks always run; with --model, a model also looks for behavioral specs that would
    require what a safety spec forbids.

    Example: specalign scenario lint scenarios/museum-guide --model openai:gpt-4.1
    """
    import json  # noqa: PLC0415

    from ..authoring import lint_scenario  # noqa: PLC0415

    scenarios = _load(path)

    async def lint_all(checker):  # noqa: ANN001, ANN202
        return [await lint_scenario(s, checker) for s in scenarios]

    reports = with_models([model or None], models_config, lint_all)
    if as_json:
        print(json.dumps([{**r.model_dump(mode="json"), "counts": r.counts()} for r in reports], indent=2))
    else:
        for r in reports:
            counts = r.counts()
            summary = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items()) or "no findings"
            out.print(
                f"[bold]{_rich(r.scenario)}[/bold]: {summary}"
                + ("" if r.model_checked else " (rules only; --model also checks conflicts)")
            )
            for f in r.findings:
                out.print(f"  {f.kind:<18} {_rich(f.message)}")
    if strict and any(r.findings for r in reports):
        sys.exit(1)


def _scenario_folder(path: str) -> Path:
    """A scenario folder of the bundled layout, or one clear error."""
    from ..errors import ConfigError  # noqa: PLC0415

    folder = Path(path)
    if not (folder / "scenario.yaml").is_file():
        raise ConfigError(
            f"{folder} has no scenario.yaml (make one with `specalign scenario new`)", field="SCENARIO_DIR"
        )
    return folder


def _load(path: str):  # noqa: ANN202
    from ..benchmark import load_benchmark, load_scenario_dir  # noqa: PLC0415

    p = Path(path)
    if (p / "scenario.yaml").is_file():
        return [load_scenario_dir(p)]
    if (p / "specifications.json").is_file():  # one scenario folder of the official layout
        folder = p.resolve()  # '..' or '.' has no name of its own
        return [s for s in load_benchmark(str(folder.parent)).scenarios if s.key == folder.name]
    return load_benchmark(path).scenarios


def curate_cmd(
    scenario_dir: str = typer.Argument(
        ..., help="A scenario folder (with scenario.yaml), e.g. from `specalign scenario new`."
    ),
    model: str = typer.Option("local", "--model", "-m", help="Model that writes and filters the prompts."),
    models_config: ModelsConfigOption = None,
    unsafe: int = typer.Option(20, "--unsafe", min=0, help="Unsafe prompts to keep."),
    safe: int = typer.Option(10, "--safe", min=0, help="Safe prompts to keep."),
    pool: float = typer.Option(2.0, "--pool", min=1.0, help="Generate this many times the counts before filtering."),
    dedupe_to: float = typer.Option(
        1.5, "--dedupe-to", min=1.0, help="De-duplicate down to this many times the counts, then sample."
    ),
    batch: int = typer.Option(5, "--batch", min=1, max=50, help="Prompts asked for per call."),
    seed: int = typer.Option(0, "--seed", help="Seed of the final sampling."),
    no_filter: bool = typer.Option(False, "--no-filter", help="Skip the model's relevance and quality filter."),
    force: bool = typer.Option(False, "--force", help="Replace prompts.yaml if it already holds prompts."),
) -> None:
    """Generate, filter, de-duplicate and sample a scenario's prompts into its prompts.yaml.

    Unsafe prompts are seeded by each safety spec (each records its spec in seed_spec), safe prompts by
    the scenario. A model filters them for relevance and kind, sentence embeddings (all-MiniLM-L6-v2,
    offline) remove near-duplicates by the paper's greedy rule, and a seeded sample keeps the counts.

    Example: specalign scenario curate scenarios/museum-guide --model openai:gpt-4.1 --unsafe 200 --safe 100
    """
    import time  # noqa: PLC0415

    from ..authoring import Curator, MiniLMEmbedder, curate, write_prompts  # noqa: PLC0415
    from ..benchmark import load_scenario_dir  # noqa: PLC0415
    from ..errors import ConfigError, RunDirError  # noqa: PLC0415

    folder = _scenario_folder(scenario_dir)
    scenario = load_scenario_dir(folder)
    if unsafe + safe == 0:
        raise ConfigError("nothing to curate: --unsafe and --safe are both 0", field="--unsafe")
    if scenario.prompts and not force:  # say so now, not after an hour of model calls
        raise RunDirError(f"{folder / 'prompts.yaml'} already holds prompts; pass --force to replace them")
    t0 = time.perf_counter()
    result = with_models(
        [model],
        models_config,
        lambda writer: curate(
            scenario,
            Curator(writer, MiniLMEmbedder, batch=batch),
            n_unsafe=unsafe,
            n_safe=safe,
            pool=pool,
            dedupe_to=dedupe_to,
            seed=seed,
            use_filter=not no_filter,
        ),
    )
    path = write_prompts(folder, result.prompts, overwrite=force)
    st = result.stats
    for label in ("unsafe", "safe"):
        out.print(
            f"{label}: generated {st.generated.get(label, 0)} → filter {st.after_filter.get(label, 0)} → "
            f"exact duplicates out {st.after_exact.get(label, 0)} → near-duplicates out "
            f"{st.after_dedupe.get(label, 0)} → kept {st.final.get(label, 0)}"
        )
    short = [
        f"{label} ({st.final.get(label, 0)} of {want})"
        for label, want in (("unsafe", unsafe), ("safe", safe))
        if st.final.get(label, 0) < want
    ]
    if short:
        err.print(
            f"[yellow]fewer prompts than asked for: {', '.join(short)}; raise --pool or use a stronger model[/yellow]"
        )
    err.print(f"wrote {path}: {len(result.prompts)} prompts, {st.calls} model calls, {time.perf_counter() - t0:.0f} s")


def attack(
    scenario_dir: str = typer.Argument(..., help="A scenario folder whose prompts.yaml holds unsafe prompts."),
    model: str = typer.Option("local", "--model", "-m", help="Attacker model that rewrites the prompts."),
    checker: str | None = typer.Option(
        None, "--checker", help="Model that checks a rewrite keeps the intent (default: --model)."
    ),
    models_config: ModelsConfigOption = None,
    tactics: int = typer.Option(3, "--tactics", min=1, max=10, help="Tactics combined per rewrite."),
    attempts: int = typer.Option(4, "--attempts", min=1, help="Rewrites in the first round."),
    escalation: int = typer.Option(10, "--escalation", min=2, help="Each further round tries this many times more."),
    max_attempts: int = typer.Option(40, "--max-attempts", min=1, help="Give up on a prompt after this many rewrites."),
    checks: int = typer.Option(3, "--checks", min=1, max=10, help="The checker must say YES this many times."),
    seed: int = typer.Option(0, "--seed", help="Seed of tactic sampling."),
    redo: bool = typer.Option(False, "--redo", help="Attack again prompts that already carry an attack."),
) -> None:
    """Attack-enhance a scenario's unsafe prompts with jailbreak tactics (WildTeaming style), in place.

    Each unsafe prompt is rewritten with a few of 45 tactics; a rewrite is kept only if the checker says,
    every time, that it keeps the original intent. Rounds escalate until one survives or the cap is hit.
    The original stays in original_prompt; the tactics and attempts are recorded. Safe prompts are never
    attacked. prompts.yaml is saved after every prompt, so a rerun continues where it stopped.

    Example: specalign scenario attack scenarios/museum-guide --model openai:gpt-4.1 --checker openai:gpt-4.1-mini
    """
    import time  # noqa: PLC0415

    from ..authoring import Attacker, AttackParams, apply_outcome, to_attack, write_prompts  # noqa: PLC0415
    from ..benchmark import load_scenario_dir  # noqa: PLC0415

    folder = _scenario_folder(scenario_dir)
    scenario = load_scenario_dir(folder)
    params = AttackParams(
        tactics=tactics, attempts=attempts, escalation=escalation, max_attempts=max_attempts, checks=checks, seed=seed
    )
    todo = {p.id for p in to_attack(scenario.prompts, redo=redo)}
    if not todo:
        err.print("no unsafe prompt left to attack (safe prompts never are; --redo tries every unsafe prompt again)")
        return
    t0 = time.perf_counter()
    failed: list[str] = []

    async def attack_all(attacker_model, checker_model) -> Attacker:  # noqa: ANN001
        runner = Attacker(attacker_model, checker_model, params)
        prompts = list(scenario.prompts)
        for i, p in enumerate(prompts):
            if p.id not in todo:
                continue
            outcome = await runner.attack(scenario, p)
            if outcome.attacked is None:
                failed.append(p.id)
            prompts[i] = apply_outcome(p, outcome)
            write_prompts(folder, prompts, overwrite=True)
            out.print(
                f"{_rich(p.id)}: "
                + (
                    f"attacked with {escape(', '.join(outcome.tactics))} after {outcome.attempts} attempt(s)"
                    if outcome.attacked
                    else f"no rewrite kept its intent in {outcome.attempts} attempts; left as it was"
                )
            )
        return runner

    runner = with_models([model, checker or model], models_config, attack_all)
    done = len(todo) - len(failed)
    err.print(
        f"attacked {done} of {len(todo)} unsafe prompts in {time.perf_counter() - t0:.0f} s, "
        f"{runner.calls} model calls; wrote {folder / 'prompts.yaml'}"
    )


def review(
    scenario_dir: str = typer.Argument(..., help="A scenario folder (scenario.yaml, prompts.yaml)."),
    reviewer: str | None = typer.Option(
        None, "--reviewer", help="Who decides (default: $SPECALIGN_REVIEWER or your user name)."
    ),
    only: ReviewOnly | None = typer.Option(None, "--only", help="Review only specs, prompts or attacks."),
    export: str | None = typer.Option(None, "--export", help="Write a review sheet (CSV) instead of asking here."),
    import_sheet_path: str | None = typer.Option(None, "--import", help="Read decisions from a filled review sheet."),
    apply_to: str | None = typer.Option(
        None, "--apply", help="Write the final scenario (accepted items only) into this data folder."
    ),
    force: bool = typer.Option(False, "--force", help="With --apply: replace an existing final scenario."),
    raw_cells: bool = typer.Option(
        False,
        "--raw-cells",
        help="With --export: write cells starting with = + - @ "
        "as they are, without the leading ' that keeps spreadsheets from running them.",
    ),
) -> None:
    """Verify specs, prompts and attacked prompts: accept, reject, edit or skip each, in the terminal or
    through a CSV sheet. Decisions (who, when) go to review.jsonl beside the data; a rerun carries on.

    In an exported sheet, a cell that starts with = + - @ (a formula to a spreadsheet) or ' gets a
    leading '; --import removes it. --import reads sheets saved as UTF-8, UTF-16 or Windows-1252,
    separated by commas, semicolons or tabs.

    Example: specalign scenario review scenarios/museum-guide

    Example: specalign scenario review scenarios/museum-guide --apply final
    """
    from ..authoring import (  # noqa: PLC0415
        ReviewLog,
        decision_summary,
        export_sheet,
        import_sheet,
        review_items,
        reviewer_name,
    )
    from ..benchmark import load_scenario_dir  # noqa: PLC0415
    from ..errors import ConfigError  # noqa: PLC0415

    folder = _scenario_folder(scenario_dir)
    if sum(x is not None for x in (export, import_sheet_path, apply_to)) > 1:
        raise ConfigError("choose one of --export, --import and --apply", field="--export")
    scenario = load_scenario_dir(folder)
    items = review_items(scenario)
    if only is not None:
        items = [i for i in items if i.kind == value(only)[:-1]]
    log = ReviewLog(folder)
    who = reviewer_name(reviewer)
    if export:
        _not_an_input(export, folder, "--export")
        n = export_sheet(items, log.latest(items), export, raw_cells=raw_cells)
        err.print(
            f"wrote {export}: {n} items. Fill in decision (accept, reject, edit) and edited_text, then: "
            f"specalign scenario review {folder} --import {export}"
        )
        return
    if import_sheet_path:
        decisions = import_sheet(items, import_sheet_path, who)
        for d in decisions:
            log.append(d)
        err.print(f"imported {len(decisions)} decisions by {who} into {log.path}")
        _print_summary(decision_summary(items, log.latest(items)))
        return
    if apply_to:
        _not_an_input(str(Path(apply_to) / scenario.key), folder, "--apply")
        _apply(scenario, log.latest(review_items(scenario)), apply_to, force)
        return
    _interactive(items, log, who)


def _not_an_input(target: str, folder: Path, option: str) -> None:
    """Refuse to write over the scenario folder under review or one of its files."""
    from ..errors import ConfigError  # noqa: PLC0415

    t, f = Path(target).resolve(), folder.resolve()
    if t == f or t.parent == f and t.name in ("scenario.yaml", "prompts.yaml", "review.jsonl"):
        raise ConfigError(
            f"{target} is the scenario under review (or one of its files): write somewhere else", field=option
        )


def _print_summary(s: dict) -> None:
    out.print(
        f"{s['items']} items: {s['accept']} accepted, {s['edit']} edited, {s['reject']} rejected, "
        f"{s['undecided']} undecided"
    )


def _apply(scenario, decided, target: str, force: bool) -> None:  # noqa: ANN001
    from ..authoring import (  # noqa: PLC0415
        final_scenario,  # noqa: PLC0415
        write_prompts,
        write_scenario,
    )

    final, counts = final_scenario(scenario, decided)
    path = write_scenario(final, target, overwrite=force)
    write_prompts(path.parent, final.prompts, overwrite=True)
    err.print(
        f"wrote {path.parent}: {len(final.safety_specs)} safety and {len(final.behavioral_specs)} behavioral "
        f"specs, {len(final.prompts)} prompts ({counts['accepted']} accepted, {counts['edited']} edited, "
        f"{counts['rejected']} rejected, {counts['undecided']} undecided left out). "
        f"Evaluate it: specalign run --data {target}"
    )


def _interactive(items, log, who: str) -> None:  # noqa: ANN001
    from ..authoring import DECISIONS, ReviewDecision, decision_summary  # noqa: PLC0415

    decided = log.latest(items)
    pending = [i for i in items if i.key not in decided]
    print(f"{len(items)} items, {len(pending)} to review; decisions are saved as you go (reviewer: {who}).")
    for n, item in enumerate(pending, 1):
        print(f"\n[{n}/{len(pending)}] {_shown(item.key)} ({item.kind}, {_shown(item.label)})")
        if item.original:
            print(f"  before the attack: {_shown(item.original)}")
        print(f"  {_shown(item.text)}")
        while True:
            try:
                answer = input("[a]ccept [r]eject [e]dit [s]kip [q]uit > ").strip().lower()[:1]
            except EOFError:
                answer = "q"
            if answer in ("a", "r", "e", "s", "q"):
                break
        if answer == "q":
            break
        if answer == "s":
            continue
        edited = None
        if answer == "e":
            try:
                edited = input("new text > ").strip()
            except EOFError:
                edited = ""
            if not edited:
                print("  empty text: skipped")
                continue
        decision = DECISIONS[{"a": "accept", "r": "reject", "e": "edit"}[answer]]
        log.append(
            ReviewDecision(
                item=item.key,
                decision=decision,
                text_sha=item.digest,
                edited_text=edited,
                reviewer=who,
            )
        )
        print(f"  {decision}ed" if decision != "edit" else "  edited")
    s = decision_summary(items, log.latest(items))
    print(
        f"\n{s['items']} items: {s['accept']} accepted, {s['edit']} edited, {s['reject']} rejected, "
        f"{s['undecided']} undecided. Saved in {log.path}"
    )


scenario_app.command("new")(new)
scenario_app.command("lint")(lint)
scenario_app.command("curate")(curate_cmd)
scenario_app.command("attack")(attack)
scenario_app.command("review")(review)

#: the top-level spellings of 0.1, kept for one release: same options, same behaviour, no extra output
#: (`specalign review` also takes --label, which labels a run's answers: agreement.review_or_label)
ALIASES: dict[str, Callable[..., None]] = {"curate": curate_cmd, "attack": attack, "review": review_or_label}
ALIAS_NOTE = "(alias of `specalign scenario {name}`; removed in 0.3)"


def add_aliases(app: typer.Typer) -> None:
    """Register ``specalign curate|attack|review`` on ``app`` as aliases of ``specalign scenario ...``."""
    import inspect  # noqa: PLC0415

    for name, command in ALIASES.items():
        note = ALIAS_NOTE.format(name=name)
        app.command(
            name,
            help=f"{note}\n\n{inspect.getdoc(command)}",
            short_help=note[1].upper() + note[2:-1] + ".",
            rich_help_panel="Aliases",
        )(command)
