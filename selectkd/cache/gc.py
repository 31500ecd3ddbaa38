"""`selectkd cache gc`: find what a store no longer needs, and remove only that, only when asked.

What counts as no longer needed:

- an entry no selection, no distill run and no kept student entry refers to (a student entry
  names the teacher entries it was scored against and the embedding entry it was fitted on; each distill run registers the entries it
  read in ``<root>/runs/``, and a registration whose run folder is gone is itself stale);
- an entry written in another cache format (this selectkd refuses to read it);
- what killed writers left: hidden ``.NAME.tmp-PID`` / ``.NAME.discarded-PID`` files and folders
  whose process is gone, and lock files of entries that do not exist;
- ``<root>/fingerprints.json``, where older selectkd kept file hashes (now per user, not per store).

``older_than`` keeps every entry written more recently. An entry whose lock another process holds
is never touched: planning reports it as in use, and removing refuses the whole plan. Removing reads
the references again under the entries' locks, so what a selection or run made since the plan names stays.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import _alive, atomic_write_json, discard, remove_path
from ..errors import CacheError, OptionError
from .fingerprint import memo_path
from .store import FORMAT_VERSION, KINDS, Entry, Store

OLD_MEMO = "fingerprints.json"  # where selectkd before 59b2ec1 kept file hashes, per store (now per user)
UNREFERENCED = "nothing refers to it"  # the one reason a new reference since the plan takes back
RUNS = "runs"  # <root>/runs/<id>.json: the entries a distill run read, and where the run lives
LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<tag>tmp|discarded)-(?P<pid>\d+)$")
AGE = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[smhdw])\s*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """'30d' -> seconds; units s, m, h, d, w."""
    m = AGE.match(str(text))
    if not m:
        raise OptionError(f"--older-than {text!r} is not an age like 30d, 12h or 90m (units s, m, h, d, w)")
    return float(m.group("n")) * UNIT_SECONDS[m.group("unit")]


def register_run(root: Path, run_dir: Path, teacher_keys: list[str], student_key: str | None) -> Path | None:
    """Record in the store that the run in ``run_dir`` reads these entries (gc keeps them while it exists).

    A read-only store serves distill all the same: nothing is recorded there (returns None), and no gc
    could remove anything from it either."""
    run_dir = Path(run_dir).resolve()
    path = Path(root) / RUNS / f"{hashlib.sha256(str(run_dir).encode()).hexdigest()[:24]}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"run": str(run_dir), "teachers": list(teacher_keys), "student": student_key,
                                 "registered": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    except OSError:
        return None
    return path


@dataclass
class Candidate:
    """One thing gc would remove, and why."""

    path: Path
    why: str
    bytes: int
    entry: Entry | None = None  # removed under its lock
    age_seconds: float | None = None

    @property
    def name(self) -> str:
        return f"{self.entry.kind}/{self.entry.key}" if self.entry else str(self.path)


@dataclass
class Plan:
    root: Path
    remove: list[Candidate] = field(default_factory=list)
    in_use: list[Entry] = field(default_factory=list)
    kept: int = 0  # entries referenced (or too young)

    @property
    def bytes(self) -> int:
        return sum(c.bytes for c in self.remove)


def plan(store: Store, older_than: float | None = None) -> Plan:
    """What gc would remove from ``store`` (nothing is changed)."""
    store.check_root()
    result = Plan(store.root)
    if not store.root.is_dir():
        return result
    now = time.time()
    entries = store.entries()
    referenced, stale_runs = _references(store)
    for e in entries:
        age = _age(e, now)
        if older_than is not None and age is not None and age < older_than:
            result.kept += 1
            continue
        why = _format_problem(e)
        if why is None and e.key in referenced:
            result.kept += 1
            continue
        if _locked(e):
            result.in_use.append(e)
            continue
        if why is None:
            why = UNREFERENCED
        result.remove.append(Candidate(e.path, why, e.size_bytes(), e, age))
    result.remove += [Candidate(p, "its run folder is gone", p.stat().st_size) for p in stale_runs]
    result.remove += _leftovers(store.root)
    memo = store.root / OLD_MEMO
    if memo.is_file() and not memo.is_symlink() and memo.resolve() != memo_path().resolve():  # not today's memo
        result.remove.append(Candidate(memo, "file-hash memo of an older selectkd (kept per user now)", _size(memo)))
    return result


def apply(p: Plan) -> list[Candidate]:
    """Remove what ``p`` lists and returns it; refuses (removing nothing) when another process writes one of its
    entries. An entry that a selection or distill run made since the plan refers to is kept (left out of the
    list returned): the references are read again once every entry's lock is held."""
    busy = p.in_use + [c.entry for c in p.remove if c.entry is not None and _locked(c.entry)]
    if busy:  # refused before any lock file is made or anything removed
        raise _busy(p.root, busy[0])
    with contextlib.ExitStack() as held:
        for c in p.remove:
            if c.entry is not None:
                try:  # held until every entry is removed: no writer can start on one meanwhile
                    held.enter_context(c.entry.lock(wait=False))
                except CacheError:
                    raise _busy(p.root, c.entry) from None
        referenced, _ = _references(Store(p.root))
        removed = [c for c in p.remove if c.why != UNREFERENCED or c.entry.key not in referenced]
        for c in removed:
            if c.entry is not None:
                discard(c.entry.path, "discarded")
            elif os.path.lexists(c.path) and not (c.path.name.endswith(".lock") and _held(c.path)):
                remove_path(c.path)  # a lock file a writer took meanwhile stays
    return removed


def _busy(root: Path, e: Entry) -> CacheError:
    return CacheError(f"cache entry {e.kind}/{e.key[:12]} in {root} is being written by another process; run "
                      f"`selectkd cache gc` again when it has finished (nothing was removed)")


def _references(store: Store) -> tuple[set[str], list[Path]]:
    """Keys something still refers to, and the run registrations whose run folder is gone."""
    keys: set[str] = set()
    selections = store.root / "selections"
    if selections.is_dir():
        for prov in selections.glob("*/provenance.json"):
            cache = _json(prov).get("cache") or {}
            keys.update(k for k in [cache.get("student"), cache.get("embedding"), *(cache.get("teachers") or [])]
                        if isinstance(k, str))
    stale = []
    runs = store.root / RUNS
    if runs.is_dir():
        for reg in sorted(runs.glob("*.json")):
            rec = _json(reg)
            if not (Path(str(rec.get("run", ""))) / "config.json").is_file():
                stale.append(reg)
                continue
            keys.update(k for k in [rec.get("student"), *(rec.get("teachers") or [])] if isinstance(k, str))
    # a kept student keeps the teachers it was scored against and the embeddings it was fitted on
    for key in list(keys):
        student = _json(store.root / "student" / key / "manifest.json")
        keys.update(k for k in [*(student.get("teachers") or []), student.get("embedding")] if isinstance(k, str))
    return keys, stale


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _format_problem(e: Entry) -> str | None:
    """Why ``e`` can never be read by this selectkd (another cache format), else None."""
    try:
        m = e.manifest(current=False)
    except CacheError:
        return None  # damaged: `cache verify` names it; gc only removes it when nothing refers to it
    version = m.get("format_version", FORMAT_VERSION)
    return None if version == FORMAT_VERSION else f"cache format {version} (this selectkd reads {FORMAT_VERSION})"


def _age(e: Entry, now: float) -> float | None:
    """Seconds since the entry was last written (its manifest, else its folder)."""
    for p in (e.manifest_path, e.path):
        with contextlib.suppress(OSError):
            return now - p.lstat().st_mtime
    return None


def _locked(e: Entry) -> bool:
    """Whether another process holds ``e``'s lock (probed without making or removing the lock file)."""
    return _held(e.lock_path)


def _held(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return False  # no lock file: nobody holds it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we took
    return False


def _leftovers(root: Path) -> list[Candidate]:
    """Hidden temp files and folders of dead writers, and lock files of entries that do not exist."""
    found = []
    for folder in [root, *(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())]:
        inner = [folder] + ([p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()]
                            if folder.name in KINDS else [])
        for where in inner:
            for p in where.iterdir():
                m = LEFTOVER.match(p.name)
                if m and not _alive(int(m.group("pid"))):
                    found.append(Candidate(p, f"left by a killed writer (pid {m.group('pid')})", _size(p)))
        if folder.name in KINDS:
            for lock in folder.glob(".*.lock"):
                e = Entry(root, folder.name, lock.name[1:-len(".lock")])
                if e.key.isalnum() and not os.path.lexists(e.path) and not _locked(e):
                    found.append(Candidate(lock, "lock file of an entry that does not exist", 0))
    return found


def _size(p: Path) -> int:
    if p.is_symlink() or not p.is_dir():
        return p.lstat().st_size
    return sum(f.lstat().st_size for f in p.rglob("*") if not f.is_symlink() and f.is_file())
