"""Writing into a model's thinking: staged injections by prefill, or their multi-turn equivalent.

Prefill (``staged_thinking``): the thought is opened by the method (``<think>`` + the first
injection), the model continues until it tries to close the thought, the next injection is
appended, and so on; after the last injection the model thinks on, closes the thought and
answers. A model that ends without closing its thought (an instruct model that never learnt
``</think>``, or one that ran out of tokens) gets the thought closed for it and one more call
for the answer, flagged ``thought_closed_by_method``.

Multi-turn (``staged_turns``), for APIs that cannot prefill: each injection becomes a user turn
asking the model to continue its reasoning from that thought; a last turn asks for the answer.
"""

from __future__ import annotations

from typing import Literal

from ..models import Message
from ._context import MethodContext
from ._text import split_completion, thought_before_end
from ._types import Answer
from .baselines import BaselineParams

NoPrefill = Literal["refuse", "multi_turn"]
Injection = tuple[str, str]  # (step role, text written into the thought)


class PrefillParams(BaselineParams):
    """Parameters of methods that write into the thinking: what to do on a model that cannot prefill."""

    no_prefill: NoPrefill = "refuse"


REASON_ONLY = (
    "Think this through before answering. In this reply write only your reasoning, not the answer "
    "itself. Begin your reasoning with this thought and carry it on:\n\n{thought}"
)
CONTINUE_REASONING = "Continue your reasoning from this thought and carry it on:\n\n{thought}"
FINAL_ANSWER = (
    "Now write your final answer to the original request, following every specification. "
    "Write only the answer, not your reasoning."
)


async def staged_thinking(ctx: MethodContext, messages: list[Message], injections: list[Injection]) -> Answer:
    """Continue one assistant turn through ``injections``; see the module docstring."""
    start, end = ctx.thought_start, ctx.thought_end
    injections = injections or [("think", "")]
    text = f"{start}\n"
    for i, (role, injected) in enumerate(injections):
        if i == 0:
            text += injected
        else:
            text = f"{text.rstrip()}\n\n{injected}"
        last = i == len(injections) - 1
        out = await ctx.continue_turn(role, messages, text, stop=None if last else [end], round=i, final=last)
        if not last:  # a server that ran past the stop: the thought ends where the model closed it
            text += thought_before_end(out, end)
    if out.answer_start is not None or end in out.text:  # the model closed its thought: split once, there
        split = split_completion(out, start, end)
        return Answer(
            response=split.response,
            thought=_thought_of(text + thought_before_end(out, end), start),
            flags=split.flags(),
            finish_reason=out.finish_reason,
        )
    text = f"{(text + out.text).rstrip()}\n{end}\n\n"
    final = await ctx.continue_turn("answer", messages, text, round=len(injections), final=True, closed=True)
    split = split_completion(final, start, end, closed=True)  # everything after the closed thought is answer
    return Answer(
        response=split.response,
        thought=_thought_of(text.rpartition(end)[0], start),
        flags=["thought_closed_by_method", *split.flags()],
        finish_reason=final.finish_reason,
    )


async def staged_turns(ctx: MethodContext, messages: list[Message], injections: list[Injection]) -> Answer:
    """The multi-turn equivalent of :func:`staged_thinking` for models that cannot prefill."""
    convo = list(messages)
    thought_parts: list[str] = []
    for i, (role, injected) in enumerate(injections):
        ask = (REASON_ONLY if i == 0 else CONTINUE_REASONING).format(thought=injected.strip() or "Let me think.")
        if i == 0:
            convo[-1] = Message(role="user", content=f"{convo[-1].content}\n\n{ask}")
        else:
            convo.append(Message(role="user", content=ask))
        out = await ctx.chat(role, convo, round=i)
        convo.append(Message(role="assistant", content=out.text))
        thought_parts.append(f"{injected.strip()}\n{out.text.strip()}".strip())
    convo.append(Message(role="user", content=FINAL_ANSWER))
    final = await ctx.chat("answer", convo, round=len(injections), final=True)
    split = split_completion(final, ctx.thought_start, ctx.thought_end)
    return Answer(
        response=split.response,
        thought="\n\n".join(thought_parts),
        flags=["multi_turn", *split.flags()],
        finish_reason=final.finish_reason,
    )


def _thought_of(text: str, start: str) -> str:
    text = text.strip()
    return text[len(start) :].strip() if text.startswith(start) else text
