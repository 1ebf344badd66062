"""The gateway's core: scenarios, methods and the upstream model; one chat request in, one reply out."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from .._secrets import header_value_problem
from ..benchmark import Scenario, load_benchmark, select_scenarios
from ..errors import ConfigError, ModelAccessError, ModelError, SpecalignError
from ..methods import AnswerSink, GenerationMethod, MethodOutput, create_method
from ..models import (
    EMBEDDED_MAX_TOKENS,
    LOCAL,
    Model,
    ModelSettings,
    create_model,
    load_models_config,
    parse_model_spec,
)
from ._config import ServeConfig
from ._enforce import Enforcer
from ._metrics import GatewayMetrics
from ._protocol import ChatInput, GatewayError, Reply, clip
from ._tracing import Tracing, tracing_for

log = logging.getLogger("specalign.serve")


class Gateway:
    """Answers chat requests with a deliberation method under a scenario's specs, via one upstream model.

    Everything that can be wrong with the configuration fails here, before the server listens.
    """

    def __init__(self, config: ServeConfig, tracing: Tracing | None = None):
        self.config = config
        self.tracing = tracing if tracing is not None else tracing_for(config)
        self.scenarios: dict[str, Scenario] = load_scenarios(config.data, config.scenarios)
        self.default_scenario = next(iter(self.scenarios))
        self.methods: dict[str, GenerationMethod] = {
            name: create_method(name, config.method_params.get(name)) for name in config.methods
        }
        unknown = sorted(set(config.method_params) - set(config.methods))
        if unknown:
            raise ConfigError(
                f"parameters given for {unknown[0]!r}, which is not among --method", field="--method-param"
            )
        self.default_method = config.methods[0]
        self.settings = upstream_settings(
            parse_model_spec(config.model, load_models_config(config.models_config)), config
        )
        self.model_name = config.served_model_name or self.settings.model_name
        self.token = _token(config)
        self.model: Model = create_model(self.settings, None)
        for method in self.methods.values():
            method.check(self.model)
        self.metrics = GatewayMetrics()
        self.enforcer = (
            Enforcer(config, self.model, self.metrics, self.tracing.observer) if config.enforce.enabled else None
        )
        self._in_flight = 0
        self.started = time.time()

    @property
    def in_flight(self) -> int:
        """Chat requests this process is answering now (kept in the ``requests_in_flight`` gauge)."""
        return self._in_flight

    @in_flight.setter
    def in_flight(self, n: int) -> None:
        self._in_flight = n
        self.metrics.in_flight.set(n)

    # -- one request ----------------------------------------------------------------------------
    def resolve(self, inp: ChatInput) -> tuple[GenerationMethod, Scenario]:
        """The method and scenario a request gets: the defaults, or the allowed overrides it names."""
        self.tracing.requested(inp)
        if inp.model != self.model_name:
            raise GatewayError(
                404,
                f"model {clip(inp.model)!r} is not served here; this gateway serves {self.model_name!r}",
                param="model",
                code="model_not_found",
            )
        method_name = inp.method or self.default_method
        method = self.methods.get(method_name)
        if method is None:
            raise GatewayError(
                400,
                f"method {clip(method_name)!r} is not offered by this gateway (allowed: {', '.join(self.methods)})",
                param="specalign.method",
                code="method_not_allowed",
            )
        key = inp.scenario or self.default_scenario
        scenario = self.scenarios.get(key) or {k.lower(): s for k, s in self.scenarios.items()}.get(key.lower())
        if scenario is None:
            raise GatewayError(
                400,
                f"scenario {clip(key)!r} is not offered by this gateway (allowed: {', '.join(self.scenarios)})",
                param="specalign.scenario",
                code="scenario_not_allowed",
            )
        self.tracing.resolved(method.name, scenario.key)
        return method, scenario

    async def answer(
        self, inp: ChatInput, method: GenerationMethod, scenario: Scenario, sink: AnswerSink | None = None
    ) -> MethodOutput:
        """Run ``method`` for the request; upstream failures become :class:`GatewayError` with the right status.

        ``sink``: where the answer of the method's final call streams as it arrives (``stream: true``).
        """
        model = self._model_for(inp.params)
        try:
            out = await method.run(model, scenario, inp.prompt, sink=sink)
        except ModelError as e:
            self.metrics.upstream_errors.inc(kind=e.kind or "other")
            raise upstream_error(e) from None
        except SpecalignError as e:
            log.exception("request %s failed", inp.prompt.id)
            raise GatewayError(500, f"the gateway failed: {e}", type="server_error") from None
        self._count(method.name, out)
        self.tracing.answered(out)
        return out

    async def answer_enforced(self, inp: ChatInput, method: GenerationMethod, scenario: Scenario) -> MethodOutput:
        """:meth:`answer`, checked against the safety specs first when enforcement is on (docs/serve.md)."""
        if self.enforcer is None:
            return await self.answer(inp, method, scenario)
        return await self.enforcer.enforce(self.answer, inp, method, scenario)

    def reply(
        self, inp: ChatInput, method: GenerationMethod, scenario: Scenario, out: MethodOutput, monitored: bool
    ) -> Reply:
        finish = "length" if "max_tokens_reached" in out.flags else "stop"
        extension = {
            "method": method.name,
            "scenario": scenario.key,
            "upstream_calls": out.calls,
            "monitored": monitored,
            "flags": out.flags,
        }
        if inp.enforcement is not None:
            extension["enforcement"] = inp.enforcement
        return Reply(
            id=inp.prompt.id,
            model=self.model_name,
            content=out.response,
            thought=out.thought if inp.include_thought else None,
            finish_reason=finish,
            prompt_tokens=out.usage.prompt_tokens,
            completion_tokens=out.usage.completion_tokens,
            extension=extension,
        )

    def _model_for(self, params: dict[str, Any]) -> Model:
        """The upstream model with this request's sampling parameters; it shares the one backend."""
        settings = self.settings.model_copy(update={"params": {**self.settings.params, **params}}) if params else None
        model = Model(settings or self.settings, self.model.backend)
        model.observer = self.tracing.observer
        return model

    def _count(self, method: str, out: MethodOutput) -> None:
        m = self.metrics
        m.tokens.inc(out.usage.prompt_tokens, method=method, type="prompt")
        m.tokens.inc(out.usage.completion_tokens, method=method, type="completion")
        m.upstream_calls.inc(out.calls, method=method)

    async def aclose(self) -> None:
        if self.enforcer is not None:
            await self.enforcer.aclose()
        await self.model.aclose()
        await self.tracing.shutdown()

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "upstream": self.settings.key,
            "methods": list(self.methods),
            "scenarios": {k: s.name for k, s in self.scenarios.items()},
        }


def load_scenarios(data: str, items: list[str]) -> dict[str, Scenario]:
    """Scenario keys of ``data``, or scenario folders (specalign or official layout), in the order given."""
    from ..benchmark import load_scenario_dir  # noqa: PLC0415

    out: dict[str, Scenario] = {}
    bench = None
    for item in items:
        path = Path(item)
        if (path / "scenario.yaml").is_file():
            scenario = load_scenario_dir(path)
        elif (path / "specifications.json").is_file():
            found = [s for s in load_benchmark(str(path.parent)).scenarios if s.key.lower() == path.name.lower()]
            if not found:
                raise ConfigError(f"{path} holds no scenario keyed {path.name!r}", field="--scenario")
            scenario = found[0]
        else:
            bench = bench or load_benchmark(data)
            scenario = select_scenarios(bench, [item])[0]
        if scenario.key in out:
            raise ConfigError(f"two scenarios share the key {scenario.key!r}", field="--scenario")
        out[scenario.key] = scenario
    return out


def upstream_settings(settings: ModelSettings, config: ServeConfig) -> ModelSettings:
    """The upstream's settings for serving: as many calls in flight as requests (``--max-concurrency``;
    its config's ``max_concurrency`` may lower that per endpoint); the embedded model keeps its short
    default answers."""
    update: dict[str, Any] = {"calls_in_flight": config.max_concurrency}
    if settings.key == LOCAL and "max_tokens" not in settings.params:
        update["params"] = {**settings.params, "max_tokens": EMBEDDED_MAX_TOKENS}
    return settings.model_copy(update=update)


def _token(config: ServeConfig) -> str | None:
    token = os.environ.get(config.token_env, "").strip() or None
    if token is None and not config.binds_loopback():
        raise ConfigError(
            f"binding {config.host} exposes the gateway to the network: set a bearer token in the "
            f"{config.token_env} environment variable (clients send it as their API key)",
            field="--host",
        )
    if token is not None and (problem := header_value_problem(token)):
        raise ConfigError(
            f"the token in {config.token_env} holds {problem}; clients could never send it in a "
            "header (use visible ASCII only)",
            field="--token-env",
        )
    if token is not None and len(token) < 16:
        raise ConfigError(
            f"the token in {config.token_env} is {len(token)} characters; use at least 16", field="--token-env"
        )
    return token


def upstream_error(e: ModelError) -> GatewayError:
    """The status a client gets when the upstream model failed (after the backend's retries)."""
    text = f"upstream model error: {e}"
    if isinstance(e, ModelAccessError) or e.kind in ("auth", "not_found", "quota"):
        if e.kind == "quota":
            return GatewayError(503, text, type="upstream_error", code="upstream_quota", headers={"Retry-After": "60"})
        return GatewayError(502, text, type="upstream_error", code=f"upstream_{e.kind or 'access'}")
    if e.kind == "timeout":
        return GatewayError(504, text, type="upstream_error", code="upstream_timeout")
    if e.status == 429:
        return GatewayError(
            429, text, type="upstream_error", code="upstream_rate_limited", headers={"Retry-After": "1"}
        )
    if e.kind == "rejected":
        return GatewayError(400, text, code="upstream_rejected")
    return GatewayError(502, text, type="upstream_error", code="upstream_unavailable")
