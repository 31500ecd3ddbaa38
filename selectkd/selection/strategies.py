"""The strategy registry: each strategy ranks a Pool of plain numpy arrays.

Register one with ``@strategy(name, description)``; ``selectkd select --list`` shows them. A strategy's
function ranks the rows of one part of the pool (``choose`` reads a large cache part by part, so memory
stays bounded); one whose rule needs the whole pool adds ``finish`` (ccs: its pruning threshold and bins)
or ``prepare``, fitted once on a seeded sample before the parts (coverage: the k-means centroids).
``batch_priority`` ranks the rows of one training batch by the same registered strategies
(distill's in-batch selection). Plain global top-k by uncertainty collapses at 10% onto one ambiguous corner
(docs/RESULTS.md: the static top-k rows sit at one class)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
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
    ``extra`` holds per-row facts a strategy's ``finish`` reads (joined across parts like the rest);
    ``meta`` facts of the pool, not of a row (ccs: the number of classes).
    """

    score: np.ndarray
    higher_first: bool = True
    groups: np.ndarray | None = None
    criterion: str | None = None
    exclude: np.ndarray | None = None
    share: np.ndarray | None = None
    draw: str | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def priority(self) -> np.ndarray:
        """Higher = chosen first, whichever way the score reads."""
        s = np.asarray(self.score, dtype=np.float64)
        return s if self.higher_first else -s


StrategyFn = Callable[..., Ranking]


@dataclass(frozen=True)
class Strategy:
    """``fn(part, *, rng, context, criterion, clusters, seed, prune_hard, bins, budget_rows)`` ranks one part
    of the pool; ``finish(ranking, same keywords)`` turns the joined parts' Ranking into the final one;
    ``prepare(sample, n=pool rows, same keywords)`` makes the ``context`` every part sees from a seeded
    sample of rows (``sample_positions(n, sample_rows(clusters), seed)``)."""

    name: str
    description: str
    fn: StrategyFn
    needs_teachers: bool = False
    needs_embeddings: bool = False
    needs_student: bool = True  # False: dynamic re-selection needs no student pass over the pool
    finish: Callable[..., Ranking] | None = None
    prepare: Callable[..., dict] | None = None


STRATEGIES: dict[str, Strategy] = {}


def strategy(name: str, description: str, *, needs_teachers: bool = False, needs_embeddings: bool = False,
             needs_student: bool = True, finish: Callable[..., Ranking] | None = None,
             prepare: Callable[..., dict] | None = None) -> Callable[[StrategyFn], StrategyFn]:
    """Register ``fn(part, *, rng, criterion, clusters, seed, prune_hard, bins, budget_rows, context) -> Ranking``
    under ``name`` (a strategy takes the keywords it uses and ``**_``)."""

    def register(fn: StrategyFn) -> StrategyFn:
        STRATEGIES[name] = Strategy(name, description, fn, needs_teachers, needs_embeddings, needs_student,
                                    finish, prepare)
        return fn

    return register


def sample_rows(clusters: int) -> int:
    """How many rows ``prepare`` sees: faiss's own cap for k-means training (256 points per centroid)."""
    return 256 * max(1, clusters)


def sample_positions(n: int, m: int, seed: int) -> np.ndarray:
    """``m`` positions of ``n`` drawn without replacement (seeded), sorted; all of them when ``m >= n``."""
    if m >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 7]).choice(n, m, replace=False))


def top_mask(values: np.ndarray, m: int, within: np.ndarray | None = None) -> np.ndarray:
    """Mask of the ``m`` largest ``values`` (among ``within``), ties to the earlier row: what a stable sort
    by descending value would take first, found with a partition instead of a sort (memory: one copy)."""
    values = np.asarray(values)
    mask = np.zeros(len(values), dtype=bool)
    live = values if within is None else values[within]
    m = min(int(m), len(live))
    if m <= 0:
        return mask
    kth = np.partition(live, len(live) - m)[len(live) - m]
    del live
    above = values > kth
    if within is not None:
        above &= within
    mask |= above
    need = m - int(above.sum())
    if need > 0:
        tied = values == kth
        if within is not None:
            tied &= within
        mask[np.flatnonzero(tied)[:need]] = True
    return mask


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


def coverage_prepare(sample: Pool, *, n: int, clusters: int = DEFAULT_CLUSTERS, seed: int = 0, **_: object) -> dict:
    """coverage's centroids: spherical faiss k-means on a seeded sample of the ``n``-row pool's embeddings."""
    return {"centroids": kmeans_centroids(sample.embeddings, clusters, seed, n=n)}


@strategy("coverage", "the criterion ranked inside faiss k-means clusters of the student embeddings; "
          "the budget is shared across clusters by size", needs_embeddings=True, prepare=coverage_prepare)
def by_coverage(pool: Pool, *, rng: np.random.Generator, context: dict, criterion: str = DEFAULT_CRITERION,
                seed: int = 0, **_: object) -> Ranking:
    inner = check_criterion(criterion).fn(pool, rng=rng, seed=seed)
    return Ranking(inner.score, inner.higher_first, assign_clusters(pool.embeddings, context["centroids"]), criterion,
                   exclude=inner.exclude, draw=inner.draw)


CONTRADICTION = 0.9  # ccs: the teachers' probability at which a prediction against the gold label counts as confident


def contradicted(probs: np.ndarray, labels: np.ndarray, threshold: float) -> np.ndarray:
    """Mask of rows whose known gold label (>= 0) the teachers' mean prediction ``probs`` contradicts with
    probability >= ``threshold``: most often label noise (ccs prunes them, --drop-disagreement drops them)."""
    labels = np.asarray(labels)
    return (labels >= 0) & (probs.max(axis=1) >= threshold) & (probs.argmax(axis=1) != labels)


def prune_per_class(hardness: np.ndarray, labels: np.ndarray, drop: int) -> np.ndarray:
    """Mask of ``drop`` rows, each class (unknown labels, -1, as one more) losing its share in proportion to its
    size, hardest first inside it. One cut over the whole pool would take whole classes: on r8 the teacher's
    entropy is higher on every minority class, and the hardest 20% were almost exactly the six smallest classes."""
    from .choose import largest_remainder  # choose imports this module: imported where it is used

    classes, of_row = np.unique(labels, return_inverse=True)
    quotas = largest_remainder(np.bincount(of_row, minlength=len(classes)), drop)
    exclude = np.zeros(len(labels), dtype=bool)
    for c, quota in enumerate(quotas):
        exclude |= top_mask(hardness, int(quota), of_row == c)
    return exclude


def ccs_finish(ranking: Ranking, *, prune_hard: float = DEFAULT_PRUNE_HARD, bins: int = DEFAULT_BINS,
               budget_rows: int | None = None, **_: object) -> Ranking:
    """ccs over the whole pool: the --prune-hard share of each class's hardest rows out, equal-width margin bins of
    the rest."""
    if not 0 <= prune_hard < 1:
        raise SelectionError(f"--prune-hard {prune_hard} must be in [0, 1): the share of each class dropped as too "
                             "hard")
    if bins < 1:
        raise SelectionError(f"--bins {bins} must be >= 1")
    # the pool's arrays are modified in place and dropped once used: a few bytes per row at any moment
    difficulty, labels = ranking.score, ranking.groups
    n, classes = len(difficulty), int(ranking.meta.get("classes", 1))
    drop = min(int(np.ceil(prune_hard * n)), n - (budget_rows or 0))
    exclude = prune_per_class(ranking.extra.pop("hardness"), labels, drop)
    kept = ~exclude
    lo, hi = (difficulty.min(where=kept, initial=np.inf), difficulty.max(where=kept, initial=-np.inf)) \
        if kept.any() else (0.0, 1.0)
    edges = np.linspace(lo, hi, bins + 1)[1:-1].astype(difficulty.dtype)
    binned = np.searchsorted(edges, difficulty, side="right").astype(np.int32)
    bin_rows = np.maximum(np.bincount(binned[kept], minlength=bins), 1).astype(np.float32)
    del kept
    share = np.reciprocal(bin_rows)[binned]  # a bin's rows share one weight: bins count equally
    binned *= max(classes, 1)
    binned += np.maximum(labels, 0, out=labels)  # unknown labels (-1) count as class 0
    ranking.groups = None
    return Ranking(difficulty, False, binned, exclude=exclude, share=share, draw="uniform")


@strategy("ccs", "coverage-centric (CCS): drop the --prune-hard share of each class's rows the teacher confidently "
          "contradicts or finds hardest, then draw at random evenly across --bins difficulty bins of teacher margin, "
          "classes in proportion inside each bin", needs_teachers=True, needs_student=False, finish=ccs_finish)
def by_ccs(pool: Pool, **_: object) -> Ranking:
    """CCS (Zheng et al., ICLR 2023) from the cached teacher logits alone.

    The hard tail goes first: rows whose gold label the teachers' mean prediction contradicts with
    probability >= CONTRADICTION (most often label noise), most confident first, then the rows of
    highest teacher entropy, until ``prune_hard`` of each class is gone (never so many that fewer than
    ``budget_rows`` are left; classes by gold label, so no class is pruned away). The rest fall into
    ``bins`` equal-width bins of teacher margin (top-1 minus top-2 probability: hard to easy); every bin
    gets an equal share of the budget (a bin with
    fewer rows gives all it has and the rest goes to the others), and inside a bin each class its
    proportion of the bin. Rows are drawn uniformly at random within each bin and class.
    This part rates each row (hardness, margin); ``ccs_finish`` prunes and bins the whole pool.
    """
    probs = teacher_probs(pool, "strategy ccs")
    classes = probs.shape[1]
    labels = np.asarray(pool.labels)
    contradicts = contradicted(probs, labels, CONTRADICTION)
    hardness = np.where(contradicts, 2.0 + probs.max(axis=1), entropy(probs) / np.log(max(classes, 2)))  # these first
    return Ranking(margin(probs).astype(np.float32), False, labels.astype(np.int32),
                   extra={"hardness": hardness.astype(np.float32)}, meta={"classes": classes}, draw="uniform")


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


def kmeans_centroids(embeddings: np.ndarray | None, k: int, seed: int = 0, n: int | None = None) -> np.ndarray:
    """(k, D) centroids of spherical faiss k-means on ``embeddings`` (unit vectors; a sample of a pool of
    ``n`` rows, all of it when ``n`` is None)."""
    import faiss

    if embeddings is None:
        raise SelectionError("coverage needs the student's embeddings; give --student")
    n = len(embeddings) if n is None else n
    if k < 1 or k > n or k > len(embeddings):
        raise SelectionError(f"--clusters {k} is not in 1..{n} (the pool has {n} rows); lower --clusters")
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    # min_points_per_centroid=1: small pools are fine and faiss need not warn about them
    km = faiss.Kmeans(x.shape[1], k, niter=20, seed=seed, spherical=True, min_points_per_centroid=1)
    km.train(x)
    return km.centroids


def assign_clusters(embeddings: np.ndarray | None, centroids: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """The nearest centroid (inner product) of every row, int32; float16 embeddings are widened a chunk at a time."""
    import faiss

    if embeddings is None:
        raise SelectionError("coverage needs the student's embeddings; give --student")
    if embeddings.shape[1] != centroids.shape[1]:
        raise SelectionError(f"the embeddings have {embeddings.shape[1]} dimensions and the centroids "
                             f"{centroids.shape[1]}; score the pool again with one --student")
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    out = np.empty(len(embeddings), dtype=np.int32)
    for lo in range(0, len(embeddings), chunk):
        _, assign = index.search(np.ascontiguousarray(embeddings[lo:lo + chunk], dtype=np.float32), 1)
        out[lo:lo + chunk] = assign[:, 0]
    return out


def kmeans_clusters(embeddings: np.ndarray | None, k: int, seed: int = 0) -> np.ndarray:
    """Cluster id per row: centroids from a seeded sample (``sample_rows(k)``), then every row assigned."""
    if embeddings is None:
        raise SelectionError("coverage needs the student's embeddings; give --student")
    at = sample_positions(len(embeddings), sample_rows(k), seed)
    return assign_clusters(embeddings, kmeans_centroids(embeddings[at], k, seed, n=len(embeddings))).astype(np.int64)


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
    return get_strategy(name).fn(pool, rng=rng, context={}).priority  # these rank row by row: no prepare, no finish
