"""Reading the cache into a Pool: the student's scores, teacher logits and embeddings, joined by uid.

``load_pool`` reads it whole (joined by uid in any order); ``CacheParts`` streams it a part of rows at a
time for ``choose_parts``, so a pool of 100M rows needs memory for a few numbers per row, not its columns."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa

from ..cache.store import Entry, Store
from ..errors import CacheError
from .choose import Parts
from .strategies import DEFAULT_CRITERION, Pool, SelectionError, check_criterion, get_strategy

PART_ROWS = 1 << 20  # rows per part when the pool is streamed: ~40 MB of columns (3 classes, one teacher)
EMBEDDING_PART_ROWS = 1 << 18  # with embeddings: 384 float32 dimensions make 400 MB a part


def positions_of(uids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Index into ``uids`` of each of ``wanted`` (an exact join by uid, never by position)."""
    uids = np.asarray(uids, dtype=np.int64)
    wanted = np.asarray(wanted, dtype=np.int64)
    order = np.argsort(uids, kind="stable")
    at = np.searchsorted(uids, wanted, sorter=order)
    at = np.minimum(at, len(uids) - 1)
    pos = order[at]
    missing = uids[pos] != wanted
    if missing.any():
        raise CacheError(f"uid {int(wanted[missing][0])} is not in the cache ({int(missing.sum())} missing); "
                         f"re-score the data with `selectkd score`")
    return pos


def embedding_entry(student: Entry) -> Entry:
    """The embedding entry (parts + faiss index) that ``student``'s probe and scores were computed from."""
    key = student.manifest().get("embedding")
    if not isinstance(key, str):
        raise student.damaged("its manifest names no embedding entry")
    return Store(student.root).entry("embedding", key)


def needs_teacher_logits(strategy: str, criterion: str = DEFAULT_CRITERION, drop_disagreement: bool = False) -> bool:
    """Whether choosing reads the teachers' logits (reading them costs seconds at 10M rows)."""
    ranks_by = [get_strategy(strategy)] + ([check_criterion(criterion)] if strategy == "coverage" else [])
    return drop_disagreement or any(s.needs_teachers and s.name != "kl" for s in ranks_by)  # kl is in scores.arrow


def reads_embeddings(spec) -> bool:
    """Whether choosing with ``spec`` (a SelectSpec) reads the student's embeddings: its strategy, or --dedup."""
    return get_strategy(spec.strategy).needs_embeddings or spec.dedup is not None


def load_pool(student: Entry, teachers: Sequence[Entry], embeddings: bool = False, verify: bool = True,
              teacher_logits: bool = True) -> Pool:
    """The student's scores (+ teacher logits, embeddings) as aligned arrays, joined by uid.

    ``verify=False`` skips the checksums when the caller (``score``) has just checked them;
    ``teacher_logits=False`` leaves the teachers' logits unread when the strategy needs none.
    """
    manifest = _check_same_data(student, teachers)
    scores = student.read_file("scores.arrow", verify=verify)
    uids = scores.column("uid").to_numpy()
    from ..cache.arrays import column_matrix

    pool = Pool(
        uids=uids.astype(np.int64, copy=False),
        labels=scores.column("label").to_numpy().astype(np.int64, copy=False),
        entropy=scores.column("entropy").to_numpy(),
        margin=scores.column("margin").to_numpy(),
        least_confidence=scores.column("least_confidence").to_numpy(),
    )
    if "kl" in scores.column_names:
        kl = column_matrix(scores, "kl")
        student_teachers = manifest.get("teachers", [])
        keep = [student_teachers.index(t.key) for t in teachers if t.key in student_teachers]
        pool.kl = kl[:, keep] if keep else None
    if teachers and teacher_logits:
        logits = []
        for t in teachers:
            table = t.read_parts(verify=verify)
            logits.append(column_matrix(table, "logits")[positions_of(table.column("uid").to_numpy(), uids)])
        pool.teacher_logits = np.stack(logits)
    if embeddings:
        table = embedding_entry(student).read_parts(verify=verify)
        emb = column_matrix(table, "embedding")
        pos = positions_of(table.column("uid").to_numpy(), uids)
        pool.embeddings = emb if np.array_equal(pos, np.arange(len(pos))) else emb[pos]  # aligned: no 2nd copy
    return pool


class Misaligned(CacheError):
    """The entries do not hold the same uids in the same order: the pool must be joined whole (load_pool)."""


def _batch_count(path: Path) -> int:
    with pa.memory_map(str(path), "r") as source:
        return pa.ipc.open_file(source).num_record_batches


def _column(batch: pa.RecordBatch, name: str) -> np.ndarray:
    """A column as numpy, copied out of the memory map (so the map can close); fixed-size lists as (N, D)."""
    col = batch.column(name)
    if pa.types.is_fixed_size_list(col.type):
        return np.array(col.flatten().to_numpy(zero_copy_only=False)).reshape(len(col), col.type.list_size)
    return np.array(col.to_numpy(zero_copy_only=False))


class _Cursor:
    """Consecutive rows of some columns of Arrow files read in order, a record batch at a time: each batch's
    memory map is closed once its rows are copied out, so memory never holds more than about one batch."""

    def __init__(self, paths: list[Path], columns: list[str]):
        self.columns = columns
        self.batches = ((path, i) for path in paths for i in range(_batch_count(path)))
        self.buffer: dict[str, np.ndarray] = {}
        self.at = self.size = 0

    def _next(self) -> None:
        try:
            path, i = next(self.batches)
        except StopIteration:
            raise CacheError("a cache entry holds fewer rows than its student scores; check it with "
                             "`selectkd cache verify`") from None
        with pa.memory_map(str(path), "r") as source:
            batch = pa.ipc.open_file(source).get_batch(i)
            self.buffer = {c: _column(batch, c) for c in self.columns}
            self.at, self.size = 0, batch.num_rows

    def take(self, m: int) -> dict[str, np.ndarray]:
        pieces = []
        while m > 0:
            if self.at == self.size:
                self._next()
                continue
            step = min(m, self.size - self.at)
            pieces.append({c: v[self.at:self.at + step] for c, v in self.buffer.items()})
            self.at += step
            m -= step
        if len(pieces) == 1:
            return pieces[0]
        return {c: np.concatenate([p[c] for p in pieces]) for c in self.columns}


def concat_pools(pools: list[Pool]) -> Pool:
    """Pools of the same columns one after the other (teacher logits along their row axis)."""
    def joined(name: str):
        values = [getattr(p, name) for p in pools]
        if values[0] is None:
            return None
        return np.concatenate(values, axis=1 if name == "teacher_logits" else 0)

    return Pool(**{f.name: joined(f.name) for f in fields(Pool)})


class CacheParts(Parts):
    """A scored pool read from its cache entries ``PART_ROWS`` rows at a time (``choose_parts``).

    Entries that ``score`` wrote hold the same uids in the same order; if one does not, iterating raises
    ``Misaligned`` and the caller joins the pool whole with ``load_pool``.
    """

    def __init__(self, student: Entry, teachers: Sequence[Entry], embeddings: bool = False, verify: bool = True,
                 teacher_logits: bool = True, part_rows: int = PART_ROWS, dedup: bool = False):
        manifest = _check_same_data(student, teachers)
        self.part_rows = min(part_rows, EMBEDDING_PART_ROWS) if embeddings else part_rows
        self.scores = student.path / "scores.arrow"
        if verify:
            student.check(["scores.arrow"])
        with pa.memory_map(str(self.scores), "r") as source:
            reader = pa.ipc.open_file(source)
            self.rows = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
            names = reader.schema.names
        self.score_columns = [c for c in ("uid", "label", "entropy", "margin", "least_confidence", "kl") if c in names]
        student_teachers = manifest.get("teachers", [])
        self.kl_keep = [student_teachers.index(t.key) for t in teachers if t.key in student_teachers]
        self.teacher_files = [t.part_paths(verify) for t in teachers] if teacher_logits else []
        self.embedding_files = embedding_entry(student).part_paths(verify) if embeddings or dedup else None
        self.with_embeddings = embeddings

    def __iter__(self) -> Iterator[Pool]:
        scores = _Cursor([self.scores], self.score_columns)
        teachers = [_Cursor(files, ["uid", "logits"]) for files in self.teacher_files]
        embeddings = _Cursor(self.embedding_files, ["uid", "embedding"]) if self.with_embeddings else None
        for lo in range(0, self.rows, self.part_rows):
            m = min(self.part_rows, self.rows - lo)
            s = scores.take(m)
            uids = s["uid"].astype(np.int64, copy=False)
            part = Pool(uids=uids, labels=s["label"].astype(np.int64, copy=False), entropy=s["entropy"],
                        margin=s["margin"], least_confidence=s["least_confidence"])
            if "kl" in s:
                part.kl = s["kl"][:, self.kl_keep] if self.kl_keep else None
            if teachers:
                logits = []
                for cursor in teachers:
                    t = cursor.take(m)
                    _aligned(t["uid"], uids)
                    logits.append(t["logits"])
                part.teacher_logits = np.stack(logits)
            if embeddings is not None:
                e = embeddings.take(m)
                _aligned(e["uid"], uids)
                part.embeddings = e["embedding"]
            yield part

    def sample(self, positions: np.ndarray) -> Pool:
        pieces, lo = [], 0
        for part in self:
            hi = lo + len(part)
            inside = positions[(positions >= lo) & (positions < hi)] - lo
            if len(inside):
                pieces.append(part.take(inside))
            lo = hi
        return concat_pools(pieces)

    def embedding_chunks(self) -> Iterator[np.ndarray]:
        if self.embedding_files is None:
            raise SelectionError("--dedup needs the student's embeddings; give --student")
        scores = _Cursor([self.scores], ["uid"])
        embeddings = _Cursor(self.embedding_files, ["uid", "embedding"])
        for lo in range(0, self.rows, EMBEDDING_PART_ROWS):
            m = min(EMBEDDING_PART_ROWS, self.rows - lo)
            e = embeddings.take(m)
            _aligned(e["uid"], scores.take(m)["uid"])
            yield e["embedding"]


def _aligned(uids: np.ndarray, wanted: np.ndarray) -> None:
    if not np.array_equal(uids, wanted):
        raise Misaligned("the cache entries hold their rows in another order than the student scores")


def _check_same_data(student: Entry, teachers: Sequence[Entry]) -> dict:
    """The student's manifest, once every teacher entry is known to be scored on the same data and split."""
    manifest = student.manifest()
    data = manifest["inputs"].get("data"), manifest["inputs"].get("split")
    for t in teachers:
        tin = t.manifest()["inputs"]
        if (tin.get("data"), tin.get("split")) != data:
            raise SelectionError(
                f"teacher cache {t.key[:12]} was scored on other data or split ({tin.get('split')}) than student "
                f"cache {student.key[:12]} ({data[1]}); score both with the same --data and --split"
            )
    return manifest
