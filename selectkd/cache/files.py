"""The files of the store, written whole and read back with suspicion: Arrow IPC parts with their
sha256, and JSON whose shape and names are checked before anything trusts them."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..atomic import replacing

PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # one file or folder name: no separator, '..' or dot-file


def is_plain_name(name: object) -> bool:
    """A name read from the store may only name something directly inside its own folder."""
    return isinstance(name, str) and ".." not in name and bool(PLAIN_NAME.match(name))


def is_own_file(path: Path) -> bool:
    """A regular file at ``path`` itself: a symlink (which may point anywhere) or a folder is not one."""
    return not path.is_symlink() and path.is_file()


def shape_problem(obj: object, fields: dict[str, type], required: tuple[str, ...]) -> str | None:
    """What is wrong with the shape of a JSON object read back from the store, or None."""
    if not isinstance(obj, dict):
        return f"not a JSON object but {type(obj).__name__}"
    missing = [name for name in required if name not in obj]
    if missing:
        return f"no {', '.join(missing)}"
    wrong = [name for name, kind in fields.items() if name in obj and not isinstance(obj[name], kind)]
    return f"{', '.join(wrong)} of the wrong type" if wrong else None


def files_problem(files: dict) -> str | None:
    """A ``files`` map (name -> sha256) may only name plain files inside its folder."""
    for name, digest in files.items():
        if not is_plain_name(name):
            return f"it names {name!r}, which is not a file inside its folder"
        if not isinstance(digest, str):
            return f"the checksum of {name} is not text"
    return None


def read_json_file(path: Path) -> object:
    """JSON from a file of the store; ValueError for a symlink, a folder, bad UTF-8 or bad JSON."""
    if path.is_symlink():
        raise ValueError(f"{path.name} is a symlink")
    try:
        return json.loads(path.read_text())
    except IsADirectoryError:
        raise ValueError(f"{path.name} is a folder") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path.name} is not UTF-8 text") from None
    except json.JSONDecodeError:
        raise ValueError(f"{path.name} is not valid JSON") from None


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


BATCH_ROWS = 1 << 20  # record batches of at most this many rows: a reader can stream a large file batch by batch


def write_arrow(path: Path, table: pa.Table) -> str:
    """Write ``table`` as an Arrow IPC file (record batches of ``BATCH_ROWS``) via temp + rename; return its sha256."""
    with replacing(path) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=BATCH_ROWS)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        digest = file_sha256(tmp)
    return digest


def read_arrow(path: Path) -> pa.Table:
    """Memory-map an Arrow IPC file: the columns point into the page cache, nothing is copied."""
    source = pa.memory_map(str(path), "r")
    return pa.ipc.open_file(source).read_all()


