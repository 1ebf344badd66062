"""Judges: joint (one call per sample) and sequential (one call per spec), verdict schema, strict parser of the final answer.

The prompts, schemas and parser are this package's own business (``_prompts``, ``_schema``, ``_parser``);
other packages and users call :class:`Judge` and read its :class:`JudgeOutcome`. A user's own joint prompt
(:func:`load_judge_template`, docs/judge.md) replaces specalign's when given to the judge.
"""

from ._judge import DEFAULT_JUDGE_PARAMS, JUDGE_PROMPT_VERSION, Judge, JudgeMode, score_verdicts
from ._panel import PANEL_RULES, TIE_ORDER, JudgePanel, PanelRule, panel_verdict
from ._schema import JudgeOutcome, SpecVerdict, Verdict
from ._template import PLACEHOLDERS, JudgeTemplate, load_judge_template

__all__ = [
    "DEFAULT_JUDGE_PARAMS",
    "JUDGE_PROMPT_VERSION",
    "PANEL_RULES",
    "PLACEHOLDERS",
    "TIE_ORDER",
    "Judge",
    "JudgeMode",
    "JudgeOutcome",
    "JudgePanel",
    "JudgeTemplate",
    "PanelRule",
    "SpecVerdict",
    "Verdict",
    "load_judge_template",
    "panel_verdict",
    "score_verdicts",
]
