"""The strategy registry: each strategy ranks a Pool of plain numpy arrays.

Register one with ``@strategy(name, description)``; ``selectkd select --list`` shows them.
``batch_priority`` ranks the rows of one training batch by the same registered strategies
(distill's in-batch selection). PAPER.md explains why plain global top-k by uncertainty collapses at 10%."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

import numpy as np

from ..errors import SelectKDError
from ..specs import DEFAULT_BINS, DEFAULT_CLUSTERS, DEFAULT_CRITERION, DEFAULT_PRUNE_HARD
from ..uncertainty import entropy, kl_divergence, least_confidence, margin, softmax


class SelectionError(SelectKDError):
    """A selection cannot be made or found as asked (strategy, budget, name, caches)."""


@dataclass
class Pool:
    """Every row of a scored split as aligned arrays: row i is ``uids[i]`` everywhere.

    ``kl`` is (N, T) over teachers; ``teacher_logits`` (T, N, C); ``embeddings`` (N, D),
    L2-normalised. The optional ones are None when the cache has no teacher / was not asked.
    """

    uids: np.ndarray
    labels: np.ndarray
    entropy: np.ndarray
    margin: np.ndarray
    least_confidence: np.ndarray
    kl: np.ndarray | None = None
    teacher_logits: np.ndarray | None = None
    embeddings: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.uids)

    def take(self, idx: np.ndarray) -> Pool:
        """The rows at ``idx`` (e.g. all but a held-out dev part); teacher_logits are indexed on axis 1."""
        def part(name: str, value: np.ndarray | None) -> np.ndarray | None:
            return None if value is None else value[:, idx] if name == "teacher_logits" else value[idx]

        return Pool(**{f.name: part(f.name, getattr(self, f.name)) for f in fields(self)})


@dataclass
class Ranking:
    """A strategy's verdict: ``score`` per row, ranked highest first unless ``higher_first`` is False.

    ``groups`` (int per row) asks ``choose`` to share the budget across groups: in proportion to
    their size, or, with ``share`` (a weight per row), in proportion to the summed weight of their
    rows, no group getting more rows than it has (the rest goes to the others). ``exclude`` marks rows
    the strategy never picks. ``draw`` makes ``choose`` draw rows at random instead of taking the top:
    "proportional" with probability ∝ score, "uniform" with equal probability (without replacement).
    """

    score: np.ndarray
    higher_first: bool = True
    groups: np.ndarray | None = None
    criterion: str | None = None
    exclude: np.ndarray | None = None
    share: np.ndarray | None = None
    draw: str | None = None

    @property
    def priority(self) -> np.ndarray:
        """Higher = chosen first, whichever way the score reads."""
        s = np.asarray(self.score, dtype=np.float64)
        return s if self.higher_first else -s


StrategyFn = Callable[..., Ranking]


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    fn: StrategyFn
    needs_teachers: bool = False
    needs_embeddings: bool = False
    needs_student: bool = True  # False: dynamic re-selection needs no student pass over the pool


STRATEGIES: dict[str, Strategy] = {}


def strategy(name: str, description: str, *, needs_teachers: bool = False, needs_embeddings: bool = False,
             needs_student: bool = True) -> Callable[[StrategyFn], StrategyFn]:
    """Register ``fn(pool, *, rng, criterion, clusters, seed, prune_hard, bins) -> Ranking`` under ``name``
    (a strategy takes the keywords it uses and ``**_``)."""

    def register(fn: StrategyFn) -> StrategyFn:
        STRATEGIES[name] = Strategy(name, description, fn, needs_teachers, needs_embeddings, needs_student)
        return fn

    return register


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise SelectionError(f"unknown strategy {name!r}; valid: {', '.join(STRATEGIES)} (`selectkd select --list`)")
    return STRATEGIES[name]


def teacher_probs(pool: Pool, what: str) -> np.ndarray:
    """Mean of the teachers' probabilities, (N, C)."""
    if pool.teacher_logits is None or len(pool.teacher_logits) == 0:
        raise SelectionError(f"{what} needs teacher logits; give --teacher (scored with `selectkd score`)")
    return np.mean([softmax(t) for t in pool.teacher_logits], axis=0)


@strategy("entropy", "student entropy, highest first")
def by_entropy(pool: Pool, **_: object) -> Ranking:
    return Ranking(np.asarray(pool.entropy, dtype=np.float64), True)


@strategy("margin", "student top-1 minus top-2 probability, smallest first")
def by_margin(pool: Pool, **_: object) -> Ranking:
    return Ranking(np.asarray(pool.margin, dtype=np.float64), False)


@strategy("least_confidence", "student 1 - max probability, highest first")
def by_least_confidence(pool: Pool, **_: object) -> Ranking:
    return Ranking(np.asarray(pool.least_confidence, dtype=np.float64), True)


@strategy("kl", "KL(teacher || student) averaged over teachers, largest first", needs_teachers=True)
def by_kl(pool: Pool, **_: object) -> Ranking:
    if pool.kl is None or pool.kl.shape[1] == 0:
        raise SelectionError("strategy kl needs a student scored against teachers; give --teacher")
    return Ranking(np.asarray(pool.kl, dtype=np.float64).mean(axis=1), True)


@strategy("teacher_entropy", "entropy of the teachers' mean probabilities, highest first", needs_teachers=True,
          needs_student=False)
def by_teacher_entropy(pool: Pool, **_: object) -> Ranking:
    return Ranking(entropy(teacher_probs(pool, "strategy teacher_entropy")), True)


@strategy("random", "a seeded random permutation: the baseline to beat, and the measured default at 10%",
          needs_student=False)
def by_random(pool: Pool, *, rng: np.random.Generator, **_: object) -> Ranking:
    return Ranking(rng.random(len(pool)), True)


@strategy("coverage", "the criterion ranked inside faiss k-means clusters of the student embeddings; "
          "the budget is shared across clusters by size", needs_embeddings=True)
def by_coverage(pool: Pool, *, rng: np.random.Generator, criterion: str = DEFAULT_CRITERION,
                clusters: int = DEFAULT_CLUSTERS, seed: int = 0, **_: object) -> Ranking:
    inner = check_criterion(criterion).fn(pool, rng=rng, seed=seed)
    return Ranking(inner.score, inner.higher_first, kmeans_clusters(pool.embeddings, clusters, seed), criterion,
                   exclude=inner.exclude, draw=inner.draw)


CONTRADICTION = 0.9  # ccs: the teachers' probability at which a prediction against the gold label counts as confident


def contradicted(probs: np.ndarray, labels: np.ndarray, threshold: float) -> np.ndarray:
    """Mask of rows whose known gold label (>= 0) the teachers' mean prediction ``probs`` contradicts with
    probability >= ``threshold``: most often label noise (ccs prunes them, --drop-disagreement drops them)."""
    labels = np.asarray(labels)
    return (labels >= 0) & (probs.max(axis=1) >= threshold) & (probs.argmax(axis=1) != labels)


@strategy("ccs", "coverage-centric (CCS): drop the --prune-hard share of rows the teacher confidently contradicts "
          "or finds hardest, then draw at random evenly across --bins difficulty bins of teacher margin, classes in "
          "proportion inside each bin", needs_teachers=True, needs_student=False)
def by_ccs(pool: Pool, *, prune_hard: float = DEFAULT_PRUNE_HARD, bins: int = DEFAULT_BINS,
           budget_rows: int | None = None, **_: object) -> Ranking:
    """CCS (Zheng et al., ICLR 2023) from the cached teacher logits alone.

    The hard tail goes first: rows whose gold label the teachers' mean prediction contradicts with
    probability >= CONTRADICTION (most often label noise), most confident first, then the rows of
    highest teacher entropy, until ``prune_hard`` of the pool is gone (never so many that fewer than
    ``budget_rows`` are left). The rest fall into ``bins`` equal-width bins of teacher margin (top-1
    minus top-2 probability: hard to easy); every bin gets an equal share of the budget (a bin with
    fewer rows gives all it has and the rest goes to the others), and inside a bin each class its
    proportion of the bin. Rows are drawn uniformly at random within each bin and class.
    """
    if not 0 <= prune_hard < 1:
        raise SelectionError(f"--prune-hard {prune_hard} must be in [0, 1): the share of the pool dropped as too hard")
    if bins < 1:
        raise SelectionError(f"--bins {bins} must be >= 1")
    probs = teacher_probs(pool, "strategy ccs")
    n, classes = probs.shape
    labels = np.asarray(pool.labels)
    contradicts = contradicted(probs, labels, CONTRADICTION)
    hardness = np.where(contradicts, 2.0 + probs.max(axis=1), entropy(probs) / np.log(max(classes, 2)))  # these first
    drop = min(int(np.ceil(prune_hard * n)), n - (budget_rows or 0))
    exclude = np.zeros(n, dtype=bool)
    if drop > 0:
        exclude[np.argsort(-hardness, kind="stable")[:drop]] = True
    difficulty = margin(probs)
    kept = difficulty[~exclude]
    lo, hi = (kept.min(), kept.max()) if len(kept) else (0.0, 1.0)
    edges = np.linspace(lo, hi, bins + 1)[1:-1]
    binned = np.searchsorted(edges, difficulty, side="right")
    bin_rows = np.bincount(binned[~exclude], minlength=bins).astype(np.float64)
    share = 1.0 / np.maximum(bin_rows[binned], 1.0)  # a bin's rows share one weight: bins count equally
    groups = binned * max(classes, 1) + np.where(labels >= 0, labels, 0)
    return Ranking(difficulty, False, groups, exclude=exclude, share=share, draw="uniform")



@strategy("confident_uncertain", "rows the teachers are confident on and the student is not (LLKD), drawn with "
          "probability ∝ teacher probability of the gold label × normalised student entropy", needs_teachers=True)
def by_confident_uncertain(pool: Pool, **_: object) -> Ranking:
    """LLKD's rule (arXiv 2411.08028) as sampling: score = p_teacher(gold label) × H(student) / log C.

    Where the gold label is unknown (-1), the teachers' top probability stands in for it. Sampled, not
    top-k: the top of any single uncertainty score is one skewed corner of the pool."""
    probs = teacher_probs(pool, "strategy confident_uncertain")
    labels = np.asarray(pool.labels)
    rows = np.arange(len(probs))
    confident = np.where(labels >= 0, probs[rows, np.clip(labels, 0, None)], probs.max(axis=1))
    uncertain = np.asarray(pool.entropy, dtype=np.float64) / np.log(max(probs.shape[1], 2))
    return Ranking(confident * uncertain, True, draw="proportional")


@strategy("uncertainty_sampling", "rows drawn with probability ∝ student entropy, each class its share of the pool")
def by_uncertainty_sampling(pool: Pool, **_: object) -> Ranking:
    """Uncertainty-proportional sampling, stratified by class: hard rows are likelier, easy ones still come."""
    labels = np.asarray(pool.labels)
    return Ranking(np.asarray(pool.entropy, dtype=np.float64), True, groups=np.where(labels >= 0, labels, -1),
                   draw="proportional")


def check_criterion(criterion: str) -> Strategy:
    """The strategy that ranks rows inside coverage's clusters (any but those that make their own groups)."""
    if criterion in GROUPING or criterion not in STRATEGIES:
        valid = ", ".join(n for n in STRATEGIES if n not in GROUPING)
        raise SelectionError(f"unknown criterion {criterion!r} for coverage; valid: {valid}")
    return STRATEGIES[criterion]


GROUPING = ("coverage", "ccs")  # strategies whose groups are their point: not a criterion inside clusters


def kmeans_clusters(embeddings: np.ndarray | None, k: int, seed: int = 0) -> np.ndarray:
    """Cluster id per row: spherical faiss k-means (the embeddings are unit vectors)."""
    import faiss

    if embeddings is None:
        raise SelectionError("coverage needs the student's embeddings; give --student")
    n = len(embeddings)
    if k < 1 or k > n:
        raise SelectionError(f"--clusters {k} is not in 1..{n} (the pool has {n} rows); lower --clusters")
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    # min_points_per_centroid=1: small pools are fine and faiss need not warn about them
    km = faiss.Kmeans(x.shape[1], k, niter=20, seed=seed, spherical=True, min_points_per_centroid=1)
    km.train(x)
    _, assign = km.index.search(x, 1)
    return assign[:, 0].astype(np.int64)


# the strategies that rank a training batch from its logits alone (no embeddings, no clusters)
IN_BATCH_CRITERIA = ("entropy", "margin", "least_confidence", "kl", "random")


def pool_from_logits(student_logits: np.ndarray, teacher_logits: np.ndarray | None = None, *,
                     uids: np.ndarray | None = None, labels: np.ndarray | None = None,
                     embeddings: np.ndarray | None = None) -> Pool:
    """A Pool scored from logits in memory, as ``selectkd score`` scores the cache: the student's
    uncertainty and, per teacher ((T, N, C) logits), KL(teacher || student). Labels default to -1 (unknown)."""
    probs = softmax(student_logits)
    n = len(probs)
    kl = None
    if teacher_logits is not None:
        teacher_logits = np.asarray(teacher_logits)
        kl = np.stack([kl_divergence(softmax(t), probs) for t in teacher_logits], axis=1) if len(teacher_logits) \
            else np.zeros((n, 0))
    return Pool(uids=np.arange(n, dtype=np.int64) if uids is None else uids,
                labels=np.full(n, -1, dtype=np.int64) if labels is None else labels,
                entropy=entropy(probs), margin=margin(probs), least_confidence=least_confidence(probs),
                kl=kl, teacher_logits=teacher_logits, embeddings=embeddings)


def batch_priority(name: str, student_logits: np.ndarray, teacher_logits: np.ndarray | None,
                   rng: np.random.Generator) -> np.ndarray:
    """One priority per row of a batch, higher = chosen first, by the registered strategy ``name``.

    ``student_logits`` (B, C); ``teacher_logits`` (T, B, C) or None, needed by kl (the mean over
    teachers of KL(teacher || student)). ``name`` is one of ``IN_BATCH_CRITERIA``.
    """
    if name not in IN_BATCH_CRITERIA:
        raise SelectionError(f"in-batch --criterion must be one of {', '.join(IN_BATCH_CRITERIA)}, not {name!r}")
    pool = pool_from_logits(student_logits, teacher_logits)
    return get_strategy(name).fn(pool, rng=rng).priority
