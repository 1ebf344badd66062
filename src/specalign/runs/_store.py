"""A run directory: manifest, append-only JSONL records, scores. Safe against kills and torn lines."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ..errors import RunDirError
from ._records import GenerationRecord, JudgmentRecord, Manifest

R = TypeVar("R", bound=BaseModel)

MANIFEST = "manifest.json"
SELECTION = "selection.json"
GENERATIONS = "generations.jsonl"
JUDGMENTS = "judgments.jsonl"
SCORES = "scores.json"


class RunDir:
    """Reads and writes one run directory. Records are appended and flushed one line at a time."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    # -- creation and checks --------------------------------------------------------------
    def ensure_writable(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise RunDirError(f"cannot write run directory {self.path}: {e.strerror or e}") from None

    def exists(self) -> bool:
        return (self.path / MANIFEST).is_file()

    def read_manifest(self) -> Manifest:
        p = self.path / MANIFEST
        if not p.is_file():
            raise RunDirError(f"{self.path} is not a run directory (no {MANIFEST})")
        try:
            return Manifest.model_validate_json(p.read_text(encoding="utf-8"))
        except (ValidationError, ValueError) as e:
            raise RunDirError(f"{p}: unreadable manifest ({str(e).splitlines()[0]})") from None

    def write_manifest(self, manifest: Manifest) -> None:
        self.write_json_atomic(MANIFEST, manifest.model_dump(mode="json"))

    def write_selection(self, sample_ids: list[str]) -> None:
        self.write_json_atomic(SELECTION, sample_ids)

    def read_selection(self) -> list[str] | None:
        p = self.path / SELECTION
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None

    def write_json_atomic(self, name: str, data: Any) -> None:
        target = self.path / name
        tmp = target.with_suffix(target.suffix + ".tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2, ensure_ascii=False)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise RunDirError(f"cannot write {target}: {e.strerror or e}") from None

    # -- records --------------------------------------------------------------------------
    def generations(self) -> Iterator[GenerationRecord]:
        return self._read(GENERATIONS, GenerationRecord)

    def judgments(self) -> Iterator[JudgmentRecord]:
        return self._read(JUDGMENTS, JudgmentRecord)

    def _read(self, name: str, model: type[R]) -> Iterator[R]:
        p = self.path / name
        if not p.is_file():
            return
        with open(p, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.endswith("\n"):
                    return  # a torn last line: the sample that was in flight when the run died
                try:
                    yield model.model_validate_json(line)
                except (ValidationError, ValueError):
                    continue

    def open_writer(self, name: str) -> RecordWriter:
        return RecordWriter(self.path / name)


class RecordWriter:
    """Appends one JSON line per record and flushes it, after cutting off a torn last line."""

    def __init__(self, path: Path):
        self.path = path
        try:
            _drop_torn_tail(path)
            self._f = open(path, "a", encoding="utf-8")
        except OSError as e:
            raise RunDirError(f"cannot write {path}: {e.strerror or e}") from None

    def append(self, record: BaseModel) -> None:
        line = record.model_dump_json() + "\n"
        try:
            self._f.write(line)
            self._f.flush()
        except OSError as e:
            raise RunDirError(f"cannot write {self.path}: {e.strerror or e}") from None

    def close(self) -> None:
        try:
            self._f.close()
        except OSError:
            pass


def _drop_torn_tail(path: Path) -> None:
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        data = f.seek(0, os.SEEK_END)
        pos = data
        chunk = 65536
        while pos > 0:
            step = min(chunk, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step)
            nl = buf.rfind(b"\n")
            if nl != -1:
                f.truncate(pos + nl + 1)
                return
        f.truncate(0)
