"""Judges: joint (one call per sample) and sequential (one call per spec), verdict schema, strict parser of the final answer."""

from ._judge import DEFAULT_JUDGE_PARAMS, JUDGE_PROMPT_VERSION, Judge, JudgeMode, score_verdicts
from ._parser import ANSWER_MAX_CHARS, final_answer, parse_joint, parse_single
from ._prompts import RESPONSE_MAX_CHARS, fence_id, joint_prompt, single_prompt
from ._schema import VERDICTS, JudgeOutcome, SpecVerdict, Verdict, joint_schema, single_schema, spec_ids

__all__ = [
    "ANSWER_MAX_CHARS",
    "DEFAULT_JUDGE_PARAMS",
    "JUDGE_PROMPT_VERSION",
    "RESPONSE_MAX_CHARS",
    "VERDICTS",
    "Judge",
    "JudgeMode",
    "JudgeOutcome",
    "SpecVerdict",
    "Verdict",
    "fence_id",
    "final_answer",
    "joint_prompt",
    "joint_schema",
    "parse_joint",
    "parse_single",
    "score_verdicts",
    "single_prompt",
    "single_schema",
    "spec_ids",
]
