"""Arrow <-> numpy for the cache's fixed-size list columns (zero-copy on read)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def fixed_list(values: np.ndarray) -> pa.Array:
    """(N, D...) numpy -> Arrow FixedSizeList of the flattened row (zero-copy on read)."""
    flat = np.ascontiguousarray(values).reshape(len(values), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])


def column_matrix(table: pa.Table, name: str) -> np.ndarray:
    """A FixedSizeList column as an (N, D) numpy array (one chunk: zero-copy); a sliced table gives its rows
    (``flatten`` honours a chunk's offset, ``values`` would not)."""
    col = table.column(name)
    width = col.type.list_size
    chunks = [c.flatten().to_numpy(zero_copy_only=False).reshape(-1, width) for c in col.chunks]
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
