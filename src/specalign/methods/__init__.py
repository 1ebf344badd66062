"""Generation methods, one module each, behind one registry (``--method NAME``).

Built-ins: ``raw``, ``vanilla`` (baselines.py), ``zero_think``, ``more_think``, ``align3``
(single-pass, written into the model's thinking by prefill), ``self_refine``, ``best_of_n``,
``tpo`` (multi-pass). Add one by copying a neighbour and decorating it with
:func:`register_method`; plugins register through the ``specalign.methods`` entry-point group.
"""

from . import align3 as _align3  # noqa: F401  (each import registers its methods)
from . import baselines as _baselines  # noqa: F401
from . import best_of_n as _best_of_n  # noqa: F401
from . import more_think as _more_think  # noqa: F401
from . import self_refine as _self_refine  # noqa: F401
from . import tpo as _tpo  # noqa: F401
from . import zero_think as _zero_think  # noqa: F401
from ._base import GenerationMethod
from ._context import MethodContext
from ._registry import available_methods, create_method, register_method
from ._scorers import CandidateScorer, FunctionScorer, JudgeScorer, ScoreResult, make_scorer
from ._stream import AnswerSink, AnswerStreamer
from ._text import SplitText, split_thought
from ._types import Answer, MethodOutput, MethodParams, MethodStep
from .baselines import spec_augmented_prompt

__all__ = [
    "Answer",
    "AnswerSink",
    "AnswerStreamer",
    "CandidateScorer",
    "FunctionScorer",
    "GenerationMethod",
    "JudgeScorer",
    "MethodContext",
    "MethodOutput",
    "MethodParams",
    "MethodStep",
    "ScoreResult",
    "SplitText",
    "available_methods",
    "create_method",
    "make_scorer",
    "register_method",
    "spec_augmented_prompt",
    "split_thought",
]
