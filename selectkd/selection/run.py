"""The select stage: rank the cached pool by a strategy and save a named subset with its provenance.

A strategy is a function over plain numpy arrays (a ``Pool``) registered by name with
``@strategy``; it returns a ``Ranking``: one score per row, which way is "select first",
and optionally groups to fill the budget across (coverage's k-means clusters).
``choose`` turns a Ranking into a subset: filters (near-duplicates, confident teacher
disagreement with the gold label), a budget shared across strata by largest remainder
(clusters and/or classes), then top-k or sampling inside each stratum. ``select`` does
the I/O around it: finds the cache entries through ``score``, reads the arrays by uid,
and saves ``<root>/selections/NAME/`` (``selection.arrow`` + ``provenance.json``) atomically.
Coverage, class balance and sampling exist because plain global top-k by uncertainty collapses onto one
ambiguous corner at 10% (docs/RESULTS.md).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .._version import __version__
from ..cache.store import Entry, Store
from ..data.rows import Rows
from ..ranges import COUNT, FRACTION, MAX_LENGTH, POSITIVE, SEED, check_ranges
from ..specs import DataSpec, ScoreSpec, SelectSpec
from .choose import DEDUP_RADIUS, PRUNE, Choice, WholePool, check_budget, choose_parts, parse_budget
from .memory import check_memory
from .pool import CacheParts, Misaligned, embedding_entry, load_pool, needs_teacher_logits, reads_embeddings
from .saved import SELECTIONS, PoolStats, Selection, check_name, save_selection, selection_path
from .strategies import SelectionError, check_criterion, get_strategy


def select(data: DataSpec, scoring: ScoreSpec, spec: SelectSpec, *, name: str | None = None,
           cache_dir: str | Path | None = None, overwrite: bool = False, no_compute: bool = False,
           progress: bool = True, max_memory: int | None = None) -> Selection:
    """Select a subset of ``data`` and save it as ``<store>/selections/NAME``.

    The cache entries are the ones ``score(data, scoring)`` makes: complete ones are reused at
    once, missing ones computed (or, with ``no_compute``, reported as an error). The default
    strategy, random, is one no other beat at 10% and equal time on both datasets measured so far (docs/RESULTS.md).
    ``spec.budget`` is a fraction in (0, 1] or a row count >= 2; 1 means every row, as on the command line.
    A pool that choosing would need more than ``max_memory`` bytes for (default: the memory available) is refused.
    """
    spec = checked_spec(scoring, spec, name)
    store = Store(cache_dir)
    store.check_writable()  # a selection is always written: refuse a read-only store before any work
    result = _scored(data, scoring, store.root, no_compute, progress)
    teachers = [store.entry("teacher", r.key) for r in result.teachers]
    student = store.entry("student", result.student.key)
    dim = int(embedding_entry(student).manifest().get("embedding_dim", 0)) if reads_embeddings(spec) else 0
    check_memory(len(result.rows), spec, dim, max_memory)
    choice = choose_from_cache(student, teachers, spec, verify=False)  # score has just checked them
    name = name or default_name(spec, choice.budget_rows)
    if selection_path(store.root, name).exists() and not overwrite:
        raise SelectionError(f"selection {name!r} exists in {store.root / SELECTIONS}; choose another --name or pass --overwrite")
    record = provenance(name, spec, choice, data=data, scoring=scoring, rows=result.rows, student=student,
                        teachers=teachers)
    selection = as_selection(name, choice, record, result.rows.label_names)
    save_selection(store.root, selection, overwrite=overwrite)
    return selection


def choose_from_cache(student: Entry, teachers: list[Entry], spec: SelectSpec, verify: bool = True) -> Choice:
    """``choose_parts`` over the cached pool, read part by part (bounded memory); joined whole by uid
    instead when the entries hold their rows in other orders."""
    embeddings = get_strategy(spec.strategy).needs_embeddings
    logits = needs_teacher_logits(spec.strategy, spec.criterion, spec.drop_disagreement)
    options = dict(criterion=spec.criterion, clusters=spec.clusters, per_class=spec.per_class, sample=spec.sample,
                   temperature=spec.sample_temperature, drop_disagreement=spec.drop_disagreement,
                   disagreement_threshold=spec.disagreement_threshold, dedup=spec.dedup, seed=spec.seed,
                   prune_hard=spec.prune_hard, bins=spec.bins)
    try:
        return choose_parts(CacheParts(student, teachers, embeddings, verify, logits, dedup=spec.dedup is not None),
                            spec.strategy, spec.budget, **options)
    except Misaligned:
        pass
    pool = load_pool(student, teachers, embeddings=reads_embeddings(spec), verify=verify,
                     teacher_logits=logits)
    return choose_parts(WholePool(pool), spec.strategy, spec.budget, **options)


def _scored(data: DataSpec, scoring: ScoreSpec, root: Path, no_compute: bool, progress: bool):
    """The cache entries for (data, scoring), scored now where missing unless ``no_compute``: ``ScoreResult``."""
    from ..scoring.run import score

    return score(data, scoring, cache_dir=root, progress=progress, compute=not no_compute)


def checked_spec(scoring: ScoreSpec, spec: SelectSpec, name: str | None = None) -> SelectSpec:
    """``spec`` with its budget parsed (1 is every row, as --help says); refuses what no cache could
    satisfy (models a strategy needs, ranges, the name) before any work."""
    if not scoring.student:
        raise SelectionError("select ranks rows by the student's cached scores; give --student")
    if get_strategy(spec.strategy).needs_teachers and not scoring.teachers:
        raise SelectionError(f"strategy {spec.strategy} needs teacher logits; give --teacher")
    if spec.strategy == "coverage" and check_criterion(spec.criterion).needs_teachers and not scoring.teachers:
        raise SelectionError(f"criterion {spec.criterion} needs teacher logits; give --teacher")
    if spec.drop_disagreement and not scoring.teachers:
        raise SelectionError("--drop-disagreement compares the teachers' prediction with the label; give --teacher")
    spec = replace(spec, budget=parse_budget(spec.budget))
    check_budget(spec.budget)
    check_ranges({"--clusters": (spec.clusters, COUNT), "--sample-temperature": (spec.sample_temperature, POSITIVE),
                  "--disagreement-threshold": (spec.disagreement_threshold, FRACTION),
                  "--dedup": (spec.dedup, DEDUP_RADIUS), "--seed": (spec.seed, SEED),
                  "--prune-hard": (spec.prune_hard, PRUNE), "--bins": (spec.bins, COUNT),
                  "--max-length": (scoring.max_length, MAX_LENGTH), "--batch-size": (scoring.batch_size, COUNT)})
    if name is not None:
        check_name(name)
    return spec


def default_name(spec: SelectSpec, rows: int) -> str:
    """``<strategy>-<rows>-seed<seed>``; coverage names its criterion (``coverage-entropy-...``)."""
    what = f"coverage-{spec.criterion}" if spec.strategy == "coverage" else spec.strategy
    return f"{what}-{rows}-seed{spec.seed}"


def provenance(name: str, spec: SelectSpec, choice: Choice, *, data: DataSpec, scoring: ScoreSpec,
               rows: Rows, student: Entry, teachers: list[Entry]) -> dict:
    """What provenance.json records: how the selection was made, from which cache entries and data."""
    coverage = spec.strategy == "coverage"
    return {
        "name": name,
        "strategy": spec.strategy,
        "description": get_strategy(spec.strategy).description,
        "parameters": {
            "budget": spec.budget, "budget_rows": choice.budget_rows, "criterion": spec.criterion if coverage else None,
            "clusters": spec.clusters if coverage else None, "per_class": spec.per_class, "sample": spec.sample,
            "temperature": spec.sample_temperature if spec.sample else None,
            "drop_disagreement": spec.drop_disagreement,
            "disagreement_threshold": spec.disagreement_threshold if spec.drop_disagreement else None,
            "dedup": spec.dedup,
            "prune_hard": spec.prune_hard if spec.strategy == "ccs" else None,
            "bins": spec.bins if spec.strategy == "ccs" else None,
        },
        "seed": spec.seed,
        "score_higher_first": choice.ranking.higher_first,
        "cache": {"student": student.key, "teachers": [e.key for e in teachers],
                  "embedding": student.manifest().get("embedding")},
        "models": {"student": scoring.student, "teachers": list(scoring.teachers)},
        "data": {  # a file or folder by its absolute path, so export finds it from any folder
            "data": rows.source.get("file") or rows.source.get("folder") or data.data, "given": data.data,
            "split": data.split, "text_field": data.text_field, "text_pair_field": data.text_pair_field,
            "label_field": data.label_field, "limit": data.limit, "fingerprint": rows.fingerprint,
            "source": rows.source, "num_labels": rows.num_labels, "label_names": rows.label_names,
        },
        "score_options": {"max_length": scoring.max_length, "cls_states": scoring.cls_states,
                          "student_head": scoring.student_head, "allow_untrained_head": scoring.allow_untrained_head,
                          "numerics": student.manifest().get("inputs", {}).get("numerics")},
        "pool_rows": choice.rows,
        "eligible_rows": int(choice.eligible.sum()),
        "dropped": choice.dropped,
        **({"dedup_search": choice.dedup} if choice.dedup else {}),
        "rows": int(len(choice.indices)),
        "selectkd_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def as_selection(name: str, choice: Choice, record: dict, label_names: list[str] | None) -> Selection:
    """The chosen rows best first, with the whole pool's scores kept for the summary and plot."""
    picked = choice.indices
    scores = choice.ranking.score
    stats = PoolStats(choice.uids, choice.labels, scores, choice.eligible, choice.ranking.groups, label_names,
                      choice.ranking.criterion or record["strategy"], positions=picked)
    return Selection(name, choice.uids_of(picked), scores[picked].astype(np.float64), np.arange(len(picked), dtype=np.int64),
                     record, stats)
