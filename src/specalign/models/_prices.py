"""What model calls cost, in US dollars: genai-prices' bundled price data, or a models config's ``price:``.

A model is priced when its provider is known and the provider's price list has the model:

- ``openai`` models whose every base URL is ``api.openai.com`` are priced as provider ``openai``;
- ``anthropic`` models whose endpoint is Anthropic's own (the spec's URL, else ``$ANTHROPIC_BASE_URL``, else
  ``https://api.anthropic.com``) as provider ``anthropic``;
- anything else (llama.cpp in this process, a local or third-party OpenAI-compatible server, a proxy, a
  plugin backend) has no provider and is *unpriced*: it costs 0 and is reported as unpriced.

The model name (``model_name``) is matched as genai-prices matches it: lower-cased, against each model's id
and aliases of that provider only (dated snapshots such as ``gpt-4.1-2025-04-14`` included); a name it does
not know leaves the model unpriced. The data ships inside the package: nothing is fetched, ever.

``price: {provider: openai}`` prices a model served elsewhere (a proxy, a gateway, Azure-style endpoints) as
that provider's model of the same ``model_name``.

A models config entry's ``price:`` overrides what it gives (USD per million tokens; ``batch_discount`` the
factor applied to calls answered through a provider batch) and prices a model the package does not::

    gpt-4.1: {model_name: gpt-4.1, price: {input: 2.0, cached_input: 0.5, output: 8.0, batch_discount: 0.5}}

A call costs ``(prompt - cached) × input + cached × cached_input + completion × output`` per million tokens,
at the batch rates for batched calls. Rates are the base tier: long-context tiers (above 200k prompt tokens)
and Anthropic's cache writes (1.25× input) are not modelled, so such calls are priced at the base rates.
"""

from __future__ import annotations

import math
import os
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError
from ._base import ChatRequest, Completion, Usage

if TYPE_CHECKING:
    from ._model import Model
    from ._settings import ModelSettings

PER_MILLION = 1_000_000
#: USD per million tokens above which a configured price is taken for a typo
MAX_PRICE = 10_000.0
#: OpenAI's Batch API and Anthropic's Message Batches both bill half the online price
PROVIDER_BATCH_DISCOUNT = 0.5
#: the completion bound of a call that sets no max_tokens (what Anthropic's backend sends by default)
ASSUMED_COMPLETION_TOKENS = 4096
PACKAGE = "genai-prices"


class PriceOverride(BaseModel):
    """A models config's ``price:``: USD per million tokens, and the factor batch calls are billed at."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    input: float | None = Field(None, ge=0, le=MAX_PRICE, allow_inf_nan=False)
    cached_input: float | None = Field(None, ge=0, le=MAX_PRICE, allow_inf_nan=False)
    output: float | None = Field(None, ge=0, le=MAX_PRICE, allow_inf_nan=False)
    batch_discount: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    provider: Literal["openai", "anthropic"] | None = Field(
        None, description="price the model as this provider's model of the same name (a proxy, a gateway)"
    )

    @property
    def gives_rates(self) -> bool:
        return any(v is not None for v in (self.input, self.cached_input, self.output))


class Price(BaseModel):
    """A model's rates in USD per million tokens, online and through a provider batch, and their source."""

    model_config = ConfigDict(frozen=True)

    input: float
    cached_input: float
    output: float
    batch_input: float
    batch_cached_input: float
    batch_output: float
    source: str

    def cost(self, usage: Usage, *, batch: bool = False) -> float:
        """USD for ``usage`` (one call or a sum of calls) at the online or the batch rates."""
        rin, rcached, rout = (
            (self.batch_input, self.batch_cached_input, self.batch_output)
            if batch
            else (self.input, self.cached_input, self.output)
        )
        cached = min(max(usage.cached_prompt_tokens, 0), max(usage.prompt_tokens, 0))
        fresh = max(usage.prompt_tokens, 0) - cached
        return (fresh * rin + cached * rcached + max(usage.completion_tokens, 0) * rout) / PER_MILLION

    def rates(self) -> dict[str, float]:
        return {k: v for k, v in self.model_dump().items() if k != "source"}


class Pricing(BaseModel):
    """One model's price, or None with why it has none (``note`` says where a price came from)."""

    model: str
    price: Price | None = None
    note: str

    @property
    def priced(self) -> bool:
        return self.price is not None

    def cost(self, usage: Usage, *, batch: bool = False) -> float:
        return 0.0 if self.price is None else self.price.cost(usage, batch=batch)

    def describe(self) -> dict[str, Any]:
        """What scores.json and the manifest keep: the rates and their source, or why there are none."""
        if self.price is None:
            return {"priced": False, "note": self.note}
        return {"priced": True, **self.price.rates(), "source": self.price.source}


def provider_of(settings: ModelSettings) -> str | None:
    """``openai`` or ``anthropic`` when the model is called at that provider's own API, else None."""
    if settings.backend == "openai":
        hosts = [_host(u) for u in settings.base_urls]
        return "openai" if hosts and all(h == "api.openai.com" for h in hosts) else None
    if settings.backend == "anthropic":
        url = (settings.base_urls or [os.environ.get("ANTHROPIC_BASE_URL", "").strip()])[0]
        return "anthropic" if not url or _host(url) == "api.anthropic.com" else None
    return None


def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:  # not a URL: no provider's
        return ""


def pricing_of(settings: ModelSettings) -> Pricing:
    """The price of ``settings``' model: genai-prices' figures, the config's ``price:`` over them.

    A ``price:`` for a model the package does not know must give ``input`` and ``output``
    (a :class:`~specalign.errors.ConfigError` otherwise: a one-line error before any call).
    """
    override: PriceOverride | None = settings.price
    provider = (override.provider if override is not None else None) or provider_of(settings)
    known = _package_rates(provider, settings.model_name) if provider else None
    if override is None or not (override.gives_rates or override.batch_discount is not None):
        if known is None and override is not None and override.provider:
            raise ConfigError(
                f"price: {PACKAGE} does not know {override.provider} model {settings.model_name!r}: give input and "
                "output (USD per million tokens), or the provider's name for it as model_name",
                field=f"{settings.key}.price",
            )
        if known is None:
            return Pricing(model=settings.key, note=_unpriced_reason(settings, provider))
        return Pricing(model=settings.key, price=known, note=known.source)
    if known is None and (override.input is None or override.output is None):
        raise ConfigError(
            f"price: give input and output (USD per million tokens): {_unpriced_reason(settings, provider)}",
            field=f"{settings.key}.price",
        )
    price = _merged(override, known, provider)
    return Pricing(model=settings.key, price=price, note=price.source)


def _merged(override: PriceOverride, known: Price | None, provider: str | None) -> Price:
    """The config's rates where it gives them, the package's elsewhere; batch rates from the config's discount,
    else the package's batch rates (rates unchanged), else the provider's published half price."""
    base_in = override.input if override.input is not None else known.input  # type: ignore[union-attr]
    base_out = override.output if override.output is not None else known.output  # type: ignore[union-attr]
    if override.cached_input is not None:
        cached = override.cached_input
    elif override.input is None and known is not None:
        cached = known.cached_input
    else:
        cached = base_in
    if override.batch_discount is None and not override.gives_rates and known is not None:
        batch = (known.batch_input, known.batch_cached_input, known.batch_output)
    else:
        discount = override.batch_discount
        if discount is None:
            discount = PROVIDER_BATCH_DISCOUNT if provider else 1.0
        batch = (base_in * discount, cached * discount, base_out * discount)
    source = "models config" if known is None else f"models config over {known.source}"
    return Price(
        input=base_in,
        cached_input=cached,
        output=base_out,
        batch_input=batch[0],
        batch_cached_input=batch[1],
        batch_output=batch[2],
        source=source,
    )


def _unpriced_reason(settings: ModelSettings, provider: str | None) -> str:
    if settings.backend == "llamacpp":
        return "llama.cpp in this process"
    if provider is None:
        if settings.backend in ("openai", "anthropic"):
            return f"{settings.backend} model at a server that is not {settings.backend}'s own API"
        return f"backend {settings.backend!r} has no known prices"
    return f"{PACKAGE} does not know {provider} model {settings.model_name!r}"


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return "missing"


def _package_rates(provider: str, model_name: str) -> Price | None:
    """The package's rates for ``model_name`` at ``provider`` today (None: unknown, or no token prices)."""
    try:
        from genai_prices.data_snapshot import get_snapshot  # noqa: PLC0415  (1.5 MB of data: load when needed)
    except ImportError:
        return None
    try:
        _, info = get_snapshot().find_provider_model(model_name, None, provider, None)
    except (LookupError, ValueError):  # unknown to the package (or a name it cannot read): unpriced
        return None
    now = datetime.now(tz=timezone.utc)
    online = _token_rates(info.get_prices(now))
    if online is None:
        return None
    batch_context = {"processing": "batch"}
    has_batch = any(
        v.when == batch_context and (v.constraint is None or v.constraint.active(now))
        for v in info.price_variants or ()
    )
    batch = _token_rates(info.get_prices(now, batch_context)) if has_batch else None
    if batch is None:
        batch = (
            online[0] * PROVIDER_BATCH_DISCOUNT,
            online[1] * PROVIDER_BATCH_DISCOUNT,
            online[2] * PROVIDER_BATCH_DISCOUNT,
        )
    return Price(
        input=online[0],
        cached_input=online[1],
        output=online[2],
        batch_input=batch[0],
        batch_cached_input=batch[1],
        batch_output=batch[2],
        source=f"{PACKAGE} {package_version()} ({provider} {info.id})",
    )


def _token_rates(prices: Any) -> tuple[float, float, float] | None:
    """(input, cached input, output) of a genai-prices ModelPrice, base tier; None without input and output."""

    def base(name: str) -> float | None:
        value = getattr(prices, name, None)
        value = getattr(value, "base", value)  # tiered prices: the base tier
        return None if value is None else float(value)

    rin, rout = base("input_mtok"), base("output_mtok")
    if rin is None or rout is None or not (math.isfinite(rin) and math.isfinite(rout)):
        return None
    cached = base("cache_read_mtok")
    return rin, (rin if cached is None else cached), rout


# -- estimates ------------------------------------------------------------------------------------------------------


def text_tokens(text: str) -> int:
    """Tokens of ``text`` without a tokenizer: four ASCII characters a token, one per other character."""
    ascii_chars = len(text.encode("ascii", "ignore"))
    return -(-ascii_chars // 4) + len(text) - ascii_chars


def completion_bound(params: dict[str, Any]) -> int | None:
    """The completion-token limit the parameters set (either name), None without one."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = params.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def estimated_usage(request: ChatRequest) -> Usage:
    """A call's usage before it is made: its prompt at :func:`text_tokens` (4 a message for the framing),
    its completion at its token limit (:data:`ASSUMED_COMPLETION_TOKENS` without one)."""
    prompt = sum(text_tokens(m.content) + 4 for m in request.messages)
    bound = completion_bound(request.params) or completion_bound(request.extra_body) or ASSUMED_COMPLETION_TOKENS
    return Usage(prompt_tokens=prompt, completion_tokens=bound)


class CallMeter(Protocol):
    """What a :class:`~specalign.models.Model` tells about its calls (the runner's costs and budget)."""

    def reserve(self, model: Model, request: ChatRequest, *, batch: bool = False) -> float:
        """Before a call goes out (or joins a batch): hold its estimated cost; may refuse by raising."""

    def release(self, reserved: float) -> None:
        """A call that gave no answer: let go of what it held."""

    def settle(self, reserved: float, model: Model, completion: Completion, *, batch: bool = False) -> None:
        """A call answered: let go of what it held and count what it cost."""

    def cached(self, model: Model, completion: Completion) -> None:
        """A call answered from the cache: it cost nothing now."""
