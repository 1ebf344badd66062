"""A run directory: manifest, append-only JSONL records, scores. Safe against kills, torn lines and a second
process: a run holds an OS lock on ``DIR/.lock`` for as long as it writes."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from .._unicode import repair_json
from ..errors import ConfigError, RunDirError
from ._records import FORMAT_VERSION, GenerationRecord, JudgmentRecord, Manifest, now, record_problem

try:
    import fcntl
except ImportError:  # pragma: no cover  (Windows: no flock; runs there are not guarded against a second process)
    fcntl = None  # type: ignore[assignment]

R = TypeVar("R", bound=BaseModel)

MANIFEST = "manifest.json"
SELECTION = "selection.json"
GENERATIONS = "generations.jsonl"
JUDGMENTS = "judgments.jsonl"
SCORES = "scores.json"
LOCK = ".lock"
#: taken for each record written by one of several processes sharing a directory (gateway workers)
APPEND_LOCK = ".append.lock"
#: a record line longer than this is not read into memory: it is reported as broken and redone
MAX_RECORD_BYTES = 64 * 1024 * 1024
#: broken records named one by one per file; the rest are counted
MAX_WARNINGS_PER_FILE = 20

log = logging.getLogger("specalign.runs")
_SELECTION = TypeAdapter(list[str])


class RunDir:
    """Reads and writes one run directory. Records are appended and flushed one line at a time.

    Once the manifest is read (or set with :meth:`use_manifest`), records are checked against it: one
    that does not parse, or names a scenario the manifest lacks, or is scored without a verdict for each
    of its scenario's specs, is skipped with a warning (file and line) and counts as missing, so a run
    redoes it. ``problems`` holds the warnings of the latest read of each file.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.manifest: Manifest | None = None
        self.problems: dict[str, list[str]] = {}
        self._warned: set[str] = set()
        self._lock_fd: int | None = None

    # -- creation and checks --------------------------------------------------------------
    def ensure_writable(self) -> None:
        """Create the directory and prove that a file can be written in it."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".write-test-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except (OSError, ValueError) as e:
            raise RunDirError(f"cannot write run directory {self.path}: {_why(e)}") from None

    def exists(self) -> bool:
        return (self.path / MANIFEST).is_file()

    def check_new_or_run(self) -> None:
        """Refuse a path for a new run that is a file, or a folder holding anything but a run (no manifest.json):
        writing records there would mix them with what is there."""
        try:
            if not self.path.exists():
                _check_parents(self.path)
                return
            if not self.path.is_dir():
                raise RunDirError(f"{self.path} is not a directory: give a new or empty folder for the run")
            if self.exists():
                return
            others = sorted(n for n in os.listdir(self.path) if not _housekeeping(n))
        except (OSError, ValueError) as e:
            raise RunDirError(f"cannot read run directory {self.path}: {_why(e)}") from None
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise RunDirError(
                f"{self.path} is not empty ({shown}) and is not a run directory (no {MANIFEST}): "
                "give a new or empty folder for the run"
            )

    # -- the lock -------------------------------------------------------------------------
    def lock(self, purpose: str = "run") -> None:
        """Take the directory's exclusive lock or refuse, naming its holder. The kernel releases it when
        this process ends, however it ends: a killed run never blocks the next one."""
        if self._lock_fd is not None or fcntl is None:
            return
        path = self.path / LOCK
        fd = _open_lock(path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            error = self._in_use(fd)
            os.close(fd)
            raise error from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": now(), "purpose": purpose}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError:
            pass  # a full disk: the lock holds all the same, without its note
        self._lock_fd = fd

    def check_unlocked(self) -> None:
        """Refuse now, naming the holder, when another process holds the lock (a probe: nothing is kept)."""
        if fcntl is None:
            return
        try:
            if not (self.path / LOCK).exists():
                return  # nobody holds it
        except OSError:
            return  # unreadable: taking the lock reports it
        fd = _open_lock(self.path / LOCK, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise self._in_use(fd) from None
        finally:
            os.close(fd)

    def _in_use(self, fd: int) -> RunDirError:
        return RunDirError(
            f"{self.path} is in use by another specalign process ({_holder(fd)}): wait until it "
            "ends, or use another directory"
        )

    def unlock(self) -> None:
        """Release the lock (the file stays: removing it would let two processes lock two different files)."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            os.close(fd)

    @property
    def lock_fd(self) -> int | None:
        """The descriptor of the lock held here; a child process that inherits it holds the lock as well."""
        return self._lock_fd

    # -- manifest and selection -----------------------------------------------------------
    def read_manifest(self) -> Manifest:
        """The manifest, checked: a newer format, a missing or mistyped field is one line naming both."""
        p = self.path / MANIFEST
        try:
            if not p.is_file():
                raise RunDirError(f"{self.path} is not a run directory (no {MANIFEST})")
            raw = json.loads(_read_bounded(p))
        except (OSError, ValueError) as e:
            raise RunDirError(f"{p}: unreadable manifest ({_why(e)})") from None
        if not isinstance(raw, dict):
            raise RunDirError(f"{p}: not a JSON object")
        version = raw.get("format_version", FORMAT_VERSION)
        if type(version) is not int or not 1 <= version <= FORMAT_VERSION:
            raise RunDirError(
                f"{p}: format_version {version!r} is not one this specalign reads (it reads "
                f"{FORMAT_VERSION}): use the specalign version that wrote it"
            )
        try:
            manifest = Manifest.model_validate(raw)
        except ValidationError as e:
            raise RunDirError(f"{p}: {_first_error(e)}") from None
        self.manifest = manifest
        return manifest

    def use_manifest(self, manifest: Manifest) -> None:
        """Check records against ``manifest`` from now on (a run's own, before it writes it)."""
        self.manifest = manifest

    def write_manifest(self, manifest: Manifest) -> None:
        self.write_json_atomic(MANIFEST, manifest.model_dump(mode="json"))
        self.manifest = manifest

    def write_selection(self, sample_ids: list[str]) -> None:
        self.write_json_atomic(SELECTION, sample_ids)

    def read_selection(self) -> list[str] | None:
        """The sample ids the run selected (None when the file is missing): a list of distinct
        ``scenario/prompt_id`` of the manifest's selected scenarios, else one line naming the entry."""
        p = self.path / SELECTION
        try:
            if not p.is_file():
                return None
            ids = _SELECTION.validate_json(_read_bounded(p))
        except (OSError, ValueError) as e:
            why = _first_error(e, "entry ") if isinstance(e, ValidationError) else _why(e)
            raise RunDirError(f"{p}: {why} (rerun `specalign run` to rewrite it)") from None
        scenarios = set(self.manifest.selection.scenarios) if self.manifest else None
        seen: set[str] = set()
        for i, sid in enumerate(ids):
            scenario, sep, prompt_id = sid.partition("/")
            if not sep or not prompt_id or (scenarios is not None and scenario not in scenarios):
                raise RunDirError(
                    f"{p}: entry {i}: {sid[:80]!r} is not scenario/prompt_id of a selected scenario "
                    "(rerun `specalign run` to rewrite it)"
                )
            if sid in seen:
                raise RunDirError(f"{p}: entry {i}: {sid[:80]!r} is listed twice (rerun `specalign run` to rewrite it)")
            seen.add(sid)
        return ids

    def selected(self, sample_ids: Iterable[str]) -> list[str]:
        """The run's selection; without selection.json, those of ``sample_ids`` (the samples with records) that
        belong to the manifest's selected scenarios."""
        chosen = self.read_selection()
        if chosen:
            return chosen
        scenarios = set(self.manifest.selection.scenarios) if self.manifest else None
        return sorted(s for s in sample_ids if scenarios is None or s.partition("/")[0] in scenarios)

    def write_json_atomic(self, name: str, data: Any) -> None:
        """Write ``name`` whole or not at all: a private temporary file, then a rename over the old one."""
        target = self.path / name
        tmp: str | None = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{name}.", suffix=".tmp")
            os.fchmod(fd, _file_mode(target))
            with open(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2, ensure_ascii=False)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except (OSError, ValueError) as e:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise RunDirError(f"cannot write {target}: {_why(e)}") from None

    # -- records --------------------------------------------------------------------------
    def generations(self) -> Iterator[GenerationRecord]:
        return self._read(GENERATIONS, GenerationRecord)

    def judgments(self) -> Iterator[JudgmentRecord]:
        return self._read(JUDGMENTS, JudgmentRecord)

    def read_records(self, name: str, model: type[R]) -> Iterator[R]:
        """Another JSONL file of records (``batches.jsonl``), read like the others: broken lines skipped, reported."""
        return self._read(name, model)

    def _read(self, name: str, model: type[R]) -> Iterator[R]:
        """The file's usable records in order; a broken one is skipped and reported once it is read through,
        unless a later record of the same sample (and judge) replaced it."""
        p = self.path / name
        broken: list[tuple[int, str, tuple[str, ...] | None]] = []
        replaced: set[tuple[str, ...]] = set()
        try:
            if not p.is_file():
                return
            for lineno, line in _lines(p):
                if line is not None and not line.strip():
                    continue  # a blank line holds no record
                record, why = self._parse(line, model)
                if record is None:
                    broken.append((lineno, why or "unreadable", _identity_of(line)))
                    continue
                replaced.add(_identity(record))
                yield record
        except OSError as e:
            raise RunDirError(f"cannot read {p}: {_why(e)}") from None
        finally:
            self._report(p, [(n, why) for n, why, ident in broken if ident is None or ident not in replaced])

    def _parse(self, line: str | None, model: type[R]) -> tuple[R | None, str | None]:
        if line is None:
            return None, f"longer than {MAX_RECORD_BYTES // (1024 * 1024)} MiB"
        try:
            record = model.model_validate_json(line)
        except ValidationError as e:
            return None, _first_error(e)
        except ValueError as e:
            return None, _why(e)
        if self.manifest is not None and isinstance(record, (GenerationRecord, JudgmentRecord)):
            why = record_problem(record, self.manifest)
            if why is not None:
                return None, why
        return record, None

    def _report(self, path: Path, broken: list[tuple[int, str]]) -> None:
        lines = [f"{path}:{n}: broken record skipped ({why}); a run redoes its sample" for n, why in broken]
        self.problems[path.name] = lines
        for text in lines[:MAX_WARNINGS_PER_FILE]:
            if text not in self._warned:
                self._warned.add(text)
                log.warning("warning: %s", text)
        more = len(lines) - MAX_WARNINGS_PER_FILE
        if more > 0 and str(path) not in self._warned:
            self._warned.add(str(path))
            log.warning("warning: %s: %d more broken records skipped", path, more)

    def problem_lines(self) -> list[str]:
        return [text for lines in self.problems.values() for text in lines]

    def open_writer(self, name: str) -> RecordWriter:
        return RecordWriter(self.path / name)

    def open_writers(self) -> tuple[RecordWriter, RecordWriter]:
        """Writers appending to this run's generations and judgments, in that order."""
        return self.open_writer(GENERATIONS), self.open_writer(JUDGMENTS)

    @contextmanager
    def append_lock(self) -> Iterator[None]:
        """Hold ``DIR/.append.lock`` (blocking): how the processes of one gateway that share this directory
        (under the ``.lock`` their supervisor holds) take turns to append records or update the manifest."""
        fd = _open_lock(self.path / APPEND_LOCK, os.O_RDWR | os.O_CREAT)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def open_shared_writers(self) -> tuple[RecordWriter, RecordWriter]:
        """:meth:`open_writers` for one of several processes appending to this directory at once."""
        with self.append_lock():
            return SharedRecordWriter(self, GENERATIONS), SharedRecordWriter(self, JUDGMENTS)


class RecordWriter:
    """Appends one JSON line per record and flushes it, after cutting off a torn last line."""

    def __init__(self, path: Path):
        self.path = path
        try:
            _drop_torn_tail(path)
            # non-blocking: a pipe planted in its place fails at once instead of waiting for a reader
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NONBLOCK", 0), 0o666)
            self._f = open(fd, "a", encoding="utf-8")
        except OSError as e:
            raise RunDirError(f"cannot write {path}: {e.strerror or e}") from None

    def append(self, record: BaseModel) -> None:
        line = _json_line(record)
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


class SharedRecordWriter(RecordWriter):
    """A :class:`RecordWriter` for one of several writers of a file: each line is written whole under the
    directory's append lock, after cutting off a torn line that a killed writer left."""

    def __init__(self, run_dir: RunDir, name: str):
        self.run_dir = run_dir
        super().__init__(run_dir.path / name)

    def append(self, record: BaseModel) -> None:
        with self.run_dir.append_lock():
            try:
                _drop_torn_tail(self.path)
            except OSError as e:
                raise RunDirError(f"cannot write {self.path}: {e.strerror or e}") from None
            super().append(record)


def _json_line(record: BaseModel) -> str:
    """One record as a JSON line. Text is repaired where it enters; a lone surrogate that got past that
    is replaced here (with a warning) rather than failing this record, and every rerun, for good."""
    try:
        return record.model_dump_json() + "\n"
    except PydanticSerializationError:
        log.warning(
            "warning: a %s held invalid text (a lone surrogate): written with U+FFFD in its place",
            type(record).__name__,
        )
        return json.dumps(repair_json(record.model_dump(mode="json")), ensure_ascii=False) + "\n"


def check_runs(run_dirs: Iterable[str | Path]) -> list[RunDir]:
    """Every run directory opened and its manifest and selection checked (one line on the first bad one),
    before a command writes anything."""
    runs = []
    for d in run_dirs:
        rd = RunDir(d)
        rd.read_manifest()
        rd.read_selection()
        runs.append(rd)
    return runs


def check_output(
    output: str | Path,
    run_dirs: Iterable[str | Path],
    *,
    field: str = "--output",
    read_files: Iterable[str | Path] = (),
) -> None:
    """Refuse an output that would overwrite what a command reads: a path in (or at) an input run
    directory, or the same file, through a symbolic or hard link, as a file of those runs, of their data
    or of ``read_files``. Also refuses an existing directory. Checked before anything is written."""
    target = _path_option(output, field)
    dirs = [Path(d) for d in run_dirs]
    refuse_inside(target, dirs, field=field)
    try:
        is_dir, exists = target.is_dir(), target.exists()
    except OSError:
        return  # cannot be looked at (permissions): writing it fails with its own one-line error
    if is_dir:
        raise ConfigError(f"{target} is a directory: give a file name", field=field)
    if not exists:
        return
    for f in _input_files(dirs, read_files):
        try:
            same = os.path.samefile(target, f)
        except OSError:
            continue
        if same:
            raise ConfigError(f"{target} is {f}, which this command reads: write it elsewhere", field=field)


def refuse_inside(path: str | Path, dirs: Iterable[str | Path], *, field: str) -> None:
    """Refuse ``path`` when it is one of ``dirs`` or lies inside one (symbolic links resolved)."""
    real = os.path.realpath(_path_option(path, field))
    for d in dirs:
        rd = os.path.realpath(d)
        if real == rd or real.startswith(rd.rstrip(os.sep) + os.sep):
            raise ConfigError(f"{path} is inside {d}, which this command reads: write it elsewhere", field=field)


def _path_option(value: str | Path, field: str) -> Path:
    text = str(value)
    if not text or "\0" in text:
        raise ConfigError(f"{text[:80]!r} is not a usable path", field=field)
    return Path(text)


def _input_files(dirs: list[Path], extra: Iterable[str | Path]) -> Iterator[Path]:
    """Every file in the run directories, the files of their data (when local), and ``extra``."""
    for f in extra:
        yield Path(f)
    for d in dirs:
        try:
            yield from (p for p in d.iterdir() if p.is_file())
        except OSError:
            continue
        source = _data_source(d)
        if source is not None:
            yield from _files_under(source, limit=10_000)


def _data_source(run_dir: Path) -> Path | None:
    try:
        raw = json.loads(_read_bounded(run_dir / MANIFEST))
        source = Path(raw["data"]["source"])
        return source if source.exists() else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _files_under(root: Path, *, limit: int) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for n, (folder, _, names) in enumerate(os.walk(root)):
        if n > limit:
            return
        yield from (Path(folder) / name for name in names)


def _lines(path: Path) -> Iterator[tuple[int, str | None]]:
    """(line number, text) of each complete line; None for a line over MAX_RECORD_BYTES, which is skipped
    without being held in memory. A torn last line (a run died writing it) is not a line."""
    with open(path, "rb") as f:
        lineno = 0
        while True:
            chunk = f.readline(MAX_RECORD_BYTES + 1)
            if not chunk:
                return
            lineno += 1
            if len(chunk) > MAX_RECORD_BYTES and not chunk.endswith(b"\n"):
                while chunk and not chunk.endswith(b"\n"):
                    chunk = f.readline(MAX_RECORD_BYTES)
                if not chunk:
                    return  # a huge torn last line
                yield lineno, None
                continue
            if not chunk.endswith(b"\n"):
                return  # a torn last line: the sample that was in flight when the run died
            yield lineno, chunk.decode("utf-8", errors="replace")


def _identity(record: BaseModel) -> tuple[str, ...]:
    return (getattr(record, "sample_id", ""), getattr(record, "judge_key", ""))


def _identity_of(line: str | None) -> tuple[str, ...] | None:
    """The (sample, judge) a broken line was about, when it parses that far."""
    try:
        raw = json.loads(line) if line else None
    except ValueError:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("sample_id"), str):
        return None
    judge = raw.get("judge_key", "")
    return (raw["sample_id"], judge if isinstance(judge, str) else "")


def _read_bounded(path: Path, limit: int = MAX_RECORD_BYTES) -> bytes:
    """A small JSON file's bytes; a huge one is refused rather than read into memory."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit // (1024 * 1024)} MiB")
    return data


def _file_mode(target: Path) -> int:
    """The old file's permissions, or what a plain open() would give a new file (mkstemp's are 0600)."""
    try:
        return target.stat().st_mode & 0o777
    except OSError:
        return 0o666 & ~_UMASK


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']}, {info.get('purpose', 'run')} since {info['started_at']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


def _open_lock(path: Path, flags: int) -> int:
    """The lock file, opened without following a link and refused unless it is a regular file (a planted
    link or pipe must not be truncated or block)."""
    try:
        fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0), 0o644)
    except (OSError, ValueError) as e:
        raise RunDirError(f"cannot use {path}: {_why(e)}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RunDirError(f"cannot use {path}: not a regular file")
    return fd


def _check_parents(path: Path) -> None:
    """A folder that does not exist yet can be made: its nearest existing ancestor is a directory."""
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise RunDirError(f"cannot write run directory {path}: {parent} is not a directory")
            return


def _housekeeping(name: str) -> bool:
    """Files a run leaves besides its records: its lock, an interrupted write probe or temporary file."""
    return (
        name in (LOCK, APPEND_LOCK)
        or name.startswith(".write-test")
        or (name.startswith(".") and name.endswith(".tmp"))
    )


def _first_error(e: ValidationError, prefix: str = "") -> str:
    """The first error of ``e`` in one line: where (dotted field path) and what."""
    err = e.errors(include_url=False)[0]
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    where = ".".join(str(x) for x in err.get("loc", ()))
    return f"{prefix}{where}: {msg}" if where else msg


def _why(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return text.splitlines()[0] if text.splitlines() else text


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
