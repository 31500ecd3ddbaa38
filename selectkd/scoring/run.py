"""The score stage: run each teacher (and the student) over a split once, into the cache.

Teacher entries hold ``uid, logits[, cls]`` per row. The student entry holds pooled
embeddings (parts), a faiss index over them, the fitted probe head and, in
``scores.arrow``, the student's probabilities, entropy, margin, least confidence and
KL(teacher || student) against every teacher given. A second identical call finds every
key complete and runs no model at all.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from .. import parallel
from ..cache.near import NearEntry, nearest_entry
from ..cache.store import Entry, Store
from ..data.rows import DataSpec, Rows, load_rows
from ..errors import CacheError, ModelError, SelectKDError, SelectKDWarning
from ..models import ModelRef, check_max_length, label_names, load_tokenizer, resolve, tokenizer_key
from ..ranges import COUNT, MAX_LENGTH, check_ranges
from ..runtime import pick_device
from .parts import PART_ROWS
from .student import _score_student, student_inputs
from .teacher import _score_teacher, teacher_inputs

STUDENT_HEADS = ("probe", "as-is")


@dataclass
class EntryReport:
    """What happened to one cache key in a score call."""

    role: str
    model: str
    kind: str
    key: str
    rows: int
    reused: bool
    seconds: float
    tokens: int = 0
    extra: dict = field(default_factory=dict)


@dataclass
class ScoreResult:
    rows: Rows
    teachers: list[EntryReport]
    student: EntryReport | None
    store: Store

    @property
    def reports(self) -> list[EntryReport]:
        return [*self.teachers, *([self.student] if self.student else [])]


def score(
    data: str,
    split: str = "train",
    teachers: Sequence[str] = (),
    student: str | None = None,
    *,
    text_field: str = "text",
    text_pair_field: str | None = None,
    label_field: str = "label",
    limit: int | None = None,
    max_length: int = 128,
    batch_size: int = 64,
    cls_states: bool = False,
    student_head: str = "probe",
    allow_untrained_head: bool = False,
    cache_dir: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
    part_rows: int | None = None,
    compute: bool = True,
    repair: bool = False,
    trust_remote_code: bool = False,
) -> ScoreResult:
    """Fill the cache for (data, split) with every teacher's logits and the student's scores.

    Returns which keys were written or reused. Bad input raises ``SelectKDError`` before
    anything is written under a key. ``compute=False`` only finds complete entries and
    raises ``CacheError`` for a missing one (`select --no-compute`). ``repair=True`` recomputes
    only the damaged files of an entry that fails its checksums, instead of refusing it.
    Under torchrun every rank scores its own share of the parts; rank 0 writes the manifest.
    """
    if not teachers and not student:
        raise SelectKDError("nothing to score; give --teacher and/or --student")
    if student_head not in STUDENT_HEADS:
        raise SelectKDError(f"unknown --student-head {student_head!r}; valid: {', '.join(STUDENT_HEADS)}")
    part_rows = part_rows or int(os.environ.get("SELECTKD_PART_ROWS", PART_ROWS))
    check_ranges({"--max-length": (max_length, MAX_LENGTH), "--batch-size": (batch_size, COUNT),
                  "SELECTKD_PART_ROWS": (part_rows, COUNT)})
    if student and student_head == "probe" and not teachers:
        raise SelectKDError("--student-head probe fits the head to teacher soft labels; give --teacher, or use --student-head as-is")
    if len(set(teachers)) != len(teachers):
        raise SelectKDError("the same --teacher is given twice; give each teacher once")
    store = Store(cache_dir)
    store.check_root()
    root = store.root
    rank, world, device = parallel.setup(pick_device(device))
    progress = progress and rank == 0
    spec = DataSpec(data, split, text_field, text_pair_field, label_field, limit)
    teacher_refs = [resolve(t, root, trust_remote_code) for t in teachers]
    student_ref = resolve(student, root, trust_remote_code) if student else None
    rows = load_rows_for(spec, root, teacher_refs)
    _check_before_scoring(rows, [*teacher_refs, *([student_ref] if student_ref else [])], max_length, rank)

    def fill(entry: Entry, inputs: dict, role: str, ref: ModelRef, work) -> tuple[bool, int, dict]:
        """Make ``entry`` complete (rank 0 holds the key's lock; every rank computes its share)."""
        complete = entry.is_complete()
        damaged = entry.verify() if complete else []
        if complete and not damaged:
            return True, 0, {}
        if damaged and not repair:
            entry.check(damaged)  # a damaged part is refused (the error names the fixes), never silently reused
        if compute:  # a fully cached score reads only; writing must be possible before the lock file
            store.check_writable()
        if rank == 0 or not compute:  # --no-compute raises here, naming the option that differs
            _no_silent_rescore(store, entry, inputs, rows, role, ref.name, compute)
        tokenizer = load_tokenizer(ref)[0]  # a bad tokenizer is refused before the key's lock file exists
        with entry.lock() if rank == 0 else contextlib.nullcontext():
            if damaged and rank == 0:  # --repair: forget the damaged files; only they are recomputed
                entry.forget(damaged)
            # another process may have finished it while we waited for the lock
            reused = parallel.broadcast(entry.is_complete() if rank == 0 else None, world)
            try:
                result = (0, 0, {}) if reused else work(tokenizer)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                    if rank == 0:
                        entry.discard_if_empty()  # nothing whole was written: leave no trace of the attempt
                    raise CacheError(f"out of disk space writing {entry.kind}/{entry.key[:12]} under {root} "
                                     f"({os.strerror(exc.errno)}); whole parts are kept and nothing else changed: "
                                     f"free space (or use --cache-dir on a larger disk) and re-run to resume") from None
                raise
            parallel.barrier(world)
        _, tokens, extra = result
        return reused, tokens, extra

    reports: list[EntryReport] = []
    teacher_entries: list[Entry] = []
    for ref in teacher_refs:
        inputs = teacher_inputs(ref, tokenizer_key(ref), rows, max_length, cls_states, allow_untrained_head, device)
        entry = store.entry("teacher", _key(inputs))
        t0 = time.perf_counter()
        reused, tokens, _ = fill(entry, inputs, "teacher", ref, lambda tok: _score_teacher(
            entry, inputs, ref, tok, rows, max_length=max_length, batch_size=batch_size, cls_states=cls_states,
            allow_untrained_head=allow_untrained_head, device=device, progress=progress, part_rows=part_rows,
            rank=rank, world=world))
        teacher_entries.append(entry)
        reports.append(EntryReport("teacher", ref.name, "teacher", entry.key, len(rows), reused,
                                   time.perf_counter() - t0, tokens))

    student_report = None
    if student_ref is not None:
        inputs = student_inputs(student_ref, tokenizer_key(student_ref), rows, max_length, student_head,
                                [e.key for e in teacher_entries], device)
        entry = store.entry("student", _key(inputs))
        t0 = time.perf_counter()
        reused, tokens, extra = fill(entry, inputs, "student", student_ref, lambda tok: _score_student(
            entry, inputs, student_ref, tok, rows, teacher_entries, head=student_head, max_length=max_length,
            batch_size=batch_size, device=device, progress=progress, part_rows=part_rows, rank=rank, world=world))
        student_report = EntryReport("student", student_ref.name, "student", entry.key, len(rows), reused,
                                     time.perf_counter() - t0, tokens, extra)
    return ScoreResult(rows, reports, student_report, store)


def _check_before_scoring(rows: Rows, refs: list[ModelRef], max_length: int, rank: int) -> None:
    """What would fail mid-run is refused, and what would surprise is said, before any entry is made."""
    if rows.split_ignored and rank == 0:
        warnings.warn(f"{rows.spec.data} is a single file with one split: --split {rows.spec.split} is ignored; all "
                      f"its rows are scored, under the same cache keys as without --split", SelectKDWarning)
    for ref in refs:
        check_max_length(ref, max_length)
        _check_label_count(ref, rows)


def _no_silent_rescore(store: Store, entry: Entry, inputs: dict, rows: Rows, role: str, name: str,
                       compute: bool) -> None:
    """A forgotten option must not pass unnoticed: --no-compute names it; otherwise a warning does, before the work."""
    near = nearest_entry(store, entry, inputs, rows)
    if not compute:
        raise _missing(role, name, entry, near)
    if near and near.forgotten and not entry.exists():
        warnings.warn(f"scoring {role} {name} anew, though cached entry {near.key[:12]} differs only in "
                      f"{near.described()}: to reuse it, stop now (Ctrl-C) and {near.fix()}", SelectKDWarning)


def _missing(role: str, name: str, entry: Entry, near: NearEntry | None) -> CacheError:
    if near is not None:
        fix = f"{near.fix()} or drop --no-compute" if near.fix() else "score it first (drop --no-compute)"
        return CacheError(f"no cached {role} entry for {name} with these options; the nearest, {near.key[:12]}, "
                          f"differs in {near.described()}; {fix}")
    if entry.exists():
        return CacheError(f"the {role} cache entry for {name} ({entry.key[:12]}) is incomplete; finish it with "
                          f"`selectkd score` and the same options (or drop --no-compute)")
    return CacheError(f"no complete {role} cache for {name} with these arguments ({entry.key[:12]}); run `selectkd score` "
                      f"with the same --data/--split/--teacher/--student options first (or drop --no-compute)")


def _key(inputs: dict) -> str:
    from ..cache.store import hash_inputs

    return hash_inputs(inputs)


def load_rows_for(spec: DataSpec, root: Path, teachers: Sequence[ModelRef]) -> Rows:
    """The rows, their string labels given the ids of the teachers' own class names where the
    teachers were saved with real names: a teacher's logit 1 means its class 1, whatever order the
    data's names sort in (a file of "spam" rows only, or "Spam"). Teachers that disagree are refused."""
    rows = load_rows(spec, root)
    named = [(ref, names) for ref in teachers if (names := label_names(ref))]
    if rows.label_names is None or not named:  # integer labels are ids already; unnamed heads say nothing
        return rows
    ref, names = named[0]
    for other, other_names in named[1:]:
        if other_names != names:
            raise ModelError(f"teachers {ref.name} ({', '.join(names)}) and {other.name} ({', '.join(other_names)}) "
                             f"name their classes differently; use teachers trained on the same labels")
    if names == rows.label_names:
        return rows
    return load_rows(replace(spec, label_names=tuple(names)), root, names_from=f"teacher {ref.name}")


def _check_label_count(ref: ModelRef, rows: Rows) -> None:
    """Labels beyond what a trained head can output are an error before any work starts."""
    if not ref.local:
        return
    import json

    config = json.loads((Path(ref.source) / "config.json").read_text())
    id2label = config.get("id2label")
    n = len(id2label) if id2label else config.get("num_labels")
    arch = " ".join(config.get("architectures") or [])
    if n and "ForSequenceClassification" in arch and int(rows.labels.max()) >= int(n):
        raise ModelError(
            f"{ref.name} predicts {n} labels but the data has label {int(rows.labels.max())}; "
            f"use a model trained on this task (`selectkd finetune`)"
        )
