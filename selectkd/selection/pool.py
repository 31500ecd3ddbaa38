"""Reading the cache into a Pool: the student's scores, teacher logits and embeddings, joined by uid."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..cache.store import Entry, Store
from ..errors import CacheError
from .strategies import DEFAULT_CRITERION, Pool, SelectionError, check_criterion, get_strategy


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


def load_pool(student: Entry, teachers: Sequence[Entry], embeddings: bool = False, verify: bool = True,
              teacher_logits: bool = True) -> Pool:
    """The student's scores (+ teacher logits, embeddings) as aligned arrays, joined by uid.

    ``verify=False`` skips the checksums when the caller (``score``) has just checked them;
    ``teacher_logits=False`` leaves the teachers' logits unread when the strategy needs none.
    """
    manifest = student.manifest()
    data = manifest["inputs"].get("data"), manifest["inputs"].get("split")
    for t in teachers:
        tin = t.manifest()["inputs"]
        if (tin.get("data"), tin.get("split")) != data:
            raise SelectionError(
                f"teacher cache {t.key[:12]} was scored on other data or split ({tin.get('split')}) than student "
                f"cache {student.key[:12]} ({data[1]}); score both with the same --data and --split"
            )
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
