"""Which selection strategy keeps the benefit of uncertainty without the collapse? Measured.

For each setting (a built-in dataset and a pool size: tweets-binary 2,000 and 4,000, r8 1,000
by default): a teacher (mpnet-base, head fitted on frozen features), the train pool scored (teacher logits + minilm-l6 uncertainty and embeddings),
10% selections by every strategy and option combination below, and minilm-l6 distilled
(3 epochs, lr 2e-5, batch 32, CE + MSE to the cached teacher logits) on each selection and
once on all rows. Test accuracy, macro-F1 and train seconds come from each run's summary.

    .venv/bin/python bench/select_strategies.py --out bench/results

Why two tweet pools: at 2,000 rows a 10% subset gets 21 steps in 3 epochs, too few for the
student to move off the majority class whatever the strategy; 4,000 rows give 39 steps
(an earlier measurement at 30 steps already separated the strategies).

Finished runs (same config.json, a summary.json) are reused, so a rerun only does what is
missing; the selections are remade (cheap, deterministic for a seed) each time.
Writes ``<out>/strategies.json`` (raw numbers, every seed) and ``<out>/strategies.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from selectkd.distillation.loop import DistillConfig
from selectkd.pipeline import distilled, frozen_teacher, make_selection, majority_baseline, score_pool, teacher_test_metrics
from selectkd.runtime import machine
from selectkd.selection.report import summary

REPO = Path(__file__).resolve().parents[1]


TEACHER = "mpnet-base"
STUDENT = "minilm-l6"

# (data, pool rows, dev rows, test rows, rows the teacher's head is fitted on)
Setting = tuple[str, int, int, int, int]
DEFAULT_SETTINGS = ["tweets-binary:2000:300:1000", "r8:1000:200:800", "tweets-binary:4000:300:1000:2000"]
STANDARD_POOL = {"tweets-binary": 2000, "r8": 1000}  # their runs live in RUNS/DATA/, other pools in RUNS/DATA-ROWS/


def parse_setting(text: str) -> Setting:
    """DATA:ROWS:DEV:TEST[:TEACHER_ROWS] (teacher rows default to the pool's rows)."""
    parts = text.split(":")
    if len(parts) not in (4, 5):
        raise SystemExit(f"--setting {text!r}: give DATA:ROWS:DEV:TEST[:TEACHER_ROWS]")
    data, nums = parts[0], [int(x) for x in parts[1:]]
    return (data, nums[0], nums[1], nums[2], nums[3] if len(nums) == 4 else nums[0])


def setting_label(setting: Setting) -> str:
    return f"{setting[0]} {setting[1]}"

# (label, SelectSpec fields): every strategy of the paper by name, then the remedies for the collapse
STRATEGIES: list[tuple[str, dict]] = [
    ("random", dict(strategy="random")),
    ("entropy", dict(strategy="entropy")),
    ("margin", dict(strategy="margin")),
    ("least_confidence", dict(strategy="least_confidence")),
    ("kl", dict(strategy="kl")),
    ("coverage", dict(strategy="coverage", criterion="entropy")),
    ("entropy+per_class", dict(strategy="entropy", per_class=True)),
    ("entropy+sample", dict(strategy="entropy", sample=True, sample_temperature=1.0)),
    ("coverage+sample", dict(strategy="coverage", criterion="entropy", sample=True, sample_temperature=1.0)),
    ("coverage+drop_disagreement", dict(strategy="coverage", criterion="entropy", drop_disagreement=True)),
]


class Clock:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def say(self, msg: str) -> None:
        e = time.perf_counter() - self.t0
        print(f"[{int(e // 60):3d}:{int(e % 60):02d}] {msg}", flush=True)


def run_dataset(setting: Setting, seeds: list[int], budget: float, epochs: int, max_length: int, root: Path,
                runs: Path, clock: Clock) -> dict:
    data, rows, dev_rows, test_rows, teacher_rows = setting
    cache = str(root)
    teacher_dir = root / "teachers" / f"{TEACHER}-{data}-{teacher_rows}"
    t0 = time.perf_counter()
    clock.say(f"{data}: the teacher: {TEACHER}'s frozen features + a head fitted on {teacher_rows} rows "
              f"(reused from {teacher_dir} when finished)")
    teacher, _ = frozen_teacher(data, TEACHER, teacher_dir, teacher_rows, eval_limit=dev_rows, max_length=max_length,
                                cache_dir=cache)
    teacher_seconds = time.perf_counter() - t0

    clock.say(f"{data}: scoring train ({rows}) with teacher + student, test ({test_rows}) with the teacher")
    t0 = time.perf_counter()
    train, test = score_pool(data, [teacher], STUDENT, rows=rows, test_rows=test_rows, max_length=max_length,
                             cache_dir=cache)
    score_seconds = time.perf_counter() - t0
    [teacher_test] = teacher_test_metrics(test)
    majority = majority_baseline(test.rows.labels, test.rows.num_labels, test.rows.label_names)
    pool_counts = np.bincount(train.rows.labels, minlength=train.rows.num_labels)
    clock.say(f"{data}: teacher test acc {teacher_test['accuracy']:.4f} macro-F1 {teacher_test['macro_f1']:.4f}; "
              f"majority {majority['accuracy']:.4f}")

    # runs of a dataset's standard pool live in RUNS/DATA/, other pool sizes in RUNS/DATA-ROWS/
    run_root = runs / (data if STANDARD_POOL.get(data) == rows else f"{data}-{rows}")

    def kd(folder: str, selection: str | None, seed: int) -> dict:
        cfg = DistillConfig.from_options(data=data, teachers=[teacher], student=STUDENT, out=str(run_root / folder), limit=rows,
                            eval_limit=dev_rows, test_limit=test_rows, selection=selection, epochs=epochs, seed=seed,
                            batch_size=32, lr=2e-5, max_length=max_length, cache_dir=cache)
        s, reused = distilled(cfg)
        how = "reused" if reused else "trained"
        clock.say(f"{data} ({rows}): {folder}: {how}; test acc {s['test']['accuracy']:.4f} macro-F1 {s['test']['macro_f1']:.4f} "
                  f"train {s['seconds']['train']:.0f} s, {s['steps']} steps")
        return {"seed": seed, "test": s["test"], "best_dev": s["best_dev"], "train_seconds": s["seconds"]["train"],
                "wall_seconds": s["wall_seconds"], "steps": s["steps"],
                "train_rows": s["student_rows_forward_backward"] // epochs, "run": cfg.out}

    result = {"data": data, "setting": setting_label(setting), "rows": rows, "teacher_rows": teacher_rows, "dev_rows": dev_rows, "test_rows": test_rows, "budget": budget,
              "num_labels": train.rows.num_labels, "label_names": train.rows.label_names,
              "pool_class_share": [round(float(c / rows), 4) for c in pool_counts],
              "teacher": {"model": TEACHER, "dir": teacher, "test": teacher_test, "fit_or_reuse_seconds": round(teacher_seconds, 1)},
              "score_seconds": round(score_seconds, 1), "majority": majority, "full": [], "strategies": {}}
    for seed in seeds:
        result["full"].append(kd(f"full-s{seed}", None, seed))
        for label, opts in STRATEGIES:
            name = f"strat-{data}-{rows}-{label.replace('+', '-')}-{budget}-s{seed}"
            sel = make_selection(data, [teacher], STUDENT, name=name, budget=budget, seed=seed, rows=rows,
                                 max_length=max_length, cache_dir=cache, **opts)
            info = summary(sel)
            record = kd(f"{label.replace('+', '-')}-s{seed}", sel.name, seed)
            record.update({"selection": sel.name, "options": opts, "subset_rows": info["subset_rows"],
                           "dropped": info["dropped"],
                           "subset_class_share": [round(c["subset_share"], 4) for c in info["classes"]],
                           "clusters": info["clusters"]})
            result["strategies"].setdefault(label, []).append(record)
    return result


def mean(xs: list[float]) -> float:
    return float(np.mean(xs)) if xs else float("nan")


def pick_default(results: list[dict]) -> tuple[str, dict[str, float]]:
    """The rule: the strategy (with its options) with the best test macro-F1, averaged over seeds
    within a setting (dataset and pool size), then over the settings. Ties go to the earlier
    strategy in STRATEGIES."""
    scores = {}
    for label, _ in STRATEGIES:
        per_data = [mean([r["test"]["macro_f1"] for r in res["strategies"][label]]) for res in results
                    if label in res["strategies"]]
        scores[label] = mean(per_data)
    best = max(scores, key=lambda k: (scores[k], -[lbl for lbl, _ in STRATEGIES].index(k)))
    return best, scores


def fmt_balance(shares: list[float], names: list[str]) -> str:
    if len(shares) == 2:
        return f"{shares[1]:.0%} {names[1]}"
    top = sorted(range(len(shares)), key=lambda i: -shares[i])
    nonzero = sum(1 for s in shares if s > 0)
    return f"{nonzero}/{len(shares)} classes; " + ", ".join(f"{names[i]} {shares[i]:.0%}" for i in top[:3])


def se_accuracy(p: float, n: int) -> float:
    """Binomial standard error of an accuracy p measured on n test rows."""
    return float(np.sqrt(p * (1 - p) / n))


def write_report(report: dict, out: Path) -> None:
    (out / "strategies.json").write_text(json.dumps(report, indent=1) + "\n")
    results = report["results"]
    seeds = report["seeds"]
    lines = [
        "# Selection strategies: KD on a 10% subset, measured",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Date: {report['date']}; machine: {report['machine']}. Wall time: "
        + "; ".join(f"{inv['date']}: {inv['seconds'] / 60:.1f} min" + (f" ({inv['note']})" if inv.get("note") else "") for inv in report["invocations"])
        + " (a rerun reuses the teachers, the cache and every finished run; the machine was shared with other "
        "benchmarks part of the time, so the seconds below are upper bounds, comparable only roughly).",
        "",
        f"Teacher {TEACHER} (frozen encoder + logistic head fitted on the first rows of the pool, how many per table), student "
        f"{STUDENT} distilled for {report['epochs']} epochs, lr 2e-5, batch 32, warm-up 0.1, max length "
        f"{report['max_length']}, CE + MSE to the cached teacher logits, CPU. Budget {report['budget']:.0%} of the "
        f"train pool, one static selection per strategy made before training. Seeds: {', '.join(map(str, seeds))} "
        f"({'one seed' if len(seeds) == 1 else 'mean over seeds'}). Each dataset's splits are stored shuffled, so "
        "`limit=N` is a random sample of N rows. Test accuracy's binomial standard error is given per table: "
        "differences smaller than about twice it are noise.",
        "",
        "Strategies: `random`, `entropy`, `margin`, `least_confidence` (student probe uncertainty, top-k), `kl` "
        "(KL teacher||student, top-k), `coverage` (entropy ranked inside 30 faiss k-means clusters of the student "
        "embeddings, budget shared across clusters by size), `+per_class` (budget shared across classes by the "
        "pool's proportions), `+sample` (draw without replacement with p ∝ exp(standardised score / 1.0) instead "
        "of top-k), `+drop_disagreement` (first drop rows whose label the teacher contradicts with p >= 0.9).",
        "",
    ]
    for res in results:
        names = res["label_names"]
        full = res["full"]
        se = se_accuracy(mean([r["test"]["accuracy"] for r in full]), res["test_rows"])
        lines += [
            f"## {res['data']}, pool {res['rows']:,} train rows: 10% = {round(res['budget'] * res['rows']):,} rows, "
            f"{res['num_labels']} classes",
            "",
            f"Dev {res['dev_rows']} rows, test {res['test_rows']:,} rows (SE of test accuracy ~{se:.3f} near full KD's "
            f"accuracy). Teacher head fitted on {res['teacher_rows']:,} rows. Pool class balance: "
            f"{fmt_balance(res['pool_class_share'], names)}. Teacher fit: {res['teacher']['fit_or_reuse_seconds']:.0f} s; "
            f"scoring train + test: {res['score_seconds']:.0f} s (0 when reused from an earlier invocation).",
            "",
            "| model / training set | train rows | steps | test accuracy | test macro-F1 | train seconds | subset class balance |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
            f"| teacher {TEACHER} (head on frozen features) | {res['teacher_rows']:,} | | "
            f"{res['teacher']['test']['accuracy']:.4f} | {res['teacher']['test']['macro_f1']:.4f} | | |",
            f"| majority class (`{res['majority']['class']}`) | | | {res['majority']['accuracy']:.4f} | "
            f"{res['majority']['macro_f1']:.4f} | | |",
            f"| KD, all rows (full-data KD) | {full[0]['train_rows']:,} | {full[0]['steps']} | "
            f"{mean([r['test']['accuracy'] for r in full]):.4f} | {mean([r['test']['macro_f1'] for r in full]):.4f} | "
            f"{mean([r['train_seconds'] for r in full]):.0f} | {fmt_balance(res['pool_class_share'], names)} |",
        ]
        ranked = sorted(res["strategies"].items(), key=lambda kv: -mean([r["test"]["macro_f1"] for r in kv[1]]))
        for label, recs in ranked:
            share = np.mean([r["subset_class_share"] for r in recs], axis=0).tolist()
            dropped = sum(sum(r["dropped"].values()) for r in recs) / len(recs)
            note = f"; dropped {dropped:.0f}" if dropped else ""
            lines.append(f"| KD, 10% `{label}` | {recs[0]['subset_rows']:,} | {recs[0]['steps']} | "
                         f"{mean([r['test']['accuracy'] for r in recs]):.4f} | {mean([r['test']['macro_f1'] for r in recs]):.4f} | "
                         f"{mean([r['train_seconds'] for r in recs]):.0f} | {fmt_balance(share, names)}{note} |")
        if len(seeds) > 1:
            lines += ["", "Per seed (test macro-F1): " + "; ".join(
                f"`{label}` " + "/".join(f"{r['test']['macro_f1']:.3f}" for r in recs) for label, recs in ranked)]
        lines.append("")
    best, scores = report["default"]["strategy"], report["default"]["mean_macro_f1"]
    lines += [
        "## The default",
        "",
        "Rule: the strategy (with its options) with the highest test macro-F1, averaged over seeds within a setting "
        "(dataset and pool size) and then over the settings above (macro-F1 so that r8's small classes and the "
        "tweets' minority class count; ties to the earlier strategy in the list above).",
        "",
        "| strategy | mean test macro-F1 | " + " | ".join(r["setting"] for r in results) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in results) + " |",
    ]
    for label, v in sorted(scores.items(), key=lambda kv: -kv[1]):
        per = [mean([x["test"]["macro_f1"] for x in r["strategies"][label]]) for r in results]
        lines.append(f"| `{label}` | {v:.4f} | " + " | ".join(f"{p:.4f}" for p in per) + " |")
    lines += ["", f"Best by the rule: **`{best}`** ({scores[best]:.4f}).", ""]
    (out / "strategies.md").write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", action="append", default=None, metavar="DATA:ROWS:DEV:TEST[:TEACHER_ROWS]",
                    help=f"repeatable; default: {' '.join(DEFAULT_SETTINGS)}")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--budget", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--cache-dir", default=str(REPO / "cache"))
    ap.add_argument("--runs", default=str(REPO / "runs" / "strategies"))
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args()
    command = ".venv/bin/python bench/select_strategies.py " + " ".join(sys.argv[1:])
    clock = Clock()
    root, runs, out = Path(args.cache_dir), Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs.mkdir(parents=True, exist_ok=True)
    settings = [parse_setting(t) for t in (args.setting or DEFAULT_SETTINGS)]
    # every invocation's wall time, kept beside the runs so a resumed benchmark reports its whole cost
    log = runs / "invocations.json"
    invocations = json.loads(log.read_text()) if log.exists() else []
    this = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "command": command, "seconds": 0.0}
    invocations.append(this)
    report = {"command": command, "date": this["date"], "machine": machine(), "invocations": invocations,
              "seeds": args.seeds, "budget": args.budget, "epochs": args.epochs, "max_length": args.max_length,
              "teacher": TEACHER, "student": STUDENT, "strategies": [[lbl, o] for lbl, o in STRATEGIES], "results": []}
    for setting in settings:
        report["results"].append(run_dataset(setting, args.seeds, args.budget, args.epochs, args.max_length, root,
                                             runs, clock))
        this["seconds"] = round(time.perf_counter() - clock.t0, 1)
        log.write_text(json.dumps(invocations, indent=1) + "\n")
        best, scores = pick_default(report["results"])
        report["default"] = {"rule": "best test macro-F1, mean over seeds, then over settings",
                             "strategy": best, "options": dict(STRATEGIES)[best], "mean_macro_f1": scores}
        write_report(report, out)
        clock.say(f"wrote {out / 'strategies.md'} and strategies.json (best so far: {best})")
    clock.say(f"done in {(time.perf_counter() - clock.t0) / 60:.1f} min; default by the rule: {report['default']['strategy']}")


if __name__ == "__main__":
    main()
