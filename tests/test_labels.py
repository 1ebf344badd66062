"""People's labels of a run's answers (`specalign review RUN_DIR --label`): the stratified blind export, hostile
answers in the sheet, the import's checks, and people as raters in `specalign agreement`, end to end over a
scripted run (the bundled child and code scenarios, three prompts each: 6 answers × 21 specs = 126 items)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from run_world import evaluate
from scripted_server import ScriptedServer
from specalign.benchmark import read_sheet
from specalign.errors import ConfigError, DataError, RunDirError
from specalign.runs import (
    RunDir,
    draw_items,
    export_labels,
    import_labels,
    judge_agreement,
    read_label_exports,
    read_labels,
)
from specalign.runs._labels import LabelItem, allocate, response_sha256, sheet_text
from specbench_world import generation_reply, is_judge, world

#: what the scripted model puts before its answers, one per prompt: spreadsheet formulas, CSV-breaking quotes,
#: commas and line breaks, control and format characters, a fake row
HOSTILE = [
    '=HYPERLINK("http://evil.example","click")',
    '+1,2\n"quoted", cell\r\nnext line\rlone CR',
    "@SUM(A1)\ttab\x00nul\x1b[2Jclear\u202eevil\u2066 end",
    '-2+3 "a""b" ,,, \n\n\n',
    "'already quoted",
    'x",YES,"injected\nchild/child-s01:S1,fake,YES,,',
]
THOUGHT = "SECRET-THOUGHT-TEXT"


def hostile_world() -> Any:
    order: dict[str, int] = {}

    def responder(body: dict[str, Any]) -> str:
        if is_judge(body):
            return world(body)
        question = body["messages"][-1]["content"]
        n = order.setdefault(question, len(order))
        return f"<think>{THOUGHT}</think>{HOSTILE[n % len(HOSTILE)]} {generation_reply(body)}"

    return responder


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("labels") / "run"
    with ScriptedServer(hostile_world()) as server:
        evaluate(server, out)
    return out


@pytest.fixture
def run(built: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(built, target)
    return target


def sheet_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def judge_verdict(row: dict[str, str]) -> str:
    """What the world's judge says of an item: B1 is NA, every other spec YES (no answer is UNSAFE)."""
    return "NA" if row["spec_id"] == "B1" else "YES"


def fill(sheet: Path, target: Path, change: dict[str, str] | None = None, label=judge_verdict) -> Path:
    """The sheet filled as the judge would, except the items in ``change`` (item → label)."""
    rows = sheet_rows(sheet)
    for r in rows:
        r["label"] = (change or {}).get(r["item"], label(r))
    return write_rows(target, rows)


def one_line(r, *needles: str) -> str:
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "\n" not in err and err.startswith("error: "), err
    for n in needles:
        assert n in err, (n, err)
    return err


# -- the draw -----------------------------------------------------------------------------------------------------------


def test_equal_allocation_by_hand():
    rng = np.random.default_rng(0)
    # 30 over cells of 10, 3 and 50: 10 each, the small cell gives its 7 to the others, the first cell is full
    assert allocate([10, 3, 50], 30, rng) == [10, 3, 17]
    assert allocate([5, 5, 5], 9, rng) == [3, 3, 3]
    assert allocate([5, 0, 5], 100, rng) == [5, 0, 5]  # more than there is: everything
    # 4 over 3 cells: one each, and the one left to a cell drawn at random
    quota = allocate([5, 5, 5], 4, rng)
    assert sorted(quota) == [1, 1, 2]


def candidates(cells: dict[tuple[str, str], int]) -> list[LabelItem]:
    return [
        LabelItem(
            item=f"{sc}/p{i:02d}:{spec}",
            sample_id=f"{sc}/p{i:02d}",
            scenario=sc,
            spec=spec,
            kind="safety" if spec.startswith("S") else "behavioral",
            response_sha256="0" * 64,
        )
        for (sc, spec), size in cells.items()
        for i in range(size)
    ]


def test_stratified_draw_counts_and_seeding():
    pool = candidates({("a", "S1"): 40, ("a", "B1"): 40, ("b", "S1"): 4, ("b", "B2"): 40})
    chosen, cells = draw_items(pool, 40, seed=7)
    # 10 a cell; b/S1 has 4 and gives 6 to the three others: 12 + 12 + 4 + 12 (cells listed S before B)
    assert cells == {"a/S1": 12, "a/B1": 12, "b/S1": 4, "b/B2": 12}
    assert len(chosen) == 40 and len({c.item for c in chosen}) == 40
    for key, n in cells.items():
        assert sum(f"{c.scenario}/{c.spec}" == key for c in chosen) == n
    again, _ = draw_items(list(reversed(pool)), 40, seed=7)
    assert [c.item for c in again] == [c.item for c in chosen]  # the seed decides, not the order given
    other, _ = draw_items(pool, 40, seed=8)
    assert {c.item for c in other} != {c.item for c in chosen}


# -- export: blind, formula-safe, hostile answers intact -----------------------------------------------------------------


def test_export_is_stratified_blind_and_recorded(run, tmp_path, cli):
    sheet = tmp_path / "sheet.csv"
    r = cli("review", str(run), "--label", "--export", str(sheet), "--n", "84")
    assert r.returncode == 0, r.stderr
    assert "84 items from 42 scenario × spec cells" in r.stderr and "--label --import" in r.stderr
    rows = sheet_rows(sheet)
    # 2 scenarios × 21 specs = 42 cells of 3 answers each: 84 items is 2 a cell
    cells: dict[tuple[str, str], int] = {}
    for row in rows:
        cells[(row["scenario"], row["spec_id"])] = cells.get((row["scenario"], row["spec_id"]), 0) + 1
    assert len(cells) == 42 and set(cells.values()) == {2}
    assert list(rows[0]) == [
        "item",
        "export",
        "scenario",
        "spec_id",
        "spec_kind",
        "spec_text",
        "prompt",
        "response",
    ] + [
        "label",
        "note",
    ]
    # blind: no verdict, no reason, no thought, no judge
    text = sheet.read_text(encoding="utf-8")
    assert all(row["label"] == "" and row["note"] == "" for row in rows)
    assert "checked S" not in text and "reason for" not in text and THOUGHT not in text
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["judge"]["key"] not in text
    # recorded in the run directory, with the response each item showed
    [export] = read_label_exports(run)
    assert export.seed == 20240917 and export.n_requested == 84 and len(export.items) == 84
    assert export.export == rows[0]["export"] and export.sheet_sha256 and export.cells["child/S1"] == 2
    gens = {g.sample_id: g for g in RunDir(run).generations()}
    for row in rows:
        sid, _, spec = row["item"].rpartition(":")
        assert spec == row["spec_id"] and export.items[row["item"]] == response_sha256(gens[sid].response)
    # the same draw again: the same sheet, byte for byte
    again = tmp_path / "again.csv"
    assert cli("review", str(run), "--label", "--export", str(again), "--n", "84").returncode == 0
    assert again.read_bytes() == sheet.read_bytes()


def test_hostile_answers_round_trip_and_formulas_are_neutralised(run, tmp_path):
    sheet = tmp_path / "sheet.csv"
    export_labels(run, sheet, n=500)  # every item
    gens = {g.sample_id: g for g in RunDir(run).generations()}
    rows = read_sheet(sheet, ("item", "spec_id", "label"))
    assert len(rows) == 126
    for _, row in rows:
        assert set(row) == {"item", "export", "scenario", "spec_id", "spec_kind", "spec_text", "prompt", "response"} | {
            "label",
            "note",
        }
        g = gens[row["item"].rpartition(":")[0]]
        assert row["response"] == sheet_text(g.response)  # every quote, comma and line break kept
        assert row["label"] == "" and row["item"].endswith(":" + row["spec_id"])
    raw = sheet.read_text(encoding="utf-8")
    assert "\x00" not in raw and "\x1b" not in raw and "\u202e" not in raw  # shown as codes, never as such
    assert "\\x00nul\\x1b[2Jclear\\u202eevil\\u2066" in raw
    cells = [cell for row in csv.reader(raw.splitlines(keepends=True)) for cell in row]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@"))]  # a spreadsheet runs none of them
    assert any(c.startswith("'=HYPERLINK") for c in cells) and any(c.startswith("''already") for c in cells)
    # --raw-cells writes them as they are
    export_labels(run, tmp_path / "raw.csv", n=500, raw_cells=True)
    raw_cells = [c for row in csv.reader((tmp_path / "raw.csv").open(newline="")) for c in row]
    assert any(c.startswith("=HYPERLINK") for c in raw_cells)
    # the fake row inside an answer stayed inside its cell: every item once, no "fake" item
    assert sorted(r["item"] for _, r in rows) == sorted({r["item"] for _, r in rows})
    assert not any(r["item"] == "child/child-s01:S1" and r["spec_id"] == "fake" for _, r in rows)


def test_sheet_text_shows_what_cannot_be_written():
    assert sheet_text("a\r\nb") == "a\nb"
    assert sheet_text("lone \ud800 surrogate") == "lone \ufffd surrogate"
    assert sheet_text("nul\x00 esc\x1b bidi\u202e") == "nul\\x00 esc\\x1b bidi\\u202e"
    assert sheet_text("tab\tand\nline") == "tab\tand\nline"


def test_export_refuses_what_it_cannot_do(run, tmp_path):
    with pytest.raises(ConfigError, match="--export"):
        export_labels(run, run / "manifest.json")  # inside the run directory
    with pytest.raises(ConfigError, match="not a judge of this run"):
        export_labels(run, tmp_path / "s.csv", judge="nobody")
    manifest = json.loads((run / "manifest.json").read_text())
    for name in (manifest["judge"]["key"][:8], manifest["judge"]["model"]["key"]):  # a key's start, a model key
        record, _ = export_labels(run, tmp_path / "by-name.csv", n=5, judge=name)
        assert record.judge_key == manifest["judge"]["key"]
    (tmp_path / "by-name.csv").unlink()
    holder = RunDir(run)
    holder.lock()
    try:
        with pytest.raises(RunDirError, match="in use"):
            export_labels(run, tmp_path / "s.csv")
    finally:
        holder.unlock()
    assert not (tmp_path / "s.csv").exists()


# -- import ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def exported(run, tmp_path) -> Path:
    sheet = tmp_path / "sheet.csv"
    export_labels(run, sheet, n=84)
    return sheet


@pytest.mark.parametrize(
    ("edit", "where", "what"),
    [
        (lambda rows: rows[2].update(label="maybe"), "row 4, column label", "expected YES, NO or NA"),
        (lambda rows: rows[0].update(item="child/child-u99:S1"), "row 2, column item", "not in that export"),
        (lambda rows: rows[5].update(export="0123456789ab"), "row 7, column export", "another run directory"),
        (lambda rows: rows[3].update(item=rows[1]["item"], export=rows[1]["export"]), "row 5, column item", "row 3"),
    ],
)
def test_bad_cells_are_one_line_naming_file_row_and_column(run, exported, tmp_path, cli, edit, where, what):
    rows = sheet_rows(exported)
    for r in rows:
        r["label"] = "yes"
    edit(rows)
    bad = write_rows(tmp_path / "bad.csv", rows)
    r = cli("review", str(run), "--label", "--import", str(bad), "--labeler", "alice")
    one_line(r, str(bad), where, what)
    assert not (run / "labels.jsonl").exists()  # nothing written


def test_wrong_files_are_refused(run, exported, tmp_path, cli):
    # a scenario review sheet: no spec_id column
    review = tmp_path / "review.csv"
    review.write_text("item,kind,label,text,original,decision,edited_text,note\nspec:S1,spec,safety,x,,accept,,\n")
    one_line(cli("review", str(run), "--label", "--import", str(review)), str(review), "spec_id")
    # a sheet of another run directory, with no export of its own here
    other = tmp_path / "other"
    shutil.copytree(run, other)
    (other / "labels-exports.jsonl").unlink()
    one_line(cli("review", str(other), "--label", "--import", str(exported)), "no label export")
    # not a CSV at all
    junk = tmp_path / "junk.csv"
    junk.write_bytes(b"\x00\x01\x02 binary")
    one_line(cli("review", str(run), "--label", "--import", str(junk)), str(junk))


def test_import_takes_labels_any_case_and_skips_blank_rows(run, exported, tmp_path, cli):
    rows = sheet_rows(exported)
    for n, r in enumerate(rows):
        r["label"] = ["yes", " No ", "na", ""][n % 4]
        r["note"] = '=cmd|" /C calc"!A0, "quoted"\nline' if n == 0 else ""
    filled = write_rows(tmp_path / "filled.csv", rows)
    r = cli("review", str(run), "--label", "--import", str(filled), "--labeler", "alice")
    assert r.returncode == 0, r.stderr
    assert "21 rows without a label: skipped" in r.stderr and "imported 63 labels by alice" in r.stderr
    labels = read_labels(run)
    assert len(labels) == 63 and {x.label for x in labels} == {"YES", "NO", "NA"}
    assert labels[0].note == '=cmd|" /C calc"!A0, "quoted"\nline' and labels[0].labeler == "alice"
    assert all(x.response_sha256 and x.export == rows[0]["export"] for x in labels)


def test_a_sheet_saved_by_a_spreadsheet_program_imports(run, exported, tmp_path):
    """UTF-16 with tabs (Excel's "Unicode text"), line breaks in cells as CRLF, labels in lower case."""
    rows = sheet_rows(exported)
    saved = tmp_path / "saved.txt"
    with saved.open("w", encoding="utf-16", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\r\n")
        w.writeheader()
        for r in rows:
            w.writerow({**{k: v.replace("\n", "\r\n") for k, v in r.items()}, "label": judge_verdict(r).lower()})
    labels, blank, _ = import_labels(run, saved, "dana")
    assert len(labels) == 84 and blank == 0
    rep = judge_agreement([str(run)], bootstrap=0)
    assert rep.overall.pairs[0].percent_agreement == 1.0


def test_default_labeler_and_the_lock(run, exported, tmp_path, cli, monkeypatch):
    filled = fill(exported, tmp_path / "filled.csv")
    monkeypatch.setenv("SPECALIGN_REVIEWER", "carol")
    holder = RunDir(run)
    holder.lock()
    try:
        one_line(cli("review", str(run), "--label", "--import", str(filled)), "in use")
    finally:
        holder.unlock()
    assert not (run / "labels.jsonl").exists()
    assert cli("review", str(run), "--label", "--import", str(filled)).returncode == 0
    assert {x.labeler for x in read_labels(run)} == {"carol"}
    with pytest.raises(ConfigError, match="not a usable name"):
        import_labels(run, filled, "eve\x1b[2J")


def test_review_says_what_to_do_with_a_run_or_a_scenario(run, tmp_path, cli):
    one_line(cli("review", str(run)), "is a run directory", "add --label")
    one_line(cli("review", str(run), "--n", "5"), "--n goes with --label")
    folder = tmp_path / "garden"
    folder.mkdir()
    (folder / "scenario.yaml").write_text(
        "key: garden\nname: Garden\ndescription: A garden helper.\nsafety_specs: [Never x.]\nbehavioral_specs: [Be y.]\n"
    )
    one_line(cli("review", str(folder), "--label", "--export", str(tmp_path / "s.csv")), "is a scenario folder")
    one_line(cli("review", str(tmp_path), "--label"), "not a run directory")
    one_line(cli("review", str(run), "--label", "--only", "specs"), "--only")
    status = cli("review", str(run), "--label")
    assert status.returncode == 0 and "0 label sheets exported" in status.stdout


# -- agreement with people ------------------------------------------------------------------------------------------------


def test_one_judge_and_two_people_end_to_end(run, exported, tmp_path, cli):
    """alice labels as the judge does; bob too, except two YES he calls NO. Of the 84 items, 4 are B1 (NA).
    alice–bob: YES→YES 78, YES→NO 2, NA→NA 4: p_o = 82/84, p_e = (80·78 + 4·4)/84², κ = 632/800 = 0.79."""
    rows = sheet_rows(exported)
    yes = [r["item"] for r in rows if judge_verdict(r) == "YES"]
    alice = fill(exported, tmp_path / "alice.csv")
    bob = fill(exported, tmp_path / "bob.csv", change={yes[0]: "NO", yes[10]: "no"})
    for who, sheet in (("alice", alice), ("bob", bob)):
        r = cli("review", str(run), "--label", "--import", str(sheet), "--labeler", who)
        assert r.returncode == 0, r.stderr
    done = cli("agreement", str(run), "--json")
    assert done.returncode == 0, done.stderr
    rep = json.loads(done.stdout)
    judge = rep["judges"][0]["name"]
    assert rep["humans"] == ["human:alice", "human:bob"]
    assert [(j["name"], j["kind"], j["labels"]) for j in rep["judges"][1:]] == [
        ("human:alice", "human", 84),
        ("human:bob", "human", 84),
    ]
    assert rep["judges"][0]["kind"] == "judge" and rep["runs"][0]["humans"] == ["human:alice", "human:bob"]
    pairs = {tuple(p["judges"]): p for p in rep["overall"]["pairs"]}
    ja, jb, ab = pairs[(judge, "human:alice")], pairs[(judge, "human:bob")], pairs[("human:alice", "human:bob")]
    assert ja["n"] == 84 and ja["kappa"] == pytest.approx(1.0) and ja["kappa_ci"] == [1.0, 1.0]
    assert ja["percent_agreement_ci"] == [1.0, 1.0]
    for p in (jb, ab):
        assert p["kappa"] == pytest.approx(0.79) and p["percent_agreement"] == pytest.approx(82 / 84)
        assert p["confusion"]["YES"] == {"YES": 78, "NO": 2, "NA": 0} and p["confusion"]["NA"]["NA"] == 4
        low, high = p["kappa_ci"]
        assert low < 0.79 <= high <= 1.0
    assert rep["judge_vs_human"]["n_pairs"] == 2
    assert rep["judge_vs_human"]["kappa"] == pytest.approx((1 + 0.79) / 2)
    assert rep["human_vs_human"]["n_pairs"] == 1 and rep["human_vs_human"]["kappa"] == pytest.approx(0.79)
    assert rep["bootstrap"]["resamples"] == 2000 and "cluster" in rep["bootstrap"]["unit"]
    # per spec: only the 2 drawn answers of a cell have a second rater
    s1 = rep["specs"]["child"]["S1"]
    assert s1["n_items"] == 2 and {tuple(p["judges"]): p["n"] for p in s1["pairs"]}[(judge, "human:alice")] == 2
    # the tables name people H1, H2
    table = cli("agreement", str(run))
    assert table.returncode == 0, table.stderr
    assert "H1" in table.stdout and "human:bob" in table.stdout and "judge vs person" in table.stdout
    assert "0.790 [" in table.stdout


def test_a_judge_and_one_person_are_enough_and_changed_answers_drop_labels(run, exported, tmp_path):
    rows = sheet_rows(exported)
    change = {rows[0]["item"]: "NO"}
    import_labels(run, fill(exported, tmp_path / "alice.csv", change=change), "alice")
    rep = judge_agreement([str(run)], bootstrap=0)
    [pair] = rep.overall.pairs
    assert pair.n == 84 and pair.confusion["YES"]["NO"] == 1
    assert pair.kappa_ci is None and pair.percent_agreement_ci is None  # --bootstrap 0
    # the answer of the first item is generated again, differently: its labels no longer count
    sid = rows[0]["item"].rpartition(":")[0]
    gens = {g.sample_id: g for g in RunDir(run).generations()}
    changed = gens[sid].model_copy(update={"response": "a new answer"})
    with (run / "generations.jsonl").open("a", encoding="utf-8") as f:
        f.write(changed.model_dump_json() + "\n")
    on_sample = sum(r["item"].startswith(sid + ":") for r in rows)
    later = judge_agreement([str(run)], bootstrap=0)
    [pair] = later.overall.pairs
    assert pair.n == 84 - on_sample and pair.confusion["YES"]["NO"] == 0
    alice = next(j for j in later.judges if j.kind == "human")
    assert alice.stale_labels == on_sample and alice.labels == 84 - on_sample
    assert any("human:alice" in w and "changed" in w for w in later.warnings)
    # a fresh import on the old sheet warns that those labels do not count
    _, _, warnings = import_labels(run, fill(exported, tmp_path / "again.csv"), "alice")
    assert any(f"{on_sample} of these labels" in w for w in warnings)


def test_latest_label_wins_and_broken_label_lines_are_skipped(run, exported, tmp_path):
    rows = sheet_rows(exported)
    first = rows[0]["item"]
    import_labels(run, fill(exported, tmp_path / "a.csv", change={first: "NO"}), "alice")
    import_labels(run, fill(exported, tmp_path / "b.csv"), "alice")  # changes her mind
    with (run / "labels.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"not": "a label"}\n')
    rep = judge_agreement([str(run)], bootstrap=0)
    [pair] = rep.overall.pairs
    assert pair.confusion["YES"]["NO"] == 0 and pair.percent_agreement == 1.0
    assert any("labels.jsonl: line 169" in w for w in rep.warnings)
    with pytest.raises(RunDirError, match="line 169"):
        read_labels(run)
    with pytest.raises(DataError):
        import_labels(run, tmp_path / "missing.csv", "alice")


def test_labels_are_typed_records(run, exported, tmp_path):
    labels, blank, _ = import_labels(run, fill(exported, tmp_path / "a.csv"), "alice")
    assert blank == 0
    line = json.loads((run / "labels.jsonl").read_text().splitlines()[0])
    assert set(line) == {
        "item",
        "sample_id",
        "spec",
        "label",
        "labeler",
        "labeled_at",
        "note",
        "response_sha256",
        "export",
    }
    assert line["item"] == f"{line['sample_id']}:{line['spec']}"
    assert labels[0].labeled_at.endswith("+00:00") and labels[0].labeler == "alice"
