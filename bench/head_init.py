"""Which head should a distilled student start from: the probe fitted to the teachers' soft labels, or random?

The 10% recipe study's own datasets, teacher, student, pool and test rows (bench/reproduce.py must have
prepared them), and its three runs that matter most: full-data KD ("full"), the default 10% recipe ("dynamic-random-10")
and all rows for its seconds ("same-time"), each with `--head-init probe` and `--head-init random`, per seed. Everything
else is the study's plan; the head is spelled out, so a later change of distill's default changes no run.

    .venv/bin/python bench/head_init.py                     # resumable: a finished run is never redone
    .venv/bin/python bench/head_init.py --render-only       # bench/results/head_init.md from the records

A run the study has already made with the same settings (its record's signature matches) is taken from
bench/results/reproduce instead of being trained again; the table says which. Records, one JSON per run,
go to bench/results/head_init/DATASET/sSEED/NAME.json with the command, machine, CPU the rest of the
machine used meanwhile and commit; RUNS/PAUSE holds the next run as in the study.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study as rp  # noqa: E402  (the study's plan, records and runner)
import variants  # noqa: E402

HEAD = variants.Variation(
    option="head_init", values=("probe", "random"), runs=("full", rp.DEFAULT_RUN, "same-time"),
    name=lambda run, head: f"{run}-{head}-head",
    # same-time's seconds: the default 10% run's, which starts from the probe
    timed_by=lambda _head: f"{rp.DEFAULT_RUN}-probe-head", nokd="random", tier="head")
INTRO = ["# Probe head or random head: full-data KD, the default 10% recipe, all rows for its time", "",
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


def main(argv: list[str] | None = None) -> None:
    variants.main(argv, __doc__, "head_init", ["tweets-binary", "r8"], HEAD, INTRO, "head")


if __name__ == "__main__":
    main()
