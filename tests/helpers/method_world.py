"""One method against the scripted server, as the method tests call it: the bundled biochem scenario's first
prompt, the server's model, and a models config naming a target and a judge."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scripted_server import Reply, ScriptedServer
from specalign.benchmark import load_benchmark
from specalign.methods import create_method
from specalign.models import create_model, settings_from_config

BENCH = load_benchmark("bundled")
SCEN = BENCH.scenario("biochem")
PROMPT = SCEN.prompts[0]


def scripted_model(server: ScriptedServer, **extra: Any):
    """The server's model: no retries, seed 0, no cache; ``extra`` adds settings (``prefill``, ...)."""
    entry = {"model_name": "scripted-model", "base_url": server.base_url, "max_retries": 0, "seed": 0, **extra}
    return create_model(settings_from_config("m", entry, "models.yaml"), None)


def run_method(method: str, model, params=None, scorer=None, *, scenario=SCEN, prompt=PROMPT):
    """``method`` (with ``params``) on one prompt, to its end; the HTTP clients are closed inside the loop
    that opened them."""

    async def go():
        try:
            return await create_method(method, params).run(model, scenario, prompt, scorer=scorer)
        finally:
            await model.aclose()
            judge = getattr(scorer, "judge", None)
            if judge is not None:
                await judge.model.aclose()

    return asyncio.run(go())


def prefill_responder(mode: str, parts: Iterator[str]):
    """A responder answering each prefill with the next of ``parts``: as vLLM does (``continuation``), as
    llama-server does (``echo``: the whole assistant message), or with a reasoning parser that took the echoed
    thought apart (``reasoning``)."""

    def respond(body):
        prefix, more = body["messages"][-1]["content"], next(parts)
        if mode == "continuation":
            return more
        if mode == "echo":
            return prefix + more
        thought, _, answer = (prefix + more).removeprefix("<think>").lstrip("\n").partition("</think>")
        return Reply(answer, reasoning_content=thought)

    return respond


def target_and_judge_yaml(folder: Path, server: ScriptedServer) -> str:
    """A models config in ``folder``: ``target`` (prefill, seed 0) and ``judge``, both the server's model."""
    path = folder / "models.yaml"
    path.write_text(
        f"target:\n  model_name: scripted-model\n  base_url: {server.base_url}\n  prefill: true\n"
        f"  seed: 0\njudge:\n  model_name: scripted-model\n  base_url: {server.base_url}\n"
    )
    return str(path)
