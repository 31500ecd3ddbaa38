"""Which distill defaults train a small student: learning rate, KD loss, head initialisation.

The demo's pair and sizes (all-MiniLM-L6-v2 fine-tuned end to end on 6,000 real tweets teaching its
own first 3 layers; the pool is the first 3,000 of the teacher's own training rows, 300 dev and 1,000 test tweets, max length 48), one
configuration per row, every option spelled out so a later change of a default does not change a row:

    .venv/bin/python bench/defaults.py                 # resumable: a finished run is reused, never redone
    .venv/bin/python bench/defaults.py --seeds 0 1 2   # more seeds

Writes bench/results/defaults.md (and .json) with each run's command, the machine, its load when the
run started and the commit.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import time
from pathlib import Path

from selectkd.atomic import atomic_write_json, atomic_write_text
from selectkd.cache.store import Store
from selectkd.demo import DATA, STUDENT_LAYERS, TEACHER, teacher_folder
from selectkd.distillation.config import DistillConfig
from selectkd.models import first_layers
from selectkd.pipeline import distilled, finetuned_teacher, score_pool, teacher_test_metrics
from selectkd.runtime import machine

HERE = Path(__file__).resolve().parent
POOL, TEACHER_ROWS, DEV, TEST, MAX_LENGTH, EPOCHS = 3000, 6000, 300, 1000, 48, 2

KD = dict(kd_loss="kl", temperature=2.0, kd_alpha=1.0, ce_alpha=1.0)
CONFIGS = [  # (name, what it answers, options)
    ("no KD", "baseline", dict(kd_alpha=0.0, head_init="random", lr=1e-4, epochs=EPOCHS, min_steps=0)),
    ("KD, kl T=2, lr 1e-4, probe head", "the defaults", dict(**KD, head_init="probe", lr=1e-4, epochs=EPOCHS, min_steps=0)),
    ("KD, kl T=2, lr 2e-5, probe head", "learning rate", dict(**KD, head_init="probe", lr=2e-5, epochs=EPOCHS, min_steps=0)),
    ("KD, mse, lr 1e-4, probe head", "KD loss", dict(kd_loss="mse", temperature=1.0, kd_alpha=1.0, ce_alpha=1.0,
                                                     head_init="probe", lr=1e-4, epochs=EPOCHS, min_steps=0)),
    ("KD, kl T=2, lr 1e-4, random head", "head", dict(**KD, head_init="random", lr=1e-4, epochs=EPOCHS, min_steps=0)),
    ("10% re-drawn, 100 steps, probe head", "head on a subset",
     dict(**KD, head_init="probe", lr=1e-4, budget="0.1", strategy="random", max_steps=100)),
    ("10% re-drawn, 100 steps, random head", "head on a subset",
     dict(**KD, head_init="random", lr=1e-4, budget="0.1", strategy="random", max_steps=100)),
]


def command(cfg: DistillConfig, options: dict, teacher: str, student: str) -> str:
    parts = ["selectkd", "distill", "--data", DATA, "--teacher", teacher, "--student", student, "--limit", str(POOL),
             "--eval-limit", str(DEV), "--test-limit", str(TEST), "--max-length", str(MAX_LENGTH), "--eval-every", "20"]
    for k, v in options.items():
        parts += [f"--{k.replace('_', '-')}", str(v)]
    return shlex.join([*parts, "--seed", str(cfg.train.seed), "--out", cfg.out])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--runs", default=str(HERE / "runs" / "defaults"))
    p.add_argument("--out", default=str(HERE / "results" / "defaults.md"))
    args = p.parse_args(argv)
    root = Store(args.cache_dir).root
    teacher, record = finetuned_teacher(DATA, TEACHER, teacher_folder(root, TEACHER_ROWS, MAX_LENGTH, 1, 0),
                                        TEACHER_ROWS, epochs=1, max_length=MAX_LENGTH, eval_limit=DEV, cache_dir=str(root))
    student = first_layers(TEACHER, STUDENT_LAYERS, root)
    _, test = score_pool(DATA, [teacher], student, rows=POOL, test_rows=TEST, max_length=MAX_LENGTH, cache_dir=str(root))
    [teacher_test] = teacher_test_metrics(test)
    results = []
    for seed in args.seeds:
        for name, question, options in CONFIGS:
            out = Path(args.runs) / f"s{seed}" / name.replace(" ", "_").replace(",", "").replace("%", "pct").replace("=", "")
            cfg = DistillConfig.from_options(data=DATA, teachers=[teacher], student=student, limit=POOL, eval_limit=DEV,
                                             test_limit=TEST, max_length=MAX_LENGTH, eval_every=20, seed=seed,
                                             cache_dir=str(root), out=str(out), **options)
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            summary, reused = distilled(cfg, progress=False)
            if not reused:
                atomic_write_json(out / "bench.json", {"load_average_before": load, "machine": machine(),
                                                       "seconds": round(time.perf_counter() - t0, 1)})
                print(f"seed {seed}: {name}: test {summary['test']['accuracy']:.3f}", flush=True)
            bench = json.loads((out / "bench.json").read_text()) if (out / "bench.json").exists() else {}
            results.append({"name": name, "question": question, "seed": seed, "test": summary["test"],
                            "best_dev": summary["best_dev"], "train_seconds": summary["seconds"]["train"],
                            "steps": summary["steps"], "one_class": summary.get("one_class"),
                            "load_average_before": bench.get("load_average_before"),
                            "command": command(cfg, options, teacher, student)})
    write(args, results, teacher_test, record)


def write(args, results: list[dict], teacher_test: dict, record: dict) -> None:
    from selectkd._version import __version__

    rev = os.popen("git rev-parse --short HEAD 2>/dev/null").read().strip() or "unknown"
    lines = ["# Distill defaults: learning rate, KD loss, head initialisation", "",
             f"Made by `python bench/defaults.py --seeds {' '.join(map(str, args.seeds))}` on {machine()}, "
             f"selectkd {__version__}, git {rev}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
             f"Teacher: `{TEACHER}` fine-tuned end to end on {record['train_rows']:,} tweets ({record['seconds']:.0f} s), "
             f"test accuracy {teacher_test['accuracy']:.3f} / macro-F1 {teacher_test['macro_f1']:.3f}. Student: its first "
             f"{STUDENT_LAYERS} layers. Pool {POOL:,} rows, {DEV} dev, {TEST:,} test, max length {MAX_LENGTH}, batch 32; "
             f"full-data rows {EPOCHS} epochs. Test accuracy is the final student's; a run at the majority class is "
             f"marked. Seconds are training seconds (evaluation not counted), load = 1-minute load average at the start.",
             "", "| configuration | answers | seed | test acc | macro-F1 | best dev | steps | train s | load |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        acc = f"{r['test']['accuracy']:.3f}" + (" (majority)" if r["one_class"] else "")
        load = f"{r['load_average_before']:.1f}" if r["load_average_before"] is not None else "-"
        lines.append(f"| {r['name']} | {r['question']} | {r['seed']} | {acc} | {r['test']['macro_f1']:.3f} | "
                     f"{r['best_dev']['accuracy']:.3f} | {r['steps']} | {r['train_seconds']:.0f} | {load} |")
    if len(args.seeds) > 1:
        lines += ["", "| configuration | median test acc over seeds |", "| --- | ---: |"]
        for name, *_ in CONFIGS:
            accs = [r["test"]["accuracy"] for r in results if r["name"] == name]
            lines.append(f"| {name} | {statistics.median(accs):.3f} |")
    lines += ["", "Commands:", "", "```sh", *[r["command"] for r in results], "```", ""]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "\n".join(lines))
    atomic_write_json(out.with_suffix(".json"), {"teacher_test": teacher_test, "runs": results})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
