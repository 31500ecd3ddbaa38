"""Which head should a distilled student start from: the probe fitted to the teachers' soft labels, or random?

The 10% recipe study's own datasets, teacher, student, pool and test rows (bench/reproduce.py must have
prepared them), and its two runs that matter most: full-data KD ("full") and the default 10% recipe
("dynamic-random-10"), each with `--head-init probe` and `--head-init random`, per seed. Everything
else is the study's plan; the head is spelled out, so a later change of distill's default changes no run.

    .venv/bin/python bench/head_init.py                     # resumable: a finished run is never redone
    .venv/bin/python bench/head_init.py --render-only       # bench/results/head_init.md from the records

A run the study has already made with the same settings (its record's signature matches) is taken from
bench/results/reproduce instead of being trained again; the table says which. Records, one JSON per run,
go to bench/results/head_init/DATASET/sSEED/NAME.json with the command, machine, CPU the rest of the
machine used meanwhile and commit; RUNS/PAUSE holds the next run as in the study.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce as rp  # noqa: E402  (the study's plan, records and runner)

from selectkd.atomic import atomic_write_json, atomic_write_text  # noqa: E402

RUNS = ("full", rp.DEFAULT_RUN, "same-time")
TIMED_BY = f"{rp.DEFAULT_RUN}-probe-head"  # same-time's seconds: the default 10% run's, which starts from the probe
HEADS = ("probe", "random")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["tweets-binary", "r8"], help="the study's datasets, prepared by it")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--study-results", default=str(rp.REPO / "bench" / "results" / "reproduce"))
    p.add_argument("--results", default=str(rp.REPO / "bench" / "results" / "head_init"))
    p.add_argument("--runs", default="bench/runs/head_init", help="run folders (large, not committed)")
    p.add_argument("--out", default=str(rp.REPO / "bench" / "results" / "head_init.md"))
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--commit", action="store_true", help="git-commit each record as it is written")
    p.add_argument("--render-only", action="store_true")
    return p


def variants(study, prep: dict, seed: int) -> list[tuple[rp.Run, rp.Run]]:
    """(the study's run, the same run with the head spelled out) for each run and head."""
    out = []
    for run in rp.plan(study, prep, seed, None):
        if run.name in RUNS:
            for head in HEADS:
                v = rp.Run(run.data, seed, f"{run.name}-{head}-head", "head", {**run.options, "head_init": head})
                v.time_budget_of = TIMED_BY if run.time_budget_of else None
                out.append((run, v))
    return out


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    study = rp.parser().parse_args(["--results", args.study_results, *(["--cache-dir", args.cache_dir] if args.cache_dir else [])])
    mine = rp.parser().parse_args(["--results", args.results, "--runs", args.runs,
                                   *(["--cache-dir", args.cache_dir] if args.cache_dir else [])])
    if not args.render_only:
        for seed in args.seeds:
            for data in args.datasets:
                prep = rp.prepared(study, data)
                if prep is None:
                    rp.log(f"{data}: not prepared by bench/reproduce.py yet; skipped")
                    continue
                done: dict[str, dict] = {}
                for run, variant in variants(study, prep, seed):
                    cfg = rp.config_of(mine, variant, done)
                    if cfg is None:
                        continue  # its --time-budget run has not finished
                    if (rec := rp.load_record(mine, variant, cfg)) is not None:
                        done[variant.name] = rec
                        continue
                    path = rp.record_path(mine, variant)
                    same = rp.load_record(study, run, cfg)  # the study ran exactly this configuration
                    if same is not None:  # taken_from: reproduce/DATASET/sSEED/NAME.json
                        rec = rp.adopt(mine, variant, same, rp.record_path(study, run), tier="head")
                    else:
                        rec = rp.execute(mine, variant, cfg, prep)  # mine.commit is False: committed below, alone
                    done[variant.name] = rec
                    if args.commit:
                        rp.commit([path], f"head_init: {rp.tag(data)} seed {seed} {variant.name} "
                                          f"(test {rec['test']['accuracy']:.3f}, {rec['seconds_train']:.0f} s)")
    render(args, study, mine)
    rp.log(f"report: {args.out}")


def render(args, study, mine) -> None:
    """bench/results/head_init.md: per dataset and run, test accuracy from each head, per seed and paired."""
    lines = ["# Probe head or random head: full-data KD, the default 10% recipe, all rows for its time", "",
             "Made by `python bench/head_init.py` (resumable; records in bench/results/head_init/). The study's "
             "datasets, teacher, student, pool, test rows and run settings (bench/reproduce.py), only `--head-init` "
             "changed. `probe` fits the student's classification head to the teachers' mean soft labels on the "
             "student's features before training; `random` is the head transformers draws. Test accuracy of the "
             "final student; seconds are training seconds (the probe's fit included); `others` = CPU cores the "
             "rest of the machine used meanwhile (above 0.2: the seconds are inflated). A row marked `study` is "
             "the study's own record of the same configuration.", "",
             "What follows from it (distill's default since commit e9008f5, `--head-init auto`): the probe start "
             "for a run on a subset, where it helps on both datasets, and the fresh head for a run on all rows, where "
             "the probe start holds full-data KD back on r8 and is level on tweets. A short run on all rows "
             "(same-time) is where the fresh head is a gamble: it can stay at the majority class; the study "
             "therefore starts its same-time runs from the default 10% run's head.", ""]
    summary = []
    for data in args.datasets:
        prep = rp.prepared(study, data)
        if prep is None:
            continue
        lines += [f"## {data}", "", f"Teacher {Path(prep['teacher']).name}: test accuracy "
                  f"{prep['teacher_test']['accuracy']:.3f}; pool {prep['pool_rows']:,} rows, max length {prep['max_length']}.", "",
                  "| run | head | seed | test acc | macro-F1 | train s | steps | others | source | commit |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
        acc: dict[tuple[str, str], dict[int, float]] = {}
        for seed in args.seeds:
            nokd = next((rp.load_record(study, r) for r in rp.plan(study, prep, seed, None) if r.name == "no-kd"), None)
            if nokd is not None:
                lines.append(f"| no-kd (study) | random | {seed} | {nokd['test']['accuracy']:.4f} | "
                             f"{nokd['test']['macro_f1']:.3f} | {nokd['seconds_train']:.0f} | {nokd['steps']} | "
                             f"{nokd.get('other_cores', '-')} | study | {nokd['commit']} |")
            done: dict[str, dict] = {}
            for run, variant in variants(study, prep, seed):
                cfg = rp.config_of(mine, variant, done)
                rec = rp.load_record(mine, variant, cfg) if cfg else None
                if rec is None:
                    continue
                done[variant.name] = rec
                head = variant.options["head_init"]
                acc.setdefault((run.name, head), {})[seed] = rec["test"]["accuracy"]
                lines.append(f"| {run.name} | {head} | {seed} | {rec['test']['accuracy']:.4f} | "
                             f"{rec['test']['macro_f1']:.3f} | {rec['seconds_train']:.0f} | {rec['steps']} | "
                             f"{rec.get('other_cores', '-')} | {'study' if rec.get('taken_from') else 'this'} | {rec['commit']} |")
        lines += ["", "| run | seeds with both heads | probe mean | random mean | random − probe, per seed | mean difference |",
                  "| --- | ---: | ---: | ---: | --- | ---: |"]
        for name in RUNS:
            p, r = acc.get((name, "probe"), {}), acc.get((name, "random"), {})
            both = sorted(set(p) & set(r))
            if not both:
                continue
            diffs = [r[s] - p[s] for s in both]
            lines.append(f"| {name} | {len(both)} | {np.mean([p[s] for s in both]):.4f} | {np.mean([r[s] for s in both]):.4f} | "
                         f"{', '.join(f'{d * 100:+.2f}' for d in diffs)} | {np.mean(diffs) * 100:+.2f} pts |")
            summary.append({"dataset": data, "run": name, "seeds": both, "probe": [p[s] for s in both],
                            "random": [r[s] for s in both]})
        lines.append("")
    lines += ["Command: `.venv/bin/python bench/head_init.py --commit` (then `--render-only`); machine and load are "
              "in each record.", ""]
    out = Path(args.out)
    atomic_write_text(out, "\n".join(lines))
    atomic_write_json(out.with_suffix(".json"), {"made": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                                 "paired": summary})


if __name__ == "__main__":
    main()
