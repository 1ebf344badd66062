"""Building new scenarios: draft specs with a model, lint them (curation, attack and review follow)."""

from ._catalog import COMPLETENESS_RULE, DESIGN_PRINCIPLES, SAFETY_CATEGORIES, Category
from ._draft import draft_scenario, scenario_key, write_scenario
from ._lint import Finding, LintReport, lint_scenario, rule_findings

__all__ = [
    "COMPLETENESS_RULE",
    "DESIGN_PRINCIPLES",
    "SAFETY_CATEGORIES",
    "Category",
    "Finding",
    "LintReport",
    "draft_scenario",
    "lint_scenario",
    "rule_findings",
    "scenario_key",
    "write_scenario",
]
