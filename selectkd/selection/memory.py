"""The memory bound of `select`: what choosing from a pool of N rows needs, checked before any work.

Selection reads the cache part by part, so its memory is a few numbers per pool row plus one part; the
per-row figures are peak RSS over rows measured at 100M rows (entropy, ccs) and 10M rows (--dedup) in
bench/results/scale.md, rounded up. A pool past the bound is refused in one line, nothing written.
"""

from __future__ import annotations

import os
import re

from ..specs import SelectSpec
from .dedup import EXACT_ROWS, LIST_ROWS, PROBES, PROJECTED_DIMS, SAMPLE_PER_LIST
from .strategies import SelectionError

ROW_BYTES = 20  # per pool row: the ranking's score, label, masks, priority, strata (18.7 measured at 100M)
CCS_ROW_BYTES = 36  # ccs also holds the teachers' margins and difficulty bins (35.7 measured at 100M)
BASE_BYTES = 320 << 20  # the interpreter, numpy, pyarrow, faiss and one part of scores
UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """'8G', '512M', '2.5g' or bytes -> bytes (powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", str(text), flags=re.IGNORECASE)
    if not m or float(m.group(1)) <= 0:
        raise SelectionError(f"--max-memory {text!r} is not a size like 8G or 512M")
    return int(float(m.group(1)) * UNITS[m.group(2).lower()])


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (what can be used without swapping), else free pages; None unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def needed_bytes(rows: int, spec: SelectSpec, embedding_dim: int = 0) -> int:
    """About the peak memory of choosing from ``rows`` rows with ``spec`` (the pool read part by part)."""
    from .pool import EMBEDDING_PART_ROWS, reads_embeddings

    need = BASE_BYTES + rows * (CCS_ROW_BYTES if spec.strategy == "ccs" else ROW_BYTES)
    if reads_embeddings(spec):
        need += EMBEDDING_PART_ROWS * embedding_dim * 6  # a part of float16 embeddings and its float32 copy
    if spec.dedup is not None:
        if rows <= EXACT_ROWS:
            need += rows * embedding_dim * 8  # every embedding in float32, and the faiss index's copy
        else:  # the training sample (float16 and float32), freed before the projected rows (float16),
            # probed lists and the two orders of rows by list are made
            need += max(rows * SAMPLE_PER_LIST // LIST_ROWS * embedding_dim * 6,
                        rows * (2 * PROJECTED_DIMS + 4 * PROBES + 8 + 8 * PROBES))
    return need


def check_memory(rows: int, spec: SelectSpec, embedding_dim: int, max_memory: int | None = None) -> None:
    """Refuse a pool that choosing would need more memory for than ``max_memory`` (default: available now)."""
    bound = max_memory if max_memory is not None else available_bytes()
    if bound is None:
        return
    need = needed_bytes(rows, spec, embedding_dim)
    if need > bound:
        given = "--max-memory" if max_memory is not None else "the memory available now (--max-memory)"
        raise SelectionError(
            f"selecting from {rows:,} rows with {spec.strategy}{' and --dedup' if spec.dedup is not None else ''} "
            f"needs about {need / 2**30:.1f} GiB, more than {given}: {bound / 2**30:.1f} GiB; select from fewer rows "
            f"(score with --limit), free memory or use a larger machine, or raise --max-memory if swapping is acceptable")
