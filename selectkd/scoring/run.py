"""The score stage: run each teacher (and the student) over a split once, into the cache.

Teacher entries hold ``uid, logits[, cls]`` per row. The student's embedding entry holds its
pooled embeddings (parts) and a faiss index over them, keyed without the teachers; its student
entry the probe head fitted to the teachers and, in ``scores.arrow``, the student's
probabilities, entropy, margin, least confidence and KL(teacher || student) against every
teacher given. A second identical call finds every key complete and runs no model at all; a
call with another teacher reuses the embeddings and runs only that teacher.
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
from ..cache.keys import entry_key
from ..cache.near import NearEntry, nearest_entry
from ..cache.store import Entry, Store
from ..data.rows import Rows, load_rows
from ..errors import CacheError, ModelError, SelectKDError, SelectKDWarning
from ..models import ModelRef, check_max_length, check_weights, label_names, load_tokenizer, resolve, tokenizer_key
from ..ranges import COUNT, MAX_LENGTH, NON_NEGATIVE, check_ranges
from ..runtime import pick_device
from ..specs import DataSpec, ScoreSpec
from .parts import PART_ROWS, Work
from .student import score_embeddings, score_student
from .teacher import score_teacher

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
    embedding: EntryReport | None = None  # the student's embeddings (with a student)

    @property
    def reports(self) -> list[EntryReport]:
        return [*self.teachers, *(r for r in (self.embedding, self.student) if r)]


def check_score_spec(scoring: ScoreSpec) -> None:
    """Refuse what cannot be scored before any model is loaded or any entry made."""
    if not scoring.teachers and not scoring.student:
        raise SelectKDError("nothing to score; give --teacher and/or --student")
    if scoring.student_head not in STUDENT_HEADS:
        raise SelectKDError(f"unknown --student-head {scoring.student_head!r}; valid: {', '.join(STUDENT_HEADS)}")
    check_ranges({"--max-length": (scoring.max_length, MAX_LENGTH), "--batch-size": (scoring.batch_size, COUNT),
                  "probe_l2": (scoring.probe_l2, NON_NEGATIVE), "probe_max_iter": (scoring.probe_max_iter, COUNT)})
    if scoring.student and scoring.student_head == "probe" and not scoring.teachers:
        raise SelectKDError("--student-head probe fits the head to teacher soft labels; give --teacher, or use --student-head as-is")
    if len(set(scoring.teachers)) != len(scoring.teachers):
        raise SelectKDError("the same --teacher is given twice; give each teacher once")


def score(data: DataSpec, scoring: ScoreSpec, *, cache_dir: str | Path | None = None, progress: bool = True,
          compute: bool = True, repair: bool = False, part_rows: int | None = None) -> ScoreResult:
    """Fill the cache for ``data`` with every teacher's logits and the student's scores.

    Returns which keys were written or reused. Bad input raises ``SelectKDError`` before
    anything is written under a key. ``compute=False`` only finds complete entries and
    raises ``CacheError`` for a missing one (`select --no-compute`). ``repair=True`` recomputes
    only the damaged files of an entry that fails its checksums, instead of refusing it.
    Under torchrun every rank scores its own share of the parts; rank 0 writes the manifest.
    """
    check_score_spec(scoring)
    part_rows = part_rows or int(os.environ.get("SELECTKD_PART_ROWS", PART_ROWS))
    check_ranges({"SELECTKD_PART_ROWS": (part_rows, COUNT)})
    store = Store(cache_dir)
    store.check_root()
    rank, world, device = parallel.setup(pick_device(scoring.device))
    teacher_refs = [resolve(t, store.root, scoring.trust_remote_code) for t in scoring.teachers]
    student_ref = resolve(scoring.student, store.root, scoring.trust_remote_code) if scoring.student else None
    rows = load_rows_for(data, store.root, teacher_refs)
    _check_before_scoring(rows, [*teacher_refs, *([student_ref] if student_ref else [])], scoring.max_length, rank)
    run = _Run(store, rows, scoring, Work(device, part_rows, progress and rank == 0, rank, world), compute, repair)
    teachers = [run.report("teacher", ref) for ref in teacher_refs]
    embedding = run.report("embedding", student_ref) if student_ref else None
    student = run.report("student", student_ref, [t.key for t in teachers], embedding.key) if embedding else None
    return ScoreResult(rows, teachers, student, store, embedding)


@dataclass
class _Run:
    """One score call: makes each entry complete (rank 0 holds its key's lock; every rank computes its share)."""

    store: Store
    rows: Rows
    scoring: ScoreSpec
    work: Work
    compute: bool
    repair: bool

    def report(self, role: str, ref: ModelRef, teacher_keys: Sequence[str] = (),
               embedding_key: str | None = None) -> EntryReport:
        key, inputs = entry_key(role, self.rows, self.scoring, model=ref, tokenizer=tokenizer_key(ref),
                                device=self.work.device, teacher_keys=teacher_keys, embedding_key=embedding_key)
        entry = self.store.entry(role, key)
        t0 = time.perf_counter()
        if role == "teacher":
            def work(tok):
                return score_teacher(entry, inputs, ref, tok, self.rows, self.scoring, self.work)
        elif role == "embedding":
            def work(tok):
                return score_embeddings(entry, inputs, ref, tok, self.rows, self.scoring, self.work)
        else:
            teachers = [self.store.entry("teacher", k) for k in teacher_keys]
            embedding = self.store.entry("embedding", embedding_key)

            def work(tok):
                return score_student(entry, inputs, embedding, ref, self.rows, teachers, self.scoring, self.work)
        reused, tokens, extra = self.fill(entry, inputs, role, ref, work)
        return EntryReport(role, ref.name, role, entry.key, len(self.rows), reused, time.perf_counter() - t0,
                           tokens, extra)

    def fill(self, entry: Entry, inputs: dict, role: str, ref: ModelRef, work) -> tuple[bool, int, dict]:
        """(reused, tokens, extra): ``entry`` complete, computed by ``work(tokenizer)`` where it was not."""
        rank, world = self.work.rank, self.work.world
        complete = entry.is_complete()
        damaged = entry.verify() if complete else []
        if complete and not damaged:
            return True, 0, {}
        if damaged and not self.repair:
            entry.check(damaged)  # a damaged part is refused (the error names the fixes), never silently reused
        if self.compute:  # a fully cached score reads only; writing must be possible before the lock file
            self.store.check_writable()
            check_weights(ref)  # a weights-free copy finds its cached scores only
        if rank == 0 or not self.compute:  # --no-compute raises here, naming the option that differs
            _no_silent_rescore(self.store, entry, inputs, self.rows, role, ref.name, self.compute)
        tokenizer = load_tokenizer(ref)[0]  # a bad tokenizer is refused before the key's lock file exists
        with entry.lock() if rank == 0 else contextlib.nullcontext():
            if damaged and rank == 0:  # --repair: forget the damaged files; only they are recomputed
                entry.forget(damaged)
            # another process may have finished it while we waited for the lock
            reused = parallel.broadcast(entry.is_complete() if rank == 0 else None, world)
            with _disk_full_is_one_line(entry, rank):
                result = (0, 0, {}) if reused else work(tokenizer)
            parallel.barrier(world)
        _, tokens, extra = result
        return reused, tokens, extra


@contextlib.contextmanager
def _disk_full_is_one_line(entry: Entry, rank: int):
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise
        if rank == 0:
            entry.discard_if_empty()  # nothing whole was written: leave no trace of the attempt
        raise CacheError(f"out of disk space writing {entry.kind}/{entry.key[:12]} under {entry.root} "
                         f"({os.strerror(exc.errno)}); whole parts are kept and nothing else changed: "
                         f"free space (or use --cache-dir on a larger disk) and re-run to resume") from None


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
    if near is not None and near.older is not None:
        return CacheError(f"no cached {role} entry for {name} in this selectkd's cache format; {near.key[:12]} was "
                          f"written in format {near.older}: re-score it (drop --no-compute), then remove the old one "
                          f"with `selectkd cache rm {near.key}`")
    if near is not None:
        fix = f"{near.fix()} or drop --no-compute" if near.fix() else "score it first (drop --no-compute)"
        return CacheError(f"no cached {role} entry for {name} with these options; the nearest, {near.key[:12]}, "
                          f"differs in {near.described()}; {fix}")
    if entry.exists():
        return CacheError(f"the {role} cache entry for {name} ({entry.key[:12]}) is incomplete; finish it with "
                          f"`selectkd score` and the same options (or drop --no-compute)")
    return CacheError(f"no complete {role} cache for {name} with these arguments ({entry.key[:12]}); run `selectkd score` "
                      f"with the same --data/--split/--teacher/--student options first (or drop --no-compute)")


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
