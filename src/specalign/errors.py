"""Typed exceptions raised by specalign.

Hierarchy::

    SpecalignError              base class; ``exit_code`` is what the CLI exits with
    ├── InputError              bad user input (exit 2): one line naming file and field
    │   ├── DataError           a benchmark file is malformed
    │   └── ConfigError         a model config, model spec, method or option is invalid
    │       └── CapabilityError a method needs what the model's backend does not offer (prefill)
    ├── ModelError              a model call failed after the retries it deserved (exit 1)
    │   ├── ModelAccessError    401/403/404 or exhausted quota: never retried (exit 3)
    │   │   └── ModelOutage     every recent sample failed at the model: the run stopped (exit 3)
    │   └── ModelUnavailable    the backend cannot be loaded (missing package or file)
    ├── JudgeParseError         the judge's answer could not be read as verdicts
    └── RunDirError             a run directory cannot be written or does not match (exit 2)
"""

from __future__ import annotations


class SpecalignError(Exception):
    """Base class of every error specalign raises on purpose."""

    exit_code = 1


class InputError(SpecalignError):
    """Bad input from the user: reported in one line, exit code 2."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, field: str | None = None):
        self.path = path
        self.field = field
        self.detail = message
        where = ""
        if path:
            where = f"{path}"
            if field:
                where += f": {field}"
            where += ": "
        elif field:
            where = f"{field}: "
        super().__init__(f"{where}{message}")


class DataError(InputError):
    """A benchmark data file is missing, unreadable or malformed."""


class ConfigError(InputError):
    """A model config, model spec, method name or option is invalid."""


class CapabilityError(ConfigError):
    """A method needs a capability (assistant prefill) that the model does not declare."""


class ModelError(SpecalignError):
    """A model call failed after its retries.

    ``kind`` says how (``timeout``, ``connection``, ``status``, ``malformed``, ``auth``,
    ``not_found``, ``quota``, ``rejected``; None when unknown) and ``status`` is the upstream's
    last HTTP status, when it sent one: the gateway maps them to its own status codes.
    """

    exit_code = 1

    def __init__(self, message: str = "", *, kind: str | None = None, status: int | None = None):
        super().__init__(message)
        self.kind = kind
        self.status = status


class ModelAccessError(ModelError):
    """The endpoint refused access (bad key, unknown model, exhausted quota): not retried."""

    exit_code = 3


class ModelOutage(ModelAccessError):
    """Many samples in a row failed at the model after their retries: the run stops early (resumable)."""


class ModelUnavailable(ModelError):
    """A backend cannot be loaded: missing optional package or model file."""

    exit_code = 2


class JudgeParseError(SpecalignError):
    """The judge's output could not be read as one verdict per specification."""


class RunDirError(SpecalignError):
    """A run directory cannot be used: unwritable, or made by a different configuration."""

    exit_code = 2
