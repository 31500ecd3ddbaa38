"""The 10% recipe study's report: docs/RESULTS.md, its plots and the README's headline, from the run records
alone (study.py writes them; bench/reproduce.py --render-only rewrites this from them).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from selectkd.atomic import atomic_write_json, atomic_write_text, save_figure
from selectkd.distillation.config import OPTION_DEFAULTS
from selectkd.distillation.curves import accuracy_at, seconds_to_reach
from study import (ADOPTIONS, BAR_POINTS, BAR_TIME, DEFAULT_RUN, EQUAL_TIME, EQUAL_TIME_RULE, FLOORLESS, OBJECTIVES,
                   OTHER_CORES, OTHERS, RECIPES, REPO, SHARE, STEP_SPEED_STEPS, Run, another_teacher, budget_of, busy,
                   dataset_spec, distill_command, finished, parser, seconds_vs, tag, vs_default, where)

def speed_note(recs: list[dict]) -> str:
    """How fast the CPUs of the runs were (a fixed matmul, `cpu_speed`), where recorded."""
    timed = [r["cpu_speed_s"] for r in recs if r.get("cpu_speed_s")]
    if not timed:
        return ""
    cpus = sorted({r["cpu"] for r in recs if r.get("cpu")})
    return (f" CPU speed (a fixed matmul, recorded since 2026-11-26 for {len(timed)} runs; the same CPU line can run "
            f"at different speeds on different days): median {np.median(timed):.3f} s, range {min(timed):.3f}-"
            f"{max(timed):.3f} s, on {'; '.join(cpus)}; runs recorded before have no measurement.{numerics_note(recs)}")


def numerics_note(recs: list[dict]) -> str:
    """Whether the runs of each dataset computed alike: the speed probe's seeded steps (`step_digest`)."""
    digests: dict[str, set] = {}
    for r in recs:
        if r.get("step_digest"):
            digests.setdefault(r["dataset"], set()).add(r["step_digest"])
    if not digests:
        return ""
    n = sum(1 for r in recs if r.get("step_digest"))
    moved = [f"{d} ({len(v)} values)" for d, v in sorted(digests.items()) if len(v) > 1]
    return (f" Numerics (`step_digest`: the losses of the speed probe's seeded steps, recorded since 2026-11-29 for "
            f"{n} runs): " + (f"they differ within {', '.join(moved)}, so those runs did not compute alike bit for bit "
                              "(libraries or CPU kernels; see each record's `libraries`)." if moved
                              else "the same within each dataset."))


def step_speed_note(rows: dict) -> list[str]:
    """How the machine's speed at each run (`step_speed`) compared with its seed's full-KD run, where both
    were timed: the time columns compare a run's seconds with full KD's, made hours or sessions apart."""
    ratios = [x["_speed_ratio"] for r in rows.values() for x in r["records"] if x.get("_speed_ratio")]
    if not ratios:
        return []
    return [f"Machine speed: before its clock starts, each run times {STEP_SPEED_STEPS} optimizer steps of the student "
            f"on a fixed batch of this dataset's shape (`step_speed_s`, recorded since 2026-11-27). For the "
            f"{len(ratios)} runs timed beside their seed's full-KD run, a step took {min(ratios):.2f}-"
            f"{max(ratios):.2f}x as long as at full KD (median {np.median(ratios):.2f}x). Seconds are shown as "
            "measured, not rescaled: where this ratio is far from 1, the machine's speed, not the method, moved that "
            "run's time columns. Only \"at the default's time\" (below, and the budget strategy's choice) compares "
            "seconds at one speed: each run's over the default run's of its seed, divided by the ratio of their "
            "probes' seconds per step.", ""]


def refit_note(prep: dict) -> list[str]:
    """One paragraph on the teacher's re-fits (a fresh machine keeps no cache), if any."""
    notes = []
    for r in prep.get("refits", []):
        verdict = ("the same teacher (the same weights, or without a recorded key the same test accuracy and "
                   "macro-F1)" if not another_teacher(r)
                   else "another teacher, so every run made before it is redone with it and only runs after it are "
                        "shown here")
        notes.append(f"the {r['role'].replace('_', ' ')} was fitted again on {r['finished'][:16].replace('T', ' ')} "
                     f"UTC (a fresh machine; {r['seconds']:.0f} s) and scored {r['test']['accuracy'] * 100:.1f}% "
                     f"test accuracy: {verdict}")
    if not notes:
        return []
    return ["Re-fits: " + "; ".join(notes) + ". The fine-tuning time above is the first fit's (the same steps, "
            "measured on the machine of that fit, without other work beside it).", ""]


def collect(args, prep: dict, best: str | None) -> dict[str, dict]:
    """Per run name: the records of its finished seeds, with means and spreads."""
    rows: dict[str, dict] = {}
    for seed in args.seeds:
        recs: dict[str, dict] = {}
        for run, cfg, rec in finished(args, prep, seed, best):
            if rec is None:
                continue
            recs[run.name] = rec
            rec["_command"] = distill_command(cfg)  # today's defaults: a record taken from another bench ran before
            r = rows.setdefault(run.name, {"name": run.name, "tier": run.tier, "rescores": rescores(run),
                                           "records": []})
            r["records"].append(rec)
        full, default = recs.get("full"), recs.get(DEFAULT_RUN)
        for name, rec in recs.items():
            rec["_tta"] = tta(rec, full) if full else None
            rec["_vs_default"] = seconds_vs(rec, default) if default else None
            timed = full and rec is not full and rec.get("step_speed_s") and full.get("step_speed_s")
            rec["_speed_ratio"] = rec["step_speed_s"] / full["step_speed_s"] if timed else None
            counted = full and rec.get("student_rows_forward_backward") and full.get("student_rows_forward_backward")
            rec["_rows_ratio"] = (rec["student_rows_forward_backward"] / full["student_rows_forward_backward"]
                                  if counted else None)
            rec["_time_parts"] = time_parts(rec, full) if full and rec.get("steps") and full.get("steps") else None
    for r in rows.values():
        summarize(r)
    return rows


def summarize(r: dict) -> dict:
    """A row's means, spreads and time-to-accuracy figures from its ``records`` (set in place; returned)."""
    recs = r["records"]
    r["seeds"] = [x["seed"] for x in recs]
    for key, get in (("accuracy", lambda x: x["test"]["accuracy"]), ("macro_f1", lambda x: x["test"]["macro_f1"]),
                     ("seconds", lambda x: x["seconds_train"])):
        v = np.asarray([get(x) for x in recs], dtype=float)
        r[key] = float(v.mean())
        r[key + "_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    marks = [x["_tta"]["accuracy_at_mark"] for x in recs if x.get("_tta") and x["_tta"]["accuracy_at_mark"] is not None]
    r["at_mark"] = float(np.mean(marks)) if marks else None
    shares = [x["_rows_ratio"] for x in recs if x.get("_rows_ratio") is not None]
    r["rows_share"] = float(np.median(shares)) if shares else None
    paired = [x["_vs_default"] for x in recs if x.get("_vs_default") is not None]
    r["vs_default"] = vs_default(paired) if paired else None
    reach = [x["_tta"]["seconds_to_target"] for x in recs if x.get("_tta")]
    r["reached"] = sum(s is not None for s in reach)
    r["to_target"] = float(np.median([s for s in reach if s is not None])) if r["reached"] else None
    r["tried"] = len(reach)
    first = min(recs, key=lambda x: x["seed"])  # the first seed's commands, as today's defaults spell them
    r["command"] = first["_command"]
    r["select_command"] = (first.get("selection") or {}).get("command")
    r["load"] = [x.get("load_before") for x in recs]
    return r


def class_mix(r: dict) -> dict | None:
    """What the rows a configuration trained on held, over every recorded epoch of every seed: the fewest classes
    an epoch had, the class most often the largest and its mean share, the mean share of each epoch's smallest
    class. None for a row whose runs did not record it (`train_classes`, recorded since 2026-11-29)."""
    epochs = [e for x in r["records"] for e in x.get("train_classes") or []]
    if not epochs:
        return None
    shares = [{k: v / max(1, sum(e.values())) for k, v in e.items()} for e in epochs]
    tops = [max(s, key=s.get) for s in shares]
    top = max(set(tops), key=tops.count)
    return {"present": min(sum(v > 0 for v in e.values()) for e in epochs), "classes": len(epochs[0]),
            "top": top, "top_share": float(np.mean([s[top] for s in shares])),
            "least_share": float(np.mean([min(s.values()) for s in shares])),
            "runs": sum(bool(x.get("train_classes")) for x in r["records"]), "of": len(r["records"])}


def mix_table(rows: list[dict], pool: dict | None) -> list[str]:
    """One line per configuration with a recorded class mix (`class_mix`), below the pool's own (prep.json
    `pool_classes`); [] when no configuration has one."""
    mixes = [(label(r["name"]), m, f"{m['runs']} of {m['of']}") for r in rows if (m := class_mix(r)) is not None]
    if not mixes:
        return []
    if pool:
        mixes.insert(0, ("the pool (every row)", class_mix({"records": [{"train_classes": [pool]}]}), ""))
    lines = ["| configuration | classes in every epoch | largest class: mean share of the rows | smallest class's "
             "mean share | runs recorded |", "| --- | ---: | --- | ---: | ---: |"]
    for name, m, runs in mixes:
        lines.append(f"| {name} | {m['present']} of {m['classes']} | {m['top']}: {m['top_share']:.0%} "
                     f"| {m['least_share']:.1%} | {runs} |")
    return lines


def rescores(run: Run) -> bool:
    """Whether ``run`` re-scores the whole pool with the student each epoch: a dynamic run (`--budget` without a
    selection) whose strategy reads the student's signals."""
    from selectkd.selection.strategies import STRATEGIES

    return "budget" in run.options and STRATEGIES[run.options["strategy"]].needs_student


def tta(rec: dict, full: dict) -> dict:
    """Dev accuracy at 15% of the same seed's full-KD training seconds; seconds to 99% of full KD's final."""
    from selectkd.distillation.curves import Curve

    def curve(r: dict) -> Curve:
        return Curve(r["name"], r["curve"]["seconds"], r["curve"]["dev_accuracy"], r["seconds_train"])

    mark = BAR_TIME * full["seconds_train"]
    return {"mark_seconds": mark, "accuracy_at_mark": accuracy_at(curve(rec), mark),
            "target": SHARE * full["curve"]["dev_accuracy"][-1],
            "seconds_to_target": seconds_to_reach(curve(rec), SHARE * full["curve"]["dev_accuracy"][-1])}


LABELS = {
    "no-kd": "student without KD (CE on all rows)", "full": "full-data KD", "same-time": "full data, the default's time",
    DEFAULT_RUN: "**10% default** (`distill --budget 0.1`: random, re-drawn each epoch)",
    FLOORLESS: "10% default without the step floor (`--min-steps 0`)",
    "in-batch-10": "10% in-batch (paper: KD on each batch's most uncertain 10%)",
    "adopt-small": "small teacher only", "adopt-average": "average of both teachers",
    "adopt-hard": "adoption `hard`", "adopt-soft": "adoption `soft`", "adopt-soft-instance": "adoption `soft-instance`",
    "objective-fixed": "KD + fixed [CLS] alignment", "objective-uncertainty": "objective `uncertainty`",
    "objective-uncertainty-r": "objective `uncertainty-r`",
}


def label(name: str) -> str:
    if name in LABELS:
        return LABELS[name]
    kind, rest = name.split("-", 1)
    return f"{budget_of(name):g}% `{rest.rsplit('-', 1)[0]}` {'static' if kind == 'static' else 'dynamic'}"


def pm(r: dict, key: str) -> str:
    return f"{r[key] * 100:.1f} ± {r[key + '_std'] * 100:.1f}" if len(r["seeds"]) > 1 else f"{r[key] * 100:.1f}"


def table(rows: list[dict], full: dict | None, teacher: dict | None = None) -> list[str]:
    lines = ["| configuration | test acc % | macro-F1 % | train s | vs full KD time | rows trained vs full KD "
             "| dev acc at 15% of full KD time | time to 99% of full KD | seeds |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    if teacher:
        lines.append(f"| teacher: {teacher['what']} | {teacher['accuracy'] * 100:.1f} | {teacher['macro_f1'] * 100:.1f} "
                     f"| {teacher['seconds']:.0f} (fine-tuning) | | | | | |")
    for r in rows:
        ratio = f"{r['seconds'] / full['seconds']:.0%}" if full else ""
        share = "" if r.get("rows_share") is None else f"{r['rows_share']:.1%}" + (" + re-scoring" if r["rescores"] else "")
        mark = f"{r['at_mark'] * 100:.1f}" if r["at_mark"] is not None else ""
        reach = (f"{r['to_target']:.0f} s ({r['reached']}/{r['tried']} seeds)" if r["reached"]
                 else f"not reached (0/{r['tried']})" if r["tried"] else "")
        lines.append(f"| {label(r['name'])} | {pm(r, 'accuracy')} | {pm(r, 'macro_f1')} | {r['seconds']:.0f} | {ratio} "
                     f"| {share} | {mark} | {reach} | {','.join(map(str, r['seeds']))} |")
    return lines


def verdict(tag_: str, full: dict, r: dict) -> str:
    """One plain sentence: is this 10% row within 1 point of full KD at <= 15% of its time, and if not, why."""
    gap = (full["accuracy"] - r["accuracy"]) * 100
    ratio = r["seconds"] / full["seconds"]
    ok_acc, ok_time = gap <= BAR_POINTS, ratio <= BAR_TIME
    where = f"{abs(gap):.1f} points {'below' if gap >= 0 else 'above'} full-data KD at {ratio:.1%} of its training time"
    compute = ("" if r.get("rows_share") is None else f" It trains on {r['rows_share']:.1%} of full-data KD's student "
               "row passes" + (" and re-scores the pool each epoch" if r["rescores"] else "") + ".")
    if ok_acc and ok_time:
        return f"On {tag_}, the default 10% recipe **holds the promise**: {where}.{compute}"
    over = gap - BAR_POINTS
    shown = f"{over:.1f}" if round(over, 1) > 0 else f"{over:.2f}"  # never "0.0 points more" for a miss
    fails = [f"accuracy ({shown} points more than the 1 allowed)"] if not ok_acc else []
    fails += [f"time ({ratio:.1%} > {BAR_TIME:.0%})"] if not ok_time else []
    return (f"On {tag_}, the default 10% recipe **misses the promise**: {where}; it fails on {' and '.join(fails)}."
            f"{compute}{'' if ok_time else time_note(r)}")


def time_parts(rec: dict, full: dict) -> tuple[float, float, float]:
    """Where a run's training seconds over its seed's full-KD run's come from, exactly: (its steps over full KD's,
    its seconds per step over a full-KD step's, what it pays besides steps over full KD's seconds: the probe head's
    fit, re-scoring), so that seconds / full KD's = steps share x step-seconds ratio + besides."""
    extra = rec.get("seconds", {})
    besides = extra.get("head_init", 0.0) + extra.get("rescore", 0.0)
    per_step = (rec["seconds_train"] - besides) / rec["steps"]
    return (rec["steps"] / full["steps"], per_step / (full["seconds_train"] / full["steps"]),
            besides / full["seconds_train"])


def time_note(r: dict) -> str:
    """The verdict's word on where a row's time went (median over seeds of `time_parts`)."""
    parts = [x["_time_parts"] for x in r["records"] if x.get("_time_parts")]
    if not parts:
        return ""
    steps, speed, besides = np.median(np.asarray(parts), axis=0)
    return (f" Its time against full KD's is its steps ({steps:.1%} of full KD's) times their seconds ({speed:.2f}x a "
            f"full-KD step's) plus {besides:.1%} for what it does besides steps (the probe head's fit"
            f"{', re-scoring' if r['rescores'] else ''}); median over seeds.")


def floor_note(full: dict, default: dict, floorless: dict | None) -> str:
    """What the default's step floor (--min-steps) bought: the same recipe run for exactly --epochs, against
    full-data KD and the default on the seeds all three have finished (paired, so a missing seed cannot tilt it)."""
    if floorless is None:
        return ""
    by_seed = lambda r: {x["seed"]: x for x in r["records"]}  # noqa: E731
    fulls, defaults = by_seed(full), by_seed(default)
    trios = [(fulls[s], defaults[s], f) for s, f in by_seed(floorless).items() if s in fulls and s in defaults]
    if not trios or all(d["steps"] == f["steps"] for _, d, f in trios):
        return ""  # no paired seed yet, or the floor added no step here: the two rows are the same schedule
    acc = lambda x: x["test"]["accuracy"] * 100  # noqa: E731
    vs_full = float(np.mean([acc(k) - acc(f) for k, _, f in trios]))
    vs_default = float(np.mean([acc(f) - acc(d) for _, d, f in trios]))
    share = float(np.median([f["seconds_train"] / k["seconds_train"] for k, _, f in trios]))
    seeds = ", ".join(str(f["seed"]) for *_, f in trios)
    steps = float(np.median([f["steps"] for *_, f in trios]))
    return (f" Without the step floor (`--min-steps 0`: {steps:.0f} step{'' if steps == 1 else 's'} "
            f"instead of {np.median([d['steps'] for _, d, _ in trios]):.0f}), the same recipe is {abs(vs_full):.1f} "
            f"points {'below' if vs_full >= 0 else 'above'} full-data KD at {share:.1%} of its time and "
            f"{vs_default:+.1f} points against the default (seed{'s' if len(trios) > 1 else ''} {seeds}, paired).")


def kd_note(teacher: dict, nokd: dict | None, full: dict, soft_labels: str = "") -> str:
    """What the teacher has to give here: its lead over the student trained without KD, and what full-data KD
    made of it (the promise only means something when that lead is clear); ``soft_labels`` links the teachers'
    soft labels per class (bench/soft_labels.py) for when KD costs accuracy."""
    if nokd is None:
        return ""
    lead, kd = (teacher["accuracy"] - nokd["accuracy"]) * 100, (full["accuracy"] - nokd["accuracy"]) * 100
    note = (f" The teacher is {abs(lead):.1f} points {'above' if lead >= 0 else 'below'} the student trained "
            f"without KD, and full-data KD {abs(kd):.1f} points {'above' if kd >= 0 else 'below'} it")
    if kd < 0 and soft_labels:
        note += f" (what the teacher's soft labels give each class: [soft_labels.md]({soft_labels}))"
    if lead < BAR_POINTS:
        return note + (": the teacher is no clearer than the student, so being within 1 point of full-data KD "
                       "says little about distillation here.")
    return note + "."


def versus_full(full: dict, r: dict) -> str:
    """"X points below (or above) full-data KD at Y% of its time", never a negative "below"."""
    gap = (full["accuracy"] - r["accuracy"]) * 100
    return (f"{abs(gap):.1f} points {'below' if gap >= 0 else 'above'} full-data KD at "
            f"{r['seconds'] / full['seconds']:.0%} of its time")


def equal_time_best(subsets: list[dict]) -> dict | None:
    """The most accurate 10% row at the default's time: its seconds at most `EQUAL_TIME` times the default's,
    read as `best_strategy` reads them; None while no row has that ratio."""
    equal = [r for r in subsets if r["vs_default"] is not None and r["vs_default"] <= EQUAL_TIME]
    return max(equal, key=lambda r: r["accuracy"]) if equal else None


def equal_time_note(subsets: list[dict], full: dict, default: dict, top: dict) -> str:
    """When the most accurate 10% row trains longer than the default (`equal_time_best`): the most accurate one
    at the default's time, and its gain or loss against the default."""
    best = equal_time_best(subsets)
    if best is None or best is top:
        return ""
    note = (f" At the default's time (at most {EQUAL_TIME:g}x its seconds) it is {label(best['name'])}: "
            + versus_full(full, best))
    return note + ("." if best is default else
                   f", {(best['accuracy'] - default['accuracy']) * 100:+.1f} points against the default.")


def time_ratios_note(subsets: list[dict]) -> str:
    """Each 10% row's training seconds against the default's as the equal-time rule reads them (`seconds_vs`: at
    one machine speed, mean over seeds), lowest first, so a reader sees which rows count as the default's time."""
    timed = sorted((r for r in subsets if r["vs_default"] is not None and r["name"] != DEFAULT_RUN),
                   key=lambda r: (r["vs_default"], r["name"]))
    if not timed:
        return ""
    ratios = "; ".join(f"{label(r['name']).replace('10% ', '', 1)} {r['vs_default']:.2f}x" for r in timed)
    return (f" Training seconds against the default's, at one machine speed (mean over seeds; at most {EQUAL_TIME:g}x "
            f"counts as the default's time): {ratios}.")


def finish_plot(fig, ax, path: Path, xlabel: str, ylabel: str, title: str, **legend) -> bool:
    """Labels, grid and legend (lower right unless given), then the figure written whole to ``path``."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, **(legend or {"loc": "lower right"}))
    fig.tight_layout()
    save_figure(fig, path)
    return True


def plot_curves(path: Path, title: str, rows: dict, prep: dict) -> bool:
    """Dev accuracy against training seconds, the first finished seed of each key configuration."""
    from matplotlib.figure import Figure

    names = ["full", "no-kd", DEFAULT_RUN, "static-random-10", "same-time", "in-batch-10"] + \
            sorted((n for n in rows if n.endswith("-10") and n not in (DEFAULT_RUN, "static-random-10", "in-batch-10")),
                   key=lambda n: -rows[n]["accuracy"])[:2]
    if "full" not in rows:
        return False
    seed = rows["full"]["seeds"][0]
    fig = Figure(figsize=(8, 4.6), dpi=100)
    ax = fig.add_subplot()
    for name in names:
        rec = next((x for x in rows.get(name, {}).get("records", []) if x["seed"] == seed), None)
        if rec is None:
            continue
        c = rec["curve"]
        ax.plot(c["seconds"], [a * 100 for a in c["dev_accuracy"]], marker=".", lw=2 if name == DEFAULT_RUN else 1.2,
                label=label(name).replace("`", "").replace("*", ""))
    full = next(x for x in rows["full"]["records"] if x["seed"] == seed)
    ax.axvline(BAR_TIME * full["seconds_train"], color="k", ls=":", lw=1, label="15% of full KD's time")
    ax.axhline(SHARE * full["curve"]["dev_accuracy"][-1] * 100, color="k", ls="--", lw=1, label="99% of full KD")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlim(left=0)  # symlog pads below 0 otherwise, with a "-10^1" tick
    return finish_plot(fig, ax, path, "training seconds (evaluation not counted)", "dev accuracy %",
                       f"{title}: accuracy vs time, seed {seed}")


def plot_promise(path: Path, title: str, rows: list[dict], full: dict) -> bool:
    """Each configuration's mean test accuracy against its training seconds as a share of full-data KD's (bars:
    std over seeds), with the promise's corner shaded: at most 15% of the time, at most 1 point below."""
    from matplotlib.figure import Figure

    if not rows:
        return False
    fig = Figure(figsize=(10, 5), dpi=100)
    ax = fig.add_subplot()
    goal = full["accuracy"] * 100 - BAR_POINTS
    top = max(r["accuracy"] + r["accuracy_std"] for r in rows + [full]) * 100 + 0.5
    ax.fill_between([0, BAR_TIME * 100], goal, top, color="tab:green", alpha=0.12, lw=0,
                    label=f"the promise: <= {BAR_TIME:.0%} of full KD's time, <= {BAR_POINTS:g} point below it")
    for i, r in enumerate(rows, 1):  # numbered: points of one time share would hide each other's names
        x, y = r["seconds"] / full["seconds"] * 100, r["accuracy"] * 100
        default = r["name"] == DEFAULT_RUN
        ax.errorbar(x, y, yerr=r["accuracy_std"] * 100, fmt="*" if default else "o", ms=11 if default else 5,
                    color="tab:red" if default else "tab:blue" if r["name"].endswith("-10") else "0.35", capsize=2,
                    label=f"{i} {r['name']}")
        ax.annotate(str(i), (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7)
    ax.axhline(full["accuracy"] * 100, color="k", ls="--", lw=1, label="full-data KD")
    ax.set_xlim(left=0)
    ax.set_ylim(top=top)
    return finish_plot(fig, ax, path, "training seconds, % of full-data KD's (mean over seeds)",
                       "test accuracy % (mean ± std over seeds)",
                       f"{title}: every configuration against the promise (red star: the default 10% recipe)",
                       loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def plot_budgets(path: Path, title: str, rows: dict, full: dict) -> bool:
    """Test accuracy against the budget (5-50%, the 10% rows from the core tiers) for random and the chosen
    strategy, full-data KD and its 1-point margin as lines."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    series: dict[str, list[tuple[float, dict]]] = {n.rsplit("-", 1)[0]: [] for n in rows
                                                   if rows[n]["tier"] == "budgets"}
    for name, r in rows.items():
        key, b = name.rsplit("-", 1)[0], budget_of(name)
        if key in series and b is not None:
            series[key].append((b, r))
    if not series:
        return False
    fig = Figure(figsize=(7, 4.4), dpi=100)
    ax = fig.add_subplot()
    for key, points in sorted(series.items()):
        points.sort(key=lambda p: p[0])
        ax.errorbar([b for b, _ in points], [r["accuracy"] * 100 for _, r in points],
                    yerr=[r["accuracy_std"] * 100 for _, r in points], marker="o", capsize=2, label=key)
    ax.axhline(full["accuracy"] * 100, color="k", ls="--", lw=1, label="full-data KD")
    ax.axhline(full["accuracy"] * 100 - BAR_POINTS, color="k", ls=":", lw=1, label=f"{BAR_POINTS:g} point below it")
    ax.set_xscale("log")
    ax.set_xticks(sorted({b for points in series.values() for b, _ in points}))
    ax.set_xticklabels([f"{b:g}%" for b in ax.get_xticks()])
    ax.xaxis.set_minor_formatter(NullFormatter())
    return finish_plot(fig, ax, path, "budget: share of the pool", "test accuracy % (mean ± std over seeds)",
                       f"{title}: accuracy against the budget")


def render(args, preps: dict[str, dict], best: str | None) -> dict:
    out, options = Path(args.out), study_options(args)
    doc = ["# The 10% recipe study", "",
           "Does distilling on 10% of the rows, chosen from the cached teacher and student signals, reach full-data KD's "
           f"test accuracy (within {BAR_POINTS:g} point) in at most {BAR_TIME:.0%} of its training time? Every number "
           f"below comes from the run records in `{where(args.results)}/` (one JSON per run: metrics, dev curve, "
           "command, machine, load, commit), written by", "", "```sh", f"python bench/reproduce.py{options} --commit",
           "```", "", f"and this page by `python bench/reproduce.py{options} --render-only`. Nothing here is "
           "edited by hand. "
           "Training seconds exclude evaluation and include what a dynamic run pays to re-score the pool; dev accuracy at 15% of full KD's time and the time to 99% of full "
           "KD's final dev accuracy come from each run's dev curve against the same seed's full-KD run. Beside the "
           "seconds, which move with this machine's speed from hour to hour, *rows trained vs full KD* is the "
           "machine-free share of compute: the rows the student took a forward and backward pass on, against the "
           "same seed's full-KD run (median over seeds; \"+ re-scoring\" marks runs that also re-score the whole "
           "pool with the student, forward only, each epoch).", ""]
    results: dict = {"datasets": {}, "best_budget_strategy": best}
    drawn: set[str] = set()  # the plots this render drew
    collected = {data: collect(args, prep, best) for data, prep in preps.items()}
    all_recs = [x for rows in collected.values() for r in rows.values() for x in r["records"]]
    if all_recs:
        machines = sorted({x["machine"] for x in all_recs})
        loads = [x["load_before"] for x in all_recs if x.get("load_before") is not None]
        shared = [f"{tag(x['dataset'])} seed {x['seed']} {x['name']}"  # the most loaded first
                  for x in sorted(all_recs, key=lambda x: -(x.get("other_cores") or 0.0)) if busy(x, 2.5)]
        rule = f"others above {OTHER_CORES} cores, or without that measurement a load above 2.5 before or after"
        if not shared:
            loaded = f"No run ran beside other work ({rule})."
        else:
            named = "; ".join(shared[:6]) + (f"; {len(shared) - 6} more" if len(shared) > 6 else "")
            loaded = (f"{len(shared)} of them ran beside other work ({named}, the most loaded first; {rule}): their "
                      "seconds are inflated and `--rerun-loaded 2.5` redoes them.")
        measured = [x["other_cores"] for x in all_recs if x.get("other_cores") is not None]
        others = (f"; the CPU other processes used during a run (measured for {len(measured)} of them): median "
                  f"{np.median(measured):.2f} cores, max {max(measured):.2f}") if measured else ""
        doc += [f"Runs: {len(all_recs)}, on {'; '.join(machines)}; commits {', '.join(sorted({x['commit'] for x in all_recs}))}. "
                f"1-minute load average before each run: median {np.median(loads):.1f}, max {max(loads):.1f}{others}. "
                + loaded
                + taken_note(all_recs) + speed_note(all_recs), ""]
    headline = []
    waiting = [tag(d) for d in args.datasets if d not in preps]
    for data, prep in preps.items():
        t = tag(data)
        rows = collected[data]
        d = dataset_spec(args, data)
        doc += [f"## {t}", ""]
        teacher_from = (f"training rows 1-{d.teacher_rows:,}; the pool is rows {d.teacher_rows + 1:,}-"
                        f"{d.teacher_rows + prep['pool_rows']:,}, which the teacher never saw" if d.transfer else
                        f"the whole training split, which is also the pool ({prep['pool_rows']:,} rows)")
        doc += [f"Teacher: `{tag(args.teacher)}` fine-tuned end to end on {teacher_from}; test accuracy "
                f"{prep['teacher_test']['accuracy'] * 100:.1f}% on {prep['test_rows']:,} test rows (majority class "
                f"{prep['majority_test_accuracy'] * 100:.1f}%). Student: {student_words(args)}. "
                f"Max length {prep['max_length']} tokens; {args.epochs} epochs (10% runs: at least "
                f"{OPTION_DEFAULTS['min_steps'] if args.min_steps is None else args.min_steps} steps); the rest "
                "`selectkd distill`'s defaults (`--head-init auto`: a run on a subset starts from the probe head, "
                "one on all rows from the fresh head; the same-time run from the probe, like the default 10% run, "
                f"so that only the rows differ: [bench/results/head_init.md]({link(out, REPO / 'bench' / 'results' / 'head_init.md')})).", "",
                "```sh", prep["teacher_command"], "```", ""] + refit_note(prep)
        curve = out / "plots" / f"curve-{t}.png"
        if not rows:
            doc += ["No finished runs yet.", ""]
            continue
        full = rows.get("full")
        teacher = {"what": f"{tag(args.teacher)}, fine-tuned", "accuracy": prep["teacher_test"]["accuracy"],
                   "macro_f1": prep["teacher_test"]["macro_f1"], "seconds": prep["teacher_seconds"]}
        order = ["no-kd", "full", DEFAULT_RUN, FLOORLESS, "same-time", "static-random-10"] + \
                [f"{k}-{s}-10" for s in RECIPES for k in ("static", "dynamic")] + ["in-batch-10"] + \
                [f"{k}-{s}-10" for s in OTHERS for k in ("static", "dynamic")]
        ten = [rows[n] for n in order if n in rows]
        doc += [f"### 10% of the pool, at equal compute ({t})", ""] + table(ten, full, teacher) + [""] + \
            step_speed_note(rows)
        if full and plot_promise(out / "plots" / f"promise-{t}.png", t, [r for r in ten if r is not full], full):
            doc += [f"![test accuracy against training time, every configuration, {t}](plots/promise-{t}.png)", ""]
            drawn.add(f"promise-{t}.png")
        if plot_curves(curve, t, rows, prep):
            doc += [f"![dev accuracy against training seconds, {t}](plots/curve-{t}.png)", ""]
            drawn.add(curve.name)
        mix = mix_table([r for r in ten if r["name"] != "no-kd"], prep.get("pool_classes"))
        if mix:
            doc += [f"What the rows trained on held, class by class ({t}): every recorded epoch of every seed "
                    "(full-data KD: the pool itself; runs record their epochs' class counts since 2026-11-29, "
                    "`train_classes` in metrics.jsonl; a configuration none of whose runs did is left out).", ""] + \
                mix + [""]
        res = {"prep": {k: v for k, v in prep.items() if not k.startswith("score_")},
               "rows": {n: {k: v for k, v in r.items() if k != "records"} for n, r in rows.items()}}
        if full and DEFAULT_RUN in rows:
            sentence = verdict(t, full, rows[DEFAULT_RUN])
            res["verdict"] = sentence
            doc += [sentence + floor_note(full, rows[DEFAULT_RUN], rows.get(FLOORLESS))
                    + kd_note(teacher, rows.get("no-kd"), full,
                              link(out, REPO / "bench" / "results" / "soft_labels.md")), ""]
            subsets = [r for n, r in rows.items() if n.endswith("-10") and n != "in-batch-10"]
            top = max(subsets, key=lambda r: r["accuracy"])
            doc += [f"The most accurate 10% configuration here is {label(top['name'])}, {versus_full(full, top)}."
                    + equal_time_note(subsets, full, rows[DEFAULT_RUN], top) + time_ratios_note(subsets), ""]
            headline.append((t, prep, rows, top, equal_time_best(subsets)))
        budget_rows = [rows[n] for n in rows if rows[n]["tier"] == "budgets"]
        if budget_rows:
            budget_rows.sort(key=lambda r: (r["name"].split("-")[1], budget_of(r["name"])))
            doc += [f"### Budgets 5-50% ({t}): random and the best 10% strategy (`{best}`)", "",
                    f"`{best}` is {EQUAL_TIME_RULE} (`bench/results/reproduce/budget_strategy.json`).", ""] + \
                table(budget_rows, full) + [""]
            if full and plot_budgets(out / "plots" / f"budgets-{t}.png", t, rows, full):
                doc += [f"![test accuracy against the budget, {t}](plots/budgets-{t}.png)", ""]
                drawn.add(f"budgets-{t}.png")
        teach = [rows[n] for n in ["adopt-small", "adopt-average"] + [f"adopt-{m}" for m in ADOPTIONS] +
                 ["objective-fixed"] + [f"objective-{o}" for o in OBJECTIVES] if n in rows]
        if teach:
            # full-data KD of the same seeds as these rows (--teachers-seeds), so that every comparison is paired
            seeds = sorted({s for r in teach for s in r["seeds"]})
            paired = [x for x in (full or {}).get("records", []) if x["seed"] in seeds]
            same = summarize({**full, "records": paired}) if paired else None  # none: no time ratios, no full row
            doc += [f"### Teacher adoption and objective adaptation ({t})", "",
                    f"All rows, seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))} (`--teachers-seeds`; "
                    f"full-data KD of the same seeds). 'full-data KD' learns from `{tag(args.teacher)}` alone; adoption "
                    f"mixes it with the small teacher `{tag(args.small_teacher)}` fine-tuned on the same rows; the "
                    f"objective rows add [CLS] alignment (--pt-alpha {args.pt_alpha:g}).", ""] + \
                table([same, *teach] if same else teach, same) + [""]
        doc += [f"<details><summary>commands (seed {min(min(r['seeds']) for r in rows.values())}; the other seeds add "
                "--seed N and their own --out)</summary>", "", "```sh"] + \
               [f"{r['select_command']} && \\\n  {r['command']}" if r["select_command"] else r["command"]
                for r in rows.values()] + ["```", "", "</details>", ""]
        results["datasets"][t] = res
    for t in waiting:
        doc += [f"## {t}", "", "Not started yet: the study runs tier by tier, dataset by dataset, and has not "
                f"prepared {t} (its teacher, pool and scores) so far.", ""]
    for t in {tag(d) for d in args.datasets}:  # this report's own plots of runs that are not today's
        for name in {f"{kind}-{t}.png" for kind in ("curve", "promise", "budgets")} - drawn:
            (out / "plots" / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "RESULTS.md", "\n".join(doc))
    lines = render_headline(headline)
    atomic_write_text(out / "headline.md", "\n".join(lines) + "\n")
    if out.resolve() == (REPO / "docs").resolve():
        update_readme(lines, [res["verdict"] for res in results["datasets"].values() if "verdict" in res])
    return results


def link(out: Path, target: Path) -> str:
    """``target`` as a Markdown link from a report written in ``out``."""
    return os.path.relpath(target, Path(out).resolve())


# options that steer a sitting (what runs now, where its run folders and store live, what counts as loaded), not
# what a record is: the report's commands leave them out
SITTING = {"tiers", "cache_dir", "runs", "commit", "rerun_loaded", "other_cores", "render_only", "progress"}


def study_options(args) -> str:
    """Every option of this report's study that is not the default (another student, dataset, teacher, seeds,
    results or report folder...): what its commands must repeat to remake its records and this page."""
    options = []
    for name, default in vars(parser().parse_args([])).items():
        value, option = getattr(args, name), "--" + name.replace("_", "-")
        if name in SITTING:
            continue
        if name in ("results", "out"):
            if Path(value).resolve() != Path(default).resolve():
                options.append(f" {option} {where(value)}")
        elif value != default:
            options.append(f" {option} {' '.join(map(str, value)) if isinstance(value, list) else value}")
    return "".join(options)


def student_words(args) -> str:
    """The report's name for the study's student."""
    if args.student_layers:
        return f"the pre-trained first {args.student_layers} layers of `{tag(args.student)}`"
    return f"`{tag(args.student)}`, pre-trained, all its layers"


def taken_note(recs: list[dict]) -> str:
    """The report's word on records copied from another bench (--take-from)."""
    took = [x["taken_from"] for x in recs if x.get("taken_from")]
    if not took:
        return ""
    return (f" {len(took)} records were made by another bench with exactly the run's settings and copied "
            f"(`--take-from`; each record's `taken_from` names it): from bench/results/"
            f"{', bench/results/'.join(sorted({t.split('/')[0] for t in took}))}.")


def render_headline(headline: list) -> list[str]:
    lines = ["| dataset | configuration | test acc % | train s | vs full KD time |", "| --- | --- | ---: | ---: | ---: |"]
    for t, prep, rows, top, equal in headline:
        full = rows["full"]
        lines.append(f"| {t} | teacher (fine-tuned) | {prep['teacher_test']['accuracy'] * 100:.1f} | | |")
        for name in ("full", DEFAULT_RUN, "static-random-10", "same-time", "no-kd"):
            if name in rows:
                r = rows[name]
                lines.append(f"| {t} | {label(name)} | {pm(r, 'accuracy')} | {r['seconds']:.0f} | {r['seconds'] / full['seconds']:.0%} |")
        shown = {DEFAULT_RUN, "static-random-10"}
        for what, r in (("most accurate 10%", top), (f"most accurate 10% at the default's time (<= {EQUAL_TIME:g}x)",
                                                     equal)):
            if r is not None and r["name"] not in shown:
                shown.add(r["name"])
                lines.append(f"| {t} | {what}: {label(r['name'])} | {pm(r, 'accuracy')} | {r['seconds']:.0f} "
                             f"| {r['seconds'] / full['seconds']:.0%} |")
    return lines


def update_readme(lines: list[str], verdicts: list[str]) -> None:
    """Put the headline table and the verdicts between the README's markers (the repository's own report only)."""
    readme = REPO / "README.md"
    text = readme.read_text()
    start, end = "<!-- headline:start -->", "<!-- headline:end -->"
    if start not in text or end not in text:
        return
    if len(lines) > 2:
        block = [start, "From [docs/RESULTS.md](docs/RESULTS.md) (`python bench/reproduce.py`; mean ± std over the "
                 "seeds finished so far):", "", *lines, "", *verdicts, end]
    else:
        block = [start, "The study is running: no dataset has its full-data KD and default 10% runs finished yet "
                 "([docs/RESULTS.md](docs/RESULTS.md) shows what has).", end]
    head, rest = text.split(start, 1)
    atomic_write_text(readme, head + "\n".join(block) + rest.split(end, 1)[1])
