"""The settings of one gateway, as the CLI and the Python API give them."""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from ..scoring import DEFAULT_ALPHA, NAPolicy

#: the environment variable that holds the bearer token clients must send
DEFAULT_TOKEN_ENV = "SPECALIGN_SERVE_TOKEN"


class MonitorConfig(BaseModel):
    """Live monitoring: judge a sampled share of answers in the background."""

    rate: float = Field(default=0.0, ge=0, le=1, description="share of answers judged (0: off)")
    judge: str = Field(default="local", description="judge model spec, as in `specalign run --judge`")
    judge_mode: Literal["joint", "sequential"] = "joint"
    judge_template: str | None = Field(
        default=None, description="a judge prompt template of the user's own (docs/judge.md); joint mode only"
    )
    window: int = Field(
        default=200, ge=1, le=1_000_000, description="judged answers per scenario in the sliding window"
    )
    out: str | None = Field(default=None, description="run directory root for judged samples (one folder per method)")
    workers: int = Field(default=2, ge=1, le=256, description="judge calls in flight")
    queue: int = Field(
        default=1000, ge=1, le=1_000_000, description="answers waiting to be judged before new ones are dropped"
    )
    drain_s: float = Field(default=30.0, ge=0, description="at shutdown, how long to finish waiting judgments")
    alpha: float = Field(default=DEFAULT_ALPHA, ge=0, le=1)
    na_policy: NAPolicy = "official"
    seed: int | None = Field(default=None, description="seed of the sampling decision (None: random)")

    @property
    def enabled(self) -> bool:
        return self.rate > 0


#: the refusal sent when enforcement blocks an answer; ``{scenario}`` becomes the scenario's name
DEFAULT_REFUSAL = "I can't help with that here: the answer would go against the rules of this service ({scenario})."


class EnforceConfig(BaseModel):
    """Enforcement: judge every answer against the safety specs before it is returned (docs/serve.md)."""

    enabled: bool = False
    judge: str | None = Field(default=None, description="judge model spec (None: the monitor's --judge)")
    judge_mode: Literal["joint", "sequential"] = "joint"
    action: Literal["refuse", "regenerate", "flag"] = "refuse"
    attempts: int = Field(default=2, ge=1, le=10, description="regenerations before refusing (regenerate)")
    on_error: Literal["refuse", "pass"] = Field(default="refuse", description="when the judge fails")
    window: int = Field(default=400, ge=1, le=1_000_000, description="characters per check of a stream")
    refusal: str | None = Field(
        default=None,
        min_length=1,
        description="text of a refusal for scenarios without their own (scenario.yaml's `refusal:`); "
        "None: the built-in text",
    )


class ShadowConfig(BaseModel):
    """Shadow comparison: a second method on a sampled share of requests, judged against the served one."""

    method: str | None = Field(default=None, description="the shadow method (None: off)")
    rate: float = Field(default=0.1, ge=0, le=1, description="share of answered requests it also runs on")
    queue: int = Field(default=100, ge=1, le=1_000_000, description="requests waiting before new ones are dropped")
    workers: int = Field(default=2, ge=1, le=256, description="shadow comparisons in flight")
    window: int = Field(default=1000, ge=1, le=1_000_000, description="latest pairs per served method in ΔSAR")
    seed: int | None = Field(default=None, description="seed of the sampling decision (None: random)")


class ServeConfig(BaseModel):
    """One gateway: the upstream model, the scenarios and methods it offers, its limits."""

    data: str = "bundled"
    scenarios: list[str] = Field(
        min_length=1, description="scenario keys of `data`, or scenario folders; the first is the default"
    )
    methods: list[str] = Field(
        default_factory=lambda: ["align3"],
        min_length=1,
        description="methods clients may ask for; the first is the default",
    )
    method_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    model: str = "local"
    models_config: list[str] = Field(default_factory=list, description="models config files, merged in order")
    served_model_name: str | None = Field(
        default=None, description="the model id clients send (default: the upstream's)"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    token_env: str = DEFAULT_TOKEN_ENV
    max_concurrency: int = Field(
        default=256,
        ge=1,
        le=100_000,
        description="requests in flight (beyond: 429), and the upstream's calls in flight",
    )
    max_request_bytes: int = Field(
        default=1_000_000, ge=1024, le=1 << 30, description="largest request body (beyond: 413)"
    )
    max_header_bytes: int = Field(
        default=65_536,
        ge=1024,
        le=16 << 20,
        description="largest request line and headers together (beyond: 431, connection closed)",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="seconds a client has to send its request line and headers (beyond: 408)",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="seconds a client has to send its whole body once the headers are in (beyond: 408)",
    )
    max_connections: int = Field(
        default=1024,
        ge=1,
        le=1_000_000,
        description="open client connections (beyond: 503 and the new connection is closed)",
    )
    max_tokens_limit: int = Field(default=8192, ge=1, description="the largest max_tokens a request may ask for")
    graceful_shutdown_s: float = Field(default=60.0, ge=0)
    workers: int = Field(default=1, ge=1, le=64, description="gateway processes on one port (POSIX; elsewhere 1)")
    otel: bool = Field(default=False, description="OpenTelemetry traces, exported as the OTEL_* variables say")
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    shadow: ShadowConfig = Field(default_factory=ShadowConfig)
    enforce: EnforceConfig = Field(default_factory=EnforceConfig)

    @field_validator("models_config", mode="before")
    @classmethod
    def _config_files(cls, v: Any) -> Any:
        return [] if v is None else [v] if isinstance(v, str) else v

    @field_validator("scenarios", "methods")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("names one item twice")
        return v

    def binds_loopback(self) -> bool:
        """Whether the gateway listens on this machine only (127.0.0.0/8, ::1, localhost)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
