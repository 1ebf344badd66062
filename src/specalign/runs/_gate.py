"""A gate for CI: conditions on a run's scores (and against a baseline's), each checked, shown with its 95%
interval, and written as JUnit XML or a Markdown summary.

``--min METRIC=X`` checks the overall (mean of scenarios, full set) point estimate of safety, behavioral or
SAR; ``--max-violation SCENARIO/SPEC=X`` the share of the scenario's scored samples that violate the spec (the
``violation_rate`` of ``scores.json``'s ``spec_violations``); ``--no-regression`` fails a drop against the
baseline only when its paired 95% interval leaves 0 out. With ``strict_ci`` the interval's low end (high end
for a violation rate) is checked instead of the point estimate.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, Field

from .._terminal import shown
from ..errors import ConfigError, RunDirError
from ._compare import comparison_warnings, row_of, set_deltas
from ._intervals import METRICS, BootstrapSettings, percentile_interval, stratified_means
from ._scores import compute_scores
from ._store import RunDir

#: how much a value may fall short of a threshold and still meet it (float noise: 0.7 from 7/10)
_EPS = 1e-9
_SPEC = re.compile(r"^[SB][1-9][0-9]*$")
_DELTA_NAMES = {"sar": "ΔSAR", "safety": "Δsafety", "behavioral": "Δbehavioral"}


class MinCondition(NamedTuple):
    """``--min METRIC=X``: the overall METRIC at least X."""

    metric: str
    threshold: float


class ViolationCondition(NamedTuple):
    """``--max-violation [SCENARIO/]SPEC=X``: the spec's violation rate at most X (scenario None: the run's only)."""

    scenario: str | None
    spec: str
    threshold: float


def parse_fraction(text: str, field: str) -> float:
    """``0.7``, ``.7`` or ``70%``: a fraction in [0, 1]."""
    raw = text.strip()
    percent = raw.endswith("%")
    try:
        x = float(raw[:-1] if percent else raw)
    except ValueError:
        raise ConfigError(
            f"{text!r} is not a number (write a fraction like 0.70 or a percentage like 70%)", field=field
        ) from None
    if percent:
        x /= 100
    if not math.isfinite(x) or not 0 <= x <= 1:
        hint = " (write 70% or 0.70)" if not percent and math.isfinite(x) and 1 < x <= 100 else ""
        raise ConfigError(f"{text!r} is not a fraction in 0..1{hint}", field=field)
    return x


def _split(item: str, field: str, what: str) -> tuple[str, str]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip() or not raw.strip():
        raise ConfigError(f"expected {what}=VALUE, got {item!r}", field=field)
    return key.strip(), raw


def parse_min(items: Sequence[str]) -> list[MinCondition]:
    """``--min`` values: ``sar=0.70``, ``safety=90%``, ``behavioral=0.5``."""
    out = []
    for item in items:
        key, raw = _split(item, "--min", "METRIC")
        metric = key.lower()
        if metric not in METRICS:
            raise ConfigError(f"unknown metric {key!r} in {item!r} (sar, safety or behavioral)", field="--min")
        out.append(MinCondition(metric, parse_fraction(raw, "--min")))
    return out


def parse_max_violation(items: Sequence[str]) -> list[ViolationCondition]:
    """``--max-violation`` values: ``child/S3=0.05``, or ``S3=5%`` for a run of one scenario."""
    out = []
    for item in items:
        key, raw = _split(item, "--max-violation", "SCENARIO/SPEC")
        scenario, slash, spec = key.rpartition("/")
        spec = spec.strip().upper()
        if not _SPEC.match(spec) or (slash and not scenario.strip()):
            raise ConfigError(
                f"expected SCENARIO/SPEC=VALUE with a spec id like S3 or B2, got {item!r}", field="--max-violation"
            )
        out.append(
            ViolationCondition(scenario.strip() if slash else None, spec, parse_fraction(raw, "--max-violation"))
        )
    return out


class GateCheck(BaseModel):
    """One condition and how the run measured against it. Fractions."""

    kind: Literal["min", "max_violation", "no_regression"]
    name: str = Field(description="the condition as shown: 'sar ≥ 0.70', 'child/S3 violation ≤ 0.05', …")
    passed: bool
    value: float | None = Field(None, description="the measured value (a difference for no_regression)")
    ci: list[float] | None = Field(None, description="its 95% bootstrap interval [low, high]")
    threshold: float | None = None
    n: int | None = Field(None, description="scored prompts (shared ones for no_regression) it is over")
    note: str = Field("", description="why it fell short, or what to know about it")

    def line(self) -> str:
        """``PASS sar ≥ 0.70: 0.74 [0.69, 0.79]``."""
        text = f"{'PASS' if self.passed else 'FAIL'} {self.name}: {self.value_text()}"
        return text + (f" ({self.note})" if self.note else "")

    def value_text(self) -> str:
        if self.value is None:
            return "—"
        signed = self.kind == "no_regression"
        digits = _digits(self.value, self.threshold, self.ci)
        text = _num(self.value, digits, signed)
        if self.ci is not None:
            text += f" [{_num(self.ci[0], digits, signed)}, {_num(self.ci[1], digits, signed)}]"
        return text


def _num(x: float, digits: int, signed: bool = False) -> str:
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _digits(value: float, threshold: float | None, ci: list[float] | None) -> int:
    """2 decimals (at least the threshold's), more where fewer would show a value that differs from its
    threshold as equal to it."""
    if threshold is None:
        return 2
    least = len(threshold_text(threshold).partition(".")[2]) or 2
    for digits in range(max(2, least), 7):
        if abs(value - threshold) <= _EPS or round(value, digits) != round(threshold, digits):
            return digits
    return 6


def threshold_text(x: float) -> str:
    """``0.70``; more decimals when the threshold has them (``0.705``)."""
    for digits in range(2, 7):
        if abs(round(x, digits) - x) < 1e-12:
            return f"{x:.{digits}f}"
    return f"{x:g}"


class GateResult(BaseModel):
    """What ``specalign gate`` checked of a run, condition by condition."""

    run_dir: str
    model: str
    method: str
    judge: str
    scored: int
    pending: int
    baseline: str | None = None
    strict_ci: bool = False
    bootstrap: BootstrapSettings | None = None
    checks: list[GateCheck]
    warnings: list[str] = Field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> int:
        return sum(not c.passed for c in self.checks)

    def verdict(self) -> str:
        """``gate passed: 3 of 3 conditions hold`` or ``gate failed: 1 of 3 conditions falls short``."""
        n = len(self.checks)
        if self.passed:
            return f"gate passed: {n} of {n} condition{'s' if n != 1 else ''} hold{'s' if n == 1 else ''}"
        k = self.failures
        return f"gate failed: {k} of {n} condition{'s' if n != 1 else ''} fall{'s' if k == 1 else ''} short"

    def lines(self) -> list[str]:
        """One line per condition, then the verdict."""
        return [c.line() for c in self.checks] + [self.verdict()]


def run_gate(
    run_dir: str,
    *,
    mins: Sequence[MinCondition] = (),
    max_violations: Sequence[ViolationCondition] = (),
    baseline: str | None = None,
    no_regression: bool = False,
    strict_ci: bool = False,
    bootstrap: int | None = None,
    seed: int | None = None,
) -> GateResult:
    """Check the conditions against ``run_dir``'s scores (recomputed from its records, intervals from
    ``bootstrap`` resamples). Bad input (no condition, ``no_regression`` without a baseline, a run with
    nothing scored, an unknown scenario or spec) raises an :class:`~specalign.errors.InputError` or
    :class:`~specalign.errors.RunDirError` (exit 2)."""
    if not (mins or max_violations or no_regression):
        raise ConfigError("no condition to check: give --min, --max-violation or --no-regression", field="gate")
    if no_regression and baseline is None:
        raise ConfigError("--no-regression needs --baseline DIR (the run to compare against)", field="--no-regression")
    if baseline is not None and not no_regression:
        raise ConfigError("--baseline is only used by --no-regression: add it, or drop --baseline", field="--baseline")
    if strict_ci and bootstrap == 0:
        raise ConfigError("--strict-ci checks the intervals: it needs --bootstrap above 0", field="--strict-ci")
    if no_regression and bootstrap == 0:
        raise ConfigError("--no-regression needs intervals: --bootstrap above 0", field="--no-regression")
    rd = RunDir(run_dir)
    manifest = rd.read_manifest()
    for vcond in max_violations:  # checked before any scoring: bad input fails fast
        _resolve(vcond, manifest)
    base_rd = base_manifest = None
    if baseline is not None:
        base_rd = RunDir(baseline)
        base_manifest = base_rd.read_manifest()
    rep = compute_scores(rd, manifest, bootstrap=bootstrap, seed=seed)
    _require_scored(run_dir, rep.counts)
    settings = rep.bootstrap or BootstrapSettings(resamples=0)
    checks: list[GateCheck] = []
    full = rep.overall["full"]
    for cond in mins:
        value, ci = getattr(full, cond.metric), getattr(full, f"{cond.metric}_ci")
        checks.append(_min_check(cond, value, ci, full.n_scored, strict_ci))
    points = rep.sample_points()
    for vcond in max_violations:
        scenario, spec = _resolve(vcond, manifest)
        checks.append(_violation_check(vcond, scenario, spec, rep.spec_violations, points, settings, strict_ci))
    warnings: list[str] = []
    if base_rd is not None and base_manifest is not None:
        base_rep = compute_scores(base_rd, base_manifest, bootstrap=bootstrap, seed=seed)
        _require_scored(str(baseline), base_rep.counts)
        rows = [row_of(rd, manifest, rep), row_of(base_rd, base_manifest, base_rep)]
        set_deltas(rows, rows[1].run_dir)
        warnings = comparison_warnings(rows)
        row = rows[0]
        if not row.delta_prompts:
            raise ConfigError(
                f"{run_dir} and the baseline {baseline} share no scored prompt: nothing to compare",
                field="--no-regression",
            )
        for metric in ("sar", "safety", "behavioral"):
            delta, ci = getattr(row, f"delta_{metric}"), getattr(row, f"delta_{metric}_ci")
            checks.append(_regression_check(metric, delta, ci, row.delta_prompts))
    if rep.counts["pending"]:
        warnings.append(f"{rep.counts['pending']} selected samples of {run_dir} are not finished")
    return GateResult(
        run_dir=str(rd.path),
        model=rep.model,
        method=rep.method,
        judge=rep.judge,
        scored=rep.counts["scored"],
        pending=rep.counts["pending"],
        baseline=str(base_rd.path) if base_rd is not None else None,
        strict_ci=strict_ci,
        bootstrap=rep.bootstrap,
        checks=checks,
        warnings=warnings,
    )


def _require_scored(run_dir: str, counts: dict[str, int]) -> None:
    if not counts["scored"]:
        raise RunDirError(
            f"{run_dir}: nothing scored ({counts['selected']} selected, {counts['unscored']} unscored, "
            f"{counts['pending']} pending): the gate has nothing to check"
        )


def _resolve(cond: ViolationCondition, manifest) -> tuple[str, str]:  # noqa: ANN001
    """The condition's scenario and spec, checked against the run's selection."""
    scenarios = list(manifest.selection.scenarios)
    if cond.scenario is None:
        if len(scenarios) != 1:
            raise ConfigError(
                f"{cond.spec} is ambiguous in a run of {len(scenarios)} scenarios: write SCENARIO/{cond.spec}, "
                f"e.g. {scenarios[0]}/{cond.spec} (scenarios: {', '.join(scenarios)})",
                field="--max-violation",
            )
        scenario = scenarios[0]
    else:
        scenario = cond.scenario
        if scenario not in scenarios:
            raise ConfigError(
                f"{scenario!r} is not a scenario of the run (scenarios: {', '.join(scenarios)})",
                field="--max-violation",
            )
    info = manifest.data.scenarios[scenario]
    if cond.spec not in info.spec_ids():
        raise ConfigError(
            f"{scenario} has no spec {cond.spec} (it has S1..S{info.n_safety} and B1..B{info.n_behavioral})",
            field="--max-violation",
        )
    return scenario, cond.spec


def _min_check(cond: MinCondition, value: float | None, ci: list[float] | None, n: int, strict: bool) -> GateCheck:
    name = f"{cond.metric} ≥ {threshold_text(cond.threshold)}"
    check = GateCheck(kind="min", name=name, passed=False, value=value, ci=ci, threshold=cond.threshold, n=n)
    if value is None:
        check.note = "no value: nothing scored counts towards it"
    elif strict:
        check.passed = ci is not None and ci[0] >= cond.threshold - _EPS
        check.note = "" if check.passed else ("no interval" if ci is None else "the interval's low end is below")
    else:
        check.passed = value >= cond.threshold - _EPS
    return check


def _violation_check(
    cond: ViolationCondition,
    scenario: str,
    spec: str,
    violations: dict[str, dict[str, dict[str, float | int]]],
    points: dict,
    settings: BootstrapSettings,
    strict: bool,
) -> GateCheck:
    name = f"{scenario}/{spec} violation ≤ {threshold_text(cond.threshold)}"
    check = GateCheck(kind="max_violation", name=name, passed=False, threshold=cond.threshold)
    figures = violations.get(scenario, {}).get(spec)
    if not figures or not figures["n"]:
        check.note = f"no scored sample in {scenario}"
        return check
    check.value, check.n = float(figures["violation_rate"]), int(figures["n"])
    check.ci = _rate_interval(scenario, spec, points, settings)
    if strict:
        check.passed = check.ci is not None and check.ci[1] <= cond.threshold + _EPS
        check.note = "" if check.passed else ("no interval" if check.ci is None else "the interval's high end is above")
    else:
        check.passed = check.value <= cond.threshold + _EPS
    return check


def _rate_interval(scenario: str, spec: str, points: dict, settings: BootstrapSettings) -> list[float] | None:
    """The bootstrap interval of a spec's violation rate over the scenario's scored prompts (as the scores')."""
    mine = [points[k] for k in sorted(points) if points[k].scenario == scenario and points[k].verdicts]
    if not mine:
        return None
    n_safety = mine[0].n_safety
    index = int(spec[1:]) - 1 + (0 if spec[0] == "S" else n_safety)
    values = np.array([[1.0 if p.verdicts[index] == "N" else 0.0] for p in mine])
    point, shifts = stratified_means([scenario] * len(mine), values, settings)
    if scenario not in shifts:
        return None
    tails = percentile_interval(shifts[scenario], settings.confidence)[:, 0]
    v = float(point[scenario][0])
    return [min(max(v + float(t), 0.0), 1.0) for t in tails]


def _regression_check(metric: str, delta: float | None, ci: list[float] | None, n: int) -> GateCheck:
    name = f"no regression in {metric} ({_DELTA_NAMES[metric]} vs baseline)"
    check = GateCheck(kind="no_regression", name=name, passed=True, value=delta, ci=ci, threshold=0.0, n=n)
    if ci is None:
        check.note = "no interval: too few shared prompts to tell"
    elif ci[1] < 0:
        check.passed = False
        check.note = "a drop: the interval leaves 0 out"
    elif ci[0] <= 0 <= ci[1] and delta is not None and delta < 0:
        check.note = "within noise"
    return check


# -- output for CI ---------------------------------------------------------------------------------------------------

#: characters XML 1.0 cannot hold at all, even escaped (control characters, lone surrogates, U+FFFE/FFFF)
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def gate_junit(result: GateResult) -> bytes:
    """JUnit XML: one test suite, one test case per condition, a ``<failure>`` for each that falls short.
    Every text is escaped by ElementTree and stripped of what XML cannot hold (model names are untrusted)."""
    n, failures = len(result.checks), result.failures
    suites = ET.Element("testsuites", name="specalign gate", tests=str(n), failures=str(failures), errors="0")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=_xml(f"specalign gate {result.run_dir}"),
        tests=str(n),
        failures=str(failures),
        errors="0",
        skipped="0",
    )
    props = ET.SubElement(suite, "properties")
    for key in ("run_dir", "model", "method", "judge", "baseline"):
        v = getattr(result, key)
        if v is not None:
            ET.SubElement(props, "property", name=key, value=_xml(str(v)))
    for check in result.checks:
        case = ET.SubElement(
            suite, "testcase", classname=_xml(f"specalign.gate.{check.kind}"), name=_xml(check.name), time="0"
        )
        if not check.passed:
            failure = ET.SubElement(case, "failure", message=_xml(check.line()), type=check.kind)
            failure.text = _xml(check.line())
        out = ET.SubElement(case, "system-out")
        out.text = _xml(check.line())
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#~>!])")


def _md(text: str) -> str:
    """Untrusted text for a Markdown table cell: no HTML, no markup, no line breaks, no control characters."""
    text = shown(text).replace("\n", " ").replace("\r", " ")
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


def gate_markdown(result: GateResult) -> str:
    """A Markdown summary for a CI job page ($GITHUB_STEP_SUMMARY): the verdict, the run, a table of the
    conditions with values and intervals."""
    head = f"### {'✅' if result.passed else '❌'} specalign gate {'passed' if result.passed else 'failed'}"
    about = (
        f"Run {_md(result.run_dir)} · model {_md(result.model)} · method {_md(result.method)} · "
        f"judge {_md(result.judge)} · {result.scored} scored prompts"
    )
    if result.baseline is not None:
        about += f" · baseline {_md(result.baseline)}"
    rows = [
        "| result | condition | value | 95% CI | note |",
        "|---|---|---:|---:|---|",
    ]
    for c in result.checks:
        value, _, ci = c.value_text().partition(" ")
        rows.append(
            f"| {'✅ PASS' if c.passed else '❌ FAIL'} | {_md(c.name)} | {_md(value)} | {_md(ci or '—')} | {_md(c.note)} |"
        )
    notes = [_md(result.verdict())]
    if result.bootstrap is not None and result.bootstrap.resamples:
        notes.append(
            f"95% CI: bootstrap over prompts, stratified by scenario ({result.bootstrap.resamples:,} resamples, "
            f"seed {result.bootstrap.seed}); "
            + ("the interval's end is checked" if result.strict_ci else "the point estimate is checked")
        )
    notes += [f"warning: {_md(w)}" for w in result.warnings]
    return "\n".join([head, "", about, "", *rows, "", *(f"- {n}" for n in notes)]) + "\n"
