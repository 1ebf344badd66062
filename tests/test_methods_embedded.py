"""Every deliberation method's control flow on the real embedded SmolLM2-135M (llama.cpp in-process)."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'specalign[local]')")

from small_world import SMALL, SMALL_PROMPT  # noqa: E402
from specalign.methods import create_method, make_scorer  # noqa: E402
from specalign.methods.baselines import vanilla_messages  # noqa: E402
from specalign.models import Message, create_model, parse_model_spec  # noqa: E402
from specalign.models._llamacpp import LlamaCppBackend, _formatter, chat_template_of  # noqa: E402

pytestmark = pytest.mark.slow

SCEN, PROMPT = SMALL, SMALL_PROMPT  # a short scenario: the control flow is the same, the prompts 5x shorter
REWARD = "method_rewards:by_length"  # no judge calls: the judge path is tested over HTTP


def _model(max_tokens=12, **update):
    """The embedded model with one context on every core: these tests run one call at a time, and a
    single context decodes it about twice as fast as one of the default per-core contexts."""
    update.setdefault("parallel", 1)
    settings = parse_model_spec("local")
    settings = settings.model_copy(update={"params": {"max_tokens": max_tokens, "temperature": 0.7}, **update})
    return create_model(settings, None)


def _run(method, params=None, model=None):
    m = create_method(method, params)
    scorer = make_scorer(REWARD, judge=None, alpha=0.3, na_policy="official") if m.uses_scorer else None
    return asyncio.run(m.run(model or _model(), SCEN, PROMPT, scorer=scorer))


@pytest.mark.parametrize(
    "method,params,roles",
    [
        ("zero_think", {}, ["answer"]),
        ("more_think", {"rethink_count": 2}, ["think-1", "think-2"]),
        ("align3", {}, ["stage-1:behavior", "stage-2:safety", "stage-3:audit"]),
        ("self_refine", {"max_iters": 1, "stop_early": False}, ["answer", "feedback", "refine"]),
        ("best_of_n", {"n": 2, "scorer": REWARD}, ["sample", "score", "sample", "score"]),
        (
            "tpo",
            {"samples": 2, "iterations": 1, "scorer": REWARD},
            ["sample", "score", "sample", "score", "critique", "guidance", "update", "update"],
        ),
    ],
)
def test_method_control_flow_on_the_embedded_model(method, params, roles):
    out = _run(method, params)
    got = [s.role for s in out.steps]
    if "thought_closed_by_method" in out.flags:  # SmolLM2 never learnt </think>: the method closes it
        assert got == [*roles, "answer"]
    else:
        assert got[: len(roles)] == roles  # TPO scores only the rewrites that parse
    assert out.usage.completion_tokens == sum(s.usage.completion_tokens for s in out.steps if s.source == "target")
    assert out.calls + out.cached_calls >= len([s for s in out.steps if s.source == "target"])
    assert out.response or "thought_unclosed" in out.flags or out.stats.get("unparsed") is not None


def test_prefill_renders_the_models_own_template_left_open():
    model = _model()
    backend: LlamaCppBackend = model.backend  # type: ignore[assignment]
    shared = backend.shared()
    messages = vanilla_messages("sys", SCEN, PROMPT)
    request = model.request(
        [*messages, Message(role="assistant", content="<think>\nLet me see. So")], continue_final=True
    )
    tokens = backend._render(shared, request)
    text = shared.llama.detokenize(tokens, special=True).decode()
    head = _formatter(shared, chat_template_of(shared.llama))(messages=[m.model_dump() for m in messages]).prompt
    assert text == head + "<think>\nLet me see. So"
    assert text.rstrip().endswith("So") and "<|im_end|>\n<|im_start|>assistant\n<think>" in text


def test_kv_cache_is_reused_between_stages_and_not_without_reuse():
    reuse = _run("align3", {}, _model(max_tokens=8))
    for before, step in zip(reuse.steps, reuse.steps[1:], strict=False):  # each stage extends the last one's text
        assert step.usage.cached_prompt_tokens >= before.usage.prompt_tokens - 2, [s.usage for s in reuse.steps]
    fresh = _run("align3", {}, _model(max_tokens=8, kv_reuse=False))
    assert all(s.usage.cached_prompt_tokens == 0 for s in fresh.steps)
    assert [s.usage.prompt_tokens for s in fresh.steps][0] == reuse.steps[0].usage.prompt_tokens
