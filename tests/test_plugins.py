"""Plugins: a backend and a method in packages of their own, loaded through entry points.

The two packages are the ones docs/plugins.md quotes (tests/plugins/: ``specalign-echo``, a
deterministic backend; ``specalign-longest``, a method). They are built and installed with pip into a
temporary virtual environment layered on this one (specalign and its dependencies come from here),
and ``specalign`` runs there end to end against a scripted judge. In-process, the public
``register_backend`` / ``register_method`` make the same backend and method usable from a config.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import shutil
import site
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from scripted_server import ScriptedServer
from specalign._registry import Registry
from specalign.benchmark import load_benchmark
from specalign.errors import ConfigError
from specalign.methods import GenerationMethod, MethodParams, create_method
from specalign.methods._registry import METHODS
from specalign.models import create_model, parse_model_spec, register_backend, settings_from_config
from specalign.models._registry import BACKENDS
from specbench_world import is_judge, world

REPO = Path(__file__).resolve().parent.parent
PLUGINS = Path(__file__).resolve().parent / "plugins"
PACKAGES = ("specalign-echo", "specalign-longest")
DOC = REPO / "docs" / "plugins.md"

SCEN = load_benchmark("bundled").scenario("child")
PROMPT = SCEN.prompts[0]


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0]


# -- installed: pip install into a temporary environment, then the CLI ---------------------------


def _cli_code() -> str:
    """Python that runs the ``specalign`` console script, wherever pyproject.toml points it."""
    found = re.search(r'^specalign\s*=\s*"([\w.]+):(\w+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert found, "pyproject.toml declares no `specalign` console script"
    module, func = found.groups()
    return f"import sys; from {module} import {func} as main; sys.argv[0] = 'specalign'; sys.exit(main())"


@pytest.fixture(scope="module")
def plugin_python(tmp_path_factory) -> Path:
    """The python of a fresh venv holding both plugin packages, installed by pip from their sources.

    ``--system-site-packages`` would reach the base interpreter's packages, not this venv's, so the
    new venv gets a .pth file that adds this venv's site-packages after its own (the editable
    specalign install included).
    """
    root = tmp_path_factory.mktemp("plugins")
    env = root / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=60)
    python = env / ("Scripts" if os.name == "nt" else "bin") / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    parents = "; ".join(f"site.addsitedir({d!r})" for d in site.getsitepackages())
    (Path(purelib) / "_specalign_parent_env.pth").write_text(f"import site; {parents}\n")
    # one process each: importing pip and then setuptools in one process trips setuptools' distutils shim
    for probe in (["-c", "import setuptools, specalign"], ["-m", "pip", "--version"]):
        found = subprocess.run([python, *probe], capture_output=True, text=True, timeout=60)
        if found.returncode != 0:
            pytest.skip(f"a venv layered on this one cannot run {' '.join(probe)}: {found.stderr.strip()[-300:]}")
    skip = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    sources = [shutil.copytree(PLUGINS / name, root / name, ignore=skip) for name in PACKAGES]  # pip builds there
    pip = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", "--no-cache-dir"]
    out = subprocess.run([*pip, *map(str, sources)], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    installed = sorted(p.name.split("-")[0] for p in Path(purelib).glob("*.dist-info"))
    assert installed == ["specalign_echo", "specalign_longest"]  # into the new venv, as wheels pip built
    return python


def _specalign(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [python, "-c", _cli_code(), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def test_installed_plugins_are_listed(plugin_python, tmp_path):
    out = _specalign(plugin_python, "methods", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    listed = {line.split(":")[0] for line in out.stdout.splitlines() if ":" in line}
    assert {"longest_of_n", "vanilla", "align3", "tpo"} <= listed
    assert "n samples of the prompt with its specs" in out.stdout and "n=2" in out.stdout


def test_installed_plugins_run_end_to_end(plugin_python, tmp_path):
    """`specalign run` with the plugin backend as target and the plugin method: the generations are theirs."""
    with ScriptedServer(world) as judge:
        out = _specalign(
            plugin_python,
            *("run", "-m", "echo:tiny-model", "--method", "longest_of_n", "-p", "n=3"),
            *("--judge", f"openai:scripted-model@{judge.base_url}", "--limit", "1", "-s", "child"),
            *("--out", str(tmp_path / "run")),
            cwd=tmp_path,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert judge.chat_requests and all(is_judge(r.json) for r in judge.chat_requests)  # the judge only
    records = [json.loads(x) for x in (tmp_path / "run" / "generations.jsonl").read_text().splitlines()]
    assert len(records) == 1
    rec = records[0]
    line = _first_line(PROMPT.prompt)
    assert rec["response"] == f"[tiny-model] {line} (sample 1)"  # the echo backend, longest of the samples
    assert [s["role"] for s in rec["steps"]] == ["sample"] * 3
    assert [s["text"] for s in rec["steps"]] == [
        f"[tiny-model] {line}",
        f"[tiny-model] {line} (sample 1)",
        f"[tiny-model] {line} (sample 2)",
    ]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert '"backend": "echo"' in json.dumps(manifest) and '"longest_of_n"' in json.dumps(manifest)


def test_installed_unknown_backend_is_one_line(plugin_python, tmp_path):
    (tmp_path / "models.yaml").write_text("mine:\n  model_name: m\n  backend: nosuch\n")
    out = _specalign(
        plugin_python,
        *("run", "--models-config", "models.yaml", "-m", "mine", "--judge", "echo:j", "--out", "run"),
        cwd=tmp_path,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "mine.backend: unknown backend 'nosuch' (available: anthropic, echo, llamacpp, openai)" in lines[0]


def test_the_doc_shows_the_plugins_the_test_installs():
    doc = DOC.read_text()
    for name in PACKAGES:
        for path in sorted(p for p in (PLUGINS / name).iterdir() if p.suffix in (".py", ".toml")):
            assert path.read_text().strip() in doc, f"docs/plugins.md does not quote tests/plugins/{name}/{path.name}"


# -- in-process: the public register_* functions ----------------------------------------------


def _load_module(package: str, module: str):
    spec = importlib.util.spec_from_file_location(module, PLUGINS / package / f"{module}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def registered():
    """Register the example backend and method in this process; forget them afterwards."""
    echo = _load_module("specalign-echo", "specalign_echo")
    register_backend("echo", echo.EchoBackend)
    try:
        longest = _load_module("specalign-longest", "specalign_longest")  # @register_method
        yield echo, longest
    finally:
        BACKENDS.unregister("echo")
        METHODS.unregister("longest_of_n")


def test_registered_backend_and_method_work_from_a_config(registered):
    settings = settings_from_config("mine", {"model_name": "tiny", "backend": "echo", "seed": 1}, "models.yaml")
    assert settings.backend == "echo" and settings.params == {"seed": 1}
    assert parse_model_spec("echo:tiny").backend == "echo"
    method = create_method("longest_of_n", {"n": 2})
    assert method.params.n == 2 and type(method).Params.__name__ == "LongestOfNParams"

    async def go():
        model = create_model(settings)
        try:
            return await method.run(model, SCEN, PROMPT)
        finally:
            await model.aclose()

    out = asyncio.run(go())
    assert out.response == f"[tiny] {_first_line(PROMPT.prompt)} (sample 1)"
    assert out.calls == 2 and out.stats == {"samples": 2}


def test_plugin_method_params_are_validated_like_built_ins(registered):
    with pytest.raises(ConfigError, match=r"method longest_of_n: nonsense: .*; longest_of_n takes n$"):
        create_method("longest_of_n", {"nonsense": 1})
    with pytest.raises(ConfigError, match="method longest_of_n: n: Input should be less than or equal to 16"):
        create_method("longest_of_n", {"n": 99})


def test_unknown_backend_is_a_one_line_error_listing_the_backends(registered):
    with pytest.raises(ConfigError) as e:
        settings_from_config("mine", {"model_name": "m", "backend": "nosuch"}, "models.yaml")
    assert (
        str(e.value)
        == "models.yaml: mine.backend: unknown backend 'nosuch' (available: anthropic, echo, llamacpp, openai)"
    )
    with pytest.raises(ConfigError, match="unknown model 'nosuch:m'"):
        parse_model_spec("nosuch:m")
    with pytest.raises(ConfigError, match="echo: needs a model name"):
        parse_model_spec("echo:")


def test_register_backend_is_also_a_decorator(registered):
    echo, _ = registered
    try:
        decorated = register_backend("echo2")(echo.EchoBackend)
        assert decorated is echo.EchoBackend and parse_model_spec("echo2:m@http://127.0.0.1:9/v1").backend == "echo2"
    finally:
        BACKENDS.unregister("echo2")


def test_builtin_spellings_are_kept():
    assert parse_model_spec("local").backend == "llamacpp"
    assert parse_model_spec("gguf:/m/q.gguf").backend == "llamacpp"
    assert parse_model_spec("openai:m@http://127.0.0.1:9/v1").backend == "openai"
    with pytest.raises(ConfigError, match="unknown model 'llamacpp:x'"):
        parse_model_spec("llamacpp:x")  # the llamacpp backend is spelled gguf:PATH or local


# -- the registry and the typed base class ----------------------------------------------------


def _registry_with(monkeypatch, *entry_points: metadata.EntryPoint) -> Registry:
    group = "specalign.tests"
    monkeypatch.setattr(
        "specalign._registry.metadata.entry_points", lambda group: [ep for ep in entry_points if ep.group == group]
    )
    reg: Registry = Registry("thing", group, field="thing")
    reg.register("builtin", "B")
    return reg


def test_registry_loads_entry_points_only_when_a_name_is_missing(monkeypatch):
    ep = metadata.EntryPoint(name="json_thing", value="json:dumps", group="specalign.tests")
    reg = _registry_with(monkeypatch, ep)
    assert reg.get("builtin") == "B" and not reg._plugins_loaded
    assert reg.get("json_thing") is json.dumps  # an object: registered under the entry point's name
    assert reg.names() == ["builtin", "json_thing"]
    with pytest.raises(ConfigError, match=r"^thing: unknown thing 'nope' \(available: builtin, json_thing\)$"):
        reg.get("nope")


def test_registry_reports_a_broken_plugin_in_one_line(monkeypatch):
    ep = metadata.EntryPoint(name="bad", value="no_such_module_for_specalign", group="specalign.tests")
    reg = _registry_with(monkeypatch, ep)
    with pytest.raises(ConfigError) as e:
        reg.names()
    assert "\n" not in str(e.value)
    assert "cannot load plugin 'bad' (no_such_module_for_specalign, entry point group specalign.tests)" in str(e.value)
    assert "ModuleNotFoundError" in str(e.value)


def test_registry_keeps_a_builtin_a_plugin_would_shadow(monkeypatch):
    ep = metadata.EntryPoint(name="builtin", value="json:dumps", group="specalign.tests")
    reg = _registry_with(monkeypatch, ep)
    with pytest.raises(ConfigError, match="registers thing 'builtin', a name already taken"):
        reg.names()
    assert reg._entries["builtin"] == "B"


def test_a_method_declares_its_params_once():
    class P(MethodParams):
        k: int = 1

    class M(GenerationMethod[P]):
        name = "m"

        async def generate(self, ctx, scenario, prompt):
            raise NotImplementedError

    class Sub(M):
        pass

    assert M.Params is P and Sub.Params is P and M({"k": 2}).params.k == 2

    class Old(GenerationMethod):  # the old spelling still works
        name = "old"
        Params = P

        async def generate(self, ctx, scenario, prompt):
            raise NotImplementedError

    assert Old.Params is P
    with pytest.raises(TypeError, match="declares its parameters twice"):

        class Twice(GenerationMethod[P]):
            name = "twice"
            Params = MethodParams
