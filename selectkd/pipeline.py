"""teacher -> score -> select -> distill: the sequence `selectkd demo` and the benchmarks in bench/ run.

Each step is one function that reuses what an earlier run finished (a fitted teacher, cached
scores, a finished distillation with the same config), so a rerun does only what is missing.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from .cache.arrays import column_matrix
from .scoring.run import ScoreResult, score
from .specs import DataSpec, ScoreSpec

FINETUNED = "selectkd_finetune.json"  # what `finetune` writes last into a finished model folder


def frozen_teacher(data: str, model: str, folder: str | Path, rows: int, *, cache_dir: str | Path | None = None,
                   progress: bool = False, **finetune_options) -> tuple[str, bool]:
    """(folder, reused): ``model``'s frozen encoder with a head fitted on the first ``rows`` rows of
    ``data`` (`selectkd finetune --head-only`); a teacher already finished in ``folder`` is reused."""
    from .finetune import finetune

    folder = Path(folder)
    if (folder / FINETUNED).exists():
        return str(folder), True
    finetune(data, model, folder, limit=rows, head_only=True, cache_dir=None if cache_dir is None else str(cache_dir),
             progress=progress, overwrite=True, **finetune_options)
    return str(folder), False


def finetuned_teacher(data: str, model: str, folder: str | Path, rows: int, *, cache_dir: str | Path | None = None,
                      progress: bool = False, **finetune_options) -> tuple[str, dict]:
    """(folder, record): ``model`` fine-tuned end to end on the first ``rows`` rows of ``data`` (`selectkd
    finetune`); a teacher already finished in ``folder`` is reused, one interrupted half-way is continued from
    its checkpoint. ``record`` is its selectkd_finetune.json."""
    import json

    from .finetune import finetune

    folder = Path(folder)
    if not (folder / FINETUNED).exists():
        finetune(data, model, folder, limit=rows, cache_dir=None if cache_dir is None else str(cache_dir),
                 progress=progress, overwrite=True, resume=True, **finetune_options)
    return str(folder), json.loads((folder / FINETUNED).read_text())


def score_pool(data: str, teachers: Sequence[str], student: str | None, *, rows: int, test_rows: int,
               max_length: int = 128, cache_dir: str | Path | None = None,
               progress: bool = False) -> tuple[ScoreResult, ScoreResult]:
    """(train, test): the first ``rows`` train rows scored by the teachers and the student, the first
    ``test_rows`` test rows by the teachers (their logits give the teachers' test accuracy)."""
    scoring = ScoreSpec(teachers=tuple(teachers), student=student, max_length=max_length)
    train = score(DataSpec(data, "train", limit=rows), scoring, cache_dir=cache_dir, progress=progress)
    test = score(DataSpec(data, "test", limit=test_rows), replace(scoring, student=None), cache_dir=cache_dir,
                 progress=progress)
    return train, test


def teacher_test_metrics(test: ScoreResult) -> list[dict]:
    """Accuracy and macro-F1 of each teacher on the scored rows, from its cached logits."""
    from .finetune import classification_metrics

    found = []
    for report in test.teachers:
        logits = column_matrix(test.store.entry("teacher", report.key).read_parts(), "logits")
        found.append(classification_metrics(logits.argmax(1), test.rows.labels, test.rows.num_labels))
    return found


def majority_baseline(labels: np.ndarray, num_labels: int, names: Sequence[str] | None = None) -> dict:
    """What always answering the most frequent class scores on ``labels``: the floor every model must beat."""
    from .finetune import classification_metrics

    top = int(np.bincount(labels, minlength=num_labels).argmax())
    metrics = classification_metrics(np.full_like(labels, top), labels, num_labels)
    return {**metrics, "class": names[top] if names else str(top)}


def make_selection(data: str, teachers: Sequence[str], student: str, *, name: str, budget: float, seed: int,
                   rows: int, max_length: int = 128, cache_dir: str | Path | None = None, **options):
    """A saved selection of the scored train pool (remade each time: cheap, deterministic for a seed)."""
    from .selection.run import select
    from .specs import DataSpec, ScoreSpec, SelectSpec

    return select(DataSpec(data, limit=rows), ScoreSpec(tuple(teachers), student, max_length),
                  SelectSpec(budget=budget, seed=seed, **options), name=name, overwrite=True,
                  cache_dir=None if cache_dir is None else str(cache_dir), progress=False)


def distilled(cfg, *, progress: bool = False, say=None) -> tuple[dict, bool]:
    """(summary, reused) of the distillation ``cfg`` (a DistillConfig) describes: a run that finished in
    ``cfg.out`` with exactly this config is reused, anything else there is replaced. ``say(reused)``
    is called first (to announce the training, or the reuse)."""
    from .distillation.config import finished_summary
    from .distillation.loop import distill

    summary = finished_summary(Path(cfg.out), cfg)
    if say is not None:
        say(summary is not None)
    if summary is not None:
        return summary, True
    return distill(cfg, overwrite=True, progress=progress).summary, False
