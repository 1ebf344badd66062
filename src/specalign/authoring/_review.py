"""``specalign review``: human verification of a scenario's specs, prompts and attacks.

Decisions are appended to ``<scenario>/review.jsonl`` (who, when, what, and a hash of the text that
was reviewed, so a decision on text that changed since no longer counts). The latest decision per item
wins. ``apply`` writes a final scenario holding only what was accepted.
"""

from __future__ import annotations

import csv
import getpass
import hashlib
import json
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from ..benchmark import Prompt, Scenario, Spec, neutralise_cell, read_sheet, read_text
from ..errors import DataError, RunDirError
from ._write import append_line

ItemKind = Literal["spec", "prompt", "attack"]
Decision = Literal["accept", "reject", "edit"]
REVIEW_FILE = "review.jsonl"
SHEET_COLUMNS = ["item", "kind", "label", "text", "original", "decision", "edited_text", "note"]


class ReviewItem(BaseModel):
    """One thing to verify: a spec, a prompt (its pre-attack text) or an attack (the rewrite)."""

    key: str = Field(description="spec:S1, prompt:<id> or attack:<id>")
    kind: ItemKind
    label: str = Field(description="safety / behavioral for specs, unsafe / safe for prompts")
    text: str
    original: str | None = Field(None, description="for attacks: the prompt before the attack")

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]


#: what a reviewer may decide, by its spelling in a sheet
DECISIONS: dict[str, Decision] = {"accept": "accept", "reject": "reject", "edit": "edit"}


class ReviewDecision(BaseModel):
    item: str
    decision: Decision
    text_sha: str
    edited_text: str | None = None
    note: str = ""
    reviewer: str
    at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


def reviewer_name(given: str | None = None) -> str:
    if given:
        return given
    try:
        return os.environ.get("SPECALIGN_REVIEWER") or getpass.getuser()
    except Exception:  # noqa: BLE001  (no user name in some containers)
        return "unknown"


def review_items(scenario: Scenario) -> list[ReviewItem]:
    items = [
        ReviewItem(key=f"spec:S{i}", kind="spec", label="safety", text=s.text)
        for i, s in enumerate(scenario.safety_specs, 1)
    ]
    items += [
        ReviewItem(key=f"spec:B{i}", kind="spec", label="behavioral", text=s.text)
        for i, s in enumerate(scenario.behavioral_specs, 1)
    ]
    for p in scenario.prompts:
        items.append(ReviewItem(key=f"prompt:{p.id}", kind="prompt", label=p.label, text=p.original_prompt))
        if p.attack and p.prompt != p.original_prompt:
            items.append(
                ReviewItem(
                    key=f"attack:{p.id}", kind="attack", label=p.label, text=p.prompt, original=p.original_prompt
                )
            )
    return items


class ReviewLog:
    """The decisions file of one scenario folder."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / REVIEW_FILE

    def decisions(self) -> Iterator[ReviewDecision]:
        if not self.path.exists():
            return
        for n, line in enumerate(read_text(self.path).split("\n"), 1):  # not splitlines: U+2028 is text
            if not line.strip():
                continue
            try:
                yield ReviewDecision.model_validate_json(line)
            except ValueError:
                raise DataError("not a review decision", path=str(self.path), field=f"line {n}") from None

    def latest(self, items: list[ReviewItem]) -> dict[str, ReviewDecision]:
        """The last decision per item, only where it was made on the item's current text."""
        digests = {i.key: i.digest for i in items}
        out: dict[str, ReviewDecision] = {}
        for d in self.decisions():
            if digests.get(d.item) == d.text_sha:
                out[d.item] = d
        return out

    def append(self, decision: ReviewDecision) -> None:
        append_line(self.path, decision.model_dump_json())


def export_sheet(
    items: list[ReviewItem], decided: dict[str, ReviewDecision], path: str | Path, *, raw_cells: bool = False
) -> int:
    """A CSV sheet with one row per item and the decisions so far, to fill in and import back.

    Cells a spreadsheet would run as formulas get a leading ``'`` (see :mod:`specalign.benchmark._sheets`),
    which :func:`import_sheet` removes again; ``raw_cells`` writes them as they are.
    """
    cell = (lambda v: v) if raw_cells else neutralise_cell
    try:
        with Path(path).open("w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=SHEET_COLUMNS)
            w.writeheader()
            for i in items:
                d = decided.get(i.key)
                row = {
                    "item": i.key,
                    "kind": i.kind,
                    "label": i.label,
                    "text": i.text,
                    "original": i.original or "",
                    "decision": d.decision if d else "",
                    "edited_text": (d.edited_text or "") if d else "",
                    "note": d.note if d else "",
                }
                w.writerow({k: cell(v) for k, v in row.items()})
    except OSError as e:
        raise RunDirError(f"cannot write {path}: {e.strerror or e}") from None
    return len(items)


def import_sheet(items: list[ReviewItem], path: str | Path, reviewer: str) -> list[ReviewDecision]:
    """Decisions from a filled sheet: ``accept``, ``reject``, or ``edit`` with ``edited_text``; blank rows
    are left undecided. Any other value is one clear error naming the row.

    The sheet may come back from a spreadsheet program: UTF-8 (with BOM), UTF-16 or Windows-1252,
    separated by commas, semicolons or tabs; the ``'`` the export put before formula-like cells is removed.
    """
    by_key = {i.key: i for i in items}
    out = []
    for n, row in read_sheet(path, ("item", "text", "decision")):
        given = (row.get("decision") or "").strip().lower()
        if not given:
            continue
        item = by_key.get(row.get("item") or "")
        if item is None:
            raise DataError(f"no such item {row.get('item')!r} in this scenario", path=str(path), field=f"row {n}.item")
        decision = DECISIONS.get(given)
        if decision is None:
            raise DataError(
                f"expected accept, reject or edit, got {given!r}", path=str(path), field=f"row {n}.decision"
            )
        edited = _same_text(row.get("edited_text") or "").strip() or None
        if decision == "edit" and not edited:
            raise DataError("an edit needs edited_text", path=str(path), field=f"row {n}.edited_text")
        if _same_text(item.text) != _same_text(row.get("text") or ""):
            raise DataError(
                "the text differs from the scenario's now: export a fresh sheet", path=str(path), field=f"row {n}.text"
            )
        out.append(
            ReviewDecision(
                item=item.key,
                decision=decision,
                text_sha=item.digest,
                edited_text=edited,
                note=(row.get("note") or "").strip(),
                reviewer=reviewer,
            )
        )
    return out


def _same_text(text: str) -> str:
    """Text as compared with the sheet's: spreadsheet programs save line breaks as CRLF."""
    return text.replace("\r\n", "\n")


def final_scenario(scenario: Scenario, decided: dict[str, ReviewDecision]) -> tuple[Scenario, dict[str, int]]:
    """Only what was accepted (or edited): specs and prompts. A rejected attack falls back to the
    accepted original prompt. Undecided items are left out too."""
    counts = {"accepted": 0, "edited": 0, "rejected": 0, "undecided": 0}

    def verdict(key: str, text: str) -> str | None:
        d = decided.get(key)
        kind = "undecided" if d is None else {"accept": "accepted", "edit": "edited", "reject": "rejected"}[d.decision]
        counts[kind] += 1
        if d is None or d.decision == "reject":
            return None
        return d.edited_text if d.decision == "edit" else text

    def specs(kind: str, items: list[Spec]) -> list[Spec]:
        kept = []
        for i, s in enumerate(items, 1):
            text = verdict(f"spec:{kind}{i}", s.text)
            if text:
                kept.append(s.model_copy(update={"text": text}))
        return kept

    safety, behavioral = specs("S", scenario.safety_specs), specs("B", scenario.behavioral_specs)
    prompts: list[Prompt] = []
    for p in scenario.prompts:
        original = verdict(f"prompt:{p.id}", p.original_prompt)
        attacked = verdict(f"attack:{p.id}", p.prompt) if p.attack and p.prompt != p.original_prompt else None
        if original is None:
            continue
        if attacked is not None:
            prompts.append(p.model_copy(update={"prompt": attacked, "original_prompt": original}))
        else:
            prompts.append(p.model_copy(update={"prompt": original, "original_prompt": original, "attack": None}))
    if not safety or not behavioral:
        raise DataError(
            "the review kept no safety spec or no behavioral spec: nothing to evaluate against", path=str(REVIEW_FILE)
        )
    return scenario.model_copy(
        update={"safety_specs": safety, "behavioral_specs": behavioral, "prompts": prompts}
    ), counts


def decision_summary(items: list[ReviewItem], decided: dict[str, ReviewDecision]) -> dict[str, int]:
    out = {"items": len(items), "accept": 0, "edit": 0, "reject": 0, "undecided": 0}
    for i in items:
        d = decided.get(i.key)
        out[d.decision if d else "undecided"] += 1
    return out


def decisions_as_json(decided: dict[str, ReviewDecision]) -> str:
    return json.dumps({k: v.model_dump(mode="json") for k, v in decided.items()}, indent=2)
