"""CSV sheets that people open in spreadsheet programs: formula-safe cells out, any common encoding in.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a formula to Excel and
LibreOffice (OWASP "CSV injection"): a model's answer ``=HYPERLINK(...)`` would become a live link.
Such cells are written with a leading ``'``, which spreadsheets show as text. A cell that already
starts with ``'`` gets one more, so :func:`restore_cell` undoes exactly what :func:`neutralise_cell` did.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from ..errors import DataError
from ._files import read_bytes

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
QUOTE = "'"
MAX_SHEET_BYTES = 64 * 1024 * 1024
DELIMITERS = (",", ";", "\t")


def neutralise_cell(value: Any) -> Any:
    """``value`` with a ``'`` in front if it is text a spreadsheet would run as a formula (or starts with ``'``)."""
    if isinstance(value, str) and value.startswith((*FORMULA_START, QUOTE)):
        return QUOTE + value
    return value


def restore_cell(value: str) -> str:
    """The inverse of :func:`neutralise_cell`; a ``'`` before anything else (``'Tis``) is kept as typed."""
    if value.startswith(QUOTE) and value[1:].startswith((*FORMULA_START, QUOTE)):
        return value[1:]
    return value


def decode_sheet(raw: bytes, path: str | Path) -> str:
    """Text of a sheet as spreadsheet programs save it: UTF-8 (with or without BOM), UTF-16 with BOM
    (Excel's "Unicode text"), else Windows-1252 (Excel's legacy "CSV"); else one clear error."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        encodings = ["utf-16"]
    else:
        encodings = ["utf-8-sig", "cp1252"]
    for enc in encodings:
        try:
            text = raw.decode(enc)
        except UnicodeDecodeError:
            continue
        if "\x00" in text:
            break
        return text
    raise DataError("cannot read the sheet's encoding (or it holds NUL bytes): save it as 'CSV UTF-8'", path=str(path))


def read_sheet(path: str | Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV sheet as (row number, {column: restored cell}), whichever of ``,`` ``;`` or tab
    separates it (or an Excel ``sep=`` line names); the header must name every column in ``required``."""
    text = decode_sheet(read_bytes(Path(path), MAX_SHEET_BYTES), path)
    first, _, rest = text.partition("\n")
    if first.startswith("sep=") and len(first.rstrip("\r")) == 5:  # Excel's hint line: "sep=;"
        text = rest
    delimiter = _delimiter(text, required, path)
    csv.field_size_limit(max(csv.field_size_limit(), MAX_SHEET_BYTES))  # one long answer is one long cell
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[tuple[int, dict[str, str]]] = []
    n = 0  # rows as a spreadsheet numbers them: the header is row 1; an error is in row n + 1
    try:
        header = next(reader)
        n = 1
        for n, record in enumerate(reader, 2):
            if not any(cell.strip() for cell in record):
                continue
            if any(cell.strip() for cell in record[len(header) :]):  # empty trailing cells are harmless
                raise DataError(
                    f"{len(record)} cells but the header has {len(header)}", path=str(path), field=f"row {n}"
                )
            rows.append((n, {col: restore_cell(v) for col, v in zip(header, record, strict=False)}))
    except csv.Error as e:
        raise DataError(f"not a readable CSV sheet: {e}", path=str(path), field=f"row {n + 1}") from None
    return rows


def _delimiter(text: str, required: tuple[str, ...], path: str | Path) -> str:
    first = text.split("\n", 1)[0].rstrip("\r")
    for d in DELIMITERS:
        try:
            header = next(csv.reader([first], delimiter=d))
        except (csv.Error, StopIteration):
            continue
        if all(col in header for col in required):
            return d
    raise DataError(
        f"no header row with the columns {', '.join(required)} (separated by ',', ';' or tabs): "
        "is this a sheet written by specalign?",
        path=str(path),
    )
