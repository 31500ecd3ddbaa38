"""The 10% recipe study: does 10% of the rows, chosen from cached signals, reach full-data KD in 15% of its time?

    .venv/bin/python bench/reproduce.py --commit          # the whole study, resumable run by run
    .venv/bin/python bench/reproduce.py --render-only     # docs/RESULTS.md from the committed records

Per dataset (tweets-binary, r8, 20ng): a teacher fine-tuned end to end (all-mpnet-base-v2, `selectkd
finetune`), the KD pool scored once by it and the student (cached, reused by every run), then per seed
the student, the pre-trained all-MiniLM-L6-v2 (all 6 layers: ASSETS.md's student), distilled with
`selectkd distill` in every configuration at equal compute. The study first ran with the pre-trained
first 3 layers of MiniLM-L6 as the student (records and report: bench/results/reproduce-minilm-first3/);
that student's [CLS] is one vector for every row, so its short runs learnt little more than the class
prior and the 10% runs failed for a reason no selection could fix (bench/results/head_features.md).
`--student-layers N` still runs a student of the first N layers. (A fine-tuned MiniLM-L6 teacher was
tried first on tweets: at 88.6% test accuracy it was no better than the 3-layer student trained without
KD on the 10,000-row pool, 88.9%: nothing to distil. mpnet is the teacher a user would distil.) The runs
come in tiers, each finished for every dataset and seed before the next:

1. core: the student without KD, full-data KD, the default 10% recipe (`distill --budget 0.1`), the
   same without its step floor (`--min-steps 0`: exactly --epochs epochs), a static random 10%, the full
   data for the default's training seconds (`--time-budget`, from the default's head: only the rows
   differ), the three recipes of the literature (ccs, confident_uncertain, uncertainty_sampling) static
   and ccs dynamic, and the paper's in-batch mode;
2. strategies: every other strategy at 10%, static and dynamic (re-selected each epoch);
3. budgets: 5/20/50% for random and the best 10% strategy of tiers 1-2 at the default's training time
   (`EQUAL_TIME`; chosen once, recorded in budget_strategy.json);
4. teachers: teacher adoption between the large teacher and a small one (MiniLM-L6, fine-tuned the same
   way), and objective adaptation ([CLS] alignment weighted by uncertainty); seed 0 only by default
   (`--teachers-seeds`): eight full-length runs a seed, the promise is not read from them.

Every run logs dev accuracy against training seconds (`--eval-every`), so each row has the accuracy
it had at 15% of full KD's time and the time it took to reach 99% of full KD's accuracy (same seed).

Each finished run leaves one small JSON record in bench/results/reproduce/DATASET/sSEED/NAME.json
(metrics, curve, command, machine, load before and after, commit); a run whose record matches its
plan is never redone, and `--commit` commits each record as it is written, so a study stopped
anywhere continues where it stopped (a teacher's fine-tuning too: it resumes from its last checkpoint).
Teachers and scores live in the machine's cache; git keeps what the runs need of each teacher
(`keep_teachers`): a weights-free copy (config, tokenizer and its weights' sha256, so the same cache
fingerprint) and every teacher entry scored with it (pool and test logits), in DATASET/teachers and
DATASET/scores. A fresh machine restores them (`restore_teachers`) instead of fitting the teacher again, so
the records made elsewhere stay those of one teacher; what has to run the teacher itself (the objective rows'
[CLS] states, ~200 MB a pool: not in git) is then left unrun, with a log line. A teacher lost before it was
kept is fitted again, only when one of its runs still has to run, and prep.json's `refits` says whether the
new one has the recorded weights hash (before one was recorded: the recorded test accuracy). If not, it is
another teacher: every record of that dataset made before the re-fit is redone (a record carries its teacher's
weights hash from then on), so that no table mixes two teachers.
While the file RUNS/PAUSE exists the study waits before its next run, so a benchmark can have the
machine without inflating a timed run. The report reads only these records.

Sizes: tweets-binary's teacher learns from training tweets 1-6,000 and the pool is tweets 6,001-16,000
(rows the teacher never saw); r8 (4,936 training rows) and 20ng (10,166) use their whole training split
as both the teacher's data and the pool, as the paper does. Test: the first 2,000 test rows (r8 has
2,189). Max length: the 90th percentile of the pool's token counts, rounded up to 16, at most
--max-length-cap (128 on CPU; 20ng's and r8's longer texts are cut). Teacher epochs: 2 for tweets-binary and
20ng, 3 for r8 (the smallest split).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from selectkd import assets
from selectkd.atomic import atomic_write_json, atomic_write_text, replacing, save_figure
from selectkd.cache.fingerprint import WEIGHTS_RECORD, missing_weights, model_fingerprint, weights_fingerprint
from selectkd.cache.store import Store
from selectkd.distillation.config import OPTION_DEFAULTS, DistillConfig, run_config
from selectkd.distillation.curves import accuracy_at, json_lines, read_curve, seconds_to_reach
from selectkd.distillation.head import resolved_head_init
from selectkd.distillation.loop import class_counts, distill
from selectkd.errors import ModelError
from selectkd.models import weights_free_copy
from selectkd.pipeline import FINETUNED, finetuned_teacher, majority_baseline, make_selection, teacher_test_metrics
from selectkd.runtime import cpuinfo, machine, machine_busy_seconds
from selectkd.scoring.run import score
from selectkd.specs import DEFAULT_HEAD_INIT, DataSpec, ScoreSpec

REPO = Path(__file__).resolve().parents[1]
TIERS = ("core", "strategies", "budgets", "teachers")
RECIPES = ["ccs", "confident_uncertain", "uncertainty_sampling"]
OTHERS = ["entropy", "margin", "least_confidence", "kl", "teacher_entropy", "coverage"]
BUDGETS = [0.05, 0.2, 0.5]
ADOPTIONS = ["hard", "soft", "soft-instance"]
OBJECTIVES = ["uncertainty", "uncertainty-r"]
BAR_POINTS, BAR_TIME, SHARE = 1.0, 0.15, 0.99  # the promise: <= 1 point below full KD at <= 15% of its time
DEFAULT_RUN = "dynamic-random-10"  # what a bare `distill --budget 0.1` runs today (random, re-drawn each epoch)
FLOORLESS = "floorless-random-10"  # the same with --min-steps 0: whether the default's step floor pays for its time
# The budget tier's strategy, and the candidate for a bare --budget 0.1, is chosen at equal compute: among the 10%
# configurations whose training seconds average at most this many times the default run's (same dataset and
# seed, side by side). Those that pay more (a dynamic run re-scoring the whole pool each epoch: ~2.4x on tweets)
# are not at equal time with it, however accurate.
EQUAL_TIME = 1.25
EQUAL_TIME_RULE = (f"the 10% configuration with the highest mean test accuracy over every dataset and seed among "
                   f"those whose training seconds average at most {EQUAL_TIME}x the default 10% run's (same dataset "
                   f"and seed)")


def vs_default(ratios: list[float]) -> float:
    """The mean over seeds (and datasets) of a run's training seconds over the default 10% run's, each pair
    side by side in one seed: the one figure `EQUAL_TIME` is compared with, by the choice and the report alike."""
    return round(float(np.mean(ratios)), 3)


@dataclass(frozen=True)
class Dataset:
    """How one dataset is split between teacher and pool. ``transfer``: the teacher learns from the first
    ``teacher_rows`` training rows and the pool is the next ``pool_rows``; else both use the first ``pool_rows``."""

    pool_rows: int | None  # None: the whole training split
    teacher_rows: int = 0
    teacher_epochs: int = 3
    test_rows: int = 2000
    dev_rows: int = 500

    @property
    def transfer(self) -> bool:
        return self.teacher_rows > 0


DATASETS = {
    "tweets-binary": Dataset(pool_rows=10_000, teacher_rows=6_000, teacher_epochs=2),
    "r8": Dataset(pool_rows=None),
    # 2 epochs, not 3: at 128 tokens mpnet-base takes ~13 s a step on 2 cores, and the third epoch (318 steps, ~70
    # minutes) would hold up every 20ng run behind it; tweets' teacher reached 90.7% test accuracy in 2
    "20ng": Dataset(pool_rows=None, teacher_epochs=2),
}


def log(msg: str, t0: float = time.perf_counter()) -> None:
    e = time.perf_counter() - t0
    print(f"[{int(e // 3600)}:{int(e // 60) % 60:02d}:{int(e % 60):02d}] {msg}", flush=True)


def utc(seconds: float | None = None) -> str:
    """``seconds`` since the epoch (now when None) as the UTC stamp every record uses."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def tag(data: str) -> str:
    return Path(data).name if os.sep in data else data


def budget_tag(b: float) -> str:
    return f"{b * 100:g}".replace(".", "p")


def budget_of(name: str) -> float | None:
    """The budget in % a run's name ends with (`budget_tag`: static-random-2p5 -> 2.5); None for other names."""
    b = name.rsplit("-", 1)[-1]
    return float(b.replace("p", ".")) if "-" in name and b.replace("p", "").isdigit() else None


# -- preparation: teachers, pool, scores (paid once per dataset) ------------------------------------

def dataset_spec(args, data: str) -> Dataset:
    d = DATASETS.get(data, Dataset(pool_rows=None))
    over = {k: getattr(args, k) for k in ("pool_rows", "teacher_rows", "test_rows", "dev_rows", "teacher_epochs")
            if getattr(args, k) is not None}
    return Dataset(**{**d.__dict__, **over})


def fitted_length(texts: list[str], tokenizer_of: str, cap: int) -> int:
    """The 90th percentile of the texts' token counts, rounded up to a multiple of 16, at most ``cap``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_of)
    lengths = [len(ids) for ids in tok(texts, add_special_tokens=True, verbose=False)["input_ids"]]
    return int(min(cap, max(16, math.ceil(np.percentile(lengths, 90) / 16) * 16)))


def prepare(args, data: str, root: Path, student: str, small: bool = False) -> dict:
    """Teacher (and with ``small`` the small teacher) fine-tuned, pool written and scored, test rows scored;
    written to prep.json with what each cost (the report reads it from there)."""
    from selectkd.data.rows import load_rows
    from selectkd.demo import transfer_pool
    from selectkd.models import resolve

    d = dataset_spec(args, data)
    rec_path = Path(args.results) / tag(data) / "prep.json"
    rec = json.loads(rec_path.read_text()) if rec_path.exists() else {}
    cache = str(root)
    train = load_rows(DataSpec(data, "train"), root)
    pool_rows = min(d.pool_rows or len(train), len(train) - d.teacher_rows)
    if "max_length" not in rec or rec.get("max_length_cap") != args.max_length_cap:
        rec["max_length_cap"] = args.max_length_cap
        sample = list(train.dataset.select(range(d.teacher_rows, d.teacher_rows + min(pool_rows, 3000)))["text"])
        rec["max_length"] = fitted_length(sample, str(resolve(student, root).source), args.max_length_cap)
    max_length = rec["max_length"]
    teacher_rows = d.teacher_rows or pool_rows
    prep = {"data": data, "spec": d.__dict__, "pool_rows": pool_rows, "teacher_rows": teacher_rows,
            "max_length": max_length, "student": student}
    pool = str(transfer_pool(root, pool_rows, skip=d.teacher_rows, data=data)) if d.transfer else data
    prep["pool"] = pool
    restore_teachers(args, data, root)  # a fresh machine: the teachers of the records, from git
    fitted_here: dict[str, bool] = {}  # fitted in this call after a record of an earlier fit (a fresh machine)
    fit_finished: dict[str, str] = {}
    refit_seconds: dict[str, float] = {}
    weights_before = {role: rec.get(f"{role}_weights") for role in ("teacher", "small_teacher")}
    for role, model in (("teacher", args.teacher), ("small_teacher", args.small_teacher)):
        if role == "small_teacher" and not (small or "small_teacher" in rec):  # once fitted, always reported
            continue
        lr = {"lr": args.teacher_lr} if role == "teacher" else {}
        folder = root / "teachers" / (f"reproduce-{tag(model)}-{tag(data)}-{teacher_rows}-{max_length}"
                                      f"-e{d.teacher_epochs}" + (f"-lr{args.teacher_lr:g}" if lr else "") + "-s0")
        fit_record = folder / FINETUNED  # written last by a finished fit
        cached = fit_record.exists()
        fitted_here[role] = f"{role}_test" in rec and not cached
        if not cached:
            log(f"{tag(data)}: fine-tuning {role} {tag(model)} end to end on {teacher_rows:,} rows, "
                f"{d.teacher_epochs} epochs, max length {max_length}")
        path, record = finetuned_teacher(data, model, folder, teacher_rows, epochs=d.teacher_epochs,
                                         max_length=max_length, eval_limit=d.dev_rows, seed=0, cache_dir=cache,
                                         progress=args.progress, **lr)
        prep[role] = path
        # when the fit ended (its record is written last): a process stopped while scoring leaves the re-fitted
        # teacher in the cache, so the next call finds it there and must still see that it replaced the first
        fit_finished[role] = utc(fit_record.stat().st_mtime)
        prep[f"{role}_weights"] = weights_fingerprint(Path(path))  # names the teacher bit for bit
        # the first fit's time stays the reported cost (a re-fit's, perhaps beside other work, goes to refits and
        # to the folder's own record, which a later prepare must not read back as the cost)
        first = rec.get(role) == path and f"{role}_seconds" in rec
        prep[f"{role}_seconds"] = rec[f"{role}_seconds"] if first else record["seconds"]
        refit_seconds[role] = record["seconds"]
        prep[f"{role}_command"] = shlex.join(["selectkd", "finetune", "--data", tag(data), "--model", tag(model),
                                              *(["--lr", f"{args.teacher_lr:g}"] if lr else []),
                                              "--limit", str(teacher_rows), "--epochs", str(d.teacher_epochs),
                                              "--max-length", str(max_length), "--out", f"cache/teachers/{folder.name}"])
    teachers = [prep["teacher"]] + ([prep["small_teacher"]] if "small_teacher" in prep else [])
    log(f"{tag(data)}: scoring the pool ({pool_rows:,} rows) and {d.test_rows:,} test rows (cached once)")
    scoring = ScoreSpec(teachers=(prep["teacher"],), student=student, max_length=max_length)
    res = score(DataSpec(pool, "train", limit=pool_rows), scoring, cache_dir=cache, progress=args.progress)
    rec["pool_classes"] = class_counts(res.rows.labels, res.rows)  # the class-mix table's reference row
    for r in res.reports:
        entry = res.store.entry(r.role, r.key).manifest()
        rec[f"score_{r.role}"] = {"seconds": entry.get("seconds", round(r.seconds, 2)), "rows": r.rows, "key": r.key}
    if "small_teacher" in prep:  # the teachers tier's pool logits, scored here so that git keeps them too
        score(DataSpec(pool, "train", limit=pool_rows), ScoreSpec(teachers=(prep["small_teacher"],),
                                                                  max_length=max_length),
              cache_dir=cache, progress=args.progress)
    test = score(DataSpec(data, "test", limit=d.test_rows), ScoreSpec(teachers=tuple(teachers), max_length=max_length),
                 cache_dir=cache, progress=args.progress)
    for role, metrics in zip(("teacher", "small_teacher"), teacher_test_metrics(test)):
        # the weights' hash decides where one was recorded; before 2026-11-27 there is only the test accuracy
        weights, before = prep[f"{role}_weights"], weights_before[role]
        same = weights == before if before else rec.get(f"{role}_test") == metrics
        if f"{role}_test" in rec and (fitted_here[role] or not same):
            if not same:  # another teacher: every record made before distilled the first one and is redone
                log(f"{tag(data)}: the re-fitted {role} is another teacher (test {rec.get(f'{role}_test')} then, "
                    f"{metrics} now); the runs made with the first are redone")
            rec.setdefault("refits", []).append({
                "role": role, "finished": fit_finished[role],
                "seconds": refit_seconds[role], "test": metrics, "same_teacher": same, "libraries": libraries(),
                "same_test_as_recorded": rec.get(f"{role}_test") == metrics, "weights": weights,
                "weights_recorded": before})
        rec[f"{role}_test"] = metrics
    rec["majority_test_accuracy"] = majority_baseline(test.rows.labels, test.rows.num_labels)["accuracy"]
    rec["test_rows"] = len(test.rows)
    rec["num_labels"] = test.rows.num_labels
    rec_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(rec_path, {**rec, **prep, "transfer": d.transfer})
    written = keep_teachers(args, data, root, prep)
    if written and args.commit:
        commit([rec_path, *written], f"reproduce: {tag(data)} teachers kept in git (weights-free copies and their "
                                     f"cached logits), so that a fresh machine distils the same teachers")
    return {**rec, **prep}


def teacher_settings(prep: dict) -> dict[str, str]:
    """The finetune options of the teacher a prepared study fitted ({} before it recorded its command)."""
    words = shlex.split(prep.get("teacher_command", ""))
    return dict(zip(words[2::2], words[3::2]))


def wanted_teacher(args, data: str) -> dict[str, tuple[str, str]]:
    """The finetune options these options give the teacher of ``data``: {finetune flag: (study option, value)}."""
    d = dataset_spec(args, data)
    wanted = {"--model": ("--teacher", tag(args.teacher)), "--lr": ("--teacher-lr", f"{args.teacher_lr:g}"),
              "--epochs": ("--teacher-epochs", str(d.teacher_epochs))}
    return wanted | ({"--limit": ("--teacher-rows", str(d.teacher_rows))} if d.teacher_rows else {})


def kept(args, data: str) -> Path:
    """Where a dataset's teachers travel in git: teachers/NAME (weights-free copies) and scores/teacher/KEY."""
    return Path(args.results) / tag(data)


def keep_teachers(args, data: str, root: Path, prep: dict) -> list[Path]:
    """Put into git what the study needs of its teachers: each as a weights-free copy (its fingerprint without
    its 400 MB of weights) and every complete cache entry of its logits (pool and test rows, a few hundred kB;
    not the [CLS] states of the objective rows). A fresh machine restores both (`restore_teachers`) instead of
    fitting a teacher again, which on another CPU comes out another teacher and voids every record made with the
    first. Returns what it wrote."""
    written, store = [], Store(root)
    for role in ("teacher", "small_teacher"):
        folder = Path(prep[role]) if role in prep else None
        if folder is None or missing_weights(folder):  # a restored copy is in git already
            continue
        copy = kept(args, data) / "teachers" / folder.name
        if not copy.is_dir() or weights_fingerprint(copy) != prep[f"{role}_weights"]:  # none yet, or a re-fit's
            written.append(weights_free_copy(folder, copy))
        fingerprint = model_fingerprint(folder)
        for entry in store.entries():
            dest = kept(args, data) / "scores" / "teacher" / entry.key
            if entry.kind != "teacher" or (dest / "manifest.json").exists() or not entry.is_complete():
                continue
            inputs = entry.manifest()["inputs"]
            if inputs["model"] != fingerprint or inputs.get("cls_states"):  # [CLS] states: ~200 MB a pool, not for git
                continue
            copy_files(entry.path, ["manifest.json", *entry.files()], dest)
            written.append(dest)
    return written


def copy_files(src: Path, names: list[str], dest: Path) -> None:
    """The files ``names`` of folder ``src`` as the new folder ``dest``, built under a temp name and renamed in whole
    (what ``dest`` replaces is a folder the study made: a kept entry, an unfinished fit)."""
    with replacing(dest) as tmp:
        tmp.mkdir(parents=True)
        for name in names:
            shutil.copy2(src / name, tmp / name)


def restore_teachers(args, data: str, root: Path) -> None:
    """On a machine whose cache lacks a teacher the study kept in git (`keep_teachers`): put its weights-free
    copy where the study fits it and its scores into the cache, checksums verified. The cache then finds every
    score the runs need without the weights; scoring anything new refuses, naming the missing weights."""
    store = Store(root)
    for copy in sorted((kept(args, data) / "teachers").glob("*")):
        folder = root / "teachers" / copy.name
        if (folder / FINETUNED).exists() or not (copy / WEIGHTS_RECORD).is_file():
            continue  # a finished teacher here (its weights, or restored before) is the one the study uses
        log(f"{tag(data)}: {copy.name} restored from git (weights-free: its cached scores, not a re-fit)")
        # an unfinished fit there is replaced by the teacher of the records
        copy_files(copy, [f.name for f in copy.iterdir() if f.is_file()], folder)
        fingerprint = model_fingerprint(folder)
        for saved in sorted((kept(args, data) / "scores" / "teacher").glob("*")):
            manifest = json.loads((saved / "manifest.json").read_text())
            entry = store.entry("teacher", Store.check_key(saved.name))
            if manifest["inputs"]["model"] != fingerprint or entry.is_complete():
                continue
            names = ["manifest.json", *manifest["files"]]
            if any(name != Path(name).name for name in names):  # a name read from git stays inside the entry
                raise SystemExit(f"{saved / 'manifest.json'} names a file outside its folder; remove {saved}")
            copy_files(saved, names, entry.path)
            entry.check()


def prepared(args, data: str) -> dict | None:
    """What ``prepare`` recorded for ``data`` (None: not prepared yet): all the report needs."""
    path = Path(args.results) / tag(data) / "prep.json"
    return json.loads(path.read_text()) if path.exists() else None


# -- the plan --------------------------------------------------------------------------------------

@dataclass
class Run:
    """One distillation: where its record goes, its tier, the options of `selectkd distill`."""

    data: str
    seed: int
    name: str
    tier: str
    options: dict
    selection: dict | None = None  # {"name", "strategy", "budget"}: made first by `selectkd select`
    time_budget_of: str | None = None  # --time-budget: that run's training seconds (same seed)
    extra: dict = field(default_factory=dict)


def plan(args, prep: dict, seed: int, best: str | None) -> list[Run]:
    """Every run of one dataset and seed, tier by tier."""
    data, d = prep["data"], dataset_spec(args, prep["data"])
    base = dict(data=prep["pool"], teachers=[prep["teacher"]], student=prep["student"], limit=prep["pool_rows"],
                eval_data=data, eval_limit=d.dev_rows, test_data=data, test_limit=d.test_rows,
                max_length=prep["max_length"], seed=seed, epochs=args.epochs, eval_every=eval_every(args, prep),
                checkpoint=False, cache_dir=args.cache_dir,
                **({"min_steps": args.min_steps} if args.min_steps is not None else {}))
    runs: list[Run] = []

    def add(name: str, tier: str, **options) -> Run:
        run = Run(data, seed, name, tier, {**base, **options})
        runs.append(run)
        return run

    def dynamic(strategy: str, budget: float, tier: str) -> None:
        """Re-chosen every epoch, pinned (not distill's default, which follows this study's choice)."""
        add(f"dynamic-{strategy}-{budget_tag(budget)}", tier, budget=str(budget), strategy=strategy, reselect_every=1)

    def static(strategy: str, budget: float, tier: str) -> None:
        sel = {"name": f"rep-{tag(data)}-{strategy}-{budget_tag(budget)}-seed{seed}", "strategy": strategy, "budget": budget}
        add(f"static-{strategy}-{budget_tag(budget)}", tier, selection=sel["name"]).selection = sel

    add("no-kd", "core", kd_alpha=0.0, head_init="random")
    add("full", "core")
    dynamic("random", 0.1, "core")  # DEFAULT_RUN: pinned like its name and label, not read from distill's default
    static("random", 0.1, "core")
    # all rows for the default's seconds, from the default's head: only the rows differ (a short run on all rows
    # from --head-init auto's fresh head can stay at the majority class: bench/results/head_init.md, r8 seed 1)
    add("same-time", "core", head_init=resolved_head_init(DEFAULT_HEAD_INIT, on_subset=True)).time_budget_of = DEFAULT_RUN
    # the default without its step floor: exactly --epochs epochs (on r8 the floor more than doubles the steps)
    add(FLOORLESS, "core", budget="0.1", strategy="random", reselect_every=1, min_steps=0,
        eval_every=min(base["eval_every"], ten_percent_steps(prep) * args.epochs))
    for s in RECIPES:
        static(s, 0.1, "core")
    dynamic("ccs", 0.1, "core")
    add("in-batch-10", "core", in_batch=0.1)
    for s in OTHERS:
        static(s, 0.1, "strategies")
    for s in RECIPES[1:] + OTHERS:
        dynamic(s, 0.1, "strategies")
    for b in BUDGETS:
        static("random", b, "budgets")
        if best:
            kind, strategy = best.split("-", 1)
            if kind == "static" and strategy != "random":
                static(strategy, b, "budgets")
            elif kind == "dynamic":
                dynamic(strategy, b, "budgets")
    if seed not in args.teachers_seeds:  # the adoption and objective rows: fewer seeds (--teachers-seeds)
        return runs
    if "small_teacher" in prep:
        small, large = prep["small_teacher"], prep["teacher"]
        add("adopt-small", "teachers", teachers=[small])
        add("adopt-average", "teachers", teachers=[small, large])
        for mode in ADOPTIONS:
            add(f"adopt-{mode}", "teachers", teachers=[small, large], adoption=mode)
    add("objective-fixed", "teachers", pt_alpha=args.pt_alpha)
    for obj in OBJECTIVES:
        add(f"objective-{obj}", "teachers", pt_alpha=args.pt_alpha, objective=obj)
    return runs


def eval_every(args, prep: dict) -> int:
    """One dev evaluation every N steps, the same N for every run of a dataset: about 6 points on a 10% run."""
    if args.eval_every:
        return args.eval_every
    min_steps = OPTION_DEFAULTS["min_steps"] if args.min_steps is None else args.min_steps
    return max(5, math.ceil(max(ten_percent_steps(prep) * args.epochs, min_steps) / 6))


def ten_percent_steps(prep: dict) -> int:
    """The steps of one epoch over 10% of the pool (distill's batches of 32)."""
    return math.ceil(max(1, round(0.1 * prep["pool_rows"])) / 32)


# -- records: one JSON per finished run, the only thing the report reads ----------------------------

PATH_OPTIONS = ("data", "teachers", "student", "eval_data", "test_data", "out", "cache_dir", "selection")


def signature(options: dict) -> dict:
    """A run's config with machine-specific paths reduced to their last part: equal on every machine."""
    def short(v):
        return [Path(x).name for x in v] if isinstance(v, list) else (Path(v).name if isinstance(v, str) else v)

    return {k: short(v) if k in PATH_OPTIONS else v for k, v in options.items() if k not in ("device", "out")}


def record_path(args, run: Run) -> Path:
    return Path(args.results) / tag(run.data) / f"s{run.seed}" / f"{run.name}.json"


def load_record(args, run: Run, cfg: DistillConfig | None = None) -> dict | None:
    """The run's record if it finished with the planned settings (``cfg``; None: any settings)."""
    path = record_path(args, run)
    if not path.exists():
        return None
    rec = json.loads(path.read_text())
    if cfg is not None and rec.get("signature") != signature(run_config(cfg)):
        return None
    return rec if current(rec) and same_teacher(args, run, rec) else None


def current(rec: dict) -> bool:
    """Whether a record was made by the code whose numbers the study reports (see the two checks it makes)."""
    return seconds_current(rec) and ccs_current(rec)


def ccs_current(rec: dict) -> bool:
    """False for a ccs run recorded before ccs pruned each class in its proportion (2026-11-29): one cut over the
    whole pool pruned away r8's six smallest classes (its selection had rows of two of eight), so it is redone."""
    sig = rec.get("signature") or {}
    static = (rec.get("selection") or {}).get("strategy") == "ccs"
    uses_ccs = static or (sig.get("strategy") == "ccs" and bool(sig.get("budget")))
    return not uses_ccs or bool(rec.get("ccs_prunes_per_class"))


def seconds_current(rec: dict) -> bool:
    """False for a dynamic run recorded before seconds.train counted its re-scoring of the pool (2026-11-27):
    its time is short by that, so it is redone."""
    return (rec.get("seconds") or {}).get("rescore", 0) <= 1 or bool(rec.get("train_counts_rescore"))


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
            "run's time columns.", ""]


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


def another_teacher(refit: dict) -> bool:
    """Whether a re-fit (prep.json `refits`) came out another teacher (records before 2026-11-27: by test metrics)."""
    return not refit.get("same_teacher", refit.get("same_test_as_recorded"))


def changed_refits(prep: dict | None) -> int:
    """How many times a dataset's teacher was fitted again and came out another teacher."""
    return sum(another_teacher(r) for r in (prep or {}).get("refits", []))


def same_teacher(args, run: Run, rec: dict) -> bool:
    """False for a record made before its dataset's teachers were last fitted again and came out different
    (prep.json `refits`, UTC times): it distilled another teacher than the one the other rows use now."""
    prep = prepared(args, run.data) or {}
    if rec.get("teacher_weights") and prep.get("teacher_weights"):
        return rec["teacher_weights"] == prep["teacher_weights"]
    changed = [r["finished"] for r in prep.get("refits", []) if another_teacher(r)]
    return not changed or rec.get("finished", "") >= max(changed)


def config_of(args, run: Run, records: dict) -> DistillConfig | None:
    """The DistillConfig of ``run``; None while the run it takes its --time-budget from has not finished."""
    options = {**run.options, "out": str(Path(args.runs) / tag(run.data) / f"s{run.seed}" / run.name)}
    if run.time_budget_of:
        ref = records.get(run.time_budget_of)
        if ref is None:
            return None
        options["time_budget"] = ref["seconds_train"]
    return DistillConfig.from_options(**options)


def wait_if_paused(args) -> None:
    """Hold before the next run while RUNS/PAUSE exists: other work (a benchmark) can then have the machine
    without inflating a timed run, and the study goes on by itself when the file is removed."""
    flag = Path(args.runs) / "PAUSE"
    if flag.exists():
        log(f"paused: {flag} exists (remove it to go on)")
        while flag.exists():
            time.sleep(5)
        log("going on")


def execute(args, run: Run, cfg: DistillConfig, prep: dict) -> dict:
    """Train ``run`` (its selection first), then write and (with --commit) commit its record."""
    wait_if_paused(args)
    sel = None
    started = utc()
    speed = {**cpu_speed(), **step_speed(args, prep, cfg.train.batch_size)}  # before the clock: not part of the run
    load_before = os.getloadavg()[0]
    busy0, own0, wall0 = machine_busy_seconds(), time.process_time(), time.perf_counter()
    if run.selection:
        t = time.perf_counter()
        s = run.selection
        make_selection(prep["pool"], [prep["teacher"]], prep["student"], name=s["name"], budget=s["budget"],
                       seed=run.seed, rows=prep["pool_rows"], max_length=prep["max_length"], cache_dir=args.cache_dir,
                       strategy=s["strategy"])
        sel = {**s, "seconds": round(time.perf_counter() - t, 3), "command": select_command(prep, s, run.seed)}
    log(f"{tag(run.data)} seed {run.seed}: {run.name}" + (f" (--time-budget {cfg.train.time_budget:.1f})"
                                                          if cfg.train.time_budget else ""))
    # always trained here, never reused from the run folder: a record's seconds and load must come from one run
    # (a run redone for --rerun-loaded would otherwise copy the loaded run's seconds beside today's load)
    summary = distill(cfg, overwrite=True, progress=args.progress).summary
    wall = time.perf_counter() - wall0  # the CPU the rest of the machine used meanwhile, in cores
    others = max(0.0, machine_busy_seconds() - busy0 - (time.process_time() - own0)) / wall
    curve = read_curve(cfg.out)
    rec = {"name": run.name, "dataset": tag(run.data), "seed": run.seed, "tier": run.tier,
           "test": summary["test"], "seconds_train": summary["seconds"]["train"], "seconds": summary["seconds"],
           "steps": summary["steps"], "epochs": summary.get("epochs"), "one_class": summary.get("one_class"),
           "stopped": summary.get("stopped"),
           "student_rows_forward_backward": summary.get("student_rows_forward_backward"),
           "curve": {"seconds": curve.seconds, "dev_accuracy": curve.accuracy},
           "train_classes": [x["train_classes"] for x in json_lines(Path(cfg.out) / "metrics.jsonl")
                             if "train_classes" in x],
           "selection": sel, "command": distill_command(cfg), "signature": signature(run_config(cfg)),
           "machine": machine(), "libraries": libraries(),
           "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
           "other_cores": round(others, 3), "teacher_weights": prep.get("teacher_weights"), **speed,
           "train_counts_rescore": True, "ccs_prunes_per_class": True,
           "commit": git_rev(), "started": started, "finished": utc()}
    path = record_path(args, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, rec)
    if args.commit:
        commit([path, Path(args.results) / tag(run.data) / "prep.json"], f"reproduce: {tag(run.data)} seed {run.seed} {run.name} "
                       f"(test {rec['test']['accuracy']:.3f}, {rec['seconds_train']:.0f} s)")
    return rec


def taken(args, run: Run, cfg: DistillConfig) -> dict | None:
    """With --take-from: a record another bench made of exactly this run (same dataset, seed and signature,
    not beside other work), copied as this run's record with where it came from; None if there is none."""
    want = signature(run_config(cfg))
    for folder in args.take_from:
        for path in sorted((Path(folder) / tag(run.data) / f"s{run.seed}").glob("*.json")):
            rec = json.loads(path.read_text())
            if (rec.get("signature") != want or rec.get("taken_from") or busy(rec, 0.0, args.other_cores)
                    or not current(rec) or not same_teacher(args, run, rec)):
                continue
            rec = adopt(args, run, rec, path)
            log(f"{tag(run.data)} seed {run.seed}: {run.name} taken from {rec['taken_from']}")
            if args.commit:
                commit([record_path(args, run)], f"reproduce: {tag(run.data)} seed {run.seed} {run.name} taken from {rec['taken_from']} "
                              f"(the same settings; test {rec['test']['accuracy']:.3f}, {rec['seconds_train']:.0f} s)")
            return rec
    return None


def adopt(args, run: Run, rec: dict, source: Path, tier: str | None = None) -> dict:
    """``rec``, the record of a run made elsewhere with exactly ``run``'s settings (read from ``source``),
    written as ``run``'s record (its name and tier) with where it came from (the last 4 parts of ``source``)."""
    rec = {**rec, "name": run.name, "tier": tier or run.tier, "taken_from": "/".join(Path(source).parts[-4:])}
    out = record_path(args, run)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, rec)
    return rec


def cpu_speed() -> dict:
    """The CPU a run had, beyond `machine()`'s line: family/model/MHz from /proc/cpuinfo, and the median
    seconds of a fixed matmul workload (MiniLM-sized, torch's threads). Two machines that print the same
    "2 cores (AMD EPYC)" differed by 35% in training time (2026-11-26): seconds compare only where this does."""
    import torch

    info = cpuinfo("cpu family", "model", "cpu MHz")
    a, b = torch.randn(2048, 384, generator=torch.Generator().manual_seed(0)), torch.randn(384, 1536)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(20):
            a @ b
        times.append(time.perf_counter() - t)
    cpu = f"family {info.get('cpu family', '?')} model {info.get('model', '?')}, {info.get('cpu MHz', '?')} MHz"
    return {"cpu": cpu, "cpu_speed_s": round(float(np.median(times)), 4)}


STEP_SPEED_STEPS = 5


def step_speed(args, prep: dict, batch_size: int, steps: int = STEP_SPEED_STEPS) -> dict:
    """Median seconds of one optimizer step of the study's student on a fixed batch of the dataset's shape
    (``batch_size`` rows of ``max_length`` tokens), timed before the run's clock starts. The matmul of
    `cpu_speed` tracked training time poorly between sessions: on 2026-11-27 20ng's full KD took 1.88x the
    seconds of the same run the night before (same steps, quiet machine), while the matmul, recorded beside other
    runs, took about 1.4x as long as that night; so each run also times a few steps of the work it is about to
    do, and runs compare by seconds only where these agree. ``step_digest`` hashes those steps' losses: the same on
    every run of a dataset where the numerics below the code (libraries, CPU kernels) are the same; a teacher fitted
    again on another day came out another teacher (r8, 2026-11-29) with the same code, data and seed."""
    import torch

    from selectkd.models import load_classifier, resolve

    times, losses = [], []
    with torch.random.fork_rng(devices=[]):  # the head's init and dropout draw here, seeded: the run's state stays
        torch.manual_seed(0)
        model, _ = load_classifier(resolve(prep["student"], Store(args.cache_dir).root), prep["num_labels"],
                                   allow_untrained_head=True, role="student")
        model.train()
        g = torch.Generator().manual_seed(0)
        vocab = model.config.vocab_size  # ordinary word pieces: past the special tokens at the start (a toy's are few)
        ids = torch.randint(min(1000, vocab // 2), vocab, (batch_size, prep["max_length"]), generator=g)
        labels = torch.randint(0, prep["num_labels"], (batch_size,), generator=g)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        for i in range(steps + 1):  # the first step allocates the optimizer state: not timed
            t = time.perf_counter()
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
            if i:
                times.append(time.perf_counter() - t)
    # the same seeded steps give the same losses, bit for bit, wherever the numerics below the code are the same
    digest = hashlib.sha256(np.array(losses, dtype=np.float64).tobytes()).hexdigest()[:16]
    return {"step_speed_s": round(float(np.median(times)), 4), "step_digest": digest}


# recorded beside each run (`libraries`): what can move a result while the code, data and seed stay the same
LIBRARIES = ("transformers", "tokenizers", "safetensors", "datasets", "numpy", "pyarrow", "faiss-cpu")


def libraries() -> dict[str, str]:
    """The versions of the libraries under the numbers (`machine()` names torch and Python)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


# a run beside other work that used more CPU than this, on average, has inflated seconds: alone on this 2-core
# machine, 150 runs measured at most 0.035 (median 0.011); beside a nice-19 process, 0.13-0.15, and two of those
# took 7-9% longer than the same run of the other seeds that day (r8 no-kd 393 s vs 360/362 s at 0.147,
# tweets full-random-head 344 vs 322 s at 0.154): the first limit, 0.2, let them through
OTHER_CORES = 0.05


def busy(rec: dict, limit: float | None, cores: float = OTHER_CORES) -> bool:
    """Whether a finished run ran beside other work: the rest of the machine used more than ``cores``
    on average while it ran (records from before that was measured: its load average above ``limit``
    before or after, which misses work that starts and ends inside the run)."""
    if limit is None:
        return False
    if rec.get("other_cores") is not None:
        return rec["other_cores"] > cores
    loads = [x for x in (rec.get("load_before"), rec.get("load_after")) if x is not None]
    return bool(loads) and max(loads) > limit


def commit(paths: list[Path], message: str) -> None:
    """Commit ``paths`` alone, in the repository that holds them (a record is the study's progress; the code
    may run from a worktree at a fixed commit); a busy index is retried, then left for later."""
    repo = str(Path(paths[0]).resolve().parent)
    for attempt in range(5):
        add = subprocess.run(["git", "-C", repo, "add", "--", *map(str, paths)], capture_output=True, text=True)
        done = add.returncode == 0 and subprocess.run(
            ["git", "-C", repo, "commit", "-q", "-m", message, "--", *map(str, paths)],
            capture_output=True, text=True).returncode == 0
        if done:
            return
        time.sleep(2 + 3 * attempt)
    log(f"could not commit {', '.join(map(str, paths))} (git busy?); the record is written and the next --commit takes it")


def git_rev() -> str:
    """The commit of the code that runs (this script's checkout)."""
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip() or "?"
    except OSError:
        return "?"


# -- commands as a user would type them -------------------------------------------------------------

def shown(value: str) -> str:
    """Paths as a user would type them: in the store, relative to it; elsewhere, the last part."""
    p = Path(value)
    if os.sep not in value:
        return value
    parts = p.parts
    return "cache/" + "/".join(parts[parts.index("cache") + 1:]) if "cache" in parts else p.name


def distill_command(cfg: DistillConfig) -> str:
    """The `selectkd distill` command equivalent to ``cfg`` (non-default options only)."""
    options = cfg.options()
    parts = ["selectkd", "distill", "--data", shown(options["data"])]
    for t in options["teachers"]:
        parts += ["--teacher", shown(t)]
    parts += ["--student", shown(options["student"])]
    for name, default in OPTION_DEFAULTS.items():
        v = options[name]
        if name in ("cache_dir", "device") or v == default:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(v, bool):
            parts.append(flag if v else "--no-" + name.replace("_", "-"))
        else:
            parts += [flag, shown(str(v)) if name in PATH_OPTIONS else str(v)]
    parts += ["--out", "runs/" + "/".join(Path(cfg.out).parts[-3:])]
    return shlex.join(parts)


def select_command(prep: dict, s: dict, seed: int) -> str:
    return shlex.join(["selectkd", "select", "--data", shown(prep["pool"]), "--teacher", shown(prep["teacher"]),
                       "--student", shown(prep["student"]), "--strategy", s["strategy"], "--budget", str(s["budget"]),
                       "--seed", str(seed), "--limit", str(prep["pool_rows"]), "--max-length", str(prep["max_length"]),
                       "--name", s["name"]])


# -- choosing the budget curve's strategy, once -----------------------------------------------------

def may_choose(args, preps: dict[str, dict]) -> bool:
    """Whether this invocation may make the choice the tool's default follows. Not when a dataset has not even
    started, not in a partial run (--tiers core strategies), not in a render (perhaps of some datasets only: it
    writes the report), and not in a run of some of the built-in datasets (--datasets tweets-binary)."""
    builtin = {d for d in args.datasets if d in DATASETS}
    return (set(preps) == set(args.datasets) and "budgets" in args.tiers and not args.render_only
            and (not builtin or builtin == set(DATASETS)))


def best_strategy(args, preps: dict[str, dict]) -> str | None:
    """The 10% configuration (static-X or dynamic-X) with the highest test accuracy averaged over every
    dataset and seed among those at the default's training time (`EQUAL_TIME`), once tiers core and
    strategies have finished everywhere; recorded so it never changes."""
    path = Path(args.results) / "budget_strategy.json"
    if path.exists():
        return json.loads(path.read_text())["best"]
    if not may_choose(args, preps):
        return None
    accuracy: dict[str, list[float]] = {}
    ratio: dict[str, list[float]] = {}
    for prep in preps.values():
        for seed in args.seeds:
            done: dict[str, dict] = {}
            for run, _cfg, rec in finished(args, prep, seed, None):
                if run.tier not in ("core", "strategies"):
                    continue
                if rec is None:
                    return None  # not every 10% run has finished with today's settings: no choice yet
                done[run.name] = rec
            default = done[DEFAULT_RUN]["seconds_train"]
            for name, rec in done.items():
                if name.endswith("-10") and name.startswith(("static-", "dynamic-")):
                    accuracy.setdefault(name[:-3], []).append(rec["test"]["accuracy"])
                    ratio.setdefault(name[:-3], []).append(rec["seconds_train"] / default)
    if not accuracy:
        return None
    means = {k: float(np.mean(v)) for k, v in accuracy.items()}
    times = {k: vs_default(v) for k, v in ratio.items()}
    equal = [k for k in sorted(means) if times[k] <= EQUAL_TIME]
    best = max(equal, key=means.get)  # ties: the first name in sorted order
    atomic_write_json(path, {"best": best, "rule": EQUAL_TIME_RULE, "mean_test_accuracy": means,
                             "mean_seconds_vs_default": times, "slower": sorted(set(means) - set(equal)),
                             "datasets": sorted(preps), "seeds": args.seeds,
                             "chosen": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    if args.commit:  # the tool's default follows it (tests/test_recipes.py): it belongs in git at once
        commit([path], f"reproduce: the 10% strategy at equal time is {best} (mean test accuracy "
                       f"{means[best] * 100:.1f}% over {len(preps)} datasets x {len(args.seeds)} seeds)")
    return best


# -- the report ------------------------------------------------------------------------------------

def finished(args, prep: dict, seed: int, best: str | None):
    """(run, config, record) for every planned run of one dataset and seed, in plan order; record is None until
    the run has finished with today's settings (a record of other settings waits to be redone)."""
    recs: dict[str, dict] = {}
    for run in plan(args, prep, seed, best):
        cfg = config_of(args, run, recs)
        rec = load_record(args, run, cfg) if cfg else None
        if rec is not None:
            recs[run.name] = rec
        yield run, cfg, rec


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
            rec["_vs_default"] = rec["seconds_train"] / default["seconds_train"] if default else None
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
                    + equal_time_note(subsets, full, rows[DEFAULT_RUN], top), ""]
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


def where(path: str | Path) -> str:
    """``path`` as the report names it: relative to the repository when inside it."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)


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


# -- main ------------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    """The study's options (bench/head_init.py reads their defaults)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), help="built-in names or save_to_disk folders with train/test splits")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--tiers", nargs="+", default=list(TIERS), choices=TIERS, help="which tiers to run (in this order)")
    p.add_argument("--teachers-seeds", nargs="+", type=int, default=[0],
                   help="the seeds of the teachers tier (adoption, objective: 8 full-length runs a seed, over a third "
                        "of the study's compute at 3 seeds; the promise's tiers run every --seeds)")
    p.add_argument("--teacher", default="mpnet-base", help="fine-tuned end to end: the teacher of every run")
    p.add_argument("--small-teacher", default="minilm-l6", help="the second, smaller teacher of the adoption runs")
    p.add_argument("--student", default="minilm-l6", help="the pre-trained student (a built-in name or a folder)")
    p.add_argument("--student-layers", type=int, default=0,
                   help="0: the whole --student (default); N: a student of its first N layers (models.first_layers)")
    p.add_argument("--epochs", type=int, default=3, help="of every student run (10%% runs add epochs up to --min-steps)")
    p.add_argument("--min-steps", type=int, default=None, help="distill --min-steps (default: distill's)")
    p.add_argument("--eval-every", type=int, default=None, help="dev evaluation every N steps (default: ~6 per 10%% run)")
    p.add_argument("--max-length-cap", type=int, default=128, help="the fitted max length is at most this")
    p.add_argument("--pt-alpha", type=float, default=1.0)
    for name in ("pool-rows", "teacher-rows", "test-rows", "dev-rows", "teacher-epochs"):
        p.add_argument(f"--{name}", type=int, default=None, help="override every dataset's (tests, small trials)")
    p.add_argument("--cache-dir", default=None, help="the store (default: $SELECTKD_CACHE or ./cache)")
    p.add_argument("--runs", default="bench/runs/reproduce", help="run folders (large, not committed)")
    p.add_argument("--results", default=str(REPO / "bench" / "results" / "reproduce"),
                   help="one JSON record per run (committed); a folder holds one study: a student or teacher other "
                        "than the one it was prepared with is refused")
    p.add_argument("--out", default=str(REPO / "docs"))
    p.add_argument("--commit", action="store_true", help="git-commit each run's record as soon as it is written")
    p.add_argument("--rerun-loaded", type=float, default=None, metavar="LOAD",
                   help="run again every finished run that ran beside other work, so its seconds are inflated: the "
                        f"rest of the machine used more than {OTHER_CORES} cores on average meanwhile (records from before "
                        "that was measured: its 1-minute load average before or after exceeded LOAD, 2.5 on 2 cores)")
    p.add_argument("--other-cores", type=float, default=OTHER_CORES, metavar="CORES",
                   help="with --rerun-loaded: the CPU other processes may use during a run before it counts as "
                        "beside other work")
    p.add_argument("--teacher-lr", type=float, default=3e-5, help="the teacher's fine-tuning lr (BERT-base's usual; "
                   "the small teacher uses finetune's default)")
    p.add_argument("--take-from", nargs="*", default=[], metavar="RESULTS",
                   help="results folders of other benches laid out as --results (bench/results/head_init): a run "
                        "recorded there with exactly this run's settings, and not beside other work, is copied "
                        "(its record says from where) instead of trained again. Its seconds were measured when "
                        "that bench ran: this machine's speed moves up to ~2x between days, so copy only runs made "
                        "in the same sitting as the seed's other runs (or the time columns mix two speeds)")
    p.add_argument("--render-only", action="store_true", help="rewrite the report from the records")
    p.add_argument("--progress", action="store_true", help="progress bars for each step")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.tiers = [t for t in TIERS if t in args.tiers]
    root = Store(args.cache_dir).root
    builtin = [d for d in args.datasets if d in assets.DATASETS]
    models = [m for m in (args.teacher, args.small_teacher, args.student) if m in assets.MODELS]
    log(f"assets: {', '.join(models + builtin)}")
    assets.install(root, models=models, data=builtin)
    from selectkd.models import first_layers

    student = first_layers(args.student, args.student_layers, root) if args.student_layers else args.student
    preps = {d: p for d in args.datasets if (p := prepared(args, d)) is not None}
    for data, prep in preps.items():  # one study per results folder: never a table of two students or teachers
        if prep["student"] != student:
            parser().error(f"{Path(args.results) / tag(data) / 'prep.json'} is a study with the student "
                           f"{prep['student']}, not {student}: give that student, or another --results folder")
        fitted = teacher_settings(prep)  # {} for a study prepared before it recorded its command: nothing to check
        differ = [f"{option} {fitted.get(flag)} (given: {value})" for flag, (option, value)
                  in wanted_teacher(args, data).items() if fitted.get(flag) != value] if fitted else []
        if differ:  # prepare would fit another teacher and take it for a re-fit of the first
            parser().error(f"{Path(args.results) / tag(data) / 'prep.json'} is a study with the teacher fitted by "
                           f"{', '.join(differ)}: give that teacher, or another --results folder")
    best = best_strategy(args, preps)
    ready: set[tuple[str, bool]] = set()

    def ready_for(data: str, tier: str) -> bool:
        """Teachers fitted and the pool scored on this machine, once per process and only when a run needs them
        (a study continued on a fresh machine re-fits no teacher for tiers whose records are all there). True
        when a teacher fitted again came out another teacher: every record made before is void (same_teacher)."""
        small = tier == "teachers"
        if (data, small) in ready:
            return False
        before = changed_refits(preps.get(data))
        preps[data] = prepare(args, data, root, student, small=small)
        ready.update({(data, small), (data, False)})
        return changed_refits(preps[data]) != before

    def run_tier(tier: str, data: str) -> bool:
        """Every run of ``tier`` on ``data`` without a record of today's settings and teacher; True (and stop)
        when a teacher fitted on the way is another teacher: the tiers then start over."""
        nonlocal best
        # paid once: a finished teacher and cached scores are reused; the small teacher only when needed
        if data not in preps or (tier == "teachers" and "small_teacher" not in preps[data]):
            if ready_for(data, tier):  # the plan needs what prepare records
                return True
        if tier == "budgets" and best is None:
            best = best_strategy(args, preps)
        for seed in args.seeds:
            records: dict[str, dict] = {}
            for run in plan(args, preps[data], seed, best):
                cfg = config_of(args, run, records)
                rec = load_record(args, run, cfg) if cfg else None
                if rec is not None and run.tier == tier and busy(rec, args.rerun_loaded, args.other_cores):
                    log(f"{tag(data)} seed {seed}: {run.name} ran beside other work (load "
                        f"{rec['load_before']}/{rec['load_after']}, others {rec.get('other_cores')} cores): again")
                    rec = None
                if rec is None and cfg is not None and run.tier == tier:
                    rec = taken(args, run, cfg)
                    if rec is None:
                        if ready_for(data, tier):
                            return True
                        try:
                            rec = execute(args, run, cfg, preps[data])
                        except ModelError as exc:  # a teacher restored from git has no weights to run
                            if not any(missing_weights(Path(t)) for t in cfg.scoring.teachers):
                                raise
                            log(f"{tag(data)} seed {seed}: {run.name} not run: {exc}")
                if rec is not None:
                    records[run.name] = rec
        return False

    if not args.render_only:
        again = True
        while again:  # at most once more per dataset: a process fits each teacher at most once
            again = False
            for tier in args.tiers:
                for data in args.datasets:
                    if run_tier(tier, data):
                        log(f"{tag(data)}: the runs made with its first teacher are redone, from the first tier")
                        again = True
                        break
                    try:  # a fresh report after every tier and dataset; a bug in it must not stop the runs
                        render(args, preps, best)
                    except Exception as exc:  # noqa: BLE001
                        log(f"report failed ({type(exc).__name__}: {exc}); the runs go on")
                if again:
                    break
    render(args, preps, best)
    log(f"report: {Path(args.out) / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
