"""From a Ranking to a subset: filters, a budget shared across strata, then top-k or sampling.

Plain arrays in, indices out, no I/O: every rule is testable on a hand-made pool."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..ranges import Range
from ..specs import DEFAULT_BINS, DEFAULT_PRUNE_HARD, DEFAULT_STRATEGY
from .dedup import find_near_duplicates
from .strategies import (DEFAULT_CLUSTERS, DEFAULT_CRITERION, Pool, Ranking, SelectionError, contradicted,
                         get_strategy, sample_positions, sample_rows, teacher_probs, top_mask)

DEDUP_RADIUS = Range(0, 2)  # distance between unit vectors
PRUNE = Range(0, 1, high_open=True)  # ccs --prune-hard: a share of the pool, never all of it


def parse_budget(text: str | float | int) -> float | int:
    """'0.1' -> fraction 0.1, '300' -> 300 rows, '1' and '1.0' -> the whole pool (the CLI passes text).

    A count is a whole number >= 2, so "1" never means one row: read as a fraction it is every row.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return 1.0 if text == 1 else text
    s = str(text).strip()
    try:
        value: float | int = int(s)
    except ValueError:
        try:
            value = float(s)
        except ValueError:
            raise SelectionError(f"--budget {text!r} is neither a fraction like 0.1 nor a row count like 300") from None
    return 1.0 if value == 1 else value


def check_budget(budget: float | int) -> None:
    """Refuse a budget that no pool could satisfy, before any scoring work."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.integer, np.floating)):
        raise SelectionError(f"budget {budget!r} must be a fraction in (0, 1] or a row count >= 2")
    if not np.isfinite(budget):
        raise SelectionError(f"budget {budget} is not a finite number; give a fraction in (0, 1] or a row count >= 2")
    if budget <= 0:
        raise SelectionError(f"budget {budget} must be > 0; give a fraction in (0, 1] or a row count >= 2")
    if isinstance(budget, (float, np.floating)) and budget > 1:
        hint = int(budget) if float(budget).is_integer() else 300
        raise SelectionError(f"budget {budget} is more than 1 as a fraction; give a fraction in (0, 1] "
                             f"or a whole row count like {hint}")


def budget_rows(budget: float | int, pool_rows: int) -> int:
    """The number of rows a parsed budget means: a float in (0, 1] is a fraction, an int a count
    (``parse_budget`` has already made a user's 1 the fraction 1.0)."""
    check_budget(budget)
    if isinstance(budget, (int, np.integer)):
        if budget > pool_rows:
            raise SelectionError(f"budget {budget} rows is more than the pool's {pool_rows}; lower --budget")
        return int(budget)
    return max(1, int(round(budget * pool_rows)))


def largest_remainder(sizes: np.ndarray, k: int) -> np.ndarray:
    """Integer quotas proportional to ``sizes`` that sum to exactly ``k`` (Hamilton's method).

    Ties in the remainder go to the larger group, then the earlier one, so it is deterministic.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if total == 0 or k == 0:
        return np.zeros_like(sizes)
    exact = sizes * k / total
    quotas = np.floor(exact).astype(np.int64)
    short = k - int(quotas.sum())
    order = np.lexsort((np.arange(len(sizes)), -sizes, -(exact - quotas)))
    quotas[order[:short]] += 1
    return quotas


def capped_quotas(sizes: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """Integer quotas that sum to ``k`` (at most ``sizes.sum()``), in proportion to ``weights``, none above its size.

    Water-filling: a group whose share exceeds its size gives all its rows and the rest is shared again
    among the others; the fractions are rounded by largest remainder among groups with room left.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    w = np.where(sizes > 0, np.asarray(weights, dtype=np.float64), 0.0)
    k = min(int(k), int(sizes.sum()))
    capped = np.zeros(len(sizes), dtype=bool)
    exact = np.zeros(len(sizes))
    while True:
        free = ~capped & (w > 0)
        if not free.any():
            break
        level = (k - sizes[capped].sum()) / w[free].sum()
        exact = np.where(capped, sizes, np.where(free, level * w, 0.0))
        over = free & (exact > sizes)
        if not over.any():
            break
        capped |= over
    quotas = np.minimum(np.floor(exact + 1e-9).astype(np.int64), sizes)
    short = k - int(quotas.sum())
    if short > 0:
        room = quotas < sizes
        order = np.lexsort((np.arange(len(sizes)), -(exact - quotas)))
        order = order[room[order]]
        quotas[order[:short]] += 1
    return quotas


def _strata(groups: np.ndarray | None, labels: np.ndarray | None) -> np.ndarray | None:
    """One non-negative id per combination of group and class (None when neither is given); ids may leave
    gaps (an empty stratum gets no quota), so no sort of the pool is needed."""
    if groups is None and labels is None:
        return None
    if labels is None or groups is None:
        only = groups if groups is not None else labels
        low = int(only.min(initial=0))
        return only if low >= 0 else only - low  # unknown labels (-1) are a stratum of their own
    g = groups.astype(np.int64) - int(groups.min(initial=0))
    lab = labels.astype(np.int64) - int(labels.min(initial=0))
    ids = g * (int(lab.max(initial=0)) + 1) + lab
    return ids.astype(np.int32) if ids.max(initial=0) < 2**31 else ids


def disagreements(pool: Pool, threshold: float) -> np.ndarray:
    """Mask of rows whose gold label the teachers' mean prediction confidently contradicts.

    Such rows are most often label noise: top uncertainty would pick them first.
    """
    if not 0 < threshold <= 1:
        raise SelectionError(f"disagreement threshold {threshold} must be in (0, 1]")
    return contradicted(teacher_probs(pool, "--drop-disagreement"), pool.labels, threshold)


@dataclass
class Choice:
    """What ``choose`` picked: ``indices`` into the pool, best first, and why. ``labels`` and ``uids`` are the
    pool's (``uids`` None: row i has uid i, as a cache scored in order does, and nothing was kept)."""

    indices: np.ndarray
    ranking: Ranking
    eligible: np.ndarray
    budget_rows: int
    dropped: dict[str, int]
    strata: np.ndarray | None
    labels: np.ndarray
    uids: np.ndarray | None = None
    dedup: dict | None = None  # how --dedup searched (exact, or its lists) and the pairs it found

    @property
    def rows(self) -> int:
        return len(self.eligible)

    def uids_of(self, positions: np.ndarray) -> np.ndarray:
        return np.asarray(positions, dtype=np.int64) if self.uids is None else self.uids[positions]


class Parts:
    """A pool as consecutive parts in row order, for ``choose_parts``: iterating yields Pools; ``sample``
    gives the rows at sorted positions (a strategy's ``prepare``); ``embedding_chunks`` the student's
    embeddings again, consecutive rows in order (--dedup reads them a few times, never whole)."""

    rows: int

    def __iter__(self) -> Iterator[Pool]:
        raise NotImplementedError

    def sample(self, positions: np.ndarray) -> Pool:
        raise NotImplementedError

    def embedding_chunks(self) -> Iterator[np.ndarray]:
        raise NotImplementedError


class WholePool(Parts):
    """A pool in memory: one part."""

    def __init__(self, pool: Pool):
        self.pool, self.rows = pool, len(pool)

    def __iter__(self) -> Iterator[Pool]:
        yield self.pool

    def sample(self, positions: np.ndarray) -> Pool:
        return self.pool.take(positions)

    def embedding_chunks(self) -> Iterator[np.ndarray]:
        if self.pool.embeddings is None:
            raise SelectionError("--dedup needs the student's embeddings; give --student")
        yield self.pool.embeddings


def choose(pool: Pool, strategy: str = DEFAULT_STRATEGY, budget: float | int = 0.1, **options) -> Choice:
    """``choose_parts`` over a pool in memory (one part); the options are ``choose_parts``'s."""
    return choose_parts(WholePool(pool), strategy, budget, **options)


def choose_parts(
    parts: Parts,
    strategy: str = DEFAULT_STRATEGY,
    budget: float | int = 0.1,
    *,
    criterion: str = DEFAULT_CRITERION,
    clusters: int = DEFAULT_CLUSTERS,
    per_class: bool = False,
    sample: bool = False,
    temperature: float = 1.0,
    drop_disagreement: bool = False,
    disagreement_threshold: float = 0.9,
    dedup: float | None = None,
    seed: int = 0,
    prune_hard: float = DEFAULT_PRUNE_HARD,
    bins: int = DEFAULT_BINS,
) -> Choice:
    """Pick the subset from plain arrays, read part by part; no I/O of its own, so every rule is testable
    on a hand-made pool, and memory holds a few numbers per row, never a part twice.

    One pass over the parts ranks each (the strategy's part function; its ``prepare`` first, on a seeded
    sample; its ``finish`` after, over the joined parts), then the filters drop rows, the budget is shared
    across strata (coverage clusters and/or classes) by largest remainder (or by the strategy's ``share``),
    and inside each stratum the rows of highest priority are kept (a drawing strategy's priority is random),
    or, with ``sample``, rows are drawn without replacement with p ∝ exp(z / temperature), z the priority
    standardised over the eligible rows (Gumbel top-k). Ties go to the earlier row.
    """
    spec = get_strategy(strategy)
    n = parts.rows
    k = budget_rows(budget, n)
    if sample and temperature <= 0:
        raise SelectionError(f"--sample-temperature {temperature} must be > 0")
    options = dict(criterion=criterion, clusters=clusters, seed=seed, prune_hard=prune_hard, bins=bins, budget_rows=k)
    context = spec.prepare(parts.sample(sample_positions(n, sample_rows(clusters), seed)), n=n, **options) \
        if spec.prepare else {}
    joined = _Joined(n, drop_disagreement)
    for i, part in enumerate(parts):
        rng = np.random.default_rng(seed if i == 0 else [seed, i])  # one part: the draws of a whole pool
        joined.add(part, spec.fn(part, rng=rng, context=context, **options),
                   disagreements(part, disagreement_threshold) if drop_disagreement else None)
    ranking, labels, uids, disagree = joined.result()
    del joined
    if spec.finish is not None:
        ranking = spec.finish(ranking, **options)
    eligible, dropped, dedup_search = _eligible(parts, n, k, dedup, disagree, seed)
    del disagree
    if ranking.exclude is not None:
        pruned = ranking.exclude & eligible
        dropped[f"{strategy}_pruned"] = int(pruned.sum())
        eligible &= ~pruned
        del pruned
        if eligible.sum() < k:
            raise SelectionError(f"only {int(eligible.sum())} rows are left after {strategy} pruned "
                                 f"{dropped[f'{strategy}_pruned']} and the filters dropped more, fewer than the budget "
                                 f"of {k}; lower --prune-hard or --budget")
    ranking.exclude = None  # folded into eligible: a pool-sized array less from here on
    priority = _priority(ranking, eligible, np.random.default_rng([seed, 1]), sample, temperature)
    strata = _strata(ranking.groups, labels if per_class else None)
    if strata is None:
        picked = np.flatnonzero(top_mask(priority, k, eligible))
    else:
        sizes = _bincount(strata, eligible)
        if ranking.share is None:
            quotas = largest_remainder(sizes, k)
        else:
            quotas = capped_quotas(sizes, _bincount(strata, eligible, ranking.share, len(sizes)), k)
            ranking.share = None
        picked = _top_per_stratum(priority, strata, eligible, quotas)
    # best first; ties to the earlier row, as a stable sort by priority would order them
    picked = picked[np.lexsort((picked, -priority[picked].astype(np.float64)))]
    return Choice(picked, ranking, eligible, k, dropped, strata, labels, uids, dedup_search)


class _Joined:
    """The parts' rankings, labels and uids joined into one array each (compact dtypes, allocated once)."""

    def __init__(self, n: int, disagreement: bool):
        self.n, self.at = n, 0
        self.fields: dict[str, np.ndarray | None] = {}
        self.extra: dict[str, np.ndarray] = {}
        self.first: Ranking | None = None
        self.labels = np.empty(n, dtype=np.int16)  # widened to int32 if a part has a label id beyond int16
        self.uids: np.ndarray | None = None  # allocated at the first uid that is not its row number
        self.disagree = np.zeros(n, dtype=bool) if disagreement else None

    def add(self, part: Pool, r: Ranking, disagree: np.ndarray | None) -> None:
        lo, hi = self.at, self.at + len(part)
        if self.first is None:
            self.first = r
            for name in ("score", "groups", "exclude", "share"):
                value = getattr(r, name)
                self.fields[name] = None if value is None else np.empty(self.n, dtype=_compact(value))
            self.extra = {name: np.empty(self.n, dtype=_compact(v)) for name, v in r.extra.items()}
        for name, out in self.fields.items():
            value = getattr(r, name)
            if (out is None) != (value is None):
                raise SelectionError(f"strategy parts disagree on {name!r}: a strategy must rank every part alike")
            if out is not None:
                out[lo:hi] = value
        for name, out in self.extra.items():
            out[lo:hi] = r.extra[name]
        labels = np.asarray(part.labels)
        if self.labels.dtype == np.int16 and len(labels) and (labels.max() > 32767 or labels.min() < -32768):
            self.labels = self.labels.astype(np.int32)
        self.labels[lo:hi] = labels
        uids = np.asarray(part.uids)
        if self.uids is None and not np.array_equal(uids, np.arange(lo, hi)):
            self.uids = np.arange(self.n, dtype=np.int64)  # rows before this part had uid = row number
        if self.uids is not None:
            self.uids[lo:hi] = uids
        if disagree is not None:
            self.disagree[lo:hi] = disagree
        self.at = hi

    def result(self) -> tuple[Ranking, np.ndarray, np.ndarray | None, np.ndarray | None]:
        if self.at != self.n:
            raise SelectionError(f"the pool's parts hold {self.at} rows, not {self.n}; check the cache with "
                                 f"`selectkd cache verify`")
        r = self.first if self.first is not None else Ranking(np.zeros(0, dtype=np.float32))
        ranking = Ranking(self.fields.get("score", r.score), r.higher_first, self.fields.get("groups"), r.criterion,
                          self.fields.get("exclude"), self.fields.get("share"), r.draw, self.extra, r.meta)
        return ranking, self.labels, self.uids, self.disagree


def _compact(value: np.ndarray) -> np.dtype:
    """float32 for scores and weights, int32 for groups, bool for masks: a few bytes per row of the pool."""
    kind = np.asarray(value).dtype.kind
    return np.dtype(np.float32 if kind == "f" else np.int32 if kind in "iu" else bool)


def _bincount(ids: np.ndarray, mask: np.ndarray, weights: np.ndarray | None = None, minlength: int = 0,
              chunk: int = 1 << 22) -> np.ndarray:
    """np.bincount of ``ids[mask]`` (weighted), a chunk at a time: no pool-sized copy, no float64 weights of it."""
    total = np.zeros(max(minlength, int(ids.max(initial=-1)) + 1), dtype=np.float64 if weights is not None else np.int64)
    for lo in range(0, len(ids), chunk):
        m = mask[lo:lo + chunk]
        w = None if weights is None else weights[lo:lo + chunk][m]
        counts = np.bincount(ids[lo:lo + chunk][m], weights=w, minlength=len(total))
        total += counts.astype(total.dtype, copy=False)
    return total


def _top_per_stratum(priority: np.ndarray, strata: np.ndarray, eligible: np.ndarray, quotas: np.ndarray) -> np.ndarray:
    """Positions of the ``quotas[s]`` eligible rows of highest priority in each stratum s (ties: earlier row)."""
    wanted = np.flatnonzero(quotas)
    if len(wanted) <= 4:  # a pass over the pool per stratum: no sort, no pool-sized index
        picked = np.zeros(len(priority), dtype=bool)
        for s in wanted:
            picked |= top_mask(priority, int(quotas[s]), eligible & (strata == s))
        return np.flatnonzero(picked)
    # more strata: group the rows by stratum once (a radix sort when the ids fit 16 bits), then a
    # partition inside each group's eligible rows, kept in row order so ties still go to the earlier row
    small = strata.astype(np.int16) if len(quotas) <= np.iinfo(np.int16).max else strata
    order = np.argsort(small, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(small, minlength=len(quotas)))])
    del small
    out = []
    for s in wanted:
        rows = order[bounds[s]:bounds[s + 1]]
        rows = rows[eligible[rows]]
        out.append(rows[top_mask(priority[rows], int(quotas[s]))])
    return np.sort(np.concatenate(out))


def _priority(ranking: Ranking, eligible: np.ndarray, rng: np.random.Generator, sample: bool, temperature: float,
              chunk: int = 1 << 22) -> np.ndarray:
    """Higher = chosen first (float32). A drawing strategy's priority is a Gumbel key: the top of it is a
    draw without replacement, uniform or with probability ∝ score (Gumbel top-k); ``sample`` draws with
    p ∝ exp(z / temperature) from any priority. Noise is drawn a chunk at a time (the same stream)."""
    score = ranking.score
    if ranking.draw not in (None, "uniform", "proportional"):
        raise SelectionError(f"unknown draw {ranking.draw!r} (uniform or proportional)")
    if ranking.draw is None and not sample:
        return score if ranking.higher_first else -score
    priority = np.empty(len(score), dtype=np.float32)
    for lo in range(0, len(score), chunk):
        s = score[lo:lo + chunk].astype(np.float64)
        if ranking.draw is None:
            priority[lo:lo + chunk] = s if ranking.higher_first else -s
            continue
        noise = rng.gumbel(size=len(s))
        priority[lo:lo + chunk] = noise if ranking.draw == "uniform" else np.log(np.clip(s, 1e-12, None)) + noise
    if sample:
        mean = float(np.mean(priority, where=eligible, dtype=np.float64)) if eligible.any() else 0.0
        std = float(np.std(priority, where=eligible, dtype=np.float64)) if eligible.any() else 0.0
        for lo in range(0, len(score), chunk):
            z = (priority[lo:lo + chunk] - mean) / (std or 1.0)
            priority[lo:lo + chunk] = z / temperature + rng.gumbel(size=len(z))
    return priority


def _eligible(parts: Parts, n: int, k: int, dedup: float | None, disagree: np.ndarray | None,
              seed: int) -> tuple[np.ndarray, dict[str, int], dict | None]:
    """The rows the filters leave (near-duplicates, confident teacher disagreement) and how many each dropped."""
    eligible = np.ones(n, dtype=bool)
    dropped: dict[str, int] = {}
    search = None
    if dedup is not None:
        found = find_near_duplicates(parts.embedding_chunks, n, dedup, seed)
        dropped["near_duplicates"] = int(found.drop.sum())
        eligible &= ~found.drop
        search = found.search
    if disagree is not None:
        bad = disagree & eligible
        dropped["teacher_disagrees_with_label"] = int(bad.sum())
        eligible &= ~bad
    if eligible.sum() < k:
        raise SelectionError(f"only {int(eligible.sum())} rows are left after dropping {sum(dropped.values())}, "
                             f"fewer than the budget of {k}; lower --budget or loosen --dedup/--drop-disagreement")
    return eligible, dropped, search
