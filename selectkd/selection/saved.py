"""Named selections under ``<store>/selections/NAME/``: selection.arrow + provenance.json.

Saved under the name's lock by an atomic swap; everything read back is checked (shape, names
inside the folder, Arrow columns, the recorded checksum)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..atomic import atomic_write_json, clean_stale, discard, name_lock, remove_path, replace_path, temp_name
from ..cache.store import (Store, file_sha256, files_problem, is_own_file, is_plain_name, read_arrow, read_json_file,
                           shape_problem, write_arrow)
from ..errors import SelectKDError
from .strategies import SelectionError

SELECTIONS = "selections"


NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


MAX_NAME = 100


SELECTION_COLUMNS = {"uid": pa.int64(), "score": pa.float64(), "rank": pa.int64()}


# what readers of a provenance.json rely on (export, distill --selection, cache ls)
PROVENANCE_FIELDS = {"cache": dict, "data": dict, "files": dict, "strategy": str, "rows": int}


PROVENANCE_REQUIRED = ("cache", "data")


DATA_FIELDS = ("data", "split", "text_field", "label_field", "fingerprint")


@dataclass
class PoolStats:
    """Per-row facts about the whole pool a selection came from, for its summary and plot. ``uids`` None:
    row i has uid i; ``positions``: where the selection's rows are in the pool (else found by uid)."""

    uids: np.ndarray | None
    labels: np.ndarray
    scores: np.ndarray
    eligible: np.ndarray
    clusters: np.ndarray | None = None
    label_names: list[str] | None = None
    criterion: str = ""
    positions: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def at(self, uids: np.ndarray) -> np.ndarray:
        """Positions in the pool of the rows with ``uids``."""
        from .pool import positions_of

        if self.positions is not None and len(self.positions) == len(uids):
            return self.positions
        return positions_of(np.arange(len(self)) if self.uids is None else self.uids, uids)


@dataclass
class Selection:
    """A named subset: uids best first, their scores and ranks, and how it was made.

    ``rank`` 0 is the row chosen first (with sampling: drawn first); ``score`` is the
    strategy's criterion value, in its own direction (a margin stays a margin).
    """

    name: str
    uids: np.ndarray
    scores: np.ndarray
    ranks: np.ndarray
    provenance: dict
    pool: PoolStats | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.uids)

    def table(self) -> pa.Table:
        return pa.table({"uid": pa.array(self.uids, pa.int64()), "score": pa.array(self.scores, pa.float64()),
                         "rank": pa.array(self.ranks, pa.int64())})


def check_name(name: str) -> str:
    """A selection name is one folder name: no separators, no '..', nothing hidden or absolute, and
    short enough for every filesystem (255 bytes less the temp and lock names made beside it)."""
    if len(name) > MAX_NAME:
        raise SelectionError(f"selection name {name[:20]!r}... is {len(name)} characters long; use at most {MAX_NAME}")
    if not name or os.path.isabs(name) or "/" in name or "\\" in name or ".." in name or not NAME_PATTERN.match(name):
        raise SelectionError(f"selection name {name!r} is not a plain folder name; use letters, digits, '.', '_', '-' "
                             f"(no path separators or '..')")
    return name


def selection_path(root: str | os.PathLike, name: str) -> Path:
    return Path(root) / SELECTIONS / check_name(name)


def list_selections(root: str | os.PathLike) -> list[str]:
    """Saved selections: folders with a provenance.json (or links, reported damaged); temp folders are not."""
    folder = Path(root) / SELECTIONS
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if is_plain_name(p.name)
                  and (p.is_symlink() or (p.is_dir() and os.path.lexists(p / "provenance.json"))))


def save_selection(root: str | os.PathLike, selection: Selection, overwrite: bool = False) -> Path:
    """Write into a temp folder, then swap it into place: a reader sees all of it or none.

    The name's lock (``selections/.NAME.lock``) keeps two writers apart: without ``overwrite`` a
    second one is refused at once, with it the later one waits and then replaces the first whole.
    provenance.json records selection.arrow's sha256 under ``files``.
    """
    final = selection_path(root, selection.name)
    final.parent.mkdir(parents=True, exist_ok=True)
    busy = SelectionError(f"selection {selection.name!r} is being written by another process; wait for it "
                          f"or choose another --name")
    with name_lock(final, wait=overwrite, busy=busy):
        if final.exists() and not overwrite:
            raise SelectionError(f"selection {selection.name!r} exists in {final.parent}; choose another --name "
                                 f"or pass --overwrite")
        clean_stale(final)
        tmp = temp_name(final)
        try:
            tmp.mkdir()
            selection.provenance["files"] = {"selection.arrow": write_arrow(tmp / "selection.arrow", selection.table())}
            atomic_write_json(tmp / "provenance.json", selection.provenance)
            replace_path(tmp, final)
        finally:
            if os.path.lexists(tmp):
                remove_path(tmp)
    return final


def remove_selection(root: str | os.PathLike, name: str) -> None:
    """Delete a saved selection whole (renamed away first; a link loses the link, never its target). It refuses
    while another process writes that name. The cache entries it named stay: `cache gc` lists them once nothing
    else needs them."""
    final = selection_path(root, name)
    require_selection(root, name)  # before the lock, which would make the selections folder
    busy = SelectionError(f"selection {name!r} is being written by another process; wait for it, then remove it")
    with name_lock(final, wait=False, busy=busy):
        require_selection(root, name)
        discard(final, "removing")


def require_selection(root: str | os.PathLike, name: str) -> None:
    """Raise, naming the selections there are, unless a selection ``name`` exists."""
    have = list_selections(root)
    if name not in have:
        raise SelectionError(f"no selection {name!r} in {Path(root) / SELECTIONS} (have: {', '.join(have) or 'none'}); "
                             f"`selectkd cache ls` lists them")


def load_selection(root: str | os.PathLike | None, name: str) -> Selection:
    """A saved selection, checked as it is read: its files stay inside its folder and have the shape readers need."""
    store = Store(root)
    store.check_root()
    provenance = read_provenance(store.root, name)
    table = _read_table(store.root, name, provenance)
    return Selection(name, table.column("uid").to_numpy(), table.column("score").to_numpy(),
                     table.column("rank").to_numpy(), provenance)


def _damaged(name: str, why: str) -> SelectionError:
    return SelectionError(f"selection {name!r} is damaged ({why}); make it again with "
                          f"`selectkd select ... --name {name} --overwrite`")


def read_provenance(root: str | os.PathLike, name: str) -> dict:
    """A selection's provenance.json: an object with the cache keys and data fields readers use."""
    folder = selection_path(root, name)
    if folder.is_symlink():
        raise _damaged(name, "its folder is a symlink")
    try:
        provenance = read_json_file(folder / "provenance.json")
    except (FileNotFoundError, NotADirectoryError):
        have = ", ".join(list_selections(root)) or "none"
        raise SelectionError(f"no selection {name!r} in {Path(root) / SELECTIONS} (have: {have}); "
                             f"make it with `selectkd select --name {name}`") from None
    except ValueError as exc:
        raise _damaged(name, str(exc)) from None
    problem = shape_problem(provenance, PROVENANCE_FIELDS, PROVENANCE_REQUIRED) or _provenance_problem(provenance)
    if problem:
        raise _damaged(name, f"provenance.json: {problem}")
    return provenance


def _provenance_problem(provenance: dict) -> str | None:
    cache, data = provenance["cache"], provenance["data"]
    keys = [cache.get("student"), *(cache.get("teachers") if isinstance(cache.get("teachers"), list) else [None])]
    if not all(isinstance(k, str) for k in keys):
        return "cache.student or cache.teachers is missing or not text"
    missing = [f"data.{f}" for f in DATA_FIELDS if not isinstance(data.get(f), str)]
    if missing:
        return f"{', '.join(missing)} missing or not text"
    return files_problem(provenance.get("files", {}))


def _read_table(root: Path, name: str, provenance: dict) -> pa.Table:
    """selection.arrow: a plain file that matches its recorded checksum (if any), with uid, score, rank."""
    folder = selection_path(root, name)
    for file, digest in provenance.get("files", {}).items():
        if not is_own_file(folder / file) or file_sha256(folder / file) != digest:
            raise _damaged(name, f"{file} is missing or fails its checksum")
    path = folder / "selection.arrow"
    if not is_own_file(path):
        raise _damaged(name, "selection.arrow is missing or not a plain file")
    try:
        table = read_arrow(path)
    except (pa.ArrowInvalid, OSError):
        raise _damaged(name, "selection.arrow is not a readable Arrow file (truncated?)") from None
    wrong = [c for c, kind in SELECTION_COLUMNS.items()
             if c not in table.column_names or table.schema.field(c).type != kind or table.column(c).null_count]
    if wrong:
        raise _damaged(name, f"selection.arrow lacks the columns {', '.join(wrong)} as int64/float64 without nulls")
    return table


def selection_problem(root: str | os.PathLike, name: str) -> str | None:
    """What `cache verify` says of a selection: damage, or cache entries it names that are gone; None if sound."""
    try:
        cache = load_selection(root, name).provenance["cache"]
        store = Store(root)
        named = [store.entry("student", cache["student"]), *(store.entry("teacher", k) for k in cache["teachers"])]
        if isinstance(cache.get("embedding"), str):
            named.append(store.entry("embedding", cache["embedding"]))
    except SelectKDError as exc:
        return str(exc)
    gone = [f"{e.kind}/{e.key}" for e in named if not e.exists()]
    if gone:
        return (f"selection {name!r} names cache entries that are gone ({', '.join(gone)}); score them again with "
                f"the --data/--teacher/--student it records (`selectkd cache info selection:{name}`)")
    return None
