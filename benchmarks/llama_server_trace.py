"""Align3 through a real llama.cpp ``llama-server``: every request's prefix and prompt tokens, one prompt.

The server is built by ``tools/build-llama-cpp.sh`` and serves the embedded SmolLM2-135M; a recording
proxy keeps every request and answer. The trace shows whether each stage's prompt is the previous one
plus the new text (no re-sent prefix). Writes a section of docs/benchmarks.md. Usage:

    .venv/bin/python benchmarks/llama_server_trace.py [--scenario child] [--max-tokens 200]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests" / "helpers"))
from demo import write_section  # noqa: E402
from llama_server import RecordingProxy, llama_server  # noqa: E402
from specalign.benchmark import load_benchmark  # noqa: E402
from specalign.methods import create_method  # noqa: E402
from specalign.models import create_model, embedded_gguf_path, settings_from_config  # noqa: E402


def trace(scenario_key: str, max_tokens: int) -> tuple[list[dict], object]:
    scenario = load_benchmark("bundled").scenario(scenario_key)
    prompt = next(p for p in scenario.prompts if p.label == "unsafe")
    with llama_server(embedded_gguf_path(), threads=2) as url, RecordingProxy(url) as proxy:
        entry = {
            "model_name": "SmolLM2-135M-Instruct",
            "base_url": proxy.base_url,
            "prefill": True,
            "temperature": 0,
            "seed": 0,
            "max_tokens": max_tokens,
            "max_retries": 0,
        }
        model = create_model(settings_from_config("smol-server", entry, "models.yaml"), None)

        async def go():
            try:
                return await create_method("align3").run(model, scenario, prompt)
            finally:
                await model.aclose()

        out = asyncio.run(go())
        rows = []
        for chat, step in zip(proxy.chats(), out.steps, strict=False):
            prefix = chat.request["messages"][-1]["content"]
            content = chat.response["choices"][0]["message"]["content"]
            usage = chat.response["usage"]
            rows.append(
                {
                    "role": step.role,
                    "prefix_chars": len(prefix),
                    "echoed": content.startswith(prefix),
                    "prompt_tokens": usage["prompt_tokens"],
                    "completion_tokens": usage["completion_tokens"],
                    "cached": (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0),
                    "think_markers": prefix.count("<think>"),
                }
            )
    return rows, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="child")
    ap.add_argument("--max-tokens", type=int, default=200)
    args = ap.parse_args()
    rows, out = trace(args.scenario, args.max_tokens)
    lines = [
        "| call | step | prefix (chars) | server echoed the prefix | prompt tokens | of which cached | completion tokens | `<think>` in prefix |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows, 1):
        lines.append(
            f"| {i} | {r['role']} | {r['prefix_chars']:,} | {'yes' if r['echoed'] else 'no'} | "
            f"{r['prompt_tokens']:,} | {r['cached']:,} | {r['completion_tokens']} | {r['think_markers']} |"
        )
    growth = [b["prompt_tokens"] - a["prompt_tokens"] for a, b in zip(rows, rows[1:], strict=False)]
    body = (
        f"`.venv/bin/python benchmarks/llama_server_trace.py --scenario {args.scenario} --max-tokens {args.max_tokens}`: "
        f"align3 on the first unsafe `{args.scenario}` prompt, the embedded SmolLM2-135M behind llama.cpp's own "
        f"llama-server (built by `tools/build-llama-cpp.sh`, `--jinja`, `prefill: true`), greedy.\n\n"
        + "\n".join(lines)
        + f"\n\nEach call's prompt grows by the previous call's completion plus the injected stage text "
        f"(growth per call: {', '.join(f'{g:,}' for g in growth)} tokens); the server echoes the prefix every "
        f"time and specalign keeps only the continuation. Flags: {out.flags or 'none'}.\n"
    )
    write_section("Align3 through llama-server (prompt-token trace)", body)
    print(body)


if __name__ == "__main__":
    main()
