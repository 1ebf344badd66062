"""Writing scenario files safely: whole or not at all, never through a planted symbolic link."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import RunDirError


def write_atomic(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` through a fresh temporary file renamed over it.

    A crash never leaves half a file, and a symbolic link at ``target`` (or at a guessable temporary
    name) is replaced, never followed: writing into a downloaded scenario folder cannot reach outside it.
    """
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        mode = target.stat().st_mode & 0o777 if target.is_file() and not target.is_symlink() else _default_mode()
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as e:
        raise RunDirError(f"cannot write {target}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise RunDirError(f"cannot write {target}: {e.strerror or e}") from None


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def append_line(target: Path, line: str) -> None:
    """Append one line to ``target``, refusing to follow a symbolic link there."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    if target.is_symlink():  # O_NOFOLLOW does not exist everywhere
        raise RunDirError(f"cannot write {target}: it is a symbolic link (replace it with a regular file)")
    if target.exists() and not target.is_file():
        raise RunDirError(f"cannot write {target}: not a regular file")
    try:
        fd = os.open(target, flags, 0o666)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(line.rstrip("\n") + "\n")
    except OSError as e:
        raise RunDirError(f"cannot write {target}: {e.strerror or e}") from None
