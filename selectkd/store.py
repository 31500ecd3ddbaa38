"""The content-addressed cache store: Arrow IPC parts + a manifest per key.

Layout: ``<root>/<kind>/<key>/manifest.json`` + ``part-NNNNN.arrow`` (+ extra files such as
``index.faiss``). A key is a hash of every input that changes the numbers. Every file is
written to a temp name and renamed into place; the manifest records each part's checksum
and says ``complete: true`` last, so a killed run leaves whole parts and resumes from them.
A lock file per key keeps two writers apart. Reads are memory-mapped and zero-copy.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa

from .atomic import _temp_beside, atomic_write_bytes, atomic_write_json
from .errors import CacheError

FORMAT_VERSION = 1
DEFAULT_ROOT = "cache"
KINDS = ("teacher", "student")


def default_root() -> Path:
    return Path(os.environ.get("SELECTKD_CACHE") or DEFAULT_ROOT)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def hash_inputs(inputs: dict) -> str:
    """The key of a cache entry: sha256 of the canonical JSON of its inputs."""
    payload = canonical_json({"format_version": FORMAT_VERSION, **inputs})
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_arrow(path: Path, table: pa.Table) -> str:
    """Write ``table`` as an Arrow IPC file via temp + rename; return its sha256."""
    with _temp_beside(path) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        digest = file_sha256(tmp)
        os.replace(tmp, path)
    return digest


def read_arrow(path: Path) -> pa.Table:
    """Memory-map an Arrow IPC file: the columns point into the page cache, nothing is copied."""
    source = pa.memory_map(str(path), "r")
    return pa.ipc.open_file(source).read_all()


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
        return self.manifest_path.exists()

    def manifest(self) -> dict:
        try:
            return json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            raise CacheError(f"no cache entry {self.kind}/{self.key}; run `selectkd score` to compute it") from None
        except json.JSONDecodeError:
            raise CacheError(
                f"manifest of {self.kind}/{self.key} is damaged; remove it with `selectkd cache rm {self.key}` and re-run"
            ) from None

    def is_complete(self) -> bool:
        return self.exists() and bool(self.manifest().get("complete"))

    def write_manifest(self, manifest: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.manifest_path, manifest)

    @contextlib.contextmanager
    def lock(self, wait: bool = True) -> Iterator[None]:
        """Exclusive lock per key: a second writer waits, then finds the entry complete."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+") as f:
            flags = fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB)
            try:
                fcntl.flock(f.fileno(), flags)
            except BlockingIOError:
                raise CacheError(f"cache entry {self.key} is being written by another process; wait for it") from None
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def clean_temp_files(self) -> None:
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
        """Recompute checksums; return the names of files that are missing or differ."""
        expected = self.files()
        bad = []
        for name in names if names is not None else sorted(expected):
            path = self.path / name
            if not path.exists() or file_sha256(path) != expected.get(name):
                bad.append(name)
        return bad

    def check(self, names: list[str] | None = None) -> None:
        bad = self.verify(names)
        if bad:
            raise CacheError(
                f"cache entry {self.kind}/{self.key} is damaged ({', '.join(bad)} fails its checksum); "
                f"recompute just that with `selectkd score ... --repair`, or remove the entry with "
                f"`selectkd cache rm {self.key}` and re-run"
            )

    def discard_if_empty(self) -> None:
        """Remove an entry that records no whole file (a first attempt that failed); call under lock."""
        if self.exists() and not self.manifest().get("files") and not self.is_complete():
            shutil.rmtree(self.path, ignore_errors=True)

    def forget(self, names: list[str]) -> None:
        """Drop damaged files from the manifest and mark the entry incomplete, so a run redoes them."""
        manifest = self.manifest()
        for name in names:
            manifest["files"].pop(name, None)
            (self.path / name).unlink(missing_ok=True)
        manifest["complete"] = False
        self.write_manifest(manifest)

    def read_parts(self, verify: bool = True) -> pa.Table:
        """All parts as one memory-mapped table, in row order."""
        if not self.is_complete():
            raise CacheError(f"cache entry {self.kind}/{self.key} is incomplete; re-run `selectkd score` to finish it")
        names = self.part_names()
        if verify:
            self.check(names)
        tables = [read_arrow(self.path / name) for name in names]
        if not tables:
            raise CacheError(f"cache entry {self.kind}/{self.key} has no parts; remove it with `selectkd cache rm {self.key}`")
        return pa.concat_tables(tables)

    def read_file(self, name: str, verify: bool = True) -> pa.Table:
        if verify:
            self.check([name])
        return read_arrow(self.path / name)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.glob("*") if p.is_file())


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

    def entries(self) -> list[Entry]:
        found = []
        for kind in KINDS:
            folder = self.root / kind
            if folder.is_dir():
                found += [Entry(self.root, kind, p.name) for p in sorted(folder.iterdir()) if p.is_dir()]
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
        with entry.lock():
            trash = entry.path.with_name(f".{entry.key}.removing-{os.getpid()}")
            os.replace(entry.path, trash)
            shutil.rmtree(trash)


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
        entry.path.mkdir(parents=True, exist_ok=True)
        entry.clean_temp_files()
        manifest = entry.manifest() if entry.exists() else None
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
        return digest is not None and path.exists() and file_sha256(path) == digest

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
            if path.exists() and file_sha256(path) == sidecar.read_text().strip():
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
        with _temp_beside(final) as tmp:
            write(tmp)
            digest = file_sha256(tmp)
            os.replace(tmp, final)
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
