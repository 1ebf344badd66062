"""The calls a method makes for one prompt, each recorded as a step with its usage."""

from __future__ import annotations

from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from ..benchmark import Prompt, Scenario
from ..errors import ConfigError
from ..models import ChatRequest, Completion, Message, Model, Usage, call_stage
from ._stream import AnswerSink, AnswerStreamer
from ._types import Answer, MethodOutput, MethodStep

if TYPE_CHECKING:
    from ._scorers import CandidateScorer


class MethodContext:
    """The target model (and the candidate scorer, if any) as a method sees them, for one prompt."""

    def __init__(self, model: Model, scorer: CandidateScorer | None = None, sink: AnswerSink | None = None):
        self.model = model
        self.scorer = scorer
        #: where the answer of a call marked ``final`` streams to (the gateway's ``stream: true``); None: nowhere
        self.sink = sink
        self.steps: list[MethodStep] = []
        self._scorer_calls = 0
        self._scorer_cached = 0
        self._backend_flags: list[str] = []

    @property
    def thought_start(self) -> str:
        return self.model.settings.thought_start or "<think>"

    @property
    def thought_end(self) -> str:
        return self.model.settings.thought_end or "</think>"

    async def chat(
        self,
        role: str,
        messages: list[Message],
        *,
        params: dict[str, Any] | None = None,
        sample_index: int = 0,
        round: int = 0,
        index: int = 0,
        final: bool = False,
    ) -> Completion:  # noqa: A002
        """One chat completion of the target model, recorded as a step.

        ``final``: this call's split may be the method's answer, so with a sink its answer streams
        (:mod:`._stream`); mark only such calls. A model that writes no thought into its content
        (:attr:`Model.inline_thought` false) has its content returned as all answer (``answer_start`` 0
        unless the server returned reasoning apart).
        """
        with call_stage(role):
            if final and self.sink is not None:
                request = self.model.request(messages, params=params, sample_index=sample_index)
                out = await self._streamed(request, inline=self.model.inline_thought)
            else:
                out = await self.model.generate(messages, params=params, sample_index=sample_index)
        if out.answer_start is None and not self.model.inline_thought:
            out = out.model_copy(update={"answer_start": 0})  # the model writes no thought into its content
        self._record(role, out, round, index)
        return out

    async def continue_turn(
        self,
        role: str,
        messages: list[Message],
        prefix: str,
        *,
        stop: list[str] | None = None,
        params: dict[str, Any] | None = None,
        sample_index: int = 0,
        round: int = 0,  # noqa: A002
        index: int = 0,
        final: bool = False,
        closed: bool = False,
    ) -> Completion:
        """Continue the assistant turn that starts with ``prefix``, recorded as a step.

        ``final`` as for :meth:`chat`; ``closed``: the prefix has closed the thought, so all that the
        model writes is answer (the method splits it with ``closed=True``).
        """
        with call_stage(role):
            if final and self.sink is not None:
                request = self.model.continue_request(
                    messages, prefix, stop=stop, params=params, sample_index=sample_index
                )
                out = await self._streamed(request, closed=closed)
            else:
                out = await self.model.continue_turn(
                    messages, prefix, stop=stop, params=params, sample_index=sample_index
                )
        self._record(role, out, round, index)
        return out

    async def _streamed(self, request: ChatRequest, *, closed: bool = False, inline: bool = True) -> Completion:
        assert self.sink is not None
        streamer = AnswerStreamer(self.sink, self.thought_start, self.thought_end, closed=closed, inline=inline)
        async with aclosing(self.model.stream(request)) as pieces:
            async for item in pieces:
                if isinstance(item, Completion):
                    return item
                streamer.feed(item)
        raise AssertionError("a model stream ends with its completion")

    async def score(
        self,
        scenario: Scenario,
        prompt: Prompt,
        response: str,
        *,
        round: int = 0,  # noqa: A002
        index: int = 0,
    ) -> float | None:
        """The scorer's reward for ``response`` (higher is better); None when it could not score it."""
        if self.scorer is None:
            raise ConfigError("this method scores candidates but the run gave it no scorer", field="method")
        result = await self.scorer.score(scenario, prompt, response)
        self._scorer_calls += result.calls
        self._scorer_cached += result.cached_calls
        self.steps.append(
            MethodStep(
                role="score",
                round=round,
                index=index,
                source="scorer",
                usage=result.usage,
                cached=result.calls == 0,
                score=result.value,
                status="ok" if result.value is not None else "unscored",
                note=result.note,
            )
        )
        return result.value

    def skip(self, role: str, *, round: int = 0, note: str) -> None:  # noqa: A002
        """Record a step that was not taken (no call, no usage), with why."""
        self.steps.append(MethodStep(role=role, round=round, status="skipped", note=note))

    def note(
        self,
        role: str,
        *,
        round: int = 0,
        index: int = 0,
        status: str = "ok",  # noqa: A002
        note: str | None = None,
    ) -> None:
        """Mark the last step recorded for (role, round, index) with a status and a note."""
        for step in reversed(self.steps):
            if (step.role, step.round, step.index) == (role, round, index):
                step.status = status  # type: ignore[assignment]
                step.note = note
                return

    def _record(self, role: str, out: Completion, round: int, index: int) -> None:  # noqa: A002
        self._backend_flags += [f for f in out.flags if f not in self._backend_flags]
        self.steps.append(
            MethodStep(
                role=role,
                round=round,
                index=index,
                text=out.text,
                usage=out.usage,
                cached=out.cached,
                finish_reason=out.finish_reason,
            )
        )

    def output(self, answer: Answer, *, counts_prompt_once: bool) -> MethodOutput:
        """The method's :class:`MethodOutput`: ``answer`` plus the accounting of every step."""
        steps = sorted(self.steps, key=lambda s: (s.round, s.index))
        target = [s for s in self.steps if s.source == "target" and s.status != "skipped"]
        usage = sum((s.usage for s in target), Usage())
        if counts_prompt_once and target:
            usage = usage.model_copy(update={"prompt_tokens": target[0].usage.prompt_tokens})
        scorer_usage = sum((s.usage for s in self.steps if s.source == "scorer"), Usage())
        flags = list(dict.fromkeys([*answer.flags, *self._backend_flags]))
        if any(s.finish_reason == "length" for s in target) and "max_tokens_reached" not in flags:
            flags.append("max_tokens_reached")
        made = sum(1 for s in target if not s.cached)
        return MethodOutput(
            **answer.model_dump(exclude={"flags"}),
            flags=flags,
            usage=usage,
            scorer_usage=scorer_usage,
            calls=made + self._scorer_calls,
            cached_calls=len(target) - made + self._scorer_cached,
            steps=steps,
        )
