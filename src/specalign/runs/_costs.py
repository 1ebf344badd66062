"""What a run costs in US dollars: per record as it runs, against a budget (``--max-cost``), and beforehand
(``--estimate``).

Every model of a run carries a :class:`CostMeter` (``Model.meter``). Before a call goes out, or joins a
provider batch, the meter holds the call's estimated cost (prompt at about four characters a token, completion
at its ``max_tokens``); when the answer comes, it counts the real cost instead, at the batch price for a batched
call. A cache hit costs nothing: what it would have cost online is counted as ``saved``. The costs land in the
record the call was made for (a generation, its candidate scoring, a judgment) through a context variable the
runner sets around each, so records carry exact dollars however many calls run at once.

With a budget, a call is refused when what the run directory's records already cost, plus what the calls in
flight hold, plus the call's own estimate would pass it: the run stops there (exit 3), every call in flight
still lands in its record, and a rerun with a higher budget goes on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from ..benchmark import Prompt, Scenario
from ..errors import SpecalignError
from ..methods import GenerationMethod
from ..models import ChatRequest, Completion, Model, ModelSettings, Pricing, Usage, estimated_usage, pricing_of

if TYPE_CHECKING:
    from ._store import RunDir

Role = Literal["target", "scorer", "judge"]
#: budgets are compared to a micro-dollar, so that sums of float costs that meet the budget exactly pass
EPSILON = 1e-9


class CallCost(BaseModel):
    """What the calls behind one record cost, in USD, at the prices of the run that made them."""

    online: float = Field(0.0, description="calls made online")
    batch: float = Field(0.0, description="calls answered through a provider batch, at the batch price")
    saved: float = Field(0.0, description="cache hits: what they would have cost online (they cost nothing now)")
    batched_calls: int = Field(0, description="calls answered through a provider batch")
    unpriced_calls: int = Field(0, description="calls (made or cached) to a model without a price, counted as 0")

    @property
    def total(self) -> float:
        return self.online + self.batch

    def __add__(self, other: CallCost) -> CallCost:
        return CallCost(
            online=self.online + other.online,
            batch=self.batch + other.batch,
            saved=self.saved + other.saved,
            batched_calls=self.batched_calls + other.batched_calls,
            unpriced_calls=self.unpriced_calls + other.unpriced_calls,
        )


def sum_costs(costs: list[CallCost | None]) -> CallCost | None:
    """The sum; None when one of them is unknown (a record written before costs were recorded)."""
    if any(c is None for c in costs):
        return None
    return sum((c for c in costs if c is not None), CallCost())


class BudgetExceeded(SpecalignError):
    """The next call would take the run past ``--max-cost``: the run stops there (resumable)."""

    exit_code = 3


class _Tally:
    """The costs of one record's calls, by who answered them."""

    def __init__(self) -> None:
        self.parts: dict[str, CallCost] = {}

    def part(self, role: Role) -> CallCost:
        return self.parts.get(role, CallCost())

    def add(self, role: str, cost: CallCost) -> None:
        self.parts[role] = self.parts.get(role, CallCost()) + cost


_TALLY: ContextVar[_Tally | None] = ContextVar("specalign_cost_tally", default=None)
_ROLE: ContextVar[str] = ContextVar("specalign_cost_role", default="target")


@contextmanager
def tallied(role: Role) -> Iterator[_Tally]:
    """Count the costs of the calls made inside (in this task and the tasks it starts) into a fresh tally."""
    tally = _Tally()
    tally_token, role_token = _TALLY.set(tally), _ROLE.set(role)
    try:
        yield tally
    finally:
        _ROLE.reset(role_token)
        _TALLY.reset(tally_token)


@contextmanager
def in_role(role: Role) -> Iterator[None]:
    """Count the calls made inside as ``role``'s (candidate scoring inside a generation)."""
    token = _ROLE.set(role)
    try:
        yield
    finally:
        _ROLE.reset(token)


def usd(value: float | None) -> str:
    """Dollars as shown: ``$0.0042``, ``$0.123``, ``$12.35``, ``$1,234``; ``—`` for None."""
    if value is None:
        return "—"
    if value == 0:
        return "$0"
    if abs(value) < 0.01:
        return f"${value:.4f}"
    if abs(value) < 1:
        return f"${value:.3f}"
    return f"${value:,.2f}" if abs(value) < 1000 else f"${value:,.0f}"


class CostMeter:
    """The costs of one run's calls, and its budget (see the module)."""

    def __init__(self, *, budget: float | None = None, spent: float = 0.0, pricings: dict[str, Pricing] | None = None):
        self.budget = budget
        self.spent = spent
        self.reserved = 0.0
        self.stopped: BudgetExceeded | None = None
        self.session = CallCost()
        self._pricing: dict[str, Pricing] = dict(pricings or {})

    def pricing(self, settings: ModelSettings) -> Pricing:
        found = self._pricing.get(settings.key)
        if found is None:
            found = self._pricing[settings.key] = pricing_of(settings)
        return found

    def attach(self, model: Model) -> None:
        self.pricing(model.settings)
        model.meter = self

    def reserve(self, model: Model, request: ChatRequest, *, batch: bool = False) -> float:
        """Hold the call's estimate, or refuse it (:class:`BudgetExceeded`) when it would take the run past the
        budget. Each call is judged on its own: one refused does not refuse the next, which may fit once the calls
        in flight have settled; the runner starts no new sample after the first refusal."""
        if self.budget is None:
            return 0.0
        estimate = self.pricing(model.settings).cost(estimated_usage(request), batch=batch)
        if self.spent + self.reserved + estimate > self.budget + EPSILON:
            refused = BudgetExceeded(
                f"stopped before passing --max-cost {usd(self.budget)}: spent {usd(self.spent)}, "
                f"{usd(self.reserved)} held by calls in flight, {usd(estimate)} estimated for the next call "
                f"({model.settings.key}). Finished samples are saved; rerun with a higher --max-cost to go on"
            )
            self.stopped = self.stopped or refused
            raise refused
        self.reserved += estimate
        return estimate

    def release(self, reserved: float) -> None:
        self.reserved = max(0.0, self.reserved - reserved)

    def settle(self, reserved: float, model: Model, completion: Completion, *, batch: bool = False) -> None:
        self.release(reserved)
        pricing = self.pricing(model.settings)
        cost = pricing.cost(completion.usage, batch=batch)
        self.spent += cost
        self._count(
            CallCost(
                online=0.0 if batch else cost,
                batch=cost if batch else 0.0,
                batched_calls=int(batch),
                unpriced_calls=int(not pricing.priced),
            )
        )

    def cached(self, model: Model, completion: Completion) -> None:
        pricing = self.pricing(model.settings)
        self._count(CallCost(saved=pricing.cost(completion.usage), unpriced_calls=int(not pricing.priced)))

    def _count(self, cost: CallCost) -> None:
        self.session = self.session + cost
        tally = _TALLY.get()
        if tally is not None:
            tally.add(_ROLE.get(), cost)


def recorded_cost(run: RunDir, judge_key: str) -> float:
    """What the run directory's records cost: every generation (with its candidate scoring) and every
    judgment by ``judge_key`` (a panel's judgment holds its members'). Records without a cost count 0."""
    total = 0.0
    if not run.exists():
        return total
    for g in run.generations():
        total += (g.cost.total if g.cost else 0.0) + (g.scorer_cost.total if g.scorer_cost else 0.0)
    for j in run.judgments():
        if j.judge_key == judge_key and j.cost is not None:
            total += j.cost.total
    return total


# -- estimates ------------------------------------------------------------------------------------------------------

#: a judge prompt's own text around the specs, the request and the answer (system, rules, format, fences), in tokens
JUDGE_FRAME_TOKENS = 450
#: the judge reads at most this much of an answer (8,000 characters)
JUDGE_ANSWER_TOKENS = 2000


def tokens(text: str) -> int:
    from ..models import text_tokens  # noqa: PLC0415

    return text_tokens(text)


def messages_tokens(texts: list[str]) -> int:
    return sum(tokens(t) + 4 for t in texts)


def judge_call_prompts(scenario: Scenario, prompt: Prompt, mode: str, answer_tokens: int) -> list[int]:
    """Prompt tokens of the judge's calls for one answer: one call (joint), or one per spec (sequential)."""
    answer = min(answer_tokens, JUDGE_ANSWER_TOKENS)
    head = tokens(f"{scenario.name}\n{scenario.description}") + tokens(prompt.original_prompt or prompt.prompt)
    head += tokens(prompt.reference_answer or "") + answer + JUDGE_FRAME_TOKENS
    if mode == "joint":
        specs = tokens(scenario.numbered("safety")) + tokens(scenario.numbered("behavioral"))
        return [head + specs]
    return [head + tokens(s.text) for s in (*scenario.safety_specs, *scenario.behavioral_specs)]


PlannedCall = tuple[str, int, int]  # ("target" or "score", prompt tokens, completion tokens)


def method_calls(
    method: GenerationMethod, scenario: Scenario, prompt: Prompt, *, completion: int, can_prefill: bool
) -> tuple[list[PlannedCall], str | None]:
    """The calls ``method`` makes for one prompt when nothing is retried: ``("target", prompt tokens, completion
    tokens)`` for the model under test, ``("score", 0, 0)`` for each candidate the scorer scores. A method may say
    itself, with ``estimate_calls(scenario, prompt, prompt_tokens=, completion_tokens=)`` returning such a list;
    otherwise the built-ins' patterns apply, and an unknown method counts as one call (said in the note)."""
    from ..methods.baselines import conversation, vanilla_messages  # noqa: PLC0415

    system = getattr(method.params, "system_prompt", "")
    base = messages_tokens([m.content for m in vanilla_messages(system, scenario, prompt)])
    hook = getattr(method, "estimate_calls", None)
    if callable(hook):
        return [tuple(c) for c in hook(scenario, prompt, prompt_tokens=base, completion_tokens=completion)], None
    p, c, name = method.params, completion, method.name
    if name == "raw":
        return [("target", messages_tokens([m.content for m in conversation(system, prompt, prompt.prompt)]), c)], None
    if name in ("vanilla", "zero_think"):
        return [("target", base + 8, c)], None
    if name in ("align3", "more_think"):
        injections = method.injections(scenario) if name == "align3" else method.injections()  # type: ignore[attr-defined]
        return _staged(base, [tokens(text) for _, text in injections or [("think", "")]], c, can_prefill), None
    if name == "self_refine":
        return _self_refine(scenario, prompt, base, c, p), None
    if name == "best_of_n":
        return [("target", base, c)] * p.n + [("score", 0, 0)] * p.n, None
    if name == "tpo":
        return _tpo(scenario, prompt, base, c, p), None
    return [("target", base, c)], f"method {name!r} says nothing of its calls: counted as one call per sample"


def _staged(base: int, injections: list[int], c: int, prefill: bool) -> list[PlannedCall]:
    """Thinking in stages: each stage continues the text so far (prefill), or asks again with the turns so far;
    without prefill a last call asks for the answer."""
    calls: list[PlannedCall] = []
    written = 0
    for i, injected in enumerate(injections):
        written += injected + (0 if prefill else 30)
        calls.append(("target", base + written + i * c, c))
    if not prefill:
        calls.append(("target", base + written + len(injections) * c + 30, c))
    return calls


def _self_refine(scenario: Scenario, prompt: Prompt, base: int, c: int, p: Any) -> list[PlannedCall]:
    """The answer, then every round's feedback and refinement (as if no feedback said KEEP)."""
    specs = tokens(scenario.numbered("safety")) + tokens(scenario.numbered("behavioral"))
    question = tokens(prompt.prompt)
    calls: list[PlannedCall] = [("target", base, c)]
    for it in range(1, p.max_iters + 1):
        calls.append(("target", specs + question + c + 250, c))
        calls.append(("target", question + 2 * c * min(it, p.max_history) + 100, c))
    return calls


def _tpo(scenario: Scenario, prompt: Prompt, base: int, c: int, p: Any) -> list[PlannedCall]:
    """Round 0's samples and their scores, then per iteration a critique, guidance, the rewrites and their scores."""
    specs = tokens(scenario.numbered("safety")) + tokens(scenario.numbered("behavioral"))
    question = tokens(prompt.prompt)
    calls: list[PlannedCall] = [("target", base, c)] * p.samples + [("score", 0, 0)] * p.samples
    for _ in range(p.iterations):
        calls.append(("target", specs + question + 2 * c + 200, c))
        calls.append(("target", specs + question + 2 * c + 150, c))
        calls += [("target", base + 2 * c + 100, c)] * p.samples + [("score", 0, 0)] * p.samples
    return calls


class EstimateLine(BaseModel):
    """The calls one model will make in a run, their tokens and cost (upper bounds, see RunEstimate)."""

    role: str
    model: str
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    priced: bool = True
    batch: bool = False

    def add(self, pricing: Pricing, prompt_tokens: int, completion_tokens: int) -> None:
        self.calls += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        self.cost += pricing.cost(usage, batch=self.batch)


class RunEstimate(BaseModel):
    """What a run still needs, before any call: calls, tokens and dollars per model, and what is done already.

    Prompt tokens are counted without a tokenizer (about four characters a token); completion tokens at each
    call's ``max_tokens``, an upper bound (``assumed`` names the models without one, counted at 4,096). Calls
    the call cache would answer are not subtracted: they would cost nothing."""

    run_dir: str
    method: str
    samples: int
    done: int = Field(description="samples finished in the run directory")
    to_generate: int
    to_judge: int = Field(description="answered before and not judged yet: judged only")
    lines: list[EstimateLine]
    cost: float
    spent: float = Field(description="what the run directory's records cost already")
    prices: dict[str, dict[str, Any]]
    assumed: list[str] = Field(default_factory=list, description="models without max_tokens (4,096 assumed)")
    notes: list[str] = Field(default_factory=list)
