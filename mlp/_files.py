"""Files written atomically: a reader sees the old file or the new one, never a part of one."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path
from typing import Any


def refuse_folder(path: Any, name: str = "path") -> None:
    """Raise ``IsADirectoryError`` (naming ``name``) when ``path`` is a folder or ``"."``: no file written
    there could replace it."""
    path = Path(path)
    if path.is_dir() or not path.name:
        raise IsADirectoryError(errno.EISDIR, f"{name}: {str(path)!r} is a folder; expected the path of a file")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, ``fsync`` and ``os.replace``.

    A reader sees the old file or the new one, never a part; a crash leaves the old one intact.  The
    permissions are those ``open(path, "w")`` gives: a new file gets ``0o666`` less the umask, a file
    replaced keeps its permission bits (the temporary file never has more than the result).
    """
    path = Path(path)
    refuse_folder(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        kept: int | None = stat.S_IMODE(os.stat(path).st_mode) & 0o777
    except FileNotFoundError:
        kept = None
    try:
        fd, tmp = _create_temporary(path, 0o666 if kept is None else kept)
    except FileExistsError:
        raise
    except OSError as exc:  # say which file could not be written, not the temporary one beside it
        raise type(exc)(exc.errno, f"path: cannot write {str(path)!r} ({exc.strerror})") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            if kept is not None and hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), kept)  # the umask may have cleared bits the replaced file had
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable where the platform allows it
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _create_temporary(path: Path, mode: int) -> tuple[int, Path]:
    """A new file ``.<name>.<random>.tmp`` beside ``path``, opened for writing; ``mode`` is filtered by the
    umask as for any file created.  (``tempfile.mkstemp`` would create it ``0o600`` whatever the umask.)"""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"path: no free temporary name beside {str(path)!r}")
