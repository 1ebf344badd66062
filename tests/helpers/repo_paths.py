"""Where things are: the repository, its sources, and the official SpecBench data (outside the tree)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
OFFICIAL_DATA = Path(os.environ.get("SPECALIGN_OFFICIAL_DATA", REPO.parent / "shared" / "specbench-data"))
