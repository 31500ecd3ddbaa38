"""10% selections trained for as many steps as full-data KD, side by side (tweets-binary).

At 10% with the same 3 epochs a subset gets a tenth of the steps, and on 2,000 tweets that
is too few for any strategy to move off the majority class (bench/results/strategies.md).
This run gives every 10% subset full KD's step count (30 epochs over 200 rows = 210 steps, against full KD's 189),
so the strategies are compared on what they select, not on how little they train.
Reuses the teacher, cache and selections that bench/select_strategies.py made.

    .venv/bin/python bench/select_matched_steps.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from selectkd.distillation.loop import DistillConfig
from selectkd.pipeline import distilled

REPO = Path(__file__).resolve().parents[1]


DATA, ROWS, DEV, TEST = "tweets-binary", 2000, 100, 1000
STRATEGIES = ["random", "entropy", "coverage", "entropy-sample", "coverage-sample"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--render", action="store_true", help="only rewrite matched_steps.md from matched_steps.json")
    args = ap.parse_args()
    out = REPO / "bench" / "results"
    if args.render:  # rewrite the markdown from the JSON of an earlier run
        report = json.loads((out / "matched_steps.json").read_text())
        return write_markdown(out, report)
    cache = REPO / "cache"
    teacher = str(cache / "teachers" / f"mpnet-base-{DATA}-{ROWS}")
    results = []
    t0 = time.perf_counter()
    for strat in STRATEGIES:
        sel = f"strat-{DATA}-{ROWS}-{strat}-0.1-s0"
        cfg = DistillConfig.from_options(data=DATA, teachers=[teacher], student="minilm-l6", out=str(REPO / "runs" / "matched" / strat),
                            limit=ROWS, eval_limit=DEV, test_limit=TEST, selection=sel, epochs=30, seed=0,
                            cache_dir=str(cache))
        s, _ = distilled(cfg)
        results.append({"strategy": strat, "selection": sel, **s["test"], "steps": s["steps"],
                        "train_seconds": s["seconds"]["train"], "best_dev": s["best_dev"]})
        print(f"[{time.perf_counter() - t0:6.0f} s] {strat}: test acc {s['test']['accuracy']:.4f} "
              f"macro-F1 {s['test']['macro_f1']:.4f}, {s['steps']} steps, train {s['seconds']['train']:.0f} s", flush=True)
    report = {"command": "python bench/select_matched_steps.py", "date": time.strftime("%Y-%m-%d %H:%M %Z"),
              "results": results}
    (out / "matched_steps.json").write_text(json.dumps(report, indent=2))
    write_markdown(out, report)


def write_markdown(out: Path, report: dict) -> None:
    results = report["results"]
    lines = ["# 10% selections at full KD's step count (tweets-binary)", "",
             f"Command: `{report['command']}`  ", f"Date: {report['date']}", "",
             f"{ROWS:,} training tweets (pool), {TEST:,} test, teacher mpnet-base with a head fitted on frozen "
             f"features, student minilm-l6, each 10% subset (200 rows) trained 30 epochs = {results[0]['steps']} steps "
             f"(full-data KD: 3 epochs over 2,000 rows = 189 steps), lr 2e-5, batch 32, seed 0 (one seed: a point or "
             f"two is within noise). Selections from bench/select_strategies.py; full-data KD on the same rows is in "
             f"bench/results/strategies.md.", "",
             "| strategy | test acc | macro-F1 | steps | train s |", "| --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| {r['strategy']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r['steps']} | {r['train_seconds']:.0f} |")
    best = max(results, key=lambda r: r["macro_f1"])
    lines += ["", f"Best macro-F1: `{best['strategy']}` ({best['macro_f1']:.4f}); it is `selectkd select`'s default."]
    (out / "matched_steps.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
