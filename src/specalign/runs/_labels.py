"""Human labels of a run's answers (``specalign review RUN_DIR --label``): blind sheets out, labels in.

An *item* is one spec of one answer, named ``scenario/prompt_id:SPEC`` (``child/child-u01:S1``). An export
draws a stratified random sample of the items a judge scored: the cells are (scenario, spec), every cell
gets an equal share of the items asked for (a cell with fewer items gives its rest to the others), and the
items within a cell are drawn at random, seeded. The sheet holds the spec, the prompt and the answer (never the
thought, never a judge's verdict or reasons) and an empty ``label`` column. The export is recorded in
``labels-exports.jsonl``: its items, each with the sha256 of the response that was shown.

An import appends one :class:`HumanLabel` per labelled row to ``labels.jsonl``, with the response sha256
of the export it came from. A label counts only while the run's response is still that one; the latest
label per (labeler, item) wins. Both files are written under the run directory's lock.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from .._terminal import shown
from .._unicode import repair_text
from ..benchmark import SPEC_KINDS, neutralise_cell, read_sheet, spec_id
from ..errors import ConfigError, DataError, RunDirError
from ._export import run_benchmark
from ._intervals import DEFAULT_SEED
from ._records import GenerationRecord, Manifest, now
from ._store import RecordWriter, RunDir, _lines, check_output

LABELS_FILE = "labels.jsonl"
EXPORTS_FILE = "labels-exports.jsonl"
#: the verdicts a person may give, as a judge gives them
LABEL_VALUES: tuple[str, ...] = ("YES", "NO", "NA")
SHEET_COLUMNS = [
    "item",
    "export",
    "scenario",
    "spec_id",
    "spec_kind",
    "spec_text",
    "prompt",
    "response",
    "label",
    "note",
]
DEFAULT_ITEMS = 200
#: what Excel keeps of a cell; a longer answer is cut off there (a warning says so)
EXCEL_CELL_CHARS = 32_767
RATER_PREFIX = "human:"

Label = Literal["YES", "NO", "NA"]


class HumanLabel(BaseModel):
    """One person's verdict on one item, as ``labels.jsonl`` holds it."""

    item: str = Field(description="scenario/prompt_id:SPEC")
    sample_id: str
    spec: str
    label: Label
    labeler: str
    labeled_at: str = Field(default_factory=now)
    note: str = ""
    response_sha256: str = Field(description="the response that was labelled; the label counts only while it stays")
    export: str | None = Field(None, description="the export whose sheet it came from")


class LabelExport(BaseModel):
    """One exported sheet, as ``labels-exports.jsonl`` holds it."""

    export: str = Field(description="the export's id: a hash of its draw, the same for the same draw")
    created_at: str = Field(default_factory=now)
    sheet: str
    sheet_sha256: str
    seed: int
    n_requested: int
    judge_key: str = Field(description="the judge whose scored samples the items were drawn from")
    cells: dict[str, int] = Field(description="scenario/SPEC → items drawn from that cell")
    items: dict[str, str] = Field(description="item → sha256 of the response shown")


class LabelItem(BaseModel):
    """An item that can be drawn: a spec of a scored answer, and the texts a person needs."""

    item: str
    sample_id: str
    scenario: str
    spec: str
    kind: str
    response_sha256: str


def item_id(sample_id: str, spec: str) -> str:
    return f"{sample_id}:{spec}"


def response_sha256(text: str) -> str:
    """The sha256 of a response as recorded (lone surrogates kept as they are)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def rater_name(labeler: str) -> str:
    """A labeler as ``specalign agreement`` names the rater: ``human:NAME``."""
    return f"{RATER_PREFIX}{labeler}"


def check_labeler(name: str) -> str:
    """A labeler's name, stripped; refused when empty, over 100 characters or holding control characters."""
    name = name.strip()
    if not name or len(name) > 100 or shown(name) != name:
        raise ConfigError(
            f"{shown(name)[:80]!r} is not a usable name: 1 to 100 printable characters", field="--labeler"
        )
    return name


# -- export -------------------------------------------------------------------------------------------------------------


def label_candidates(
    rd: RunDir, manifest: Manifest, judge_key: str
) -> tuple[list[LabelItem], dict[str, GenerationRecord]]:
    """Every item of the samples ``judge_key`` scored (latest judgment; the run's selection; generated ok),
    sorted; and the generations they come from."""
    gens: dict[str, GenerationRecord] = {}
    for g in rd.generations():
        gens[g.sample_id] = g
    scored: dict[str, bool] = {}
    for j in rd.judgments():
        if j.judge_key == judge_key:
            scored[j.sample_id] = j.status == "scored"
    items: list[LabelItem] = []
    for sid in sorted(rd.selected(gens)):
        gen = gens.get(sid)
        if gen is None or gen.status != "ok" or not scored.get(sid):
            continue
        digest = response_sha256(gen.response)
        for spec in manifest.data.scenarios[gen.scenario].spec_ids():
            items.append(
                LabelItem(
                    item=item_id(sid, spec),
                    sample_id=sid,
                    scenario=gen.scenario,
                    spec=spec,
                    kind="safety" if spec.startswith("S") else "behavioral",
                    response_sha256=digest,
                )
            )
    return items, gens


def allocate(sizes: list[int], n: int, rng: np.random.Generator) -> list[int]:
    """Equal allocation of ``n`` draws over cells of ``sizes`` items: each cell gets the same share, a cell
    with fewer items gives the rest to the others, and a remainder too small to share goes to cells drawn
    at random. Never more than a cell holds; ``min(n, sum(sizes))`` in all."""
    quota = [0] * len(sizes)
    left = min(n, sum(sizes))
    open_cells = [i for i, s in enumerate(sizes) if s > 0]
    while left > 0:
        share = left // len(open_cells)
        if share == 0:
            for i in rng.choice(open_cells, size=left, replace=False):
                quota[int(i)] += 1
            break
        for i in open_cells:
            take = min(share, sizes[i] - quota[i])
            quota[i] += take
            left -= take
        open_cells = [i for i in open_cells if quota[i] < sizes[i]]
    return quota


def _spec_order(spec: str) -> tuple[int, int]:
    return (0 if spec.startswith("S") else 1, int(spec[1:]) if spec[1:].isdigit() else 0)


def draw_items(candidates: list[LabelItem], n: int, seed: int) -> tuple[list[LabelItem], dict[str, int]]:
    """A stratified random sample of ``n`` items: cells (scenario, spec) in their order, equal allocation
    (:func:`allocate`), then a draw without replacement within each cell, all from one generator seeded with
    ``seed``. Returns the items (by scenario, sample, spec) and the count per cell (``scenario/SPEC``)."""
    cells: dict[tuple[str, str], list[LabelItem]] = {}
    for c in sorted(candidates, key=lambda c: (c.scenario, _spec_order(c.spec), c.sample_id)):
        cells.setdefault((c.scenario, c.spec), []).append(c)
    keys = list(cells)
    rng = np.random.default_rng(seed)
    quota = allocate([len(cells[k]) for k in keys], n, rng)
    chosen: list[LabelItem] = []
    counts: dict[str, int] = {}
    for k, q in zip(keys, quota, strict=True):
        if q:
            picked = rng.choice(len(cells[k]), size=q, replace=False)
            chosen += [cells[k][int(i)] for i in picked]
            counts[f"{k[0]}/{k[1]}"] = q
    chosen.sort(key=lambda c: (c.scenario, c.sample_id, _spec_order(c.spec)))
    return chosen, counts


def sheet_text(text: str) -> str:
    """Model or data text for a sheet cell: line breaks as ``\\n``, lone surrogates as U+FFFD, and control and
    format characters (NUL, escape sequences, bidirectional overrides) shown as ``\\x00``-style codes, so
    that a labeler sees what the judge saw and nothing can break the file or hide text."""
    return shown(repair_text(text.replace("\r\n", "\n"))[0])


def _export_id(run_key: str, seed: int, n: int, judge_key: str, items: list[LabelItem]) -> str:
    blob = json.dumps([run_key, seed, n, judge_key, [(i.item, i.response_sha256) for i in items]])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def resolve_judge(manifest: Manifest, judged: Iterable[str], given: str | None) -> str:
    """The judge key ``given`` names: a key, the start of one (6 characters or more), or a judge's model key;
    the run's current judge when None. One line when it names none or several."""
    if given is None:
        return str(manifest.judge["key"])
    described = {str(j["key"]): j for j in [*manifest.past_judges, manifest.judge]}
    keys = list(dict.fromkeys([*described, *judged]))
    if given in keys:
        return given

    def name(k: str) -> str:
        model = described.get(k, {}).get("model")
        return str(model.get("key", "")) if isinstance(model, dict) else ""

    found = [k for k in keys if (len(given) >= 6 and k.startswith(given)) or name(k) == given]
    if len(found) == 1:
        return found[0]
    known = ", ".join(f"{k[:12]} ({name(k) or '?'})" for k in keys) or "none"
    why = "names several judges" if found else "is not a judge of this run"
    raise ConfigError(f"{given!r} {why}; its judges: {known}", field="--judge")


def export_labels(
    run_dir: str | Path,
    sheet: str | Path,
    *,
    n: int = DEFAULT_ITEMS,
    seed: int | None = None,
    judge: str | None = None,
    raw_cells: bool = False,
) -> tuple[LabelExport, list[str]]:
    """Write a blind labelling sheet of ``n`` items drawn from ``run_dir`` (stratified by scenario × spec,
    seeded) to ``sheet`` and record the export in the run directory. Returns the export and warnings.

    Cells a spreadsheet would run as formulas get a leading ``'`` unless ``raw_cells``; texts pass through
    :func:`sheet_text`."""
    if n < 1:
        raise ConfigError(f"expected 1 item or more, got {n}", field="--n")
    seed = DEFAULT_SEED if seed is None else seed
    rd = RunDir(run_dir)
    manifest = rd.read_manifest()
    check_output(sheet, [run_dir], field="--export")
    rd.lock("label export")
    try:
        judged = {j.judge_key for j in rd.judgments()}
        key = resolve_judge(manifest, judged, judge)
        candidates, gens = label_candidates(rd, manifest, key)
        if not candidates:
            raise RunDirError(
                f"{run_dir}: no answer is scored by judge {key[:12]}: judge the run first (or choose another --judge)"
            )
        bench = run_benchmark(manifest)
        if bench is None:
            raise RunDirError(
                f"{run_dir}: its data ({manifest.data.source}) is gone or has changed since the run: the sheet needs "
                "the specs' texts"
            )
        texts = {
            (s.key, spec_id(kind, i)): spec.text
            for s in bench.scenarios
            for kind in SPEC_KINDS
            for i, spec in enumerate(s.specs(kind), 1)
        }
        chosen, cells = draw_items(candidates, n, seed)
        export_id = _export_id(manifest.generation_key, seed, n, key, chosen)
        long = sum(len(gens[i.sample_id].response) > EXCEL_CELL_CHARS for i in chosen)
        _write_sheet(sheet, export_id, chosen, gens, texts, raw_cells)
        record = LabelExport(
            export=export_id,
            sheet=str(sheet),
            sheet_sha256=hashlib.sha256(Path(sheet).read_bytes()).hexdigest(),
            seed=seed,
            n_requested=n,
            judge_key=key,
            cells=cells,
            items={i.item: i.response_sha256 for i in chosen},
        )
        _append(rd.path / EXPORTS_FILE, [record])
    finally:
        rd.unlock()
    warnings = []
    if len(chosen) < n:
        warnings.append(
            f"the run has {len(chosen)} items to draw from, fewer than the {n} asked for: all are in the sheet"
        )
    if long:
        warnings.append(
            f"{long} answers are longer than {EXCEL_CELL_CHARS:,} characters, which Excel cuts off: "
            "read those in another program"
        )
    return record, warnings


def _write_sheet(
    path: str | Path,
    export_id: str,
    items: list[LabelItem],
    gens: Mapping[str, GenerationRecord],
    texts: Mapping[tuple[str, str], str],
    raw_cells: bool,
) -> None:
    cell = (lambda v: v) if raw_cells else neutralise_cell
    try:
        with Path(path).open("w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=SHEET_COLUMNS, quoting=csv.QUOTE_MINIMAL)
            w.writeheader()
            for i in items:
                g = gens[i.sample_id]
                row = {
                    "item": i.item,
                    "export": export_id,
                    "scenario": i.scenario,
                    "spec_id": i.spec,
                    "spec_kind": i.kind,
                    "spec_text": texts.get((i.scenario, i.spec), ""),
                    "prompt": g.prompt_sent,
                    "response": g.response,
                    "label": "",
                    "note": "",
                }
                w.writerow({k: cell(sheet_text(v)) for k, v in row.items()})
    except OSError as e:
        raise RunDirError(f"cannot write {path}: {e.strerror or e}") from None


# -- import -------------------------------------------------------------------------------------------------------------


def read_label_exports(run_dir: str | Path) -> list[LabelExport]:
    """The run's label exports, oldest first; a broken line is one error naming it."""
    return list(_read_jsonl(Path(run_dir) / EXPORTS_FILE, LabelExport, "label export", None))


def read_labels(run_dir: str | Path, problems: list[str] | None = None) -> list[HumanLabel]:
    """Every label in the run directory, in the order they were imported. A broken line is one error, or,
    given ``problems``, skipped and described there."""
    return list(_read_jsonl(Path(run_dir) / LABELS_FILE, HumanLabel, "label", problems))


def _read_jsonl(path: Path, model: type[BaseModel], what: str, problems: list[str] | None) -> Iterator:
    try:
        if not path.is_file():
            return
        for n, line in _lines(path):
            if line is not None and not line.strip():
                continue
            try:
                if line is None:
                    raise ValueError("too long")
                yield model.model_validate_json(line)
            except (ValidationError, ValueError):
                if problems is None:
                    raise RunDirError(f"{path}: line {n} is not a {what} record") from None
                problems.append(f"{path}: line {n} is not a {what} record: skipped")
    except OSError as e:
        raise RunDirError(f"cannot read {path}: {e.strerror or e}") from None


def import_labels(run_dir: str | Path, sheet: str | Path, labeler: str) -> tuple[list[HumanLabel], int, list[str]]:
    """The labels of a filled sheet, appended to the run's ``labels.jsonl`` under its lock. Returns them,
    the number of rows left without a label (skipped), and warnings.

    Every row is checked before anything is written; a bad one is one error naming the file, row and
    column: a label other than YES, NO or NA (any case), an item or export this run did not export, an item
    given twice. The sheet may come back from a spreadsheet program (see :func:`specalign.benchmark.read_sheet`).
    """
    labeler = check_labeler(labeler)
    rd = RunDir(run_dir)
    rd.read_manifest()
    rd.check_unlocked()
    exports = read_label_exports(run_dir)
    if not exports:
        raise RunDirError(
            f"{run_dir} has no label export: export a sheet first (specalign review {run_dir} --label --export SHEET.csv)"
        )
    by_id = {e.export: e for e in exports}  # the latest record of an id wins (the same draw)
    latest_with: dict[str, LabelExport] = {}
    for e in exports:
        for item in e.items:
            latest_with[item] = e
    rows = read_sheet(sheet, ("item", "spec_id", "label"))
    where = str(sheet)
    labels: list[HumanLabel] = []
    seen: dict[str, int] = {}
    blank = 0
    for n, row in rows:
        item = (row.get("item") or "").strip()
        given = (row.get("label") or "").strip()
        export_given = (row.get("export") or "").strip()
        if export_given:
            export = by_id.get(export_given)
            if export is None:
                raise DataError(
                    f"export {shown(export_given)[:40]!r} is not one of {run_dir}'s: a sheet of another run directory?",
                    path=where,
                    field=f"row {n}, column export",
                )
        else:
            export = latest_with.get(item)
        if export is None or item not in export.items:
            raise DataError(
                f"item {shown(item)[:80]!r} is not in {'that export' if export_given else 'any sheet exported from ' + str(run_dir)}",
                path=where,
                field=f"row {n}, column item",
            )
        if item in seen:
            raise DataError(
                f"item {shown(item)[:80]!r} is also in row {seen[item]}", path=where, field=f"row {n}, column item"
            )
        seen[item] = n
        if not given:
            blank += 1
            continue
        label = given.upper()
        if label not in LABEL_VALUES:
            raise DataError(
                f"expected YES, NO or NA, got {shown(given)[:40]!r}", path=where, field=f"row {n}, column label"
            )
        sample_id, _, spec = item.rpartition(":")
        labels.append(
            HumanLabel(
                item=item,
                sample_id=sample_id,
                spec=spec,
                label=label,  # type: ignore[arg-type]
                labeler=labeler,
                note=repair_text((row.get("note") or "").strip())[0],
                response_sha256=export.items[item],
                export=export.export,
            )
        )
    warnings = []
    if labels:
        current = {g.sample_id: response_sha256(g.response) for g in rd.generations() if g.status == "ok"}
        stale = sum(current.get(x.sample_id) != x.response_sha256 for x in labels)
        if stale:
            warnings.append(
                f"{stale} of these labels are on answers that have changed since the export: kept, but they do not "
                "count (export a fresh sheet)"
            )
        rd.lock("label import")
        try:
            _append(rd.path / LABELS_FILE, labels)
        finally:
            rd.unlock()
    return labels, blank, warnings


def _append(path: Path, records: list[HumanLabel] | list[LabelExport]) -> None:
    writer = RecordWriter(path)
    try:
        for r in records:
            writer.append(r)
    finally:
        writer.close()


# -- what agreement reads -----------------------------------------------------------------------------------------------


def current_labels(
    labels: Iterable[HumanLabel], responses: Mapping[str, str], specs: Mapping[str, Iterable[str]]
) -> tuple[dict[str, dict[tuple[str, str], str]], dict[str, int]]:
    """Each labeler's labels that count: on a sample of ``responses`` (sample id → response sha256, hex), on one
    of its scenario's specs (``specs``: sample id → spec ids), on the response as it is now; the latest per
    item. Returns labeler → (sample id, spec) → label, and labeler → labels left out because the response
    changed since."""
    out: dict[str, dict[tuple[str, str], str]] = {}
    changed: dict[str, set[tuple[str, str]]] = {}
    for x in labels:
        digest = responses.get(x.sample_id)
        if digest is None or x.spec not in specs.get(x.sample_id, ()):
            continue
        if digest != x.response_sha256:
            changed.setdefault(x.labeler, set()).add((x.sample_id, x.spec))
            continue
        out.setdefault(x.labeler, {})[(x.sample_id, x.spec)] = x.label
    stale = {who: len(items - out.get(who, {}).keys()) for who, items in changed.items()}
    return out, {who: n for who, n in stale.items() if n}
