"""Which selection strategy keeps the benefit of uncertainty without the collapse? Measured.

For each built-in dataset (tweets-binary, r8): a teacher (mpnet-base, head fitted on frozen
features), the train pool scored (teacher logits + minilm-l6 uncertainty and embeddings),
10% selections by every strategy and option combination below, and minilm-l6 distilled
(3 epochs, lr 2e-5, batch 32, CE + MSE to the cached teacher logits) on each selection and
once on all rows. Test accuracy, macro-F1 and train seconds come from each run's summary.

    .venv/bin/python bench/select_strategies.py --out bench/results

Finished runs (same config.json, a summary.json) are reused, so a rerun only does what is
missing; the selections are remade (cheap, deterministic for a seed) each time.
Writes ``<out>/strategies.json`` (raw numbers, every seed) and ``<out>/strategies.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from selectkd.distill import DistillConfig, distill  # noqa: E402
from selectkd.finetune import classification_metrics, finetune  # noqa: E402
from selectkd.score import column_matrix, score  # noqa: E402
from selectkd.select import select, summary  # noqa: E402
from selectkd.store import Store  # noqa: E402

TEACHER = "mpnet-base"
STUDENT = "minilm-l6"

# (label, select() options): every strategy of the paper by name, then the remedies for the collapse
STRATEGIES: list[tuple[str, dict]] = [
    ("random", dict(strategy="random")),
    ("entropy", dict(strategy="entropy")),
    ("margin", dict(strategy="margin")),
    ("least_confidence", dict(strategy="least_confidence")),
    ("kl", dict(strategy="kl")),
    ("coverage", dict(strategy="coverage", criterion="entropy")),
    ("entropy+per_class", dict(strategy="entropy", per_class=True)),
    ("entropy+sample", dict(strategy="entropy", sample=True, temperature=1.0)),
    ("coverage+sample", dict(strategy="coverage", criterion="entropy", sample=True, temperature=1.0)),
    ("coverage+drop_disagreement", dict(strategy="coverage", criterion="entropy", drop_disagreement=True)),
]


def machine() -> str:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return f"{os.cpu_count()} cores, {cpu}, torch {torch.__version__}, Python {platform.python_version()}"


def finished(run: Path, cfg: DistillConfig) -> dict | None:
    """The summary of a run in ``run`` that finished with exactly ``cfg``, else None (as demo.py)."""
    try:
        same = json.loads((run / "config.json").read_text()) == json.loads(json.dumps(asdict(cfg)))
        return json.loads((run / "summary.json").read_text()) if same else None
    except FileNotFoundError:
        return None


class Clock:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def say(self, msg: str) -> None:
        e = time.perf_counter() - self.t0
        print(f"[{int(e // 60):3d}:{int(e % 60):02d}] {msg}", flush=True)


def run_dataset(data: str, rows: int, dev_rows: int, test_rows: int, seeds: list[int], budget: float, epochs: int,
                max_length: int, root: Path, runs: Path, clock: Clock) -> dict:
    cache = str(root)
    teacher_dir = root / "teachers" / f"{TEACHER}-{data}-{rows}"
    t0 = time.perf_counter()
    if (teacher_dir / "selectkd_finetune.json").exists():
        clock.say(f"{data}: teacher reused from {teacher_dir}")
    else:
        clock.say(f"{data}: fitting the teacher head on frozen {TEACHER} features, {rows} rows")
        finetune(data, TEACHER, teacher_dir, limit=rows, eval_limit=dev_rows, head_only=True, max_length=max_length,
                 cache_dir=cache, progress=False, overwrite=True)
    teacher = str(teacher_dir)
    teacher_seconds = time.perf_counter() - t0

    clock.say(f"{data}: scoring train ({rows}) with teacher + student, test ({test_rows}) with the teacher")
    t0 = time.perf_counter()
    train = score(data, "train", [teacher], STUDENT, limit=rows, max_length=max_length, cache_dir=cache, progress=False)
    test = score(data, "test", [teacher], None, limit=test_rows, max_length=max_length, cache_dir=cache, progress=False)
    score_seconds = time.perf_counter() - t0
    store = Store(root)
    t_logits = column_matrix(store.entry("teacher", test.teachers[0].key).read_parts(), "logits")
    test_labels = test.rows.labels
    teacher_test = classification_metrics(t_logits.argmax(1), test_labels, test.rows.num_labels)
    counts = np.bincount(test_labels, minlength=test.rows.num_labels)
    majority = {"accuracy": round(float(counts.max() / len(test_labels)), 4),
                "macro_f1": round(float(classification_metrics(np.full_like(test_labels, counts.argmax()), test_labels,
                                                               test.rows.num_labels)["macro_f1"]), 4),
                "class": test.rows.label_names[int(counts.argmax())]}
    pool_counts = np.bincount(train.rows.labels, minlength=train.rows.num_labels)
    clock.say(f"{data}: teacher test acc {teacher_test['accuracy']:.4f} macro-F1 {teacher_test['macro_f1']:.4f}; "
              f"majority {majority['accuracy']:.4f}")

    def kd(folder: str, selection: str | None, seed: int) -> dict:
        cfg = DistillConfig(data=data, teachers=[teacher], student=STUDENT, out=str(runs / data / folder), limit=rows,
                            eval_limit=dev_rows, test_limit=test_rows, selection=selection, epochs=epochs, seed=seed,
                            batch_size=32, lr=2e-5, max_length=max_length, cache_dir=cache)
        s = finished(Path(cfg.out), cfg)
        if s is None:
            s = distill(cfg, overwrite=True, progress=False).summary
            how = "trained"
        else:
            how = "reused"
        clock.say(f"{data}: {folder}: {how}; test acc {s['test']['accuracy']:.4f} macro-F1 {s['test']['macro_f1']:.4f} "
                  f"train {s['seconds']['train']:.0f} s, {s['steps']} steps")
        return {"seed": seed, "test": s["test"], "best_dev": s["best_dev"], "train_seconds": s["seconds"]["train"],
                "wall_seconds": s["wall_seconds"], "steps": s["steps"],
                "train_rows": s["student_rows_forward_backward"] // epochs, "run": cfg.out}

    result = {"data": data, "rows": rows, "dev_rows": dev_rows, "test_rows": test_rows, "budget": budget,
              "num_labels": train.rows.num_labels, "label_names": train.rows.label_names,
              "pool_class_share": [round(float(c / rows), 4) for c in pool_counts],
              "teacher": {"model": TEACHER, "dir": teacher, "test": teacher_test, "fit_or_reuse_seconds": round(teacher_seconds, 1)},
              "score_seconds": round(score_seconds, 1), "majority": majority, "full": [], "strategies": {}}
    for seed in seeds:
        result["full"].append(kd(f"full-s{seed}", None, seed))
        for label, opts in STRATEGIES:
            name = f"strat-{data}-{rows}-{label.replace('+', '-')}-{budget}-s{seed}"
            sel = select(data, "train", [teacher], STUDENT, budget=budget, seed=seed, name=name, overwrite=True,
                         limit=rows, max_length=max_length, cache_dir=cache, progress=False, **opts)
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
    within a dataset, then over the datasets. Ties go to the earlier strategy in STRATEGIES."""
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


def write_report(report: dict, out: Path) -> None:
    (out / "strategies.json").write_text(json.dumps(report, indent=1) + "\n")
    results = report["results"]
    seeds = report["seeds"]
    lines = [
        "# Selection strategies: KD on a 10% subset, measured",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Date: {report['date']}; machine: {report['machine']}; total wall time of this invocation "
        f"{report['total_seconds'] / 60:.1f} min (reused runs cost nothing).",
        "",
        f"Teacher {TEACHER} (frozen encoder + logistic head fitted on the train rows), student {STUDENT} "
        f"distilled for {report['epochs']} epochs, lr 2e-5, batch 32, warm-up 0.1, max length {report['max_length']}, "
        f"CE + MSE to the cached teacher logits, CPU. Budget {report['budget']:.0%} of the train pool, one selection "
        f"per strategy, made once before training (static). Seeds: {', '.join(map(str, seeds))} "
        f"({'one seed: differences of a point or two are within noise' if len(seeds) == 1 else 'mean over seeds'}). "
        "Each dataset's splits are stored shuffled, so `limit=N` is a random sample of N rows.",
        "",
        "Strategies: `random`, `entropy`, `margin`, `least_confidence` (student probe uncertainty, top-k), `kl` "
        "(KL teacher||student, top-k), `coverage` (entropy ranked inside 30 faiss k-means clusters of the student "
        "embeddings, budget shared across clusters by size), `+per_class` (budget shared across classes by the "
        "pool's proportions), `+sample` (draw without replacement with p ∝ exp(standardised score / 1.0) instead "
        "of top-k), `+drop_disagreement` (drop rows whose label the teacher contradicts with p >= 0.9 first).",
        "",
    ]
    for res in results:
        n = res["num_labels"]
        names = res["label_names"]
        lines += [
            f"## {res['data']}: {res['rows']:,} train rows (pool), {res['dev_rows']} dev, {res['test_rows']:,} test, "
            f"{n} classes",
            "",
            f"Pool class balance: {fmt_balance(res['pool_class_share'], names)}. Teacher fit: "
            f"{res['teacher']['fit_or_reuse_seconds']:.0f} s (0 when reused); scoring train + test: "
            f"{res['score_seconds']:.0f} s (0 when cached).",
            "",
            "| model / training set | train rows | test accuracy | test macro-F1 | train seconds | subset class balance |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
            f"| teacher {TEACHER} (head on frozen features) | {res['rows']:,} | {res['teacher']['test']['accuracy']:.4f} "
            f"| {res['teacher']['test']['macro_f1']:.4f} | | |",
            f"| majority class (`{res['majority']['class']}`) | | {res['majority']['accuracy']:.4f} | "
            f"{res['majority']['macro_f1']:.4f} | | |",
        ]
        full = res["full"]
        lines.append(f"| KD, all rows (full-data KD) | {full[0]['train_rows']:,} | "
                     f"{mean([r['test']['accuracy'] for r in full]):.4f} | {mean([r['test']['macro_f1'] for r in full]):.4f} | "
                     f"{mean([r['train_seconds'] for r in full]):.0f} | {fmt_balance(res['pool_class_share'], names)} |")
        ranked = sorted(res["strategies"].items(), key=lambda kv: -mean([r["test"]["macro_f1"] for r in kv[1]]))
        for label, recs in ranked:
            share = np.mean([r["subset_class_share"] for r in recs], axis=0).tolist()
            dropped = sum(sum(r["dropped"].values()) for r in recs) / len(recs)
            note = f"; dropped {dropped:.0f}" if dropped else ""
            lines.append(f"| KD, 10% `{label}` | {recs[0]['subset_rows']:,} | {mean([r['test']['accuracy'] for r in recs]):.4f} | "
                         f"{mean([r['test']['macro_f1'] for r in recs]):.4f} | {mean([r['train_seconds'] for r in recs]):.0f} | "
                         f"{fmt_balance(share, names)}{note} |")
        if len(seeds) > 1:
            lines += ["", "Per seed (test macro-F1): " + "; ".join(
                f"`{label}` " + "/".join(f"{r['test']['macro_f1']:.3f}" for r in recs) for label, recs in ranked)]
        lines.append("")
    best, scores = report["default"]["strategy"], report["default"]["mean_macro_f1"]
    lines += [
        "## The default",
        "",
        "Rule: the strategy (with its options) with the highest test macro-F1, averaged over seeds within a dataset "
        "and then over the two datasets (macro-F1 so that r8's small classes and the tweets' minority class count; "
        "ties to the earlier row of the list above).",
        "",
        "| strategy | mean test macro-F1 over datasets | " + " | ".join(r["data"] for r in results) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in results) + " |",
    ]
    for label, v in sorted(scores.items(), key=lambda kv: -kv[1]):
        per = [mean([x["test"]["macro_f1"] for x in r["strategies"][label]]) for r in results]
        lines.append(f"| `{label}` | {v:.4f} | " + " | ".join(f"{p:.4f}" for p in per) + " |")
    lines += ["", f"Best by the rule: **`{best}`** ({scores[best]:.4f}).", ""]
    (out / "strategies.md").write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tweets-rows", type=int, nargs=3, default=[2000, 300, 1000], metavar=("TRAIN", "DEV", "TEST"))
    ap.add_argument("--r8-rows", type=int, nargs=3, default=[1000, 200, 800], metavar=("TRAIN", "DEV", "TEST"))
    ap.add_argument("--datasets", nargs="+", default=["tweets-binary", "r8"])
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
    sizes = {"tweets-binary": args.tweets_rows, "r8": args.r8_rows}
    report = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine(),
              "seeds": args.seeds, "budget": args.budget, "epochs": args.epochs, "max_length": args.max_length,
              "teacher": TEACHER, "student": STUDENT, "strategies": [[lbl, o] for lbl, o in STRATEGIES], "results": []}
    for data in args.datasets:
        rows, dev_rows, test_rows = sizes[data]
        report["results"].append(run_dataset(data, rows, dev_rows, test_rows, args.seeds, args.budget, args.epochs,
                                             args.max_length, root, runs, clock))
        report["total_seconds"] = round(time.perf_counter() - clock.t0, 1)
        best, scores = pick_default(report["results"])
        report["default"] = {"rule": "best test macro-F1, mean over seeds, then over datasets",
                             "strategy": best, "options": dict(STRATEGIES)[best], "mean_macro_f1": scores}
        write_report(report, out)
        clock.say(f"wrote {out / 'strategies.md'} and strategies.json (best so far: {best})")
    clock.say(f"done in {(time.perf_counter() - clock.t0) / 60:.1f} min; default by the rule: {report['default']['strategy']}")


if __name__ == "__main__":
    main()
