"""Replace by rename: a reader of a selectkd output sees the old one or the complete new one, never a mix.

Every writer builds its file or folder under a hidden temp name beside the final one, then
``replace_path`` swaps it in; the old one stays whole until that moment. ``name_lock`` keeps two
writers of one name apart. The temp names (``.NAME.<tag>-PID``) are selectkd's own, so what a
killed process left is recognised and cleared (``clean_stale``) or put back (``restore_aside``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator

AT_FDCWD = -100
RENAME_EXCHANGE = 2
ASIDE = "selectkd-old"  # the fallback's old copy, kept until the new one is in place


def temp_name(final: Path, tag: str = "tmp") -> Path:
    """The hidden name beside ``final`` that this process writes under: ``.NAME.<tag>-PID``."""
    return final.with_name(f".{final.name}.{tag}-{os.getpid()}")


@contextlib.contextmanager
def replacing(final: Path, tag: str = "tmp") -> Iterator[Path]:
    """Build the new file or folder under the yielded temp name beside ``final``; when the block ends it
    replaces ``final`` (a file by one rename, a folder by ``replace_path``). If the block fails (disk
    full, killed I/O...), the temp name is removed and ``final`` is untouched."""
    final = Path(final)
    tmp = temp_name(final, tag)
    if os.path.lexists(tmp):  # left by an earlier process that had this pid
        remove_path(tmp)
    try:
        yield tmp
        if tmp.is_dir() or final.is_dir():
            replace_path(tmp, final)
        else:
            os.replace(tmp, final)
    finally:
        if os.path.lexists(tmp):
            remove_path(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with replacing(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    """JSON with no NaN or Infinity (not JSON; a reader would choke on it): such a value is a bug, raised here."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str, allow_nan=False) + "\n")


def save_figure(fig, path: Path) -> Path:
    """A matplotlib figure as a PNG at ``path``, whole or not at all (its folder is made)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def remove_path(path: Path) -> None:
    """Delete a file or folder selectkd made; a symbolic link is unlinked, never followed."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def discard(path: Path, tag: str = "discarded") -> None:
    """Delete ``path`` whole: renamed to a hidden name first, so no reader sees it half-deleted;
    a symbolic link loses the link, never its target."""
    gone = temp_name(path, tag)
    os.rename(path, gone)
    remove_path(gone)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two names in one step (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:  # glibc < 2.28, musl
        return False
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # old kernel or a filesystem without it
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_path(new: Path, final: Path) -> None:
    """Put the complete ``new`` file or folder at ``final``, keeping the old one whole until the swap.

    On Linux the two names are exchanged in one atomic step, then the old copy (now at ``new``)
    is deleted. Elsewhere the old one is renamed aside to ``.NAME.selectkd-old-PID`` first; a kill
    between that and the second rename leaves it there, and the next write of ``final`` puts it back.
    """
    if not os.path.lexists(final):
        os.rename(new, final)
    elif _exchange(new, final):
        remove_path(new)
    else:
        aside = temp_name(final, ASIDE)
        os.rename(final, aside)
        os.rename(new, final)
        remove_path(aside)


def _alive(pid: int) -> bool:
    """Whether another process ``pid`` runs (our own pid on a leftover name is an earlier process's)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _left_by_dead(final: Path, tags: tuple[str, ...]) -> list[Path]:
    """Hidden ``.NAME.<tag>-PID`` siblings of ``final`` whose process is gone, oldest first."""
    pattern = re.compile(rf"^\.{re.escape(final.name)}\.({'|'.join(map(re.escape, tags))})-(\d+)$")
    if not final.parent.is_dir():
        return []
    found = [p for p in final.parent.iterdir() if (m := pattern.match(p.name)) and not _alive(int(m.group(2)))]
    return sorted(found, key=lambda p: p.lstat().st_mtime)


def restore_aside(final: Path) -> None:
    """After a kill between the fallback's two renames, ``final`` is missing: put the old copy back."""
    if not os.path.lexists(final):
        asides = _left_by_dead(final, (ASIDE,))
        if asides:
            os.rename(asides[-1], final)


def clean_stale(final: Path, tags: tuple[str, ...] = ("tmp", ASIDE, "discarded")) -> None:
    """Remove what killed writers of ``final`` left beside it (call under ``name_lock``)."""
    for path in _left_by_dead(final, tags):
        remove_path(path)


def locked_file(lock: Path, wait: bool, busy: Exception) -> int:
    """An fd of ``lock`` (made, with its folder, if missing) under an exclusive flock.

    ``wait=False`` raises ``busy`` at once when another process holds it. A lock file taken away
    while this process waited for it (its holder removed it on release) is stale: retried.
    """
    while True:
        lock.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # its folder went between mkdir and open
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise busy from None
        try:
            now, mine = os.stat(lock), os.fstat(fd)
            if (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def name_lock(final: Path, wait: bool, busy: Exception) -> Iterator[None]:
    """One writer per name: an flock on ``.NAME.lock`` beside ``final``, deleted on release.

    The file is removed while still locked, so a waiter that then locks the unlinked file sees it
    is stale and retries (``locked_file``).
    """
    lock = final.with_name(f".{final.name}.lock")
    fd = locked_file(lock, wait, busy)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)
