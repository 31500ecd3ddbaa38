"""From a Ranking to a subset: filters, a budget shared across strata, then top-k or sampling.

Plain arrays in, indices out, no I/O: every rule is testable on a hand-made pool."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ranges import Range
from ..specs import DEFAULT_BINS, DEFAULT_PRUNE_HARD, DEFAULT_STRATEGY
from .strategies import (DEFAULT_CLUSTERS, DEFAULT_CRITERION, Pool, Ranking, SelectionError, contradicted,
                         get_strategy, teacher_probs)

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


def _strata(*columns: np.ndarray | None) -> np.ndarray | None:
    """One id per distinct combination of the given group columns (None when none given)."""
    cols = [np.asarray(c) for c in columns if c is not None]
    if not cols:
        return None
    _, ids = np.unique(np.stack(cols, axis=1), axis=0, return_inverse=True)
    return ids.reshape(-1)


def near_duplicates(embeddings: np.ndarray, radius: float) -> np.ndarray:
    """Mask of rows to drop: within ``radius`` (Euclidean, unit vectors) of an earlier kept row.

    Greedy in row order, so the first row of each near-duplicate group stays (deterministic).
    Faiss range search on inner products: |a - b| <= r  <=>  a.b >= 1 - r^2 / 2.
    """
    import faiss

    if radius < 0:
        raise SelectionError(f"--dedup radius {radius} must be >= 0 (distance between unit embeddings, 0..2)")
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    drop = np.zeros(len(x), dtype=bool)
    chunk = 65536
    for lo in range(0, len(x), chunk):
        lims, _, found = index.range_search(x[lo:lo + chunk], 1.0 - radius * radius / 2.0 - 1e-6)
        for i in range(lo, min(lo + chunk, len(x))):
            if not drop[i]:
                near = found[lims[i - lo]:lims[i - lo + 1]]
                drop[near[near > i]] = True
    return drop


def disagreements(pool: Pool, threshold: float) -> np.ndarray:
    """Mask of rows whose gold label the teachers' mean prediction confidently contradicts.

    Such rows are most often label noise: top uncertainty would pick them first.
    """
    if not 0 < threshold <= 1:
        raise SelectionError(f"disagreement threshold {threshold} must be in (0, 1]")
    return contradicted(teacher_probs(pool, "--drop-disagreement"), pool.labels, threshold)


@dataclass
class Choice:
    """What ``choose`` picked: ``indices`` into the pool, best first, and why."""

    indices: np.ndarray
    ranking: Ranking
    eligible: np.ndarray
    budget_rows: int
    dropped: dict[str, int]
    strata: np.ndarray | None


def choose(
    pool: Pool,
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
    """Pick the subset from plain arrays; no I/O, so every rule is testable on a hand-made pool.

    Filters run first, then the budget is shared across strata (coverage clusters and/or
    classes) by largest remainder (or by the strategy's ``share``), then inside each stratum the top
    rows by priority are kept (a drawing strategy's priority is random), or, with ``sample``, rows are drawn without replacement with
    p ∝ exp(z / temperature), z the priority standardised over the pool (Gumbel top-k).
    """
    spec = get_strategy(strategy)
    k = budget_rows(budget, len(pool))
    if sample and temperature <= 0:
        raise SelectionError(f"--sample-temperature {temperature} must be > 0")
    rng = np.random.default_rng(seed)
    eligible, dropped = _eligible(pool, k, dedup, drop_disagreement, disagreement_threshold)

    ranking = spec.fn(pool, rng=rng, criterion=criterion, clusters=clusters, seed=seed, prune_hard=prune_hard,
                      bins=bins, budget_rows=k)
    if ranking.exclude is not None:
        pruned = ranking.exclude & eligible
        dropped[f"{strategy}_pruned"] = int(pruned.sum())
        eligible = eligible & ~pruned
        if eligible.sum() < k:
            raise SelectionError(f"only {int(eligible.sum())} rows are left after {strategy} pruned {int(pruned.sum())} "
                                 f"and the filters dropped more, fewer than the budget of {k}; lower --prune-hard or --budget")
    priority = _priority(ranking, eligible, rng)
    if sample:
        live = priority[eligible]
        z = (priority - live.mean()) / (live.std() or 1.0)
        priority = z / temperature + rng.gumbel(size=len(pool))

    strata = _strata(ranking.groups, pool.labels if per_class else None)
    # best first; ties broken by pool position so the result does not depend on the sort
    order = np.argsort(-priority, kind="stable")
    order = order[eligible[order]]
    if strata is None:
        picked = order[:k]
    else:
        sizes = np.bincount(strata[eligible], minlength=int(strata.max()) + 1)
        if ranking.share is None:
            quotas = largest_remainder(sizes, k)
        else:
            quotas = capped_quotas(sizes, np.bincount(strata[eligible], weights=ranking.share[eligible],
                                                      minlength=len(sizes)), k)
        groups = strata[order]
        picked = order[_rank_within(groups) < quotas[groups]]
    return Choice(picked, ranking, eligible, k, dropped, strata)


def _priority(ranking: Ranking, eligible: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Higher = chosen first. A drawing strategy's priority is a Gumbel key: sorting by it draws
    without replacement, uniformly or with probability ∝ score (Gumbel top-k)."""
    if ranking.draw is None:
        return ranking.priority
    noise = rng.gumbel(size=len(ranking.score))
    if ranking.draw == "uniform":
        return noise
    if ranking.draw != "proportional":
        raise SelectionError(f"unknown draw {ranking.draw!r} (uniform or proportional)")
    score = np.asarray(ranking.score, dtype=np.float64)
    return np.log(np.clip(score, 1e-12, None)) + noise


def _eligible(pool: Pool, k: int, dedup: float | None, drop_disagreement: bool,
              threshold: float) -> tuple[np.ndarray, dict[str, int]]:
    """The rows the filters leave (near-duplicates, confident teacher disagreement) and how many each dropped."""
    eligible = np.ones(len(pool), dtype=bool)
    dropped: dict[str, int] = {}
    if dedup is not None:
        if pool.embeddings is None:
            raise SelectionError("--dedup needs the student's embeddings; give --student")
        dup = near_duplicates(pool.embeddings, dedup)
        dropped["near_duplicates"] = int(dup.sum())
        eligible &= ~dup
    if drop_disagreement:
        bad = disagreements(pool, threshold) & eligible
        dropped["teacher_disagrees_with_label"] = int(bad.sum())
        eligible &= ~bad
    if eligible.sum() < k:
        raise SelectionError(f"only {int(eligible.sum())} rows are left after dropping {sum(dropped.values())}, "
                             f"fewer than the budget of {k}; lower --budget or loosen --dedup/--drop-disagreement")
    return eligible, dropped


def _rank_within(groups: np.ndarray) -> np.ndarray:
    """For each position, how many earlier positions share its group (0 for the first)."""
    by_group = np.argsort(groups, kind="stable")
    sorted_groups = groups[by_group]
    starts = np.searchsorted(sorted_groups, sorted_groups, side="left")
    within = np.empty(len(groups), dtype=np.int64)
    within[by_group] = np.arange(len(groups)) - starts
    return within
