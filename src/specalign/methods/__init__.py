"""Generation methods, one module each, behind one registry (``--method NAME``)."""

from . import baselines as _baselines  # noqa: F401  (registers raw, vanilla)
from ._base import GenerationMethod, MethodOutput, MethodParams
from ._registry import available_methods, create_method, register_method
from ._text import SplitText, split_thought
from .baselines import spec_augmented_prompt

__all__ = [
    "GenerationMethod",
    "MethodOutput",
    "MethodParams",
    "SplitText",
    "available_methods",
    "create_method",
    "register_method",
    "spec_augmented_prompt",
    "split_thought",
]
