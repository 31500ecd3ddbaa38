"""The content-addressed cache store: Arrow IPC parts + a manifest per key.

Layout: ``<root>/<kind>/<key>/manifest.json`` + ``part-NNNNN.arrow`` (+ extra files such as
``index.faiss``). A key is a hash of every input that changes the numbers. Every file is
written to a temp name and renamed into place; the manifest records each part's checksum
and says ``complete: true`` last, so a killed run leaves whole parts and resumes from them.
A lock file per key keeps two writers apart. Reads are memory-mapped and zero-copy.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa

from ..atomic import atomic_write_bytes, atomic_write_json, discard, locked_file, replacing
from ..errors import CacheError, SelectKDError
from .files import (canonical_json, file_sha256, files_problem, is_own_file, is_plain_name, read_arrow, read_json_file,
                    shape_problem, write_arrow)

# 3: the student's embeddings and faiss index are an entry of their own (kind "embedding"), keyed without the
# teachers; the "student" entry (probe, scores) names it. 2: keys hash every field of the specs (cache/keys.py).
FORMAT_VERSION = 3
DEFAULT_ROOT = "cache"
KINDS = ("teacher", "embedding", "student")
# what readers of a manifest rely on: required fields, and the type of every field that is present
MANIFEST_FIELDS = {"inputs": dict, "files": dict, "complete": bool, "num_rows": int, "data_source": dict,
                   "columns": dict, "teachers": list, "model_name": str, "format_version": int, "embedding": str}
MANIFEST_REQUIRED = ("inputs", "files")


def default_root() -> Path:
    return Path(os.environ.get("SELECTKD_CACHE") or DEFAULT_ROOT)


@dataclass
class Entry:
    """One cache entry (kind, key) on disk."""

    root: Path
    kind: str
    key: str

    @property
    def path(self) -> Path:
        return self.root / self.kind / self.key

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def lock_path(self) -> Path:
        return self.root / self.kind / f".{self.key}.lock"

    def exists(self) -> bool:
        return os.path.lexists(self.manifest_path)

    def damaged(self, why: str) -> CacheError:
        return CacheError(f"cache entry {self.kind}/{self.key} is damaged ({why}); remove it with "
                          f"`selectkd cache rm {self.key}` and re-run")

    def _check_folder(self) -> None:
        """The entry folder must be a folder of the store, not a link to one elsewhere."""
        if self.path.is_symlink():
            raise self.damaged("its folder is a symlink")

    def manifest(self, current: bool = True) -> dict:
        """The manifest, checked: a wrong shape or a file name that leads out of the entry is damage.

        ``current``: an entry of another cache format is refused, naming the fix (only `cache ls`/`info`
        and the nearest-entry diagnostics read one)."""
        self._check_folder()
        try:
            manifest = read_json_file(self.manifest_path)
        except FileNotFoundError:
            raise CacheError(f"no cache entry {self.kind}/{self.key}; run `selectkd score` to compute it") from None
        except ValueError as exc:
            raise self.damaged(str(exc)) from None
        problem = shape_problem(manifest, MANIFEST_FIELDS, MANIFEST_REQUIRED) or files_problem(manifest["files"])
        if problem:
            raise self.damaged(f"manifest.json: {problem}")
        version = manifest.get("format_version", FORMAT_VERSION)
        if current and version != FORMAT_VERSION:
            raise CacheError(f"cache entry {self.kind}/{self.key} is in cache format {version}, this selectkd reads "
                             f"{FORMAT_VERSION}; remove it with `selectkd cache rm {self.key}` and re-score")
        return manifest

    def is_complete(self) -> bool:
        return self.exists() and self.manifest().get("complete") is True

    def write_manifest(self, manifest: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.manifest_path, manifest)

    @contextlib.contextmanager
    def lock(self, wait: bool = True) -> Iterator[None]:
        """Exclusive lock per key: a second writer waits, then finds the entry complete.

        A run that leaves no entry behind (it failed first, or removed the entry) also takes
        its lock file and the folders made for it away again, while it still holds the lock.
        """
        made = [p for p in (self.lock_path.parent, self.root) if not p.exists()]
        busy = CacheError(f"cache entry {self.key} is being written by another process; wait for it")
        fd = locked_file(self.lock_path, wait, busy)
        try:
            yield
        finally:
            if not os.path.lexists(self.path):
                self.lock_path.unlink(missing_ok=True)  # a waiter holding the old file sees it go and retries
                for folder in made:
                    with contextlib.suppress(OSError):
                        folder.rmdir()  # only while empty
            os.close(fd)

    def clean_temp_files(self) -> None:
        self._check_folder()
        if self.path.exists():
            for tmp in self.path.glob(".*.tmp-*"):
                tmp.unlink(missing_ok=True)

    # -- files listed in the manifest -------------------------------------------------
    def files(self) -> dict[str, str]:
        """All checksummed files of the entry: name -> sha256."""
        return dict(self.manifest().get("files", {}))

    def part_names(self) -> list[str]:
        return sorted(name for name in self.files() if name.startswith("part-"))

    def verify(self, names: list[str] | None = None) -> list[str]:
        """Recompute checksums; return the names of files that are missing, differ or are not plain files."""
        expected = self.files()
        bad = []
        for name in names if names is not None else sorted(expected):
            path = self.path / name
            if not is_own_file(path) or file_sha256(path) != expected.get(name):
                bad.append(name)
        return bad

    def check(self, names: list[str] | None = None) -> None:
        bad = self.verify(names)
        if bad:
            raise CacheError(
                f"cache entry {self.kind}/{self.key} is damaged ({', '.join(bad)} fails its checksum or is not a "
                f"plain file); recompute just that with `selectkd score ... --repair`, or remove the entry with "
                f"`selectkd cache rm {self.key}` and re-run"
            )

    def problem(self) -> tuple[str | None, str]:
        """(what is wrong with the entry and its fix, or None; a note for a sound one): `cache verify`."""
        try:
            bad = self.verify()
            note = "" if self.is_complete() else " (incomplete: resume with `selectkd score`)"
        except SelectKDError as exc:
            return str(exc), ""
        if bad:
            return (f"{', '.join(bad)} fails its checksum or is not a plain file; recompute it with `selectkd score ... "
                    f"--repair` or remove the entry with `selectkd cache rm {self.key}`"), ""
        if "index.faiss" in self.files():
            from .index import index_problem

            return index_problem(self), note
        return None, note

    def discard_if_empty(self) -> None:
        """Remove an entry that records no whole file (a first attempt that failed); call under lock."""
        if self.exists() and not self.manifest().get("files") and not self.is_complete():
            shutil.rmtree(self.path, ignore_errors=True)

    def forget(self, names: list[str]) -> None:
        """Drop damaged files from the manifest and mark the entry incomplete, so a run redoes them.

        Only plain names inside the entry are touched; a symlink goes, never what it points at.
        """
        manifest = self.manifest()
        for name in names:
            path = self.path / name
            if not is_plain_name(name) or (path.is_dir() and not path.is_symlink()):
                raise self.damaged(f"{name!r} is not a file of the entry")
            manifest["files"].pop(name, None)
            path.unlink(missing_ok=True)
        manifest["complete"] = False
        self.write_manifest(manifest)

    def part_paths(self, verify: bool = True) -> list[Path]:
        """The paths of a complete entry's parts, in row order (checksums checked unless ``verify=False``)."""
        if not self.is_complete():
            raise CacheError(f"cache entry {self.kind}/{self.key} is incomplete; re-run `selectkd score` to finish it")
        names = self.part_names()
        if not names:
            raise CacheError(f"cache entry {self.kind}/{self.key} has no parts; remove it with `selectkd cache rm {self.key}`")
        if verify:
            self.check(names)
        return [self.path / name for name in names]

    def read_parts(self, verify: bool = True) -> pa.Table:
        """All parts as one memory-mapped table, in row order."""
        return pa.concat_tables([read_arrow(path) for path in self.part_paths(verify)])

    def read_file(self, name: str, verify: bool = True) -> pa.Table:
        if verify:
            self.check([name])
        return read_arrow(self.path / name)

    def size_bytes(self) -> int:
        """Bytes of the entry's own files (symlinks are not followed)."""
        if self.path.is_symlink() or not self.path.is_dir():
            return 0
        return sum(p.lstat().st_size for p in self.path.iterdir() if is_own_file(p))


class Store:
    """A root folder of cache entries."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_root()

    @staticmethod
    def check_key(key: str) -> str:
        """A key (or prefix) is letters and digits only: never empty, a path, '..' or hidden."""
        if not (isinstance(key, str) and key.isascii() and key.isalnum()):
            raise CacheError(f"{key!r} is not a cache key; give the hex key or a prefix of it as "
                             f"`selectkd cache ls` shows it (no paths, not empty)")
        return key

    def entry(self, kind: str, key: str) -> Entry:
        if kind not in KINDS:
            raise CacheError(f"unknown cache kind {kind!r}; valid: {', '.join(KINDS)}")
        return Entry(self.root, kind, self.check_key(key))

    def check_root(self) -> None:
        """The root, where it exists, must be a folder: a file there is refused before any work."""
        if self.root.exists() and not self.root.is_dir():
            raise CacheError(f"cache folder {self.root} is a file, not a folder; give a folder with --cache-dir "
                             f"or SELECTKD_CACHE")

    def check_writable(self) -> None:
        """Refuse a store that cannot be written before any work, instead of failing halfway."""
        self.check_root()
        there = self.root.absolute()
        while not there.exists():  # the nearest folder that exists is where the root would be made
            there = there.parent
        if not there.is_dir():
            raise CacheError(f"cannot make cache folder {self.root}: {there} is a file; give a folder with "
                             f"--cache-dir or SELECTKD_CACHE")
        if not os.access(there, os.W_OK | os.X_OK):
            why = ("read-only file system" if os.statvfs(there).f_flag & os.ST_RDONLY
                   else os.strerror(errno.EACCES).lower())
            raise CacheError(f"cannot write cache folder {self.root} ({why}); choose a writable folder with "
                             f"--cache-dir or SELECTKD_CACHE")

    def entries(self) -> list[Entry]:
        """Every folder (or link) under a kind whose name is a key; other names are not entries."""
        self.check_root()
        found = []
        for kind in KINDS:
            folder = self.root / kind
            if folder.is_dir():
                found += [Entry(self.root, kind, p.name) for p in sorted(folder.iterdir())
                          if (p.is_dir() or p.is_symlink()) and p.name.isascii() and p.name.isalnum()]
        return found

    def find(self, key_prefix: str) -> Entry:
        """The entry whose key starts with ``key_prefix`` (as `git` does with hashes)."""
        self.check_key(key_prefix)
        matches = [e for e in self.entries() if e.key.startswith(key_prefix)]
        if not matches:
            raise CacheError(f"no cache entry matches {key_prefix!r}; `selectkd cache ls` lists them")
        if len(matches) > 1:
            raise CacheError(f"{key_prefix!r} matches {len(matches)} entries; give more of the key")
        return matches[0]

    def remove(self, entry: Entry) -> None:
        """Remove an entry whole; an entry folder that is a symlink loses the link, never its target."""
        with entry.lock():
            discard(entry.path, "removing")


class EntryWriter:
    """Fills one entry part by part; each part is whole or absent, the manifest says which.

    Use inside ``entry.lock()``. ``done(i)`` tells whether part i is already written (resume).
    """

    def __init__(self, entry: Entry, inputs: dict, meta: dict | None = None, primary: bool = True):
        self.entry = entry
        self.primary = primary
        if not primary:  # another rank of a torchrun job: rank 0 made the manifest; parts go to sidecars
            self.manifest = entry.manifest()
            if self.manifest.get("inputs") != json.loads(canonical_json(inputs)):
                raise CacheError(f"cache entry {entry.key} changed under a running job; re-run it")
            return
        manifest = entry.manifest() if entry.exists() else None  # checked before anything in the folder is touched
        entry.path.mkdir(parents=True, exist_ok=True)
        entry.clean_temp_files()
        if manifest is not None and manifest.get("inputs") != json.loads(canonical_json(inputs)):
            raise CacheError(
                f"cache entry {entry.key} was written from other inputs; remove it with `selectkd cache rm {entry.key}`"
            )
        self.manifest = manifest or {
            "kind": entry.kind,
            "key": entry.key,
            "format_version": FORMAT_VERSION,
            "inputs": json.loads(canonical_json(inputs)),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "complete": False,
            "files": {},
        }
        for name, value in (meta or {}).items():  # a resumed entry keeps what it started with
            self.manifest.setdefault(name, value)
        entry.write_manifest(self.manifest)

    def done(self, name: str) -> bool:
        """True when ``name`` is recorded and its bytes still match (a damaged part is redone)."""
        digest = self.manifest["files"].get(name) or self._sidecar_digest(name)
        path = self.entry.path / name
        return digest is not None and is_own_file(path) and file_sha256(path) == digest

    def _sidecar(self, name: str) -> Path:
        return self.entry.path / f".{name}.sha256"

    def _sidecar_digest(self, name: str) -> str | None:
        try:
            return self._sidecar(name).read_text().strip()
        except FileNotFoundError:
            return None

    def adopt_shared(self) -> list[str]:
        """Rank 0, after a barrier: record the parts other ranks wrote (their sidecar checksums)."""
        adopted = []
        for sidecar in sorted(self.entry.path.glob(".*.sha256")):
            name = sidecar.name[1:-len(".sha256")]
            path = self.entry.path / name
            if is_plain_name(name) and is_own_file(path) and file_sha256(path) == sidecar.read_text().strip():
                self.manifest["files"][name] = sidecar.read_text().strip()
                adopted.append(name)
        self.entry.write_manifest(self.manifest)
        for sidecar in self.entry.path.glob(".*.sha256"):
            sidecar.unlink(missing_ok=True)
        return adopted

    def write_table(self, name: str, table: pa.Table) -> None:
        digest = write_arrow(self.entry.path / name, table)
        self.record(name, digest)

    def write_file(self, name: str, write) -> None:
        """Write an extra file with ``write(tmp_path)``, then checksum and rename it."""
        final = self.entry.path / name
        with replacing(final) as tmp:
            write(tmp)
            digest = file_sha256(tmp)
        self.record(name, digest)

    def record(self, name: str, digest: str) -> None:
        if not self.primary:  # one writer per manifest: the others leave a checksum beside the part
            atomic_write_bytes(self._sidecar(name), digest.encode())
            return
        self.manifest["files"][name] = digest
        self.entry.write_manifest(self.manifest)

    def finish(self, **meta: Any) -> dict:
        self.manifest.update(meta)
        self.manifest["complete"] = True
        self.manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.entry.write_manifest(self.manifest)
        return self.manifest


def part_name(index: int) -> str:
    return f"part-{index:05d}.arrow"
