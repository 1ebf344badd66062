"""A content-addressed cache of model calls (SQLite), so no answer is paid for twice.

The cache only saves money and time; it never stops a run:

- A cache file that is not an SQLite database, or a corrupt or truncated one, is set aside as
  ``calls.sqlite.corrupt-<UTC timestamp>`` (with its ``-wal``/``-shm`` files) with a warning
  naming it, and a fresh cache takes its place. This holds when the file is opened and when
  corruption only shows on a later read or write.
- A cache folder that cannot be used (a file, not writable, not creatable) is a one-line
  :class:`~specalign.errors.ConfigError` when the cache is opened, before a run writes anything,
  naming the way out (``--cache-dir`` elsewhere, or ``--no-cache``).
- Any other SQLite error during a run (a full disk, a lock held too long) is warned about once,
  and the run goes on without the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .._unicode import repair_text
from ..errors import ConfigError
from ._base import REPAIRED, Completion

log = logging.getLogger(__name__)
T = TypeVar("T")
#: SQLite's own names for "this is not (any more) a database"
_CORRUPT = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})


def default_cache_dir() -> Path:
    env = os.environ.get("SPECALIGN_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "specalign"


def cache_key(payload: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of everything that changes the answer."""
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()  # request text may hold lone surrogates


class CallCache:
    """Maps a request key to the :class:`Completion` it produced. Errors are never stored.

    See the module docstring for what happens to a corrupt file or an unusable folder.
    """

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._open()

    @classmethod
    def default(cls) -> CallCache:
        return cls(default_cache_dir() / "calls.sqlite")

    # -- opening ----------------------------------------------------------------------------

    def _open(self) -> None:
        try:
            _check_folder(self.path)
            self._db = self._connect()
        except sqlite3.DatabaseError as e:
            if not _is_corrupt(e):
                raise self._unusable(e) from None
            self._set_aside()
            try:
                self._db = self._connect()
            except (OSError, sqlite3.Error) as again:
                raise self._unusable(again) from None
        except OSError as e:
            raise self._unusable(e) from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute("SELECT key FROM calls LIMIT 1").fetchall()
        except BaseException:
            db.close()
            raise
        return db

    def _unusable(self, err: Exception) -> ConfigError:
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        return ConfigError(
            f"cannot use the model-call cache {self.path} ({reason}); pass --cache-dir with a "
            f"writable folder, or --no-cache",
            field="--cache-dir",
        )

    def _set_aside(self) -> None:
        """Move a corrupt cache file (and its WAL files) out of the way, with a warning naming it."""
        if self._db is not None:
            self._db.close()
            self._db = None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():  # twice in one second: keep both
            n += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                src.replace(f"{aside}{suffix}")
        log.warning("the model-call cache %s was corrupt: moved it to %s and started an empty one", self.path, aside)

    # -- using ------------------------------------------------------------------------------

    def _run(self, fn: Callable[[sqlite3.Connection], T], default: T) -> T:
        """``fn(db)`` under the lock; corruption sets the file aside and retries once on a fresh one,
        any other SQLite error turns the cache off (with one warning) and returns ``default``."""
        with self._lock:
            for attempt in range(2):
                if self._db is None:
                    return default
                try:
                    return fn(self._db)
                except sqlite3.DatabaseError as e:
                    if attempt == 0 and _is_corrupt(e):
                        try:
                            self._set_aside()
                            self._db = self._connect()
                            continue
                        except (OSError, sqlite3.Error) as again:
                            self._give_up(again)
                            return default
                    self._give_up(e)
                    return default
            return default

    def _give_up(self, error: BaseException) -> None:
        """Turn the cache off for this process, with one warning naming it."""
        log.warning("the model-call cache %s failed (%s): going on without it", self.path, error)
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
        self._db = None

    def get(self, key: str) -> Completion | None:
        row = self._run(lambda db: db.execute("SELECT value FROM calls WHERE key = ?", (key,)).fetchone(), None)
        if row is None:
            return None
        try:
            return Completion.model_validate_json(row[0]).model_copy(update={"cached": True})
        except ValueError:
            return None  # a corrupt entry is a miss, not a crash

    def put(self, key: str, completion: Completion) -> None:
        text, repaired = repair_text(completion.text)  # a backend repairs its text; a stand-in may not
        update: dict[str, Any] = {"cached": False, "text": text}
        if repaired and REPAIRED not in completion.flags:
            update["flags"] = [*completion.flags, REPAIRED]
        value = completion.model_copy(update=update).model_dump_json()
        self._run(lambda db: db.execute("INSERT OR REPLACE INTO calls (key, value) VALUES (?, ?)", (key, value)), None)

    def __len__(self) -> int:
        return self._run(lambda db: db.execute("SELECT COUNT(*) FROM calls").fetchone()[0], 0)

    def clear(self) -> int:
        def wipe(db: sqlite3.Connection) -> int:
            n = db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
            db.execute("DELETE FROM calls")
            return n

        return self._run(wipe, 0)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _check_folder(path: Path) -> None:
    """Create the cache folder; a file (or anything not a folder) in the way is an ``OSError`` naming it."""
    for p in (path.parent, *path.parent.parents):
        if p.exists() and not p.is_dir():
            raise NotADirectoryError(f"{p} is a file, not a folder")
        if p.exists():
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not path.is_file():
        raise IsADirectoryError(f"{path} is not a file")


def _is_corrupt(err: sqlite3.DatabaseError) -> bool:
    name = getattr(err, "sqlite_errorname", "")
    if name:
        return name in _CORRUPT
    text = str(err).lower()
    return "malformed" in text or "not a database" in text
