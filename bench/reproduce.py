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

The code: this file runs the tiers; bench/study.py holds the runs (preparation, plan, records, the machine's
speed and load, the choice); bench/study_report.py writes the report from the records.
"""

from __future__ import annotations

from pathlib import Path

from selectkd import assets
from selectkd.cache.fingerprint import missing_weights
from selectkd.cache.store import Store
from selectkd.errors import ModelError
from study import (TIERS, best_strategy, busy, changed_refits, config_of, execute, load_record, log, parser, plan,
                   prepare, prepared, tag, taken, teacher_settings, wanted_teacher)
from study_report import render


def main(argv: list[str] | None = None) -> None:
    """Every tier, dataset by dataset, each planned run without a record (study.py), a fresh report after each
    (study_report.py)."""
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
    if args.prepare_only:  # teachers fitted, pools and test rows scored: what another bench on these datasets needs
        for data in args.datasets:
            preps[data] = prepare(args, data, root, student)
        render(args, preps, best_strategy(args, preps))
        log(f"prepared: {', '.join(args.datasets)} (no run made)")
        return
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
