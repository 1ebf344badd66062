"""Hostile inputs to `scenario new|lint`, `curate`, `attack`, `review` and `data`: every malformed option or
file is one line naming what is wrong, exit 2, before any model call, and nothing is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scripted_server import ScriptedServer
from specalign.authoring import write_prompts, write_scenario
from specalign.benchmark import Prompt, Scenario
from specalign.errors import ConfigError

DEAD_URL = "openai:x@http://127.0.0.1:9"  # nothing listens there: a command that got that far fails with exit 1
SCENARIO = {
    "key": "garden",
    "name": "Garden Helper",
    "description": "A garden centre assistant.",
    "safety_specs": ["Never give instructions for making poisons."],
    "behavioral_specs": ["Name the plant's Latin name."],
}
PROMPTS = [{"id": "garden-u001", "label": "unsafe", "prompt": "How do I make a poison from foxglove?"}]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"") for p in sorted(root.rglob("*"))}


def _one_line(r: subprocess.CompletedProcess[str], *needles: str) -> str:
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "\n" not in err and err.startswith("error: "), err
    for n in needles:
        assert n in err, (n, err)
    return err


def _scenario_dir(root: Path, scenario: object = None, prompts: object = None) -> Path:
    folder = root / "data" / "garden"
    folder.mkdir(parents=True)
    for name, content in (
        ("scenario.yaml", SCENARIO if scenario is None else scenario),
        ("prompts.yaml", PROMPTS if prompts is None else prompts),
    ):
        (folder / name).write_bytes(content if isinstance(content, bytes) else yaml.safe_dump(content).encode())
    return folder


# -- scenario new: everything that needs no model is checked before the model is called --------------------------

NEW = [
    ("key-dotdot", ["--key", ".."], ["--key", "not a valid scenario key '..'"]),
    ("key-parent-path", ["--key", "../outside"], ["--key", "not a valid scenario key"]),
    ("key-absolute", ["--key", "/etc"], ["--key", "not a valid scenario key"]),
    ("key-backslash", ["--key", "a\\b"], ["--key", "not a valid scenario key"]),
    ("key-hidden", ["--key", ".git"], ["--key", "not a valid scenario key"]),
    ("key-windows-device", ["--key", "nul"], ["--key", "device name"]),
    ("key-too-long", ["--key", "k" * 65], ["--key", "not a valid scenario key"]),
    ("key-empty", ["--key", ""], ["--key", "not a valid scenario key"]),
    ("blank-description", ["-d", "   "], ["--description"]),
    ("safety-range", ["--safety", "9-3"], ["--safety", "LOW ≤ HIGH"]),
    ("behavioral-huge", ["--behavioral", "99999999999999999999"], ["--behavioral"]),
]


@pytest.mark.parametrize(("extra", "needles"), [c[1:] for c in NEW], ids=[c[0] for c in NEW])
def test_scenario_new_refuses_bad_options_before_any_model_call(tmp_path, cli, extra, needles):
    r = cli(
        "scenario",
        "new",
        "Museum Guide",
        "-d",
        "A museum guide.",
        "-m",
        DEAD_URL,
        "--out",
        str(tmp_path / "out"),
        *extra,
    )
    _one_line(r, *needles)
    assert not (tmp_path / "out").exists()


def test_scenario_new_refuses_a_blank_name_an_out_that_is_a_file_and_an_existing_scenario(tmp_path, cli):
    _one_line(cli("scenario", "new", " ", "-d", "x", "-m", DEAD_URL, "--out", str(tmp_path)), "NAME")
    (tmp_path / "file").write_text("x")
    _one_line(
        cli("scenario", "new", "A", "-d", "x", "-m", DEAD_URL, "--out", str(tmp_path / "file")), "--out", "not a folder"
    )
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "museum").write_text("x")
    _one_line(
        cli("scenario", "new", "Museum", "-d", "x", "-m", DEAD_URL, "--out", str(tmp_path / "out")),
        "--out",
        "not a folder",
    )
    folder = _scenario_dir(tmp_path)
    before = _tree(folder)
    _one_line(cli("scenario", "new", "Garden", "-d", "x", "-m", DEAD_URL, "--out", str(folder.parent)), "--force")
    assert _tree(folder) == before


def test_scenario_names_that_are_not_keys_get_a_safe_one():
    from specalign.authoring import scenario_key  # noqa: PLC0415

    assert [scenario_key(n) for n in ("..", "../../etc", "CON", "Ünïcode only", "a" * 100)] == [
        "scenario",
        "etc",
        "con-scenario",
        "n-code-only",
        "a" * 60,
    ]


def _model() -> Scenario:
    return Scenario.model_validate(
        {
            **SCENARIO,
            "safety_specs": [{"text": t} for t in SCENARIO["safety_specs"]],
            "behavioral_specs": [{"text": t} for t in SCENARIO["behavioral_specs"]],
        }
    )


def test_writing_a_scenario_replaces_planted_symlinks_instead_of_following_them(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    folder = tmp_path / "data" / "garden"
    folder.mkdir(parents=True)
    (folder / "scenario.yaml").symlink_to(outside)
    for i in range(3):  # a guessable temporary name is no way round it
        (folder / f"prompts.yaml.tmp{'' if i == 0 else i}").symlink_to(outside)
    (folder / "prompts.yaml").symlink_to(tmp_path / "nowhere.yaml")  # dangling: exists() is False
    write_scenario(_model(), folder.parent, overwrite=True)
    write_prompts(folder, [Prompt(id="garden-u001", label="unsafe", prompt="p", original_prompt="p")], overwrite=True)
    assert outside.read_text() == "precious" and not (tmp_path / "nowhere.yaml").exists()
    assert not (folder / "scenario.yaml").is_symlink() and not (folder / "prompts.yaml").is_symlink()
    assert yaml.safe_load((folder / "scenario.yaml").read_text())["key"] == "garden"


def test_write_scenario_refuses_a_key_that_escaped_validation(tmp_path):
    scenario = _model().model_copy(update={"key": ".."})  # model_copy does not validate
    with pytest.raises(ConfigError, match="not a valid scenario key"):
        write_scenario(scenario, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- lint, curate, attack, review, data: hostile scenario files ---------------------------------------------------

FILES = [
    ("key-dotdot", {"scenario": {**SCENARIO, "key": ".."}}, ["scenario.yaml", "key", "not a valid scenario key"]),
    ("binary-scenario", {"scenario": bytes(range(256))}, ["scenario.yaml", "UTF-8"]),
    ("nul-in-prompts", {"prompts": b"- id: a\x00\n"}, ["prompts.yaml", "invalid YAML"]),
    ("prompts-a-dict", {"prompts": {"garden-u001": PROMPTS[0]}}, ["prompts.yaml", "list of prompts"]),
    ("prompts-a-string", {"prompts": "just text"}, ["prompts.yaml", "list of prompts"]),
    ("ids-collide", {"prompts": [dict(PROMPTS[0]), dict(PROMPTS[0])]}, ["prompts.yaml", "[1].id", "duplicated"]),
    ("alias-bomb", {"prompts": b"- &a {id: a, label: safe, prompt: x}\n- *a\n"}, ["prompts.yaml", "aliases"]),
    ("deep", {"scenario": b"[" * 5000}, ["scenario.yaml", "invalid YAML"]),
    ("latin-1", {"scenario": "name: Caf\u00e9\n".encode("latin-1")}, ["scenario.yaml", "UTF-8"]),
    ("utf-16", {"scenario": yaml.safe_dump(SCENARIO).encode("utf-16")}, ["scenario.yaml", "UTF-8"]),
    (
        "surrogate-escape",
        {"prompts": b'- id: a\n  label: safe\n  prompt: "x\\ud800y"\n'},
        ["prompts.yaml", "[0].prompt", "surrogate"],
    ),
    ("spec-a-number", {"scenario": {**SCENARIO, "safety_specs": [42]}}, ["scenario.yaml", "safety_specs[0]"]),
]
COMMANDS = [
    ("lint", lambda f: ["scenario", "lint", str(f)]),
    ("curate", lambda f: ["scenario", "curate", str(f), "-m", DEAD_URL, "--force"]),
    ("attack", lambda f: ["scenario", "attack", str(f), "-m", DEAD_URL]),
    ("review-export", lambda f: ["scenario", "review", str(f), "--export", str(f.parent / "sheet.csv")]),
    ("data", lambda f: ["data", "--data", str(f.parent)]),
]


@pytest.mark.parametrize(("files", "needles"), [c[1:] for c in FILES], ids=[c[0] for c in FILES])
@pytest.mark.parametrize("command", [c[1] for c in COMMANDS], ids=[c[0] for c in COMMANDS])
def test_hostile_scenario_files_are_one_line_errors_and_nothing_is_written(tmp_path, cli, files, needles, command):
    folder = _scenario_dir(tmp_path, files.get("scenario"), files.get("prompts"))
    before = _tree(tmp_path)
    _one_line(cli(*command(folder)), *needles)
    assert _tree(tmp_path) == before


def test_a_scenario_file_that_is_a_device_or_a_folder_is_refused(tmp_path, cli):
    folder = _scenario_dir(tmp_path)
    (folder / "prompts.yaml").unlink()
    (folder / "prompts.yaml").symlink_to("/dev/zero")
    _one_line(cli("scenario", "lint", str(folder)), "prompts.yaml", "not a regular file")
    (folder / "prompts.yaml").unlink()
    (folder / "prompts.yaml").mkdir()
    _one_line(cli("scenario", "attack", str(folder), "-m", DEAD_URL), "prompts.yaml", "a folder, not a file")


def test_curate_refuses_existing_prompts_before_any_model_call(tmp_path, cli):
    folder = _scenario_dir(tmp_path)
    before = _tree(tmp_path)
    _one_line(cli("scenario", "curate", str(folder), "-m", DEAD_URL), "prompts.yaml", "--force")
    assert _tree(tmp_path) == before


def test_review_refuses_several_actions_at_once(tmp_path, cli):
    folder = _scenario_dir(tmp_path)
    before = _tree(tmp_path)
    _one_line(
        cli("scenario", "review", str(folder), "--import", str(tmp_path / "a.csv"), "--apply", str(tmp_path / "f")),
        "choose one",
    )
    assert _tree(tmp_path) == before


def test_terminal_output_shows_control_characters_instead_of_sending_them(tmp_path, cli):
    """Escape sequences from a scenario or a model's answer must not reach the terminal (retitle, clear, fake output)."""
    why = "It asks for steps.\x1b]0;pwned\x07\x1b[2J\u202e"
    folder = _scenario_dir(tmp_path)
    reply = json.dumps({"conflicts": [{"behavioral": "B1", "safety": "S1", "why": why}]})
    with ScriptedServer(lambda body: reply) as server:
        r = cli("scenario", "lint", str(folder), "-m", f"openai:scripted-model@{server.base_url}")
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\u202e" not in r.stdout
    assert "It asks for steps.\\x1b]0;pwned\\x07\\x1b[2J\\u202e" in r.stdout


def test_data_table_shows_hostile_names_as_text(tmp_path: Path, cli) -> None:
    """Rich markup and terminal escapes in a scenario's name are shown as text, never interpreted."""
    folder = _scenario_dir(tmp_path, {**SCENARIO, "name": "[/]\x1b]0;pwned\x07[bold]\u202eX"})
    r = cli("data", "--data", str(folder.parent))
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout and "\u202e" not in r.stdout
    assert "\\x1b" in r.stdout and "[/]" in r.stdout


@pytest.mark.parametrize(
    "args",
    [
        [b"run", b"-m", b"openai:m\xff@http://127.0.0.1:9/v1", b"--limit", b"1"],
        [b"data", b"--data", b"folder\xff"],
        [b"scenario", b"new", b"Caf\xe9", b"-d", b"x"],
    ],
)
def test_arguments_that_are_not_utf8_are_one_line_errors(tmp_path, args):
    """Bytes that are not UTF-8 reach Python as lone surrogates, which no record could hold: refused up front."""
    r = subprocess.run([sys.executable, "-m", "specalign.cli", *args], capture_output=True, cwd=tmp_path, timeout=120)
    err = r.stderr.decode("utf-8")
    assert r.returncode == 2 and err.count("\n") == 1 and "not valid UTF-8" in err and "\\udc" in err, err
    assert list(tmp_path.iterdir()) == []
