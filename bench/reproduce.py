"""Does 10% really do? The reproduction report: every experiment, then docs/RESULTS.md + plots.

    .venv/bin/python bench/reproduce.py                 # the full report (sizes below), resumable
    .venv/bin/python bench/reproduce.py --render-only   # rewrite the report from the finished runs

Per dataset (tweets-binary and r8 by default): a large teacher (mpnet-base) and a small one
(minilm-l6), each fine-tuned with `selectkd finetune --head-only`; the train pool scored once
per teacher (`selectkd score`, cached); then, per seed, minilm-l6 distilled with `selectkd
distill` in every configuration of the five sections of the report:

1. data selection: teacher, no KD, full-data KD, six static strategies, two dynamic ones and the
   paper's in-batch mode at 10%, and 10% `random` trained for full KD's step count;
2. budget curve: `random`, `entropy`, `coverage` at every --budgets fraction;
3. teacher adoption: a 3-layer student (the first layers of minilm-l6) from each teacher alone,
   their average, and the `hard`, `soft`, `soft-instance` adoption;
4. objective adaptation: [CLS]-state alignment to mpnet-base: KD only, fixed KD + alignment,
   `uncertainty`, `uncertainty-r`;
5. cost: what each teacher costs to score once, and the experiments that reused it.

The runs go through the same `distill()` the CLI calls, in this process (a fresh `python -m
selectkd` per run would add seconds of imports to each): each table row shows the equivalent
command. A run folder that finished with the same config is reused, so an interrupted report
resumes where it stopped. Seeds are the outer loop: a report stopped early has whole seeds.

Default sizes (chosen so that the whole report fits in 90 minutes on 2 CPU cores): 250 train
rows, 400 test rows, max length 64 tokens, 3 epochs, batch 16, lr 1e-4, seeds 0 1 2. An earlier
attempt at 300 train rows and 500 test rows took 11.5 min for tweets-binary's first seed alone,
which put the whole report just past 90 minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from selectkd import assets
from selectkd.atomic import atomic_write_json, atomic_write_text, save_figure
from selectkd.cache.store import Store
from selectkd.distillation.config import OPTION_DEFAULTS
from selectkd.distillation.config import DistillConfig, finished_summary
from selectkd.pipeline import distilled, frozen_teacher, majority_baseline, make_selection, teacher_test_metrics
from selectkd.runtime import machine
from selectkd.scoring.run import score
from selectkd.specs import DataSpec, ScoreSpec

REPO = Path(__file__).resolve().parents[1]


STATIC = ["random", "entropy", "margin", "least_confidence", "kl", "coverage"]
DYNAMIC = ["entropy", "coverage"]
CURVE = ["random", "entropy", "coverage"]
ADOPTIONS = ["hard", "soft", "soft-instance"]
OBJECTIVES = ["uncertainty", "uncertainty-r"]
CLAIMS = [  # (row, the row it should beat, the paper's claim)
    ("static-entropy-10", "static-random-10", "uncertainty (entropy) selection beats random at 10%"),
    ("dynamic-entropy-10", "static-entropy-10", "re-selecting each epoch beats a static entropy selection"),
    ("in-batch-10", "full", "in-batch KD on 10% of each batch beats KD on every row"),
    ("objective-uncertainty", "objective-fixed", "uncertainty-weighted objective beats fixed KD + alignment"),
    ("objective-uncertainty", "objective-uncertainty-r", "`uncertainty` beats its reverse `uncertainty-r`"),
]
BAR_POINTS, BAR_TIME = 1.0, 0.15  # the promise: within 1 point of full KD at <= 15% of its wall time


def log(msg: str, t0: float = time.perf_counter()) -> None:
    e = time.perf_counter() - t0
    print(f"[{int(e // 60):3d}:{int(e % 60):02d}] {msg}", flush=True)


# -- the plan ------------------------------------------------------------------------------------

@dataclass
class Run:
    """One distillation: its folder, the report rows it feeds, and its config."""

    data: str
    seed: int
    name: str  # folder name, the same for every seed
    cfg: DistillConfig
    sections: list[str]
    selection: dict | None = None  # {"name", "strategy", "budget", "seconds"} for static runs
    extra: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name


def pct(b: float) -> str:
    return f"{b * 100:g}%"


def budget_tag(b: float) -> str:
    return f"{b * 100:g}".replace(".", "p")


def subset_rows(budget: float, n: int) -> int:
    return max(1, round(budget * n))


def plan(args, data: str, prep: dict, seed: int) -> list[Run]:
    """Every run of one dataset and seed, in the order they are run."""
    n = args.train_rows
    base = dict(data=data, teachers=[prep["teacher"]], student=args.student, out="", limit=n, eval_limit=0,
                test_limit=args.test_rows, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                max_length=args.max_length, seed=seed, checkpoint=False, cache_dir=args.cache_dir,
                # the settings the report describes, pinned so that later distill defaults do not change its runs
                kd_loss="mse", temperature=1.0, min_steps=0, head_init="random")
    folder = Path(args.runs) / dataset_tag(data) / f"s{seed}"
    runs: list[Run] = []

    def add(name: str, sections: list[str], spec: dict | None = None, **kw) -> None:
        cfg = DistillConfig.from_options(**{**base, **kw, "out": str(folder / name)})
        runs.append(Run(data, seed, name, cfg, sections, spec))

    def sel(strategy: str, budget: float) -> dict:
        return {"name": f"rep-{dataset_tag(data)}-{n}-{strategy}-{budget_tag(budget)}-s{seed}", "strategy": strategy,
                "budget": budget}

    add("no-kd", ["selection"], kd_alpha=0.0)
    add("full", ["selection", "curve", "objective"])
    for s in STATIC:
        add(f"static-{s}-10", ["selection"] + (["curve"] if s in CURVE else []), sel(s, 0.1),
            selection=sel(s, 0.1)["name"])
    for s in DYNAMIC:
        add(f"dynamic-{s}-10", ["selection"], budget="0.1", strategy=s)
    add("in-batch-10", ["selection"], in_batch=0.1)
    full_steps = math.ceil(n / args.batch_size) * args.epochs
    for s in args.matched:
        per_epoch = math.ceil(subset_rows(0.1, n) / args.batch_size)
        add(f"matched-{s}-10", ["selection"], sel(s, 0.1), selection=sel(s, 0.1)["name"],
            epochs=max(1, round(full_steps / per_epoch)))
    for b in args.budgets:
        if b in (0.1, 1.0):
            continue  # 10% is the static runs above, 100% is full-data KD
        for s in CURVE:
            add(f"static-{s}-{budget_tag(b)}", ["curve"], sel(s, b), selection=sel(s, b)["name"])
    small = dict(student=prep["small_student"])
    add("adopt-large", ["adoption"], teachers=[prep["teacher"]], **small)
    add("adopt-small", ["adoption"], teachers=[prep["small_teacher"]], **small)
    add("adopt-average", ["adoption"], teachers=[prep["small_teacher"], prep["teacher"]], **small)
    for mode in ADOPTIONS:
        add(f"adopt-{mode}", ["adoption"], teachers=[prep["small_teacher"], prep["teacher"]], adoption=mode, **small)
    add("objective-fixed", ["objective"], pt_alpha=args.pt_alpha)
    for obj in OBJECTIVES:
        add(f"objective-{obj}", ["objective"], pt_alpha=args.pt_alpha, objective=obj)
    return runs


def dataset_tag(data: str) -> str:
    return Path(data).name if os.sep in data else data


# -- commands as a user would type them -------------------------------------------------------------

def rel(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def distill_command(cfg: DistillConfig) -> str:
    """The `selectkd distill` command equivalent to ``cfg`` (non-default options only)."""
    options = cfg.options()
    parts = ["selectkd", "distill", "--data", shown(options["data"])]
    for t in options["teachers"]:
        parts += ["--teacher", rel(t)]
    parts += ["--student", shown(options["student"])]
    for name, default in OPTION_DEFAULTS.items():
        v = options[name]
        if name == "cache_dir" or v == default:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(v, bool):
            parts.append(flag if v else "--no-" + name.replace("_", "-"))
        else:
            parts += [flag, str(v)]
    if cfg.cache_dir:
        parts += ["--cache-dir", rel(cfg.cache_dir)]
    parts += ["--out", rel(cfg.out)]
    return shlex.join(parts)


def shown(name: str) -> str:
    """A model or data name as a command shows it: paths relative to the current folder."""
    return rel(name) if os.sep in name else name


def select_command(args, data: str, prep: dict, s: dict, seed: int) -> str:
    parts = ["selectkd", "select", "--data", shown(data), "--teacher", rel(prep["teacher"]), "--student", shown(args.student),
             "--strategy", s["strategy"], "--budget", str(s["budget"]), "--seed", str(seed), "--limit",
             str(args.train_rows), "--max-length", str(args.max_length), "--name", s["name"]]
    if args.cache_dir:
        parts += ["--cache-dir", rel(args.cache_dir)]
    return shlex.join(parts)


# -- preparation: teachers, the small student, scores ---------------------------------------------

def builtin(name: str) -> bool:
    return os.sep not in name and not Path(name).exists()


def truncated_student(name: str, layers: int, root: Path) -> str:
    """The first ``layers`` layers of ``name``, saved once as a normal HF folder in the store."""
    from selectkd.errors import SelectKDError
    from selectkd.models import first_layers

    try:
        return first_layers(name, layers, root)
    except SelectKDError as exc:
        raise SystemExit(f"--small-student-layers {layers}: {exc}") from None


def prepare(args, data: str, small_student: str) -> dict:
    """Teachers fitted, train pool and test rows scored; times measured when they were first paid."""
    root = Store(args.cache_dir).root
    rec_path = Path(args.runs) / dataset_tag(data) / "prep.json"
    rec = json.loads(rec_path.read_text()) if rec_path.exists() else {}
    n, cache = args.train_rows, args.cache_dir
    prep = {"small_student": small_student}
    for role, model in (("teacher", args.teacher), ("small_teacher", args.small_teacher)):
        out = root / "teachers" / f"reproduce-{dataset_tag(model)}-{dataset_tag(data)}-{n}-{args.max_length}"
        t = time.perf_counter()
        _, reused = frozen_teacher(data, model, out, n, eval_split=None, max_length=args.max_length, cache_dir=cache,
                                   progress=args.progress)
        if not reused:
            log(f"{data}: {role} {model}: fitted a head on frozen features of {n} rows")
            rec[f"{role}_fit_seconds"] = round(time.perf_counter() - t, 2)
        prep[role] = str(out)
        prep[f"{role}_command"] = shlex.join(["selectkd", "finetune", "--data", shown(data), "--model", shown(model), "--head-only",
                                              "--limit", str(n), "--max-length", str(args.max_length), "--out", rel(out)])
    scores = [("teacher", [prep["teacher"]], None, False), ("teacher_cls", [prep["teacher"]], None, True),
              ("small_teacher", [prep["small_teacher"]], None, False),
              ("student", [prep["teacher"]], args.student, False)]
    for what, teachers, student, cls in scores:
        log(f"{data}: score {what}")
        res = score(DataSpec(data, "train", limit=n), ScoreSpec(teachers=tuple(teachers), student=student,
                                                                 max_length=args.max_length, cls_states=cls),
                    cache_dir=cache, progress=args.progress)
        report = res.student if student else res.teachers[0]
        if not report.reused or f"score_{what}" not in rec:
            rec[f"score_{what}"] = {"seconds": round(report.seconds, 2), "rows": report.rows, "key": report.key,
                                    "reused": report.reused}
    test = score(DataSpec(data, "test", limit=args.test_rows),
                 ScoreSpec(teachers=(prep["teacher"], prep["small_teacher"]), max_length=args.max_length),
                 cache_dir=cache, progress=args.progress)
    for role, metrics in zip(("teacher", "small_teacher"), teacher_test_metrics(test)):
        rec[f"{role}_test"] = metrics
    rec["majority_test_accuracy"] = majority_baseline(test.rows.labels, test.rows.num_labels)["accuracy"]
    rec["num_labels"] = test.rows.num_labels
    rec_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(rec_path, rec)
    return {**prep, **rec}


def selection_record(args, data: str, prep: dict, s: dict, seed: int) -> dict:
    """Make (or remake: cheap, deterministic for a seed) a static selection; return its record."""
    t = time.perf_counter()
    make_selection(data, [prep["teacher"]], args.student, name=s["name"], budget=s["budget"], seed=seed,
                   rows=args.train_rows, max_length=args.max_length, cache_dir=args.cache_dir, strategy=s["strategy"])
    return {**s, "seconds": round(time.perf_counter() - t, 3), "command": select_command(args, data, prep, s, seed)}


def execute(args, run: Run, prep: dict) -> dict:
    out = Path(run.cfg.out)
    sel = selection_record(args, run.data, prep, run.selection, run.seed) if run.selection else None
    load = os.getloadavg()[0]
    summary, reused = distilled(run.cfg, progress=args.progress,
                                say=lambda reused: reused or log(f"{run.data} seed {run.seed}: {run.name}"))
    if not reused:
        if not args.keep_students:  # 90 MB each; the report needs the metrics, not the weights
            shutil.rmtree(out / "student", ignore_errors=True)
    elif (out / "reproduce.json").exists():
        return summary
    atomic_write_json(out / "reproduce.json", {"load_average_before": load, "selection": sel,
                                               "command": distill_command(run.cfg)})
    return summary


# -- the report ------------------------------------------------------------------------------------

def final_test(out: Path) -> dict:
    """The test metrics a run logged (the last ``final`` record of its metrics.jsonl)."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    finals = [r["test"] for r in records if r.get("final")]
    if not finals:
        raise SystemExit(f"{out}/metrics.jsonl has no test record; rerun the report to finish the run")
    return finals[-1]


def collect(args, data: str, prep: dict, seeds: list[int]) -> dict[str, dict]:
    """Per run name: per-seed metrics and costs read back from the run folders."""
    rows: dict[str, dict] = {}
    for seed in seeds:
        for run in plan(args, data, prep, seed):
            out = Path(run.cfg.out)
            summary = finished_summary(out, run.cfg)
            if summary is None:
                continue
            test = final_test(out)
            extra = json.loads((out / "reproduce.json").read_text()) if (out / "reproduce.json").exists() else {}
            sel = extra.get("selection")
            selection_seconds = 0.0
            if run.selection:
                selection_seconds += (sel or {}).get("seconds", 0.0)
                if run.selection["strategy"] != "random":  # uncertainty needs the student's pass over the pool
                    selection_seconds += prep["score_student"]["seconds"]
            elif run.cfg.selecting:
                selection_seconds += prep["score_student"]["seconds"]  # epoch 0 uses the cached probe scores
            r = rows.setdefault(run.name, {"name": run.name, "sections": run.sections, "seeds": [], "accuracy": [],
                                           "macro_f1": [], "wall": [], "rows_fb": [], "rows_f": [], "steps": [],
                                           "runs": [], "command": distill_command(run.cfg).replace(
                                               f"s{seed}", "s$SEED").replace(f"--seed {seed}", "--seed $SEED"),
                                           "select_command": (sel or {}).get("command", "").replace(
                                               f"s{seed}", "s$SEED").replace(f"--seed {seed}", "--seed $SEED")})
            r["seeds"].append(seed)
            r["accuracy"].append(test["accuracy"])
            r["macro_f1"].append(test["macro_f1"])
            r["wall"].append(summary["wall_seconds"] + selection_seconds)
            r["rows_fb"].append(summary["student_rows_forward_backward"])
            r["rows_f"].append(summary["student_rows_forward_only"])
            r["steps"].append(summary["steps"])
            r["runs"].append(str(out))
            r.setdefault("load", []).append(extra.get("load_average_before"))
    for r in rows.values():
        for k in ("accuracy", "macro_f1", "wall", "rows_fb", "rows_f", "steps"):
            v = np.asarray(r[k], dtype=float)
            r[k + "_mean"] = float(v.mean())
            r[k + "_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return rows


def ms(r: dict, k: str, scale: float = 100.0, digits: int = 1) -> str:
    if len(r["seeds"]) > 1:
        return f"{r[k + '_mean'] * scale:.{digits}f} ± {r[k + '_std'] * scale:.{digits}f}"
    return f"{r[k + '_mean'] * scale:.{digits}f}"


LABELS = {
    "no-kd": "student without KD (CE only)", "full": "full-data KD", "in-batch-10": "10% in-batch (paper), entropy",
    "adopt-large": "large teacher only", "adopt-small": "small teacher only", "adopt-average": "average of both",
    "adopt-hard": "adoption `hard`", "adopt-soft": "adoption `soft`", "adopt-soft-instance": "adoption `soft-instance`",
    "objective-fixed": "fixed KD + [CLS] alignment", "objective-uncertainty": "objective `uncertainty`",
    "objective-uncertainty-r": "objective `uncertainty-r`",
}


def label(name: str) -> str:
    if name in LABELS:
        return LABELS[name]
    kind, *mid, b = name.split("-")
    b = b.replace("p", ".") + "%"
    if kind == "static":
        return f"{b} `{'-'.join(mid)}` static"
    if kind == "dynamic":
        return f"{b} `{'-'.join(mid)}` dynamic (re-selected each epoch)"
    if kind == "matched":
        return f"{b} `{'-'.join(mid)}`, full KD's step count"
    return name


def table(rows: list[dict], full: dict | None) -> list[str]:
    head = ["| configuration | test acc % | macro-F1 % | wall s | vs full KD time | student rows fwd+bwd | fwd only "
            "| seeds | command |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    lines = []
    for r in rows:
        ratio = f"{r['wall_mean'] / full['wall_mean']:.0%}" if full else ""
        cmd = f"`{r['command']}`" + (f"<br>after `{r['select_command']}`" if r.get("select_command") else "")
        lines.append(f"| {label(r['name'])} | {ms(r, 'accuracy')} | {ms(r, 'macro_f1')} | {r['wall_mean']:.1f} | {ratio} "
                     f"| {r['rows_fb_mean']:,.0f} | {r['rows_f_mean']:,.0f} | {','.join(map(str, r['seeds']))} | {cmd} |")
    return head + lines


def below(full: dict, r: dict) -> str:
    gap = (full["accuracy_mean"] - r["accuracy_mean"]) * 100
    return f"{gap:.1f} points below" if gap >= 0.05 else ("level with" if gap > -0.05 else f"{-gap:.1f} points above")


def majority_note(rows: list[dict], prep: dict) -> list[str]:
    """Name the rows whose every seed scored exactly the majority-class accuracy (they learned no class boundary)."""
    m = prep["majority_test_accuracy"]
    stuck = [label(r["name"]) for r in rows if all(abs(a - m) < 1e-9 for a in r["accuracy"])]
    if not stuck:
        return []
    return [f"At {m * 100:.1f}% (the majority class's share of the test rows) a student predicts that class for "
            f"every row, on every seed: {', '.join(stuck)}.", ""]


def verdict(a: dict, b: dict, what: str) -> str:
    """Whether ``a`` beat ``b`` on test accuracy by more than the seeds' spread."""
    d = (a["accuracy_mean"] - b["accuracy_mean"]) * 100
    noise = 100 * max(a["accuracy_std"], b["accuracy_std"], 1e-9)
    if len(a["seeds"]) < 2:
        return f"{what}: {d:+.1f} points (one seed: no spread to judge it by)"
    if d > noise:
        return f"{what}: **held**, {d:+.1f} points (seed std up to {noise:.1f})"
    if d < -noise:
        return f"{what}: **did not hold**, {d:+.1f} points (the opposite, beyond seed std {noise:.1f})"
    return f"{what}: **not shown**, {d:+.1f} points is within the seed std ({noise:.1f})"


def plot_curve(path: Path, title: str, rows: dict, budgets: list[float], prep: dict) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), dpi=100)
    ax, bx = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for s, color in zip(CURVE, ("tab:gray", "tab:red", "tab:blue")):
        pts = []
        for b in budgets:
            name = "full" if b == 1.0 else f"static-{s}-{budget_tag(b)}"
            if name in rows:
                pts.append((b * 100, rows[name]))
        if not pts:
            continue
        x = [p[0] for p in pts]
        y = [p[1]["accuracy_mean"] * 100 for p in pts]
        e = [p[1]["accuracy_std"] * 100 for p in pts]
        ax.errorbar(x, y, yerr=e, marker="o", capsize=3, color=color, label=s)
        bx.errorbar([p[1]["wall_mean"] for p in pts], y, yerr=e, marker="o", capsize=3, color=color, label=s)
    for a in (ax, bx):
        a.axhline(prep["teacher_test"]["accuracy"] * 100, color="k", ls="--", lw=1, label="teacher")
        a.axhline(prep["majority_test_accuracy"] * 100, color="0.6", ls=":", lw=1, label="majority class")
        if "no-kd" in rows:
            a.axhline(rows["no-kd"]["accuracy_mean"] * 100, color="tab:green", ls="-.", lw=1, label="no KD, all rows")
        a.set_ylabel("test accuracy %")
        a.set_xscale("log")
        a.grid(alpha=0.3)
    ax.set_xlabel("budget, % of the train pool (log)")
    bx.set_xlabel("wall seconds per run, selection included (log)")
    ax.set_title(f"{title}: accuracy vs budget")
    bx.set_title(f"{title}: accuracy vs wall time")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def plot_bars(path: Path, title: str, rows: list[dict], full: dict | None) -> None:
    from matplotlib.figure import Figure

    if not rows:
        return
    fig = Figure(figsize=(9, 0.38 * len(rows) + 1.2), dpi=100)
    ax = fig.add_subplot()
    names = [label(r["name"]).replace("`", "") for r in rows]
    y = np.arange(len(rows))[::-1]
    ax.barh(y, [r["accuracy_mean"] * 100 for r in rows], xerr=[r["accuracy_std"] * 100 for r in rows],
            color=["tab:green" if r["name"] in ("full", "no-kd") else "tab:blue" for r in rows], capsize=3)
    ax.set_yticks(y, names, fontsize=8)
    lo = min(r["accuracy_mean"] for r in rows) * 100
    ax.set_xlim(max(0, lo - 10), 100)
    if full:
        ax.axvline(full["accuracy_mean"] * 100 - BAR_POINTS, color="tab:red", ls="--", lw=1,
                   label=f"full KD - {BAR_POINTS:g} point")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xlabel("test accuracy % (mean ± std over seeds)")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)


def git_rev() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip() or "?"
    except OSError:
        return "?"


def when(invocation: dict) -> str:
    return f"{invocation['started']}: {invocation['seconds'] / 60:.1f} min"


def render(args, preps: dict[str, dict], invocations: list[dict]) -> dict:
    out = Path(args.out)
    plots = out / "plots"
    doc: list[str] = ["# Reproduction report: does 10% really do?", ""]
    results: dict = {"datasets": {}, "invocations": invocations}
    total = sum(i.get("seconds", 0) for i in invocations)
    doc += [f"Generated by `{args.command}` — no number here is edited by hand; rerun it to regenerate this file "
            f"(finished runs are reused). Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Machine: "
            f"{machine()}. Code: git {git_rev()}.", "",
            f"Script wall time over its invocations: {total / 60:.1f} min "
            f"({'; '.join(when(i) for i in invocations)}).", "",
            f"Sizes: {args.train_rows:,} train rows (the pool), {args.test_rows:,} test rows, max length "
            f"{args.max_length} tokens, {args.epochs} epochs, batch {args.batch_size}, lr {args.lr:g}, seeds "
            f"{' '.join(map(str, args.seeds))}; mean ± sample std over seeds. Student `{args.student}`; large teacher "
            f"`{args.teacher}`, small teacher `{args.small_teacher}` (each `selectkd finetune --head-only`: a head "
            f"fitted on frozen features); small student: the first {args.small_student_layers} layers of "
            f"`{args.student}`. KD: CE + MSE to the cached teacher logits. The splits of each built-in dataset are "
            f"stored shuffled, so `--limit N` is a random sample.", "",
            "Wall time is the whole `distill` run (loading, training, test evaluation) plus, for a selection, making "
            "it and — for every strategy but `random` — the student's scoring pass over the pool that gives the "
            "uncertainty (paid once per pool; counted in full against each run that uses it). Teacher scoring is "
            "paid once and shared by every run; it is in the cost section, not in the per-run times. "
            f"The bar: a 10% configuration within {BAR_POINTS:g} point of full-data KD's accuracy at no more than "
            f"{BAR_TIME:.0%} of its wall time.", ""]
    headline = []
    loads = [x for data, prep in preps.items() for r in collect(args, data, prep, args.seeds).values()
             for x in r.get("load", []) if x is not None]
    if loads:
        busy = sum(x > 2.5 for x in loads)
        doc += [f"Machine load (1-minute load average when each run started, {len(loads)} runs): median "
                f"{np.median(loads):.1f}, max {max(loads):.1f}; {busy} runs started above 2.5, i.e. beside other "
                f"work on this 2-core machine, so their seconds are inflated.", ""]
    for data, prep in preps.items():
        tag = dataset_tag(data)
        rows = collect(args, data, prep, args.seeds)
        if not rows:
            doc += [f"## {tag}", "", "No finished runs yet.", ""]
            continue
        full = rows.get("full")
        res = {"prep": prep, "rows": rows}
        results["datasets"][tag] = res
        doc += [f"## {tag}", "",
                "```sh", f"SEED=0   # the commands below ran for SEED in {' '.join(map(str, args.seeds))}",
                f"{prep['teacher_command']}", f"{prep['small_teacher_command']}", "```", "",
                f"Teacher `{args.teacher}` on test: accuracy {prep['teacher_test']['accuracy'] * 100:.1f}%, macro-F1 "
                f"{prep['teacher_test']['macro_f1'] * 100:.1f}%; small teacher `{args.small_teacher}`: "
                f"{prep['small_teacher_test']['accuracy'] * 100:.1f}% / {prep['small_teacher_test']['macro_f1'] * 100:.1f}%; "
                f"majority class {prep['majority_test_accuracy'] * 100:.1f}%.", ""]
        # 1. data selection
        sel_rows = [rows[k] for k in ["no-kd", "full"] + [f"static-{s}-10" for s in STATIC]
                    + [f"dynamic-{s}-10" for s in DYNAMIC] + ["in-batch-10"] + [f"matched-{s}-10" for s in args.matched]
                    if k in rows]
        doc += [f"### 1. Data selection ({tag})", "",
                f"The teacher row: {prep['teacher_test']['accuracy'] * 100:.1f}% (scoring cost in section 5). "
                "10% rows train the same epochs over fewer rows unless marked 'full KD's step count'.", ""]
        doc += table(sel_rows, full) + [""] + majority_note(sel_rows, prep)
        plot_bars(plots / f"selection-{tag}.png", f"{tag}: data selection", sel_rows, full)
        doc += [f"![data selection, {tag}](plots/selection-{tag}.png)", ""]
        same_epochs = [r for r in sel_rows if r["name"].endswith("-10") and not r["name"].startswith("matched")]
        if full and same_epochs:
            def gap(r: dict) -> float:
                return (full["accuracy_mean"] - r["accuracy_mean"]) * 100

            def ratio(r: dict) -> float:
                return r["wall_mean"] / full["wall_mean"]

            best = max(same_epochs, key=lambda r: r["accuracy_mean"])
            fast = [r for r in same_epochs if ratio(r) <= BAR_TIME]
            best_fast = max(fast, key=lambda r: r["accuracy_mean"]) if fast else None
            ok = any(gap(r) <= BAR_POINTS for r in fast)
            res["bar"] = {"best": best["name"], "gap_points": gap(best), "time_ratio": ratio(best), "cleared": ok,
                          "best_within_time": best_fast["name"] if best_fast else None}
            within = (f"the most accurate within {BAR_TIME:.0%} of its time is {label(best_fast['name'])}, "
                      f"{below(full, best_fast)} at {ratio(best_fast):.0%}" if best_fast else
                      f"no 10% configuration ran within {BAR_TIME:.0%} of its time")
            doc += [f"**The bar on {tag}:** " + ("**cleared**. " if ok else "**not cleared**. ")
                    + f"The most accurate 10% configuration, {label(best['name'])}, is {below(full, best)} "
                    f"full-data KD at {ratio(best):.0%} of its wall time; {within} (the bar: ≤ {BAR_POINTS:g} point "
                    f"below at ≤ {BAR_TIME:.0%}).", ""]
            doc += ["How close each 10% configuration comes to full-data KD: " + "; ".join(
                f"{label(r['name'])} {below(full, r)} at {ratio(r):.0%} of the time" for r in same_epochs) + ".", ""]
            headline.append((tag, full, best, rows.get("static-random-10"), rows.get("no-kd")))
        # 2. budget curve
        curve = [rows[k] for b in args.budgets for s in CURVE
                 for k in (["full"] if b == 1.0 and s == CURVE[0] else [] if b == 1.0 else [f"static-{s}-{budget_tag(b)}"])
                 if k in rows]
        plot_curve(plots / f"budget-{tag}.png", tag, rows, args.budgets, prep)
        doc += [f"### 2. Budget curve ({tag})", "", f"![budget curve, {tag}](plots/budget-{tag}.png)", ""]
        doc += table(curve, full) + [""] + majority_note(curve, prep)
        # 3. adoption
        adopt = [rows[k] for k in ["adopt-large", "adopt-small", "adopt-average"] + [f"adopt-{m}" for m in ADOPTIONS]
                 if k in rows]
        doc += [f"### 3. Teacher adoption ({tag})", "",
                f"Student: the first {args.small_student_layers} layers of `{args.student}`, all rows. The smaller "
                f"teacher takes the uncertain rows.", ""]
        doc += table(adopt, None) + [""] + majority_note(adopt, prep)
        # 4. objective
        obj = [rows[k] for k in ["full", "objective-fixed"] + [f"objective-{o}" for o in OBJECTIVES] if k in rows]
        doc += [f"### 4. Objective adaptation ({tag})", "",
                f"`{args.teacher}` -> `{args.student}`, all rows; alignment of the [CLS] state of every mapped layer "
                f"(cached teacher states, --pt-alpha {args.pt_alpha:g}). 'full-data KD' is KD only.", ""]
        doc += table(obj, None) + [""] + majority_note(obj, prep)
        # 5. cost
        reused = [r for r in rows.values() if r["name"] not in ("no-kd",)]
        doc += [f"### 5. Cost ({tag})", "", "| paid once | seconds | rows |", "| --- | ---: | ---: |"]
        for k, what in (("teacher_fit_seconds", f"fit `{args.teacher}`'s head"),
                        ("small_teacher_fit_seconds", f"fit `{args.small_teacher}`'s head")):
            if k in prep:
                doc.append(f"| {what} | {prep[k]:.1f} | {args.train_rows:,} |")
        for k, what in (("score_teacher", f"score `{args.teacher}` logits"),
                        ("score_teacher_cls", f"score `{args.teacher}` logits + [CLS] states"),
                        ("score_small_teacher", f"score `{args.small_teacher}` logits"),
                        ("score_student", f"score `{args.student}` uncertainty + embeddings (probe, index)")):
            if k in prep:
                doc.append(f"| {what} | {prep[k]['seconds']:.1f} | {prep[k]['rows']:,} |")
        used = sum(sum(r["wall"]) for r in reused)
        doc += ["", f"{sum(len(r['seeds']) for r in reused)} KD runs reused those cached teacher outputs, "
                f"{used / 60:.1f} min of runs in all; not one of them ran a teacher forward pass.", ""]
    # the cached-vs-online ratio, from the distill benchmark
    bench = REPO / "bench" / "results" / "distill.json"
    if bench.exists():
        b = json.loads(bench.read_text())
        ratio = b.get("online_over_cached") or b.get("ratios", {}).get("online_over_cached")
        if ratio:
            doc += [f"Cached vs online KD step (bench/results/distill.md): an online step (teacher forward every "
                    f"step) costs {ratio:.2f}x a cached one.", ""]
    # the paper's claims
    doc += ["## Where the paper's claims held on this data", ""]
    for data, res in results["datasets"].items():
        rows = res["rows"]
        claims = [verdict(rows[a], rows[b], what) for a, b, what in CLAIMS if a in rows and b in rows]
        singles = [rows[k] for k in ("adopt-large", "adopt-small", "adopt-average") if k in rows]
        for m in ADOPTIONS:
            if f"adopt-{m}" in rows and singles:
                best = max(singles, key=lambda r: r["accuracy_mean"])
                claims.append(verdict(rows[f"adopt-{m}"], best, f"adoption `{m}` beats the best of one teacher / "
                                      f"the average ({label(best['name'])})"))
        doc += [f"**{data}**", ""] + [f"- {c}" for c in claims] + [""]
    doc += ["Rule: a claim held when the difference in mean test accuracy exceeds the larger of the two rows' "
            "seed std; it did not hold when the difference goes the other way by as much; otherwise the data "
            "does not show it either way.", ""]
    results["headline"] = [{"dataset": t, "full": f["name"], "best": b["name"],
                            "random": r["name"] if r else None, "no_kd": n["name"] if n else None}
                           for t, f, b, r, n in headline]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "RESULTS.md", "\n".join(doc))
    headline_md = render_headline(headline)
    (out / "headline.md").write_text("\n".join(headline_md) + "\n")
    if out.resolve() == (REPO / "docs").resolve():
        bars = [f"{tag} {'cleared' if d['bar']['cleared'] else 'not cleared'}"
                for tag, d in results["datasets"].items() if "bar" in d]
        update_readme(headline_md, sum(len(r["seeds"]) for d in results["datasets"].values() for r in d["rows"].values()),
                      total, bars)
    return results


def update_readme(headline_md: list[str], n_runs: int, seconds: float, bars: list[str]) -> None:
    """Put the headline table between the README's markers (the repository's own report only)."""
    readme = REPO / "README.md"
    text = readme.read_text()
    start, end = "<!-- headline:start -->", "<!-- headline:end -->"
    if start not in text or end not in text:
        return
    when = time.strftime("%Y-%m-%d", time.gmtime())
    block = [start, f"Measured {when} on {machine()}: {n_runs} distillations; the script's wall time "
             f"{seconds / 60:.0f} min.", "", *headline_md, "",
             f"The bar (a 10% configuration ≤ {BAR_POINTS:g} point below full-data KD at ≤ {BAR_TIME:.0%} of its "
             f"time): {'; '.join(bars)}.", end]
    head, rest = text.split(start, 1)
    text = head + "\n".join(block) + rest.split(end, 1)[1]
    atomic_write_text(readme, text)


def render_headline(headline: list) -> list[str]:
    seeds = max((len(h[1]["seeds"]) for h in headline), default=0)
    lines = [f"| dataset | configuration | test acc % (mean ± std, {seeds} seeds) | wall s | vs full KD time |",
             "| --- | --- | ---: | ---: | ---: |"]
    for tag, full, best, rnd, nokd in headline:
        for what, r in (("full-data KD", full), (f"most accurate 10%: {label(best['name'])}", best),
                        ("10% random", rnd), ("no KD (all rows)", nokd)):
            if r is not None:
                lines.append(f"| {tag} | {what} | {ms(r, 'accuracy')} | {r['wall_mean']:.0f} | "
                             f"{r['wall_mean'] / full['wall_mean']:.0%} |")
    return lines


# -- main ------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["tweets-binary", "r8"], help="built-in names or save_to_disk folders with train/test splits")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--train-rows", type=int, default=250, help="train pool size")
    p.add_argument("--test-rows", type=int, default=400)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--teacher", default="mpnet-base", help="the large teacher")
    p.add_argument("--small-teacher", default="minilm-l6")
    p.add_argument("--student", default="minilm-l6")
    p.add_argument("--small-student-layers", type=int, default=3)
    p.add_argument("--budgets", nargs="+", type=float, default=[0.01, 0.05, 0.1, 0.2, 0.5, 1.0])
    p.add_argument("--matched", nargs="*", default=["random"], help="10%% strategies also trained for full KD's step count")
    p.add_argument("--pt-alpha", type=float, default=1.0)
    p.add_argument("--cache-dir", default=None, help="the store (default: $SELECTKD_CACHE or ./cache)")
    p.add_argument("--runs", default="runs/reproduce")
    p.add_argument("--out", default="docs")
    p.add_argument("--keep-students", action="store_true", help="keep each run's trained student folder")
    p.add_argument("--render-only", action="store_true", help="rewrite the report from the finished runs")
    p.add_argument("--progress", action="store_true", help="progress bars for each step")
    args = p.parse_args(argv)
    args.command = "python bench/reproduce.py" + (" " + shlex.join(argv if argv is not None else sys.argv[1:])
                                                    if (argv if argv is not None else sys.argv[1:]) else "")
    if not set(args.budgets) >= {0.1, 1.0}:
        p.error("--budgets must include 0.1 and 1.0 (the 10% and full-data points)")
    t_start = time.perf_counter()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    runs_root = Path(args.runs)
    runs_root.mkdir(parents=True, exist_ok=True)
    inv_path = runs_root / "invocations.json"
    invocations = json.loads(inv_path.read_text()) if inv_path.exists() else []
    root = Store(args.cache_dir).root
    builtin_models = [m for m in {args.teacher, args.small_teacher, args.student} if builtin(m)]
    builtin_data = [d for d in args.datasets if builtin(d)]
    if builtin_models or builtin_data:
        log(f"assets: {', '.join(builtin_models + builtin_data)}")
        assets.install(root, models=builtin_models, data=builtin_data)
    small_student = truncated_student(args.student, args.small_student_layers, root)
    preps = {d: prepare(args, d, small_student) for d in args.datasets}
    if not args.render_only:
        for seed in args.seeds:
            for data in args.datasets:
                for run in plan(args, data, preps[data], seed):
                    execute(args, run, preps[data])
                try:  # a partial report after every dataset and seed; a bug in it must not stop the runs
                    render(args, preps, invocations)
                except Exception as exc:  # noqa: BLE001
                    log(f"partial report failed ({type(exc).__name__}: {exc}); the runs go on")
        invocations.append({"started": started, "seconds": round(time.perf_counter() - t_start, 1),
                            "command": args.command})
        atomic_write_json(inv_path, invocations)
    results = render(args, preps, invocations)
    for b in (res.get("bar") for res in results["datasets"].values()):
        if b:
            log(f"bar: best 10% {b['best']} {b['gap_points']:+.1f} points below full KD at {b['time_ratio']:.0%} of its time")
    log(f"report: {Path(args.out) / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
