"""Atomic writes: a temporary file in the destination directory, fsync, rename.

A writer holds an exclusive ``flock`` on its temporary file while it writes; the kernel
drops the lock when the process dies, even by ``kill -9``. Every write first removes the
weightshare temporary files of that directory whose lock it can take: their writers are
gone. So a killed save leaves nothing behind that the next save does not clean. (Where
``fcntl`` does not exist, i.e. Windows, stale temporary files are left alone.)
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ..errors import SaveError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

TEMP_SUFFIX = ".weightshare-tmp"
_TEMP = re.compile(r"\..+\.[0-9a-f]{16}" + re.escape(TEMP_SUFFIX))


def temp_name(path: Path) -> Path:
    return path.parent / f".{path.name}.{secrets.token_hex(8)}{TEMP_SUFFIX}"


def clean_stale(directory: Path) -> list[Path]:
    """Remove the weightshare temporary files in ``directory`` that no live writer holds;
    returns them."""
    if fcntl is None:
        return []
    removed = []
    try:
        names = [n for n in os.listdir(directory) if _TEMP.fullmatch(n)]
    except OSError:
        return []
    for name in names:
        tmp = directory / name
        try:
            fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # taken: its writer is gone
            os.unlink(tmp)
            removed.append(tmp)
        except OSError:
            pass  # a live writer holds it (or it vanished): leave it
        finally:
            os.close(fd)
    return removed


def _locked_temp(path: Path) -> tuple[Path, int]:
    """A new temporary file next to ``path``, created and locked by us."""
    for _ in range(5):
        tmp = temp_name(path)
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as e:
            raise SaveError(f"could not write in {path.parent}: {e.strerror or e}; check "
                            "permissions or choose another -o path") from e
        if fcntl is None:
            return tmp, fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:  # another process's clean_stale may have taken it between open and flock
            if os.stat(tmp).st_ino == os.fstat(fd).st_ino:
                return tmp, fd
        except OSError:
            pass
        os.close(fd)
    raise SaveError(f"could not create a temporary file in {path.parent} (it keeps vanishing); "
                    "choose another -o path")


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(f)`` on a locked temporary file next to ``path``, then make it ``path``:
    either the whole new file is there or the old one is untouched."""
    clean_stale(path.parent)
    tmp, fd = _locked_temp(path)
    try:
        with os.fdopen(os.dup(fd), "r+b") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # the lock goes with the file; closing fd below drops it
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise SaveError(f"could not write {path}: {e.strerror or e}; check free space and "
                            "permissions") from e
        raise
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
