"""What a command may write or replace outside the cache: only what selectkd itself made.

One rule for every ``--out`` (distill, finetune, export, ``select --plot``): a missing path or an
empty folder is written; an existing one is replaced only with ``--overwrite`` and only when it is
recognisably selectkd's own output of the same kind (a run folder, a finetune folder, an export of
that format, a PNG). Anything else (a folder of the user's files, ``.``, a folder holding the
cache, a link, a folder where a file is written or the reverse, a path under a file or in a
read-only folder) is refused in one line before any work, and nothing is touched.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from .atomic import clean_stale, name_lock, restore_aside
from .cache.files import file_sha256
from .errors import SelectKDError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class OutputError(SelectKDError):
    """An output path selectkd will not write or replace."""


@dataclass(frozen=True)
class OutputKind:
    """One kind of output: what it is called, file or folder, how selectkd recognises its own."""

    noun: str  # the message says "OUT holds <noun>"
    folder: bool
    ours: Callable[[Path], bool]
    again: str = "choose another --out or pass --overwrite to replace it"
    in_place: bool = False  # written into the folder as it runs (a run), not swapped in when done
    option: str = "--out"


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _is_run(path: Path) -> bool:
    """A distill run folder: its config.json holds a distill command's options."""
    from .distillation.config import is_run_config

    return is_run_config(_json(path / "config.json"))


def sidecar(out: Path) -> Path:
    """The provenance beside a single-file export."""
    return out.with_name(out.name + ".provenance.json")


def _export_file(fmt: str) -> Callable[[Path], bool]:
    def ours(out: Path) -> bool:
        """A provenance beside ``out`` (in place, or left by a killed export) names its format and sha256."""
        found = [sidecar(out), *sorted(out.parent.glob(f".{glob.escape(sidecar(out).name)}.*"))]
        records = [_json(p).get("export") for p in found if p.is_file() and not p.is_symlink()]
        records = [r for r in records if isinstance(r, dict) and r.get("format") == fmt]
        if any(r.get("sha256") is None and r.get("path") == str(out.resolve()) for r in records):
            return True  # made before exports recorded their checksum
        digest = file_sha256(out) if records else None
        return any(r.get("sha256") == digest for r in records)
    return ours


RUN = OutputKind("another run", True, _is_run, "pass --resume to continue it or --overwrite to replace it", True)
FINETUNE = OutputKind("a model from `selectkd finetune`", True, lambda p: bool(_json(p / "selectkd_finetune.json")))
EXPORT_HF = OutputKind("an earlier hf export", True,
                       lambda p: (_json(p / "provenance.json").get("export") or {}).get("format") == "hf")
PNG = OutputKind("a PNG", False, lambda p: _head(p) == PNG_SIGNATURE, option="--plot")


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(len(PNG_SIGNATURE))


def export_kind(fmt: str) -> OutputKind:
    return EXPORT_HF if fmt == "hf" else OutputKind(f"an earlier {fmt} export", False, _export_file(fmt))


def check_parent(out: Path, option: str = "--out") -> None:
    """The nearest existing folder above ``out`` must be a folder this process may write in."""
    above = out.absolute().parent
    while not os.path.lexists(above):
        above = above.parent
    if not above.is_dir():
        raise OutputError(f"cannot write {out}: {above} is a file, not a folder; choose another {option}")
    if not os.access(above, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {out}: {above} is read-only; choose another {option}")


def _refuse_holding(out: Path, cache_root: Path | None) -> None:
    """A folder that is or holds the current folder or the cache is never replaced."""
    here = out.resolve()
    for inner, what in ((Path.cwd(), "the current folder"), (cache_root, "the cache")):
        if inner is not None and (inner.resolve() == here or here in inner.resolve().parents):
            raise OutputError(f"{out} holds {what}; choose another --out")


def check_output(out: Path, kind: OutputKind, overwrite: bool, cache_root: Path | None = None) -> bool:
    """Refuse ``out`` unless selectkd may write it; True when an old output of ``kind`` is to be replaced."""
    check_parent(out, kind.option)
    restore_aside(out)  # a replace killed half-way (systems without an atomic swap) left the old one aside
    if not os.path.lexists(out):
        return False
    if out.is_symlink():
        raise OutputError(f"{out} is a symbolic link; selectkd does not replace links, choose another {kind.option}")
    if out.is_dir() != kind.folder:
        has, writes = ("a folder", "a file") if out.is_dir() else ("a file", "a folder")
        raise OutputError(f"{out} is {has} and this command writes {writes}; choose another {kind.option}")
    if kind.folder and not any(out.iterdir()):
        if not kind.in_place:  # a swap would move the folder the user stands in
            _refuse_holding(out, None)
        return False
    if not kind.ours(out):
        what = "holds files" if kind.folder else "is a file"
        replaces = "--overwrite" if kind.option == "--out" else kind.option
        raise OutputError(f"{out} {what} selectkd did not make; choose another {kind.option} "
                          f"({replaces} replaces only {kind.noun.replace('another', 'a')})")
    if kind.folder:
        _refuse_holding(out, cache_root)  # even when it is selectkd's own
    if not overwrite:
        raise OutputError(f"{out} {'holds' if kind.folder else 'is'} {kind.noun}; {kind.again}")
    return True


def check_sidecar(out: Path, overwrite: bool) -> None:
    """The provenance beside a single-file export is replaced with it: it too must be selectkd's."""
    prov = sidecar(out)
    if not os.path.lexists(prov):
        return
    if prov.is_symlink() or not prov.is_file() or not isinstance(_json(prov).get("export"), dict):
        raise OutputError(f"{prov} is a file selectkd did not make; choose another --out")
    if not overwrite:
        raise OutputError(f"{prov} is the provenance of an earlier export; choose another --out or pass "
                          f"--overwrite to replace it")


@contextlib.contextmanager
def claim(out: Path, kind: OutputKind, overwrite: bool, cache_root: Path | None = None) -> Iterator[None]:
    """Hold ``out``'s name while the new output is swapped in: parents made, lock taken, checks redone.

    A write that fails takes back the folders it made and says why in one line.
    """
    made = []
    for folder in reversed(out.absolute().parents):
        if not os.path.lexists(folder):
            made.append(folder)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with name_lock(out, wait=True, busy=OutputError(f"{out} is being written")):
            check_output(out, kind, overwrite, cache_root)
            clean_stale(out)
            yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR):
            raise
        fix = "free some space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else f"choose another {kind.option}"
        raise OutputError(f"cannot write {out}: {exc.strerror}; {fix}") from None
    finally:
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if still empty: the output is not in it
