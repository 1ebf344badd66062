"""Provider batch APIs behind one small interface: submit many chat requests at once, poll, collect.

A backend that offers a batch API (OpenAI's Batch API, Anthropic's Message Batches) subclasses
:class:`BatchCapable` next to :class:`~specalign.models.ModelBackend`. The runner decides *what* to batch
and records batch ids in the run directory; the backend only speaks the provider's protocol:

- :meth:`BatchCapable.submit_batch` uploads the requests (each with a ``custom_id`` unique in the batch)
  and returns the provider's batch id as soon as the batch exists;
- :meth:`BatchCapable.batch_status` reads its state and counts;
- :meth:`BatchCapable.batch_results` downloads the results of an ended batch: per ``custom_id`` a
  :class:`~specalign.models.Completion` (parsed exactly as an online call's answer would be) or a
  :class:`BatchItemError`; a request the provider never ran (expired, cancelled) is a ``BatchItemError``
  with ``retryable=True``;
- :meth:`BatchCapable.cancel_batch` asks the provider to stop one.

Access errors (a bad key, an unknown model) raise :class:`~specalign.errors.ModelAccessError`; other
failures after the backend's own retries raise :class:`~specalign.errors.ModelError`.
"""

from __future__ import annotations

import abc
from typing import ClassVar, Literal

from pydantic import BaseModel, Field

from ._base import ChatRequest, Completion

BatchStatusName = Literal[
    "validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled"
]
#: states after which a batch changes no more: its results (possibly partial) can be collected
ENDED: frozenset[str] = frozenset({"completed", "failed", "expired", "cancelled"})


class BatchRequest(BaseModel):
    """One request of a batch: ``custom_id`` names it in the provider's results."""

    custom_id: str = Field(min_length=1, max_length=64)
    request: ChatRequest


class BatchState(BaseModel):
    """A batch as the provider reports it."""

    id: str
    status: BatchStatusName
    total: int = 0
    completed: int = 0
    failed: int = 0
    errors: list[str] = Field(default_factory=list, description="why the whole batch failed (validation errors)")

    @property
    def ended(self) -> bool:
        return self.status in ENDED


class BatchItemError(BaseModel):
    """One request of a batch that gave no answer."""

    message: str
    kind: str = Field("error", description="the provider's error type or code, or expired / cancelled")
    status: int | None = Field(None, description="the HTTP status the request got inside the batch, if any")
    retryable: bool = Field(True, description="whether sending the request again may succeed")


class BatchCapable(abc.ABC):
    """What a backend with a provider batch API adds (mixed into a :class:`ModelBackend` subclass)."""

    supports_batch: ClassVar[bool] = True
    #: most requests one batch may hold (the provider's limit)
    max_batch_requests: ClassVar[int] = 50_000

    @abc.abstractmethod
    async def submit_batch(self, requests: list[BatchRequest]) -> str:
        """Create a batch of ``requests`` and return its id (requests with one ``custom_id`` each)."""

    @abc.abstractmethod
    async def batch_status(self, batch_id: str) -> BatchState:
        """The batch's state and counts now."""

    @abc.abstractmethod
    async def batch_results(self, batch_id: str) -> dict[str, Completion | BatchItemError]:
        """The results of an ended batch, per ``custom_id``; every request of the batch appears once."""

    @abc.abstractmethod
    async def cancel_batch(self, batch_id: str) -> None:
        """Ask the provider to cancel the batch (it may still finish some requests)."""


BatchKind = Literal["openai", "anthropic"]
