"""Adding a second teacher to a scored pool: what does the student side cost the second time?

    .venv/bin/python bench/reuse_bench.py            # writes bench/results/reuse.md and reuse.json

A fresh store (a temp folder, so nothing is found cached) scores a pool of real tweets twice, as a
user adding a teacher would: first ``--teacher A --student S``, then ``--teacher A --teacher B
--student S``. Since cache format 3 the student's embeddings are an entry keyed without the
teachers, so the second call runs teacher B and re-fits the student's probe from the cached
embeddings: the student entry's manifest counts the student rows it ran forward
(``student_forward_rows``), which must be 0. The target (issue 14): the student side of the
second call under 10% of the first scoring's time.

Teachers: all-MiniLM-L6-v2 fine-tuned on training tweets (A: `selectkd demo`'s teacher, B: a second
one on other rows, made here once); student: its first 3 layers. Pool: training tweets 6,001 ..
6,000 + --rows, which neither teacher saw.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

from selectkd import assets
from selectkd.atomic import atomic_write_json, atomic_write_text
from selectkd.cache.store import Store
from selectkd.demo import teacher_folder, transfer_pool
from selectkd.models import first_layers
from selectkd.pipeline import finetuned_teacher
from selectkd.runtime import machine
from selectkd.scoring.run import score
from selectkd.specs import DataSpec, ScoreSpec

REPO = Path(__file__).resolve().parents[1]
DATA, MODEL, MAX_LENGTH = "tweets-binary", "minilm-l6", 48


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=10_000, help="pool rows (training tweets after the first 6,000)")
    p.add_argument("--cache-dir", default=None, help="where the teachers and the pool live (default ./cache)")
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = p.parse_args(argv)
    root = Store(args.cache_dir).root
    assets.install(root, models=[MODEL], data=[DATA])
    teacher_a, _ = finetuned_teacher(DATA, MODEL, teacher_folder(root, 6000, MAX_LENGTH, 1, 0), 6000, epochs=1,
                                     max_length=MAX_LENGTH, eval_limit=300, seed=0, cache_dir=str(root), progress=False)
    # B: another fine-tuned teacher (the first 2,000 tweets, another seed): made once, kept in the store
    teacher_b, _ = finetuned_teacher(DATA, MODEL, root / "teachers" / f"reuse-bench-{MODEL}-2000-{MAX_LENGTH}-s1", 2000,
                                     epochs=1, max_length=MAX_LENGTH, eval_limit=300, seed=1, cache_dir=str(root),
                                     progress=False)
    student = first_layers(MODEL, 3, root)
    pool = transfer_pool(root, args.rows, skip=6000)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="reuse-bench-") as fresh:
        data = DataSpec(str(pool), limit=args.rows)
        first = score(data, ScoreSpec((teacher_a,), student, MAX_LENGTH), cache_dir=fresh, progress=False)
        t = time.perf_counter()
        second = score(data, ScoreSpec((teacher_a, teacher_b), student, MAX_LENGTH), cache_dir=fresh, progress=False)
        second_total = time.perf_counter() - t
        store = Store(fresh)
        manifests = {f"{r.role}-{i}": store.entry(r.role, r.key).manifest()
                     for i, res in enumerate((first, second)) for r in res.reports}
    first_s = {r.role: r.seconds for r in first.reports}
    first_total = sum(first_s.values())
    second_student = second.student.seconds + second.embedding.seconds
    result = {
        "command": "python bench/reuse_bench.py" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else ""),
        "machine": machine(), "load_average_before": round(load, 2), "rows": args.rows,
        "first": {"seconds": {k: round(v, 2) for k, v in first_s.items()}, "total": round(first_total, 2),
                  "student_forward_rows": manifests["embedding-0"]["student_forward_rows"]},
        "second": {"embedding_reused": second.embedding.reused, "teacher_a_reused": second.teachers[0].reused,
                   "seconds": {"teacher_b": round(second.teachers[1].seconds, 2),
                               "embedding (reused)": round(second.embedding.seconds, 2),
                               "student (probe + scores)": round(second.student.seconds, 2)},
                   "total": round(second_total, 2),
                   "student_forward_rows": manifests["student-1"]["student_forward_rows"]},
        "student_side_over_first_scoring": round(second_student / first_total, 4),
    }
    out = Path(args.out)
    atomic_write_json(out / "reuse.json", result)
    f, s = result["first"], result["second"]
    atomic_write_text(out / "reuse.md", "\n".join([
        "# Adding a second teacher to a scored pool", "", "```sh", result["command"], "```", "",
        f"{result['machine']}; 1-minute load average before: {result['load_average_before']}. "
        f"Pool: {args.rows:,} training tweets; student: {MODEL}'s first 3 layers; max length {MAX_LENGTH}.", "",
        "| call | teacher A | teacher B | student embeddings | student probe + scores | student rows run forward |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| 1: `--teacher A --student S` | {f['seconds']['teacher']:.1f} s | | {f['seconds']['embedding']:.1f} s "
        f"| {f['seconds']['student']:.1f} s | {f['student_forward_rows']:,} |",
        f"| 2: `--teacher A --teacher B --student S` | reused | {s['seconds']['teacher_b']:.1f} s "
        f"| reused ({s['seconds']['embedding (reused)']:.1f} s) | {s['seconds']['student (probe + scores)']:.1f} s "
        f"| {s['student_forward_rows']:,} |", "",
        f"The student side of the second call took {result['student_side_over_first_scoring']:.1%} of the first "
        f"scoring's {f['total']:.1f} s (target: under 10%), with no student forward pass.", ""]))
    print((out / "reuse.md").read_text())


if __name__ == "__main__":
    main()
