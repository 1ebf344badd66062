"""The command line as documented: every `specalign ...` line in README.md, docs/*.md and the commands' own
`--help` examples parses against the real command tree (options, choices, argument counts, `-p` method
parameters); the 0.1 spellings `specalign curate|attack|review` still work; a bad choice is one line, exit 2;
defaults said in help texts are the library's; and the CLI modules import on their own, without cycles."""

from __future__ import annotations

import itertools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from specalign._cli import app
from specalign._cli.common import method_names, params_by_method

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")  # typer's own click
ROOT = typer.main.get_command(app)
SHELL_FENCES = {"", "bash", "sh", "shell", "console", "text"}
SPECALIGN_LINE = re.compile(r"^(?:[A-Z][A-Z0-9_]*=\S*\s+)*specalign\s+\S")


# -- where command lines are shown ------------------------------------------------------------------------------------


def doc_command_lines(path: Path) -> list[tuple[str, str, bool]]:
    """(where, line, inline) for every `specalign ...` command line in a Markdown file: lines of shell code blocks
    (continuation lines joined) and inline code spans (a span may wrap across lines of its paragraph)."""
    found: list[tuple[str, str, bool]] = []
    fence: str | None = None
    pending = ""
    paragraph: list[tuple[int, str]] = []

    def flush_paragraph() -> None:
        if paragraph:
            text = " ".join(line for _, line in paragraph)
            for span in re.findall(r"`([^`]+)`", text):
                if SPECALIGN_LINE.match(span.strip()):
                    found.append((f"{path.name}:{paragraph[0][0]}", span.strip(), True))
            paragraph.clear()

    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if line.startswith("```"):
            flush_paragraph()
            fence = None if fence is not None else line[3:].strip().lower()
            continue
        if fence is None:
            if line:
                paragraph.append((n, line))
            else:
                flush_paragraph()
            continue
        if fence not in SHELL_FENCES:
            continue
        line = pending + line.removeprefix("$ ")
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if SPECALIGN_LINE.match(line):
            found.append((f"{path.name}:{n}", line, False))
    flush_paragraph()
    return found


def _commands(group, path: tuple[str, ...] = ()):  # noqa: ANN001, ANN202
    """(path, command) for every command and group under ``group``."""
    yield path, group
    if _is_group(group):
        ctx = group.context_class(group)
        for name in group.list_commands(ctx):
            yield from _commands(group.get_command(ctx, name), (*path, name))


def _is_group(command) -> bool:  # noqa: ANN001
    return hasattr(command, "list_commands")


def help_examples() -> list[tuple[str, str]]:
    """(where, line) for every "Example: specalign ..." line of every command's help."""
    found = []
    for path, command in _commands(ROOT):
        for line in (command.help or "").splitlines():
            if m := re.match(r"\s*Example: (specalign\s.*)$", line):
                found.append((" ".join(("specalign", *path, "--help")), m.group(1)))
    return found


DOC_LINES = [item for path in DOCS for item in doc_command_lines(path)]
HELP_LINES = help_examples()


# -- parsing one line against the real command tree, without running it ----------------------------------------------


def _argv_variants(line: str) -> list[list[str]]:
    """The arguments of a shown command line, as the shell would pass them: environment assignments, comments
    and anything after a pipe or `;` dropped; `[--opt VALUE]` optional parts kept; `a|b` alternatives each tried."""
    tokens = shlex.split(line, comments=True)
    while tokens and tokens[0] != "specalign":
        tokens.pop(0)  # VAR=value before the command
    for stop in ("|", ";", "&&", ">", "2>"):
        if stop in tokens:
            tokens = tokens[: tokens.index(stop)]
    args, optional = [], False
    for token in tokens[1:]:
        if token.startswith("[-"):
            token, optional = token[1:], True
        if optional and token.endswith("]"):
            token, optional = token[:-1], False
        args.append(token)
    choices = [a.split("|") if "|" in a and not a.startswith("-") else [a] for a in args]
    return [list(v) for v in itertools.product(*choices)]


def is_output(line: str) -> bool:
    """Text a command prints (`specalign run: 10 of 27 prompts ...`, `specalign gateway ready: ...`), not a command."""
    words = line.split()
    return any(w.endswith(":") for w in words[1:3])


def parse(argv: list[str]) -> None:
    """Parse ``specalign ARGV`` as the real CLI would, down to the command's own options and arguments, without
    invoking anything; a usage error (unknown command or option, bad choice or number, wrong argument count)
    raises. ``--help``/``--version`` stop the parse successfully, as they stop the CLI."""
    command, name, args, parent = ROOT, "specalign", list(argv), None
    try:
        while True:
            ctx = command.make_context(name, list(args), parent=parent)
            if not _is_group(command):
                break
            rest = [*getattr(ctx, "_protected_args", getattr(ctx, "protected_args", [])), *ctx.args]
            if not rest:
                raise USAGE_ERROR(f"{name}: a command is missing", ctx=ctx)
            sub = command.get_command(ctx, rest[0])
            if sub is None:
                raise USAGE_ERROR(f"no such command {rest[0]!r} under {name}", ctx=ctx)
            command, name, args, parent = sub, rest[0], rest[1:], ctx
    except typer.Exit as e:
        assert e.exit_code == 0
        return
    _check_methods(ctx.params)


def _check_methods(params: dict) -> None:
    """What the CLI checks before any model call about ``--method`` and ``-p``: each method named once, every
    ``-p`` addressed to a method that runs here and has that parameter, with a valid value."""
    from specalign.methods import available_methods  # noqa: PLC0415

    if "method_param" not in params:
        return
    default = ["align3"] if "monitor" in params else ["vanilla"]
    methods = method_names(list(params.get("method") or default))
    known = available_methods()  # a plugin's method (docs/plugins.md) is not known here: its -p is not checked
    for name, values in params_by_method(methods, list(params["method_param"] or [])).items():
        if values and name in known:
            known[name].Params(**values)  # a wrong name or value raises


def parse_mention(argv: list[str]) -> None:
    """A command named in prose, perhaps with some of its options (`specalign export --with-text`): the command
    exists and has those options; its required arguments are not asked for."""
    command, ctx = ROOT, None
    while _is_group(command) and argv and not argv[0].startswith("-"):
        ctx = command.context_class(command, parent=ctx, info_name=argv[0])
        command = command.get_command(ctx, argv.pop(0))
        if command is None:
            raise USAGE_ERROR("no such command")
    known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)} | {"--help"}
    if unknown := [a for a in argv if a not in known]:
        raise USAGE_ERROR(f"no such option {unknown}")


def is_mention(line: str) -> bool:
    """An inline span that names a command (`specalign report`) or a command and options (`specalign run --data`):
    nothing but command words and option names, as prose uses it."""
    words = _argv_variants(line)[0]
    path = list(itertools.takewhile(lambda w: not w.startswith("-"), words))
    return all(w.startswith("-") for w in words[len(path) :]) and len(path) <= 2 and all(w.isalpha() for w in path)


def check_line(line: str, *, inline: bool = False) -> None:
    for argv in _argv_variants(line):
        try:
            parse_mention(list(argv)) if inline and is_mention(line) else parse(argv)
        except Exception as e:  # the failure message says which line and why
            message = e.format_message() if hasattr(e, "format_message") else str(e)
            raise AssertionError(f"{shlex.join(['specalign', *argv])}: {message}") from None


def test_the_extraction_finds_the_documented_commands():
    """The extraction itself works: lines from code blocks, continuation lines, and wrapped inline spans."""
    lines = {line for _, line, _ in DOC_LINES}
    assert any(line.startswith("specalign run --models-config config_model.yaml --models-config") for line in lines)
    assert any(line.startswith("specalign scenario curate scenarios/museum-guide --unsafe 200") for line in lines)
    assert len(DOC_LINES) > 40 and len(HELP_LINES) > 15
    assert {where.split(" --help")[0] for where, _ in HELP_LINES} >= {"specalign run", "specalign scenario review"}


# nothing is skipped but the text commands print (is_output); placeholders such as RUN_DIR... or "<one paragraph>"
# parse as the strings they are, `[--opt V]` and `a|b` are expanded, and prose mentions are checked as mentions
@pytest.mark.parametrize(("where", "line", "inline"), [x for x in DOC_LINES if not is_output(x[1])], ids=str)
def test_documented_command_lines_parse(where, line, inline):
    check_line(line, inline=inline)


@pytest.mark.parametrize(("where", "line"), HELP_LINES, ids=str)
def test_help_examples_parse(where, line):
    check_line(line)


def test_the_checker_catches_what_it_should():
    for bad in (
        "specalign run --method vanilla,align3 -p best_of_n.n=5",  # -p for a method that does not run
        "specalign run --na-policy paper",
        "specalign run --nope",
        "specalign compare",  # no run directory
        "specalign score a b",  # one too many
        "specalign scenario lint a --model",  # an option without its value
        "specalign scenario frobnicate x",
        "specalign run --method vanilla -p vanilla.nonsense=1",
    ):
        with pytest.raises(AssertionError):
            check_line(bad)
    check_line("specalign scenario lint scenarios/museum-guide [--model M] [--strict]")
    check_line("specalign score RUN --na-policy official|exclude")
    check_line("specalign --version")
    check_line("specalign curate --help")


# -- options named in prose -------------------------------------------------------------------------------------------

#: options shown in the docs that belong to other programs, and the program
FOREIGN_OPTIONS = {
    "--jinja": "llama-server",
    "--reasoning-format": "llama-server",
    "--prefill-assistant": "llama-server",
    "--reasoning-parser": "vLLM",
    "-H": "curl",
    "-wal": "SQLite's file suffix (calls.sqlite-wal)",
    "-shm": "SQLite's file suffix (calls.sqlite-shm)",
}
#: options the docs say specalign does not have
ABSENT_OPTIONS: set[str] = set()  # none now (serve.md once said "there is no `--workers`")


def _all_options() -> set[str]:
    return {o for _, command in _commands(ROOT) for p in command.params for o in (*p.opts, *p.secondary_opts)}


def test_options_named_in_the_docs_exist():
    """An inline `--option` (alone or with a value: `--na-policy official|exclude`, `-o/--output`) names a real
    option of some command: a documented option that does not exist (`--judge-attempts` once) fails here."""
    options, wrong = _all_options(), []
    for path in DOCS:
        for paragraph in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")):
            for span in re.findall(r"`([^`]+)`", paragraph.replace("\n", " ")):
                if not re.match(r"--?[A-Za-z]", span):
                    continue
                for name in re.split(r"[/ =]", span.split()[0]):
                    if name.startswith("-") and name not in options and name not in FOREIGN_OPTIONS:
                        wrong.append(f"{path.name}: `{span}`")
    assert not [w for w in wrong if not any(f"`{a}`" in w for a in ABSENT_OPTIONS)], wrong
    assert not ABSENT_OPTIONS & options


# -- help texts say the library's defaults ----------------------------------------------------------------------------


def _params(*path: str) -> dict:
    command = ROOT
    for name in path:
        command = command.get_command(command.context_class(command), name)
    return {p.name: p for p in command.params}


def _default(param):  # noqa: ANN001, ANN202
    return getattr(param.default, "value", param.default)


def test_run_defaults_are_the_run_configs():
    from specalign.runs import EMBEDDED_DEFAULT_LIMIT, RunConfig  # noqa: PLC0415

    params = _params("run")
    fields = RunConfig.model_fields
    same = ["limit", "model", "judge", "judge_mode", "judge_attempts", "concurrency", "alpha", "na_policy"]
    same += ["cache_dir", "retry_unscored", "stop_after_failures"]
    assert {n: _default(params[n]) for n in same} == {n: fields[n].default for n in same}
    assert f"or {EMBEDDED_DEFAULT_LIMIT} with the embedded model" in params["limit"].help
    attempts = params["judge_attempts"]
    limits = {m.__class__.__name__: m for m in fields["judge_attempts"].metadata}
    assert (getattr(attempts, "min", None), getattr(attempts, "max", None)) in {(1, 20), (None, None)}
    assert (limits["Ge"].ge, limits["Le"].le) == (1, 20)


def test_serve_defaults_are_the_serve_configs():
    from specalign._cli.serve import OPTIONS  # noqa: PLC0415
    from specalign.serve import MonitorConfig, ServeConfig  # noqa: PLC0415

    by_option = {opt: p for p in _params("serve").values() for opt in p.opts}
    for field, option in OPTIONS.items():
        section, _, name = field.rpartition(".")
        config = MonitorConfig if section == "monitor" else ServeConfig
        if section in ("shadow", "enforce"):
            config = ServeConfig.model_fields[section].annotation
        info = config.model_fields[name]
        if info.is_required() or name in ("out", "method_params"):
            continue  # --scenario is required; the monitor's folder and -p are built from other options
        expected = info.get_default(call_default_factory=True)
        got = _default(by_option[option])
        if got is None and isinstance(expected, list):
            continue  # a list option given no value: the command fills in the config's default
        assert got == expected, field
    assert ServeConfig.model_fields["methods"].get_default(call_default_factory=True) == ["align3"]
    assert "default align3" in by_option["--method"].help


# -- the 0.1 spellings, choices, errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["curate", "attack", "review"])
def test_top_level_aliases_are_the_scenario_commands(cli, name):
    from specalign._cli.agreement import LABEL_OPTIONS  # noqa: PLC0415  (`review --label`: a run's answers)

    alias, command = _params(name), _params("scenario", name)
    alias = {n: p for n, p in alias.items() if name != "review" or n not in LABEL_OPTIONS}
    assert {n: (p.opts, p.secondary_opts, p.required, _default(p)) for n, p in alias.items()} == {
        n: (p.opts, p.secondary_opts, p.required, _default(p)) for n, p in command.items()
    }
    r = cli(name, "--help")
    assert r.returncode == 0 and r.stderr == ""
    assert f"alias of `specalign scenario {name}`; removed in 0.3" in r.stdout
    listing = cli("--help").stdout
    assert f"Alias of `specalign scenario {name}`; removed in 0.3." in listing


def test_an_alias_runs_the_same_command_without_saying_more(cli, tmp_path):
    """`specalign review DIR` and `specalign scenario review DIR` behave alike, to the byte (no deprecation line)."""
    folder = tmp_path / "garden"
    folder.mkdir()
    (folder / "scenario.yaml").write_text(
        "key: garden\nname: Garden\ndescription: A garden helper.\nsafety_specs: [Never x.]\nbehavioral_specs: [Be y.]\n"
    )
    (folder / "prompts.yaml").write_text("- {id: garden-s001, label: safe, prompt: hi}\n")
    runs = [cli(*spelling, str(folder), "--only", "oops") for spelling in (["review"], ["scenario", "review"])]
    for r in runs:
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stdout == ""
    assert runs[0].stderr.replace("specalign review", "specalign scenario review") == runs[1].stderr
    sheets = [tmp_path / "a.csv", tmp_path / "b.csv"]
    for spelling, sheet in zip((["review"], ["scenario", "review"]), sheets, strict=True):
        r = cli(*spelling, str(folder), "--export", str(sheet))
        assert r.returncode == 0 and r.stderr.count("\n") == 1 and "specalign scenario review" in r.stderr
    assert sheets[0].read_bytes() == sheets[1].read_bytes()


@pytest.mark.parametrize(
    ("args", "option", "value"),
    [
        (["run", "--judge-mode", "both"], "--judge-mode", "both"),
        (["run", "--na-policy", "paper"], "--na-policy", "paper"),
        (["score", "RUN", "--na-policy", "Exclude"], "--na-policy", "Exclude"),
        (["compare", "RUN", "--format", "yaml"], "--format", "yaml"),
        (["report", "RUN", "--na-policy", ""], "--na-policy", ""),
        (["export", "RUN", "-o", "x.csv", "--format", "xml"], "--format", "xml"),
        (["serve", "-s", "child", "--judge-mode", "loud"], "--judge-mode", "loud"),
        (["scenario", "review", "DIR", "--only", "spec"], "--only", "spec"),
        (["review", "DIR", "--only", "all"], "--only", "all"),
    ],
)
def test_a_bad_choice_is_one_usage_line(cli, tmp_path, monkeypatch, args, option, value):
    monkeypatch.chdir(tmp_path)
    r = cli(*args)
    assert r.returncode == 2 and r.stdout == "", r
    line = r.stderr.strip()
    assert "\n" not in line and line.startswith("error: Invalid value for"), line
    assert option in line and f"{value!r} is not one of" in line and "Value error" not in line, line
    assert list(tmp_path.iterdir()) == []


def test_choices_are_listed_in_help(cli):
    assert "official|exclude" in cli("run", "--help").stdout
    assert "table|markdown|csv|json" in cli("compare", "--help").stdout
    assert "specs|prompts|attacks" in cli("scenario", "review", "--help").stdout


# -- module structure -------------------------------------------------------------------------------------------------

CLI_MODULES = sorted(p.stem for p in (REPO / "src" / "specalign" / "_cli").glob("*.py"))


@pytest.mark.parametrize("module", [f"specalign._cli.{m}" for m in CLI_MODULES] + ["specalign.cli"])
def test_each_cli_module_imports_alone(module):
    """In a fresh interpreter, any CLI module imports first without a cycle (cli.py and _cli never import each other
    both ways) and without the heavy libraries, which load in the commands that use them."""
    code = (
        f"import sys, importlib; importlib.import_module({module!r}); "
        "heavy = [m for m in ('openai', 'llama_cpp', 'fastapi', 'torch') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_no_cli_module_imports_the_entry_module():
    for path in (REPO / "src" / "specalign" / "_cli").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"from \.\.cli import|import specalign\.cli|from specalign\.cli import", text), path
    assert not (REPO / "src" / "specalign" / "_cli_serve.py").exists()
    assert not (REPO / "src" / "specalign" / "_cli_scenario.py").exists()


def test_commands_the_cli_tells_users_to_run_exist():
    """Hints in messages and help (`Edit it, then: specalign scenario lint DIR`, `see specalign methods`) name real
    commands: each `specalign WORD [WORD]` in the CLI's source resolves in the command tree."""
    names = {" ".join(path) for path, _ in _commands(ROOT) if path}
    wrong = []
    for path in sorted((REPO / "src" / "specalign" / "_cli").glob("*.py")):
        for m in re.finditer(r"specalign ((?:[a-z]+)(?: [a-z]+)?)", path.read_text(encoding="utf-8")):
            first, _, second = m.group(1).partition(" ")
            if first not in names and first != "reads":  # "specalign reads its arguments ... as UTF-8"
                wrong.append(f"{path.name}: {m.group(0)}")
            elif first == "scenario" and second and f"scenario {second}" not in names:
                wrong.append(f"{path.name}: {m.group(0)}")
    assert not wrong, wrong


def test_no_doc_shows_help_output_verbatim():
    """Help screens copied into the docs would rot: the docs name commands and options (checked above) and leave
    the screens to `--help`. Generate any such block from the CLI (and check it here) before adding one."""
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*Usage: (specalign|python -m specalign)", text, re.M), path
        assert "╭─ Options" not in text, path
