"""The faiss index beside an embedding entry (``index.faiss``: uid -> embedding), read back and checked.

``score`` builds it over every part (selectkd.scoring.student.build_index); ``read_index`` is how a user
or tool searches the cached embeddings (``index.search(query, k)`` gives uids). An index whose size or row
count is not its entry's (written by another tool, or for another student) is refused in one line.
"""

from __future__ import annotations

from .store import Entry
from ..errors import CacheError

INDEX = "index.faiss"


def read_index(entry: Entry, verify: bool = True):
    """The entry's faiss index, after its checksum and a check against the entry's embedding size and rows."""
    import faiss

    if verify:
        entry.check([INDEX])
    index = faiss.read_index(str(entry.path / INDEX))
    problem = index_problem(entry, index)
    if problem:
        raise CacheError(f"cache entry {entry.kind}/{entry.key[:12]}: {problem}")
    return index


def index_problem(entry: Entry, index=None) -> str | None:
    """What is wrong with the entry's index (another embedding size or row count), or None."""
    import faiss

    if index is None:
        index = faiss.read_index(str(entry.path / INDEX))
    manifest = entry.manifest()
    dim, rows = manifest.get("embedding_dim"), manifest.get("num_rows")
    fix = f"remove the entry with `selectkd cache rm {entry.key}` and score again"
    if dim is not None and index.d != dim:
        return f"{INDEX} is built for {index.d}-dimensional embeddings, the entry holds {dim}; {fix}"
    if rows is not None and index.ntotal != rows:
        return f"{INDEX} holds {index.ntotal:,} rows, the entry {rows:,}; {fix}"
    return None
