"""Judges: joint (one call per sample) and sequential (one call per spec), verdict schema, strict parser of the final answer.

The prompts, schemas and parser are this package's own business (``_prompts``, ``_schema``, ``_parser``);
other packages and users call :class:`Judge` and read its :class:`JudgeOutcome`.
"""

from ._judge import JUDGE_PROMPT_VERSION, Judge, JudgeMode, score_verdicts
from ._schema import JudgeOutcome, SpecVerdict, Verdict

__all__ = [
    "JUDGE_PROMPT_VERSION",
    "Judge",
    "JudgeMode",
    "JudgeOutcome",
    "SpecVerdict",
    "Verdict",
    "score_verdicts",
]
