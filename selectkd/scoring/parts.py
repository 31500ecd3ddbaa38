"""The forward loop over a split, part by part: each part is written whole or not at all.

Under torchrun rank r computes parts r, r + world, ...; rank 0 records them all."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .. import parallel
from ..cache.arrays import fixed_list
from ..cache.store import Entry, EntryWriter, part_name
from ..data.rows import Rows
from ..runtime import progress_bar
from .tokens import collate, encode, length_batches

PART_ROWS = 4096


@dataclass(frozen=True)
class Work:
    """Where one score call computes: the device, the rows per part, progress bars, this rank of how many."""

    device: str
    part_rows: int = PART_ROWS
    progress: bool = False
    rank: int = 0
    world: int = 1


def forward_parts(rows: Rows, tokenizer, max_length: int, writer: EntryWriter, run_batch, batch_size: int,
                  description: str, work: Work) -> tuple[int, int]:
    """Tokenise and run ``run_batch`` over every part not yet on disk; return (rows, tokens) done.

    Under torchrun, rank r takes parts r, r + world, ...: each rank writes only its own parts.
    """
    rank, world = work.rank, work.world
    ds = rows.dataset
    n = len(ds)
    part_rows = int(writer.manifest["part_rows"])  # a resumed entry keeps its part size
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    pending = [i for i in range(rank, (n + part_rows - 1) // part_rows, world) if not writer.done(part_name(i))]
    todo = sum(min(part_rows, n - i * part_rows) for i in pending)
    done_rows = done_tokens = 0
    with progress_bar(description, todo, work.progress) as advance:
        for part in pending:
            lo, hi = part * part_rows, min(n, (part + 1) * part_rows)
            chunk = ds[lo:hi]
            pairs = chunk.get("text_pair")
            ids, types = encode(tokenizer, chunk["text"], pairs, max_length)
            lengths = np.array([len(x) for x in ids])
            outputs: dict[str, np.ndarray] = {}
            for batch_rows in length_batches(lengths, batch_size):
                batch = collate([ids[i] for i in batch_rows], pad_id,
                                [types[i] for i in batch_rows] if types is not None else None)
                for name, values in run_batch(batch).items():
                    if name not in outputs:
                        outputs[name] = np.zeros((hi - lo, *values.shape[1:]), dtype=values.dtype)
                    outputs[name][batch_rows] = values
                advance(len(batch_rows))
            table = {"uid": pa.array(np.asarray(chunk["uid"], dtype=np.int64))}
            for name, values in outputs.items():
                table[name] = fixed_list(values)
            writer.write_table(part_name(part), pa.table(table))
            done_rows += hi - lo
            done_tokens += int(lengths.sum())
    return done_rows, done_tokens


def open_writer(entry: Entry, inputs: dict, meta: dict, work: Work) -> EntryWriter:
    """Rank 0 opens (or resumes) the entry and its manifest; the other ranks join after it."""
    writer = EntryWriter(entry, inputs, meta) if work.rank == 0 else None
    parallel.barrier(work.world)
    return writer or EntryWriter(entry, inputs, meta, primary=False)


def gathered(writer: EntryWriter, tokens: int, work: Work) -> tuple[bool, int]:
    """Wait for every rank's parts; rank 0 records them. (True on rank 0, tokens of all ranks)."""
    total = sum(parallel.gather(tokens, work.world))
    if work.rank == 0 and work.world > 1:
        writer.adopt_shared()
    return work.rank == 0, total
