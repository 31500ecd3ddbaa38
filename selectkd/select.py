"""The select stage: rank the cached pool by a strategy and save a named subset with its provenance.

A strategy is a function over plain numpy arrays (a ``Pool``) registered by name with
``@strategy``; it returns a ``Ranking``: one score per row, which way is "select first",
and optionally groups to fill the budget across (coverage's k-means clusters).
``choose`` turns a Ranking into a subset: filters (near-duplicates, confident teacher
disagreement with the gold label), a budget shared across strata by largest remainder
(clusters and/or classes), then top-k or sampling inside each stratum. ``select`` does
the I/O around it: finds the cache entries through ``score``, reads the arrays by uid,
and saves ``<root>/selections/NAME/`` (``selection.arrow`` + ``provenance.json``) atomically.
PAPER.md explains why plain global top-k by uncertainty collapses and why coverage,
class balance and sampling exist.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa

from . import __version__
from .atomic import atomic_write_json, clean_stale, name_lock, remove_path, replace_path, temp_name
from .errors import CacheError, SelectKDError
from .outputs import PNG, check_output, claim
from .ranges import COUNT, FRACTION, MAX_LENGTH, POSITIVE, SEED, Range, check_ranges
from .store import (Entry, Store, file_sha256, files_problem, is_own_file, is_plain_name, read_arrow, read_json_file,
                    shape_problem, write_arrow)
from .uncertainty import entropy, softmax

DEFAULT_STRATEGY = "random"  # measured best at 10%: bench/results/matched_steps.md
DEFAULT_CRITERION = "entropy"
DEFAULT_CLUSTERS = 30
SELECTIONS = "selections"
DEDUP_RADIUS = Range(0, 2)  # distance between unit vectors
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_NAME = 100
SELECTION_COLUMNS = {"uid": pa.int64(), "score": pa.float64(), "rank": pa.int64()}
# what readers of a provenance.json rely on (export, distill --selection, cache ls)
PROVENANCE_FIELDS = {"cache": dict, "data": dict, "files": dict, "strategy": str, "rows": int}
PROVENANCE_REQUIRED = ("cache", "data")
DATA_FIELDS = ("data", "split", "text_field", "label_field", "fingerprint")


class SelectionError(SelectKDError):
    """A selection cannot be made or found as asked (strategy, budget, name, caches)."""


# -- the arrays a strategy sees -------------------------------------------------------------------

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

    ``groups`` (int per row) asks ``choose`` to share the budget across groups in
    proportion to their size.
    """

    score: np.ndarray
    higher_first: bool = True
    groups: np.ndarray | None = None
    criterion: str | None = None

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


STRATEGIES: dict[str, Strategy] = {}


def strategy(name: str, description: str, *, needs_teachers: bool = False,
             needs_embeddings: bool = False) -> Callable[[StrategyFn], StrategyFn]:
    """Register ``fn(pool, *, rng, criterion, clusters, seed) -> Ranking`` under ``name``."""

    def register(fn: StrategyFn) -> StrategyFn:
        STRATEGIES[name] = Strategy(name, description, fn, needs_teachers, needs_embeddings)
        return fn

    return register


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise SelectionError(f"unknown strategy {name!r}; valid: {', '.join(STRATEGIES)} (`selectkd select --list`)")
    return STRATEGIES[name]


def _teacher_probs(pool: Pool, what: str) -> np.ndarray:
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


@strategy("teacher_entropy", "entropy of the teachers' mean probabilities, highest first", needs_teachers=True)
def by_teacher_entropy(pool: Pool, **_: object) -> Ranking:
    return Ranking(entropy(_teacher_probs(pool, "strategy teacher_entropy")), True)


@strategy("random", "a seeded random permutation: the baseline to beat, and the measured default at 10%")
def by_random(pool: Pool, *, rng: np.random.Generator, **_: object) -> Ranking:
    return Ranking(rng.random(len(pool)), True)


@strategy("coverage", "the criterion ranked inside faiss k-means clusters of the student embeddings; "
          "the budget is shared across clusters by size", needs_embeddings=True)
def by_coverage(pool: Pool, *, rng: np.random.Generator, criterion: str = DEFAULT_CRITERION,
                clusters: int = DEFAULT_CLUSTERS, seed: int = 0, **_: object) -> Ranking:
    inner = check_criterion(criterion).fn(pool, rng=rng, seed=seed)
    return Ranking(inner.score, inner.higher_first, kmeans_clusters(pool.embeddings, clusters, seed), criterion)


def check_criterion(criterion: str) -> Strategy:
    """The strategy that ranks rows inside coverage's clusters (any but coverage itself)."""
    if criterion == "coverage" or criterion not in STRATEGIES:
        valid = ", ".join(n for n in STRATEGIES if n != "coverage")
        raise SelectionError(f"unknown criterion {criterion!r} for coverage; valid: {valid}")
    return STRATEGIES[criterion]


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


# -- budget, strata and the choice -------------------------------------------------------------------

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
    probs = _teacher_probs(pool, "--drop-disagreement")
    return (probs.max(axis=1) >= threshold) & (probs.argmax(axis=1) != pool.labels)


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
) -> Choice:
    """Pick the subset from plain arrays; no I/O, so every rule is testable on a hand-made pool.

    Filters run first, then the budget is shared across strata (coverage clusters and/or
    classes) by largest remainder, then inside each stratum the top rows by priority are
    kept, or, with ``sample``, rows are drawn without replacement with
    p ∝ exp(z / temperature), z the priority standardised over the pool (Gumbel top-k).
    """
    spec = get_strategy(strategy)
    k = budget_rows(budget, len(pool))
    if sample and temperature <= 0:
        raise SelectionError(f"--temperature {temperature} must be > 0")
    rng = np.random.default_rng(seed)

    eligible = np.ones(len(pool), dtype=bool)
    dropped: dict[str, int] = {}
    if dedup is not None:
        if pool.embeddings is None:
            raise SelectionError("--dedup needs the student's embeddings; give --student")
        dup = near_duplicates(pool.embeddings, dedup)
        dropped["near_duplicates"] = int(dup.sum())
        eligible &= ~dup
    if drop_disagreement:
        bad = disagreements(pool, disagreement_threshold) & eligible
        dropped["teacher_disagrees_with_label"] = int(bad.sum())
        eligible &= ~bad
    if eligible.sum() < k:
        raise SelectionError(f"only {int(eligible.sum())} rows are left after dropping {sum(dropped.values())}, "
                             f"fewer than the budget of {k}; lower --budget or loosen --dedup/--drop-disagreement")

    ranking = spec.fn(pool, rng=rng, criterion=criterion, clusters=clusters, seed=seed)
    priority = ranking.priority
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
        quotas = largest_remainder(np.bincount(strata[eligible], minlength=int(strata.max()) + 1), k)
        groups = strata[order]
        picked = order[_rank_within(groups) < quotas[groups]]
    return Choice(picked, ranking, eligible, k, dropped, strata)


def _rank_within(groups: np.ndarray) -> np.ndarray:
    """For each position, how many earlier positions share its group (0 for the first)."""
    by_group = np.argsort(groups, kind="stable")
    sorted_groups = groups[by_group]
    starts = np.searchsorted(sorted_groups, sorted_groups, side="left")
    within = np.empty(len(groups), dtype=np.int64)
    within[by_group] = np.arange(len(groups)) - starts
    return within


# -- reading the cache into a Pool ------------------------------------------------------------------

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
    from .score import column_matrix

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
        table = student.read_parts(verify=verify)
        emb = column_matrix(table, "embedding")
        pos = positions_of(table.column("uid").to_numpy(), uids)
        pool.embeddings = emb if np.array_equal(pos, np.arange(len(pos))) else emb[pos]  # aligned: no 2nd copy
    return pool


# -- the Selection record -----------------------------------------------------------------------

@dataclass
class PoolStats:
    """Per-row facts about the whole pool a selection came from, for its summary and plot."""

    uids: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    eligible: np.ndarray
    clusters: np.ndarray | None = None
    label_names: list[str] | None = None
    criterion: str = ""


@dataclass
class Selection:
    """A named subset: uids best first, their scores and ranks, and how it was made.

    ``rank`` 0 is the row chosen first (with sampling: drawn first); ``score`` is the
    strategy's criterion value, in its own direction (a margin stays a margin).
    """

    name: str
    uids: np.ndarray
    scores: np.ndarray
    ranks: np.ndarray
    provenance: dict
    pool: PoolStats | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.uids)

    def table(self) -> pa.Table:
        return pa.table({"uid": pa.array(self.uids, pa.int64()), "score": pa.array(self.scores, pa.float64()),
                         "rank": pa.array(self.ranks, pa.int64())})


def check_name(name: str) -> str:
    """A selection name is one folder name: no separators, no '..', nothing hidden or absolute, and
    short enough for every filesystem (255 bytes less the temp and lock names made beside it)."""
    if len(name) > MAX_NAME:
        raise SelectionError(f"selection name {name[:20]!r}... is {len(name)} characters long; use at most {MAX_NAME}")
    if not name or os.path.isabs(name) or "/" in name or "\\" in name or ".." in name or not NAME_PATTERN.match(name):
        raise SelectionError(f"selection name {name!r} is not a plain folder name; use letters, digits, '.', '_', '-' "
                             f"(no path separators or '..')")
    return name


def selection_path(root: str | os.PathLike, name: str) -> Path:
    return Path(root) / SELECTIONS / check_name(name)


def list_selections(root: str | os.PathLike) -> list[str]:
    """Saved selections: folders with a provenance.json (or links, reported damaged); temp folders are not."""
    folder = Path(root) / SELECTIONS
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if is_plain_name(p.name)
                  and (p.is_symlink() or (p.is_dir() and os.path.lexists(p / "provenance.json"))))


def save_selection(root: str | os.PathLike, selection: Selection, overwrite: bool = False) -> Path:
    """Write into a temp folder, then swap it into place: a reader sees all of it or none.

    The name's lock (``selections/.NAME.lock``) keeps two writers apart: without ``overwrite`` a
    second one is refused at once, with it the later one waits and then replaces the first whole.
    provenance.json records selection.arrow's sha256 under ``files``.
    """
    final = selection_path(root, selection.name)
    final.parent.mkdir(parents=True, exist_ok=True)
    busy = SelectionError(f"selection {selection.name!r} is being written by another process; wait for it "
                          f"or choose another --name")
    with name_lock(final, wait=overwrite, busy=busy):
        if final.exists() and not overwrite:
            raise SelectionError(f"selection {selection.name!r} exists in {final.parent}; choose another --name "
                                 f"or pass --overwrite")
        clean_stale(final)
        tmp = temp_name(final)
        try:
            tmp.mkdir()
            selection.provenance["files"] = {"selection.arrow": write_arrow(tmp / "selection.arrow", selection.table())}
            atomic_write_json(tmp / "provenance.json", selection.provenance)
            replace_path(tmp, final)
        finally:
            if os.path.lexists(tmp):
                remove_path(tmp)
    return final


def load_selection(root: str | os.PathLike | None, name: str) -> Selection:
    """A saved selection, checked as it is read: its files stay inside its folder and have the shape readers need."""
    store = Store(root)
    store.check_root()
    provenance = read_provenance(store.root, name)
    table = _read_table(store.root, name, provenance)
    return Selection(name, table.column("uid").to_numpy(), table.column("score").to_numpy(),
                     table.column("rank").to_numpy(), provenance)


def _damaged(name: str, why: str) -> SelectionError:
    return SelectionError(f"selection {name!r} is damaged ({why}); make it again with "
                          f"`selectkd select ... --name {name} --overwrite`")


def read_provenance(root: str | os.PathLike, name: str) -> dict:
    """A selection's provenance.json: an object with the cache keys and data fields readers use."""
    folder = selection_path(root, name)
    if folder.is_symlink():
        raise _damaged(name, "its folder is a symlink")
    try:
        provenance = read_json_file(folder / "provenance.json")
    except (FileNotFoundError, NotADirectoryError):
        have = ", ".join(list_selections(root)) or "none"
        raise SelectionError(f"no selection {name!r} in {Path(root) / SELECTIONS} (have: {have}); "
                             f"make it with `selectkd select --name {name}`") from None
    except ValueError as exc:
        raise _damaged(name, str(exc)) from None
    problem = shape_problem(provenance, PROVENANCE_FIELDS, PROVENANCE_REQUIRED) or _provenance_problem(provenance)
    if problem:
        raise _damaged(name, f"provenance.json: {problem}")
    return provenance


def _provenance_problem(provenance: dict) -> str | None:
    cache, data = provenance["cache"], provenance["data"]
    keys = [cache.get("student"), *(cache.get("teachers") if isinstance(cache.get("teachers"), list) else [None])]
    if not all(isinstance(k, str) for k in keys):
        return "cache.student or cache.teachers is missing or not text"
    missing = [f"data.{f}" for f in DATA_FIELDS if not isinstance(data.get(f), str)]
    if missing:
        return f"{', '.join(missing)} missing or not text"
    return files_problem(provenance.get("files", {}))


def _read_table(root: Path, name: str, provenance: dict) -> pa.Table:
    """selection.arrow: a plain file that matches its recorded checksum (if any), with uid, score, rank."""
    folder = selection_path(root, name)
    for file, digest in provenance.get("files", {}).items():
        if not is_own_file(folder / file) or file_sha256(folder / file) != digest:
            raise _damaged(name, f"{file} is missing or fails its checksum")
    path = folder / "selection.arrow"
    if not is_own_file(path):
        raise _damaged(name, "selection.arrow is missing or not a plain file")
    try:
        table = read_arrow(path)
    except (pa.ArrowInvalid, OSError):
        raise _damaged(name, "selection.arrow is not a readable Arrow file (truncated?)") from None
    wrong = [c for c, kind in SELECTION_COLUMNS.items()
             if c not in table.column_names or table.schema.field(c).type != kind or table.column(c).null_count]
    if wrong:
        raise _damaged(name, f"selection.arrow lacks the columns {', '.join(wrong)} as int64/float64 without nulls")
    return table


def selection_problem(root: str | os.PathLike, name: str) -> str | None:
    """What `cache verify` says of a selection: damage, or cache entries it names that are gone; None if sound."""
    try:
        cache = load_selection(root, name).provenance["cache"]
        store = Store(root)
        named = [store.entry("student", cache["student"]), *(store.entry("teacher", k) for k in cache["teachers"])]
    except SelectKDError as exc:
        return str(exc)
    gone = [f"{e.kind}/{e.key}" for e in named if not e.exists()]
    if gone:
        return (f"selection {name!r} names cache entries that are gone ({', '.join(gone)}); score them again with "
                f"the --data/--teacher/--student it records (`selectkd cache info selection:{name}`)")
    return None


# -- finding the cache entries --------------------------------------------------------------------

def _default_name(strategy: str, criterion: str, k: int, seed: int) -> str:
    what = f"coverage-{criterion}" if strategy == "coverage" else strategy
    return f"{what}-{k}-seed{seed}"


# -- the entry point ------------------------------------------------------------------------------

def select(
    data: str,
    split: str = "train",
    teachers: Sequence[str] = (),
    student: str | None = None,
    *,
    strategy: str = DEFAULT_STRATEGY,
    budget: float | int = 0.1,
    criterion: str = DEFAULT_CRITERION,
    clusters: int = DEFAULT_CLUSTERS,
    per_class: bool = False,
    sample: bool = False,
    temperature: float = 1.0,
    drop_disagreement: bool = False,
    disagreement_threshold: float = 0.9,
    dedup: float | None = None,
    seed: int = 0,
    name: str | None = None,
    cache_dir: str | Path | None = None,
    overwrite: bool = False,
    no_compute: bool = False,
    text_field: str = "text",
    text_pair_field: str | None = None,
    label_field: str = "label",
    limit: int | None = None,
    max_length: int = 128,
    batch_size: int = 64,
    cls_states: bool = False,
    student_head: str = "probe",
    allow_untrained_head: bool = False,
    device: str | None = None,
    progress: bool = True,
    trust_remote_code: bool = False,
) -> Selection:
    """Select a subset of (data, split) and save it as ``<store>/selections/NAME``.

    The cache entries are the ones ``score`` makes from the same arguments: complete ones
    are reused at once, missing ones computed (or, with ``no_compute``, reported as an
    error). The default, random, is what measured best at 10% (bench/results/matched_steps.md).
    ``budget`` is a fraction in (0, 1] or a row count >= 2; 1 means every row, as on the command line.
    """
    if not student:
        raise SelectionError("select ranks rows by the student's cached scores; give --student")
    spec = get_strategy(strategy)
    if spec.needs_teachers and not teachers:
        raise SelectionError(f"strategy {strategy} needs teacher logits; give --teacher")
    if strategy == "coverage":
        if check_criterion(criterion).needs_teachers and not teachers:
            raise SelectionError(f"criterion {criterion} needs teacher logits; give --teacher")
    if drop_disagreement and not teachers:
        raise SelectionError("--drop-disagreement compares the teachers' prediction with the label; give --teacher")
    budget = parse_budget(budget)  # 1 is every row, as --help says
    check_budget(budget)
    check_ranges({"--clusters": (clusters, COUNT), "--temperature": (temperature, POSITIVE),
                  "--disagreement-threshold": (disagreement_threshold, FRACTION), "--dedup": (dedup, DEDUP_RADIUS),
                  "--seed": (seed, SEED), "--max-length": (max_length, MAX_LENGTH), "--batch-size": (batch_size, COUNT)})
    if name is not None:
        check_name(name)

    store = Store(cache_dir)
    store.check_writable()  # a selection is always written: refuse a read-only store before any work
    common = dict(text_field=text_field, text_pair_field=text_pair_field, label_field=label_field, limit=limit,
                  max_length=max_length, cls_states=cls_states, student_head=student_head,
                  allow_untrained_head=allow_untrained_head, device=device, trust_remote_code=trust_remote_code)
    from .score import score

    result = score(data, split, teachers, student, batch_size=batch_size, cache_dir=store.root, progress=progress,
                   compute=not no_compute, **common)
    rows = result.rows
    teacher_entries = [store.entry("teacher", r.key) for r in result.teachers]
    student_entry = store.entry("student", result.student.key)

    need_embeddings = spec.needs_embeddings or dedup is not None
    pool = load_pool(student_entry, teacher_entries, embeddings=need_embeddings, verify=False,  # score checked them
                     teacher_logits=needs_teacher_logits(strategy, criterion, drop_disagreement))
    choice = choose(pool, strategy, budget, criterion=criterion, clusters=clusters, per_class=per_class,
                    sample=sample, temperature=temperature, drop_disagreement=drop_disagreement,
                    disagreement_threshold=disagreement_threshold, dedup=dedup, seed=seed)
    name = name or _default_name(strategy, criterion, choice.budget_rows, seed)
    if selection_path(store.root, name).exists() and not overwrite:
        raise SelectionError(f"selection {name!r} exists in {store.root / SELECTIONS}; choose another --name or pass --overwrite")

    picked = choice.indices
    smanifest = student_entry.manifest()
    provenance = {
        "name": name,
        "strategy": strategy,
        "description": spec.description,
        "parameters": {
            "budget": budget, "budget_rows": choice.budget_rows, "criterion": criterion if strategy == "coverage" else None,
            "clusters": clusters if strategy == "coverage" else None, "per_class": per_class, "sample": sample,
            "temperature": temperature if sample else None, "drop_disagreement": drop_disagreement,
            "disagreement_threshold": disagreement_threshold if drop_disagreement else None, "dedup": dedup,
        },
        "seed": seed,
        "score_higher_first": choice.ranking.higher_first,
        "cache": {"student": student_entry.key, "teachers": [e.key for e in teacher_entries]},
        "models": {"student": student, "teachers": list(teachers)},
        "data": {  # a file or folder by its absolute path, so export finds it from any folder
            "data": rows.source.get("file") or rows.source.get("folder") or data, "given": data, "split": split, "text_field": text_field, "text_pair_field": text_pair_field,
            "label_field": label_field, "limit": limit, "fingerprint": rows.fingerprint,
            "source": rows.source, "num_labels": rows.num_labels, "label_names": rows.label_names,
        },
        "score_options": {"max_length": max_length, "cls_states": cls_states, "student_head": student_head,
                          "allow_untrained_head": allow_untrained_head,
                          "numerics": smanifest.get("inputs", {}).get("numerics")},
        "pool_rows": len(pool),
        "eligible_rows": int(choice.eligible.sum()),
        "dropped": choice.dropped,
        "rows": int(len(picked)),
        "selectkd_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    selection = Selection(name, pool.uids[picked], np.asarray(choice.ranking.score, dtype=np.float64)[picked],
                          np.arange(len(picked), dtype=np.int64), provenance,
                          PoolStats(pool.uids, pool.labels, np.asarray(choice.ranking.score, dtype=np.float64),
                                    choice.eligible, choice.ranking.groups, rows.label_names,
                                    choice.ranking.criterion or strategy))
    save_selection(store.root, selection, overwrite=overwrite)
    return selection


# -- reporting ----------------------------------------------------------------------------------

def _stats(values: np.ndarray) -> dict:
    if len(values) == 0:
        return {"min": None, "median": None, "max": None}
    return {"min": float(np.min(values)), "median": float(np.median(values)), "max": float(np.max(values))}


def summary(selection: Selection, pool: PoolStats | None = None) -> dict:
    """What a summary table shows: sizes, class balance of pool vs subset, score spread, clusters covered."""
    pool = pool or selection.pool
    if pool is None:
        raise SelectionError("summary needs the pool the selection came from (the result of `select`)")
    at = positions_of(pool.uids, selection.uids)
    n_classes = int(max(pool.labels.max(initial=0) + 1, len(pool.label_names or [])))
    pool_counts = np.bincount(pool.labels, minlength=n_classes)
    sub_counts = np.bincount(pool.labels[at], minlength=n_classes)
    names = pool.label_names or [str(i) for i in range(n_classes)]
    classes = [{"label": names[c], "pool": int(pool_counts[c]), "pool_share": float(pool_counts[c] / len(pool.uids)),
                "subset": int(sub_counts[c]), "subset_share": float(sub_counts[c] / max(1, len(at)))}
               for c in range(n_classes)]
    result = {
        "name": selection.name,
        "strategy": selection.provenance.get("strategy"),
        "criterion": pool.criterion,
        "pool_rows": int(len(pool.uids)),
        "eligible_rows": int(pool.eligible.sum()),
        "subset_rows": int(len(at)),
        "dropped": dict(selection.provenance.get("dropped", {})),
        "classes": classes,
        "score": {"pool": _stats(pool.scores), "subset": _stats(pool.scores[at])},
        "clusters": None,
    }
    if pool.clusters is not None:
        result["clusters"] = {"total": int(len(np.unique(pool.clusters))),
                              "covered": int(len(np.unique(pool.clusters[at])))}
    return result


def check_plot(path: str | os.PathLike) -> None:
    """Refuse a --plot path that is not free or a PNG, before any work (selectkd/outputs.py)."""
    check_output(Path(path), PNG, overwrite=True)


def plot_histogram(selection: Selection, path: str | os.PathLike, pool: PoolStats | None = None, bins: int = 50) -> Path:
    """A PNG of the criterion over the pool with the subset highlighted: shows what a strategy favours.

    An existing PNG at ``path`` is replaced; anything else there is refused (``check_plot`` says so
    before the selection is made).
    """
    pool = pool or selection.pool
    if pool is None:
        raise SelectionError("plot_histogram needs the pool the selection came from (the result of `select`)")
    try:
        from matplotlib.figure import Figure  # no pyplot: no global backend, Agg renders the PNG
    except ImportError:
        raise SelectKDError("--plot needs matplotlib; install it with `pip install 'selectkd[plot]'`") from None
    path = Path(path)
    at = positions_of(pool.uids, selection.uids)
    edges = np.histogram_bin_edges(pool.scores, bins=bins)
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    ax.hist(pool.scores, bins=edges, color="0.75", label=f"pool ({len(pool.uids):,})")
    ax.hist(pool.scores[at], bins=edges, color="tab:red", alpha=0.8, label=f"subset ({len(at):,})")
    ax.set_xlabel(pool.criterion or "score")
    ax.set_ylabel("rows")
    ax.set_title(f"selection {selection.name}")
    ax.legend()
    fig.tight_layout()
    tmp = temp_name(path)
    try:
        with claim(path, PNG, overwrite=True):
            fig.savefig(tmp, format="png")
            replace_path(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
