"""Which rows train: one ActiveSet interface for every selection mode.

``rows_for_epoch(epoch)`` gives the training positions of an epoch and ``kd_mask`` the rows of a batch
that get KD (None: all). Modes: every row (full-data KD), a saved selection (static), re-chosen with
the current student every K epochs (dynamic), and the paper's in-batch mode (CE on every row, KD on
the top fraction of each batch). Every mode keeps its size fixed, so the schedule is known up front.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..selection.strategies import batch_priority
from ..specs import SelectSpec

RESCORE_BY = ("random", "cluster")


class ActiveSet:
    """Every position in ``rows`` trains, every epoch (full-data KD; static: a saved selection)."""

    def __init__(self, rows: np.ndarray | None, size: int | None = None):
        self.current = rows
        self.size = len(rows) if size is None else size
        self.selected_epoch: int | None = None

    def rows_for_epoch(self, epoch: int) -> np.ndarray:
        return self.current

    def kd_mask(self, student_logits, teacher_logits: np.ndarray):
        """The batch rows that get KD (a tensor of indices), or None for all of them."""
        return None

    def head_rows(self) -> np.ndarray:
        """The rows --head-init probe fits the student's head on: those of the first epoch (dynamic: the
        first selection, from the cached scores, chosen now and kept for epoch 0)."""
        return self.rows_for_epoch(0)

    def restore(self, rows: list[int] | None, selected_epoch: int | None) -> None:
        """Continue from a checkpoint's rows (resume)."""
        if rows is not None:
            self.current = np.asarray(rows, dtype=np.int64)
        self.selected_epoch = selected_epoch


class InBatch(ActiveSet):
    """Every row trains with CE; KD goes to the top ``fraction`` of each batch by ``criterion``."""

    def __init__(self, rows: np.ndarray, fraction: float, criterion: str, seed: int):
        super().__init__(rows)
        self.fraction, self.criterion, self.seed = fraction, criterion, seed
        self.rng = np.random.default_rng(seed)

    def rows_for_epoch(self, epoch: int) -> np.ndarray:
        self.rng = np.random.default_rng([self.seed, epoch])  # the same draws whether resumed or not
        return self.current

    def kd_mask(self, student_logits, teacher_logits: np.ndarray):
        import torch

        from .losses import top_fraction

        z = student_logits.detach().float().cpu().numpy()
        priority = batch_priority(self.criterion, z, teacher_logits, self.rng)
        return top_fraction(torch.from_numpy(np.ascontiguousarray(priority)), self.fraction).to(student_logits.device)


def rescore_sample(n_rows: int, fraction: float, rng: np.random.Generator,
                   groups: np.ndarray | None = None) -> np.ndarray:
    """The rows to re-score: a random ``fraction`` of the pool, or the same fraction of every
    group (k-means cluster), shared by largest remainder so each cluster keeps its share."""
    from ..selection.choose import largest_remainder

    k = max(1, int(round(fraction * n_rows)))
    if groups is None:
        return np.sort(rng.choice(n_rows, k, replace=False))
    quotas = largest_remainder(np.bincount(groups), k)
    picked = [rng.choice(np.flatnonzero(groups == g), q, replace=False) for g, q in enumerate(quotas) if q]
    return np.sort(np.concatenate(picked))


class Dynamic(ActiveSet):
    """``size`` rows chosen by ``spec`` from ``pool``: at epoch 0 from the cached (probe) scores, then
    every ``every`` epochs from the current student's scores of (a ``rescore_pool`` fraction of) the pool;
    ``every=0`` keeps the first choice for the whole run (a static selection, made inside distill).

    ``scored`` is the ScoreResult of the run (student entry: probe scores, embeddings); ``teacher_logits(
    positions) -> (T, n, C)``; ``student_scores(positions, embeddings) -> (logits, embeddings | None)``.
    """

    def __init__(self, uids: np.ndarray, labels: np.ndarray, pool: np.ndarray, spec: SelectSpec, size: int, *,
                 scored, teacher_logits: Callable, student_scores: Callable, every: int = 1,
                 rescore_pool: float = 1.0, rescore_by: str = "random"):
        super().__init__(None, size)
        self.uids, self.labels, self.pool, self.spec = uids, labels, pool, spec
        self.scored, self.teacher_logits, self.student_scores = scored, teacher_logits, student_scores
        self.every, self.rescore_pool, self.rescore_by = every, rescore_pool, rescore_by
        self._clusters: np.ndarray | None = None

    def rows_for_epoch(self, epoch: int) -> np.ndarray:
        if self.selected_epoch != epoch and (self.current is None or (self.every and epoch % self.every == 0)):
            self.current = self.initial() if epoch == 0 else self.reselect(epoch)
            self.selected_epoch = epoch
        return self.current

    def _choose(self, pool, size: int, clusters: int, seed: int) -> np.ndarray:
        from ..selection.choose import choose

        s = self.spec
        return choose(pool, s.strategy, size, criterion=s.criterion, clusters=clusters, per_class=s.per_class,
                      sample=s.sample, temperature=s.sample_temperature, seed=seed, prune_hard=s.prune_hard,
                      bins=s.bins).indices

    def initial(self) -> np.ndarray:
        """Epoch 0: the student's fresh head knows nothing, so use the cached probe scores."""
        from ..selection.pool import load_pool, needs_teacher_logits, positions_of

        store, s = self.scored.store, self.spec
        pool = load_pool(store.entry("student", self.scored.student.key),
                         [store.entry("teacher", t.key) for t in self.scored.teachers],
                         embeddings=s.strategy == "coverage", teacher_logits=needs_teacher_logits(s.strategy, s.criterion))
        if len(self.pool) < len(self.uids):  # never choose a held-out dev row
            pool = pool.take(np.flatnonzero(np.isin(pool.uids, self.uids[self.pool])))
        chosen = self._choose(pool, self.size, s.clusters, s.seed)
        return np.sort(positions_of(self.uids, pool.uids[chosen]))

    def reselect(self, epoch: int) -> np.ndarray:
        """Re-score (a fraction of) the pool with the current student, then choose."""
        from ..selection.strategies import get_strategy, pool_from_logits

        rng = np.random.default_rng(self.spec.seed + 1000 + epoch)
        pool_idx = self.pool
        if self.rescore_pool < 1:
            groups = self.clusters()
            pool_idx = self.pool[rescore_sample(len(self.pool), self.rescore_pool, rng,
                                                groups[self.pool] if groups is not None else None)]
        teacher = self.teacher_logits(pool_idx)
        if not get_strategy(self.spec.strategy).needs_student and self.spec.dedup is None:  # no student pass to pay for
            logits, emb = np.zeros(teacher.shape[1:], dtype=np.float32), None
        else:
            logits, emb = self.student_scores(pool_idx, self.spec.strategy == "coverage")
        pool = pool_from_logits(logits, teacher, uids=self.uids[pool_idx],
                                labels=self.labels[pool_idx], embeddings=emb)
        picked = pool_idx[self._choose(pool, min(self.size, len(pool_idx)), min(self.spec.clusters, len(pool_idx)),
                                       self.spec.seed + epoch)]
        if len(picked) < self.size:  # a re-scored fraction: top up with random unscored rows to keep the budget
            rest = np.setdiff1d(self.pool, picked)
            picked = np.concatenate([picked, rng.choice(rest, self.size - len(picked), replace=False)])
        return np.sort(picked)

    def clusters(self) -> np.ndarray | None:
        """--rescore-by cluster: the k-means cluster of every row, from the cached student embeddings (once)."""
        if self.rescore_by != "cluster":
            return None
        if self._clusters is None:
            from ..selection.pool import load_pool, positions_of
            from ..selection.strategies import kmeans_clusters

            pool = load_pool(self.scored.store.entry("student", self.scored.student.key), [], embeddings=True,
                             verify=False)
            groups = np.zeros(len(self.uids), dtype=np.int64)
            groups[positions_of(self.uids, pool.uids)] = kmeans_clusters(
                pool.embeddings, min(self.spec.clusters, len(self.uids)), seed=self.spec.seed)
            self._clusters = groups
        return self._clusters
