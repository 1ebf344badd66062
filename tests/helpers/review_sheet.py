"""Filling a review sheet (`specalign review --export`) as a reviewer would, for tests and benchmarks."""

from __future__ import annotations

import csv
from pathlib import Path


def accept_all(sheet: Path) -> int:
    """Mark every row of the sheet 'accept'; returns the number of rows."""
    with sheet.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["decision"] = "accept"
    with sheet.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return len(rows)
