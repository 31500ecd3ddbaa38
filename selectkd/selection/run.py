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

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from .._version import __version__
from ..cache.store import Store
from ..ranges import COUNT, FRACTION, MAX_LENGTH, POSITIVE, SEED, check_ranges
from .choose import DEDUP_RADIUS, check_budget, choose, parse_budget
from .pool import load_pool, needs_teacher_logits
from .saved import SELECTIONS, PoolStats, Selection, check_name, save_selection, selection_path
from .strategies import (DEFAULT_CLUSTERS, DEFAULT_CRITERION, DEFAULT_STRATEGY, SelectionError, check_criterion,
                         get_strategy)


def _default_name(strategy: str, criterion: str, k: int, seed: int) -> str:
    what = f"coverage-{criterion}" if strategy == "coverage" else strategy
    return f"{what}-{k}-seed{seed}"


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
    from ..scoring.run import score_kw as score

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
