"""One option of the study's key runs set to other values, the rest exactly the study's: the shared part of
bench/head_init.py (`--head-init`) and bench/lr.py (`--lr`).

The 10% recipe study's datasets, teacher, student, pool and test rows (bench/reproduce.py must have prepared
them) and its runs named in ``Variation.runs``, each with the option spelled out at every value, per seed. A
run the study already made with the same settings (its record's signature matches) is taken from
bench/results/reproduce instead of being trained again; the table says which. Records, one JSON per run,
with the command, machine, CPU the rest of the machine used meanwhile and commit; RUNS/PAUSE holds the next
run as in the study; a finished run is never redone.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

import study as rp  # the study's plan, records and runner (bench/ is on sys.path when a bench runs)

from selectkd.atomic import atomic_write_json, atomic_write_text


@dataclass
class Variation:
    option: str  # a DistillConfig option (run.options key)
    values: tuple  # the first is the one the others are compared with
    runs: tuple[str, ...]  # the study's runs to vary
    name: Callable[[str, object], str]  # (study run name, value) -> the variant's record name
    timed_by: Callable[[object], str]  # value -> the variant whose seconds a --time-budget run takes
    nokd: object  # the option's value in the study's no-KD run, shown beside the variants
    tier: str = "variant"  # the records' tier
    shown: Callable[[object], str] = str  # a value as the tables show it


def parser(doc: str, results: str, datasets: list[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=datasets, help="the study's datasets, prepared by it")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--study-results", default=str(rp.REPO / "bench" / "results" / "reproduce"))
    p.add_argument("--results", default=str(rp.REPO / "bench" / "results" / results))
    p.add_argument("--runs", default=f"bench/runs/{results}", help="run folders (large, not committed)")
    p.add_argument("--out", default=str(rp.REPO / "bench" / "results" / f"{results}.md"))
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--commit", action="store_true", help="git-commit each record as it is written")
    p.add_argument("--render-only", action="store_true")
    return p


def studies(args) -> tuple[argparse.Namespace, argparse.Namespace]:
    """(the study's settings and records, this bench's: its own records and run folders)."""
    cache = ["--cache-dir", args.cache_dir] if args.cache_dir else []
    study = rp.parser().parse_args(["--results", args.study_results, *cache])
    mine = rp.parser().parse_args(["--results", args.results, "--runs", args.runs, *cache])
    return study, mine


def variants(study, prep: dict, seed: int, v: Variation) -> list[tuple[rp.Run, rp.Run, object]]:
    """(the study's run, the same run with the option spelled out, the value) for each run and value."""
    out = []
    for run in rp.plan(study, prep, seed, None):
        if run.name in v.runs:
            for value in v.values:
                var = rp.Run(run.data, seed, v.name(run.name, value), v.tier, {**run.options, v.option: value})
                var.time_budget_of = v.timed_by(value) if run.time_budget_of else None
                out.append((run, var, value))
    return out


def other_student(args) -> str | None:
    """Why this bench must not run or render with these --results, or None: a record there distilled another
    student than the study's today (bench/results/lr and head_init hold the first study's 3-layer student).
    Such a record no longer matches the study's plan, so a render would drop it from the report and a run would
    make every row again."""
    study, _ = studies(args)
    for data in args.datasets:
        prep = rp.prepared(study, data)
        if prep is None:
            continue
        want = Path(prep["student"]).name  # a record's signature keeps a path's last part
        for path in sorted((Path(args.results) / rp.tag(data)).glob("s*/*.json")):
            student = json.loads(path.read_text()).get("signature", {}).get("student")
            if student not in (None, want):
                return (f"{path.parent.parent} holds runs of the student {student}, and the study's student is now "
                        f"{want}: a run or render would drop them from {args.out}; give another --results and --out")
    return None


def run_all(args, v: Variation, label: str) -> None:
    """Every variant without a record, seed by seed; ``label`` heads each commit message."""
    study, mine = studies(args)
    for seed in args.seeds:
        for data in args.datasets:
            prep = rp.prepared(study, data)
            if prep is None:
                rp.log(f"{data}: not prepared by bench/reproduce.py yet; skipped")
                continue
            if not (rp.REPO / prep["teacher"] / rp.FINETUNED).exists():  # a lost teacher: the study fits it again
                rp.log(f"{data}: its teacher {prep['teacher']} is not on this machine; `bench/reproduce.py "
                       "--prepare-only` fits or restores it; skipped")
                continue
            done: dict[str, dict] = {}
            for run, variant, _value, cfg, rec in walk(study, mine, prep, seed, v, done):
                if cfg is None or rec is not None:
                    continue  # its --time-budget run has not finished, or it has a record
                path = rp.record_path(mine, variant)
                same = rp.load_record(study, run, cfg)  # the study ran exactly this configuration
                if same is not None:  # taken_from: reproduce/DATASET/sSEED/NAME.json
                    rec = rp.adopt(mine, variant, same, rp.record_path(study, run), tier=v.tier)
                else:
                    rec = rp.execute(mine, variant, cfg, prep)  # mine.commit is False: committed below, alone
                done[variant.name] = rec
                if args.commit:
                    rp.commit([path], f"{label}: {rp.tag(data)} seed {seed} {variant.name} "
                                      f"(test {rec['test']['accuracy']:.3f}, {rec['seconds_train']:.0f} s)")


def walk(study, mine, prep: dict, seed: int, v: Variation, done: dict[str, dict]):
    """(study run, variant, value, its config, its record or None) for each variant of one dataset and seed, in
    plan order. A --time-budget variant's config needs the record of the run it takes its seconds from:
    ``done`` collects the records found here, and the caller adds those it makes; without it the config is None."""
    for run, variant, value in variants(study, prep, seed, v):
        cfg = rp.config_of(mine, variant, done)
        rec = record(study, mine, variant, cfg) if cfg is not None else None
        if rec is not None:
            done[variant.name] = rec
        yield run, variant, value, cfg, rec


def record(study, mine, variant: rp.Run, cfg) -> dict | None:
    """The variant's record if it finished with ``cfg`` and distilled the teacher the study uses now (a record
    made before the study's teacher was fitted again and came out another is void, as in the study)."""
    rec = rp.load_record(mine, variant, cfg)
    return rec if rec is not None and rp.same_teacher(study, variant, rec) else None


def tables(args, v: Variation, column: str) -> tuple[list[str], list[dict]]:
    """Per dataset: every record (run, value, seed) and, per run, each value against the first, paired by seed."""
    study, mine = studies(args)
    lines: list[str] = []
    summary: list[dict] = []
    base = v.values[0]
    for data in args.datasets:
        prep = rp.prepared(study, data)
        if prep is None:
            continue
        lines += [f"## {data}", "", f"Teacher {Path(prep['teacher']).name}: test accuracy "
                  f"{prep['teacher_test']['accuracy']:.3f}; pool {prep['pool_rows']:,} rows, max length {prep['max_length']}.", "",
                  f"| run | {column} | seed | test acc | macro-F1 | train s | steps | others | source | commit |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
        acc: dict[tuple[str, object], dict[int, float]] = {}
        for seed in args.seeds:
            nokd_run = next(r for r in rp.plan(study, prep, seed, None) if r.name == "no-kd")
            nokd = rp.load_record(study, nokd_run)
            if nokd is not None and rp.same_teacher(study, nokd_run, nokd):
                lines.append(f"| no-kd (study) | {v.shown(v.nokd)} | {seed} | {nokd['test']['accuracy']:.4f} | "
                             f"{nokd['test']['macro_f1']:.3f} | {nokd['seconds_train']:.0f} | {nokd['steps']} | "
                             f"{nokd.get('other_cores', '-')} | study | {nokd['commit']} |")
            for run, _variant, value, _cfg, rec in walk(study, mine, prep, seed, v, {}):
                if rec is None:
                    continue
                acc.setdefault((run.name, value), {})[seed] = rec["test"]["accuracy"]
                lines.append(f"| {run.name} | {v.shown(value)} | {seed} | {rec['test']['accuracy']:.4f} | "
                             f"{rec['test']['macro_f1']:.3f} | {rec['seconds_train']:.0f} | {rec['steps']} | "
                             f"{rec.get('other_cores', '-')} | {'study' if rec.get('taken_from') else 'this'} | {rec['commit']} |")
        for other in v.values[1:]:
            if not any((name, base) in acc and (name, other) in acc for name in v.runs):
                continue
            lines += ["", f"| run | seeds with both | {v.shown(base)} mean | {v.shown(other)} mean | "
                          f"{v.shown(other)} − {v.shown(base)}, per seed | mean difference |",
                      "| --- | ---: | ---: | ---: | --- | ---: |"]
            for name in v.runs:
                p, r = acc.get((name, base), {}), acc.get((name, other), {})
                both = sorted(set(p) & set(r))
                if not both:
                    continue
                diffs = [r[s] - p[s] for s in both]
                lines.append(f"| {name} | {len(both)} | {np.mean([p[s] for s in both]):.4f} | {np.mean([r[s] for s in both]):.4f} | "
                             f"{', '.join(f'{d * 100:+.2f}' for d in diffs)} | {np.mean(diffs) * 100:+.2f} pts |")
                summary.append({"dataset": data, "run": name, "seeds": both, v.shown(base): [p[s] for s in both],
                                v.shown(other): [r[s] for s in both]})
        lines.append("")
    return lines, summary


def write(out: str, lines: list[str], summary: list[dict], extra: dict | None = None) -> None:
    path = Path(out)
    atomic_write_text(path, "\n".join(lines))
    atomic_write_json(path.with_suffix(".json"), {"made": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                                  "paired": summary, **(extra or {})})


@dataclass(frozen=True)
class Rule:
    """A default decided by paired runs: the option's second value replaces the first when ``target`` gains on
    average over ``datasets`` and ``guard`` loses at most ``slack`` points on any one (``seeds`` paired seeds
    each). Fixed in the bench's file before the runs it decides on; ``written`` says when."""

    datasets: tuple[str, ...]
    target: str  # a run of Variation.runs
    guard: str
    slack: float  # points
    written: str  # "before the 20ng runs"
    default: float  # distill's default now
    constant: str  # where it is set: "DEFAULT_LR"
    seeds: int = 3
    note: str = ""  # a sentence after the rule


RUN_NAMES = {"full": "full-data KD", rp.DEFAULT_RUN: "the default 10% run"}  # as the verdict names them


def decide(rule: Rule, v: Variation, summary: list[dict]) -> tuple[list[str], dict]:
    """``rule`` applied to the paired results (``tables``' summary): report lines and ``{"choice": value or None,
    "incumbent", "rule"}``; the choice is None until every dataset has the seeds."""
    base, other = (v.shown(x) for x in v.values)
    gain = {(s["dataset"], s["run"]): float(np.mean(np.subtract(s[other], s[base]))) * 100
            for s in summary if len(s["seeds"]) >= rule.seeds}
    target, guard = RUN_NAMES[rule.target], RUN_NAMES[rule.guard]
    ref = {name: RUN_NAMES[name] + (f" ({name})" if name == rp.DEFAULT_RUN else "")  # the rule names the run
           for name in (rule.target, rule.guard)}
    text = (f"{other} becomes distill's default when, on {', '.join(rule.datasets)} with {rule.seeds} seeds each, "
            f"{ref[rule.target]} gains on average over the datasets and {ref[rule.guard]} loses at most {rule.slack} "
            "points on any one; "
            f"otherwise {base} stays (rule written {rule.written}).{' ' + rule.note if rule.note else ''}")
    missing = [d for d in rule.datasets if (d, rule.target) not in gain or (d, rule.guard) not in gain]
    choice = None
    if missing:
        said = (f"Not decided yet: {', '.join(missing)} without {rule.seeds} paired seeds of full-data KD and the "
                "default 10% run.")
    else:
        mean = float(np.mean([gain[d, rule.target] for d in rule.datasets]))
        worst = min(rule.datasets, key=lambda d: gain[d, rule.guard])
        choice = v.values[1] if mean > 0 and gain[worst, rule.guard] >= -rule.slack else v.values[0]
        per = ", ".join(f"{d} {gain[d, rule.target]:+.2f}" for d in rule.datasets)
        said = (f"{target[0].upper() + target[1:]}: {mean:+.2f} points on average ({per}); {guard} "
                f"at worst {gain[worst, rule.guard]:+.2f} points ({worst}). **Choice: {v.shown(choice)}.**")
        if choice != rule.default:
            said += f" distill's default is still {v.shown(rule.default)}: set selectkd/specs.py {rule.constant}."
    return ["## Verdict", "", text, "", said, ""], {"choice": choice, "incumbent": v.values[0], "rule": text}


def main(argv: list[str] | None, doc: str, results: str, datasets: list[str], v: Variation, intro: list[str],
         column: str, rule: Rule | None = None) -> None:
    """A bench's command line: run what is missing (unless --render-only), then write --out (default
    bench/results/NAME.md, NAME the bench: ``intro``, then the tables, then what ``rule`` decides from
    the paired results: ``decide``) and its .json."""
    p = parser(doc, results, datasets)
    args = p.parse_args(argv)
    if (why := other_student(args)) is not None:
        p.error(why)  # exit 2, nothing written
    if not args.render_only:
        run_all(args, v, results)
    body, summary = tables(args, v, column)
    said, extra = decide(rule, v, summary) if rule else ([], {})
    write(args.out, intro + body + said + [f"Command: `.venv/bin/python bench/{results}.py --commit` (then "
                                           "`--render-only`); machine and load are in each record.", ""], summary, extra)
    rp.log(f"report: {args.out}")
