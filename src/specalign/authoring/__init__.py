"""Building new scenarios: draft specs, lint them, curate prompts (attack enhancement and review follow)."""

from ._attack import Attacker, AttackOutcome, AttackParams, apply_outcome, to_attack
from ._catalog import COMPLETENESS_RULE, DESIGN_PRINCIPLES, SAFETY_CATEGORIES, Category
from ._curate import Candidate, CurateResult, CurateStats, Curator, curate, write_prompts
from ._dedupe import Embedder, MiniLMEmbedder, greedy_dedupe
from ._draft import draft_scenario, scenario_key, write_scenario
from ._lint import Finding, LintReport, lint_scenario, rule_findings
from ._review import (
    DECISIONS,
    ReviewDecision,
    ReviewItem,
    ReviewLog,
    decision_summary,
    export_sheet,
    final_scenario,
    import_sheet,
    review_items,
    reviewer_name,
)
from ._tactics import TACTICS, Tactic

__all__ = [
    "COMPLETENESS_RULE",
    "DESIGN_PRINCIPLES",
    "SAFETY_CATEGORIES",
    "AttackOutcome",
    "AttackParams",
    "Attacker",
    "TACTICS",
    "Tactic",
    "apply_outcome",
    "to_attack",
    "Candidate",
    "Category",
    "CurateResult",
    "CurateStats",
    "Curator",
    "Embedder",
    "MiniLMEmbedder",
    "curate",
    "greedy_dedupe",
    "write_prompts",
    "Finding",
    "LintReport",
    "draft_scenario",
    "lint_scenario",
    "rule_findings",
    "scenario_key",
    "write_scenario",
    "DECISIONS",
    "ReviewDecision",
    "ReviewItem",
    "ReviewLog",
    "decision_summary",
    "export_sheet",
    "final_scenario",
    "import_sheet",
    "review_items",
    "reviewer_name",
]
