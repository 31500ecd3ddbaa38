"""Which peak learning rate should a distilled student train at: distill's default 1e-4, or higher?

Every short run of the study sits at the majority class for its first ~50 steps at lr 1e-4 (tweets: 25-47 of
the default 10% run's ~65 seconds), and the 1e-4 default was measured only against 2e-5, on the demo's
full-data runs (bench/results/defaults.md). Here the study's own full-data KD, default 10% run and all rows
for the 10% run's seconds, each at lr 1e-4 and 3e-4 (the same step count, so the same compute), per seed;
the rest exactly the study's (bench/reproduce.py must have prepared the dataset).

    .venv/bin/python bench/lr.py --commit            # resumable: a finished run is never redone
    .venv/bin/python bench/lr.py --render-only       # bench/results/lr.md from the records

A run the study has already made with the same settings (lr 1e-4) is taken from bench/results/reproduce
instead of being trained again; the table says which. Records go to bench/results/lr/DATASET/sSEED/NAME.json
with the command, machine, CPU the rest of the machine used meanwhile and commit.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study as rp  # noqa: E402  (the study's plan, records and runner)
import variants  # noqa: E402

from selectkd.specs import DEFAULT_LR  # noqa: E402

LR = variants.Variation(  # the rates spelled out: a later change of distill's default changes no row
    option="lr", values=(1e-4, 3e-4), runs=("full", rp.DEFAULT_RUN, "same-time"),
    name=lambda run, lr: f"{run}-lr{lr:g}",
    timed_by=lambda lr: f"{rp.DEFAULT_RUN}-lr{lr:g}",  # all rows for the seconds of the 10% run at the same lr
    nokd=DEFAULT_LR, shown=lambda lr: f"{lr:g}")
INTRO = [f"# Peak learning rate of the distilled student: 1e-4 or 3e-4 (distill's default: {DEFAULT_LR:g})", "",
         "Made by `python bench/lr.py` (resumable; records in bench/results/lr/). The study's datasets, teacher, "
         "student, pool, test rows and run settings (bench/reproduce.py), only `--lr` changed; warm-up and decay "
         "are the same fractions of the same step count, so each pair trained for the same steps. Test accuracy of "
         "the final student; seconds are training seconds; `others` = CPU cores the rest of the machine used "
         "meanwhile (above 0.2: the seconds are inflated). A row marked `study` is the study's own record of the "
         "same configuration.", ""]


# What sets distill's default (verdict), written before the 20ng runs and fixed since: a dataset added to the
# rule later (r8, once its teacher is fitted again) could undo a decision already acted on.
RULE = variants.Rule(datasets=("tweets-binary", "20ng"), target=rp.DEFAULT_RUN, guard="full",
                     slack=0.5,  # points; tweets' full-KD spread over seeds is 0.4
                     written="before the 20ng runs", default=DEFAULT_LR, constant="DEFAULT_LR")


def main(argv: list[str] | None = None) -> None:
    variants.main(argv, __doc__, "lr", list(RULE.datasets), LR, INTRO, "lr", RULE)


if __name__ == "__main__":
    main()
