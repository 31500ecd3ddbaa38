"""Does KD beat cross-entropy when the pool is rows the teacher never saw? (the demo distils on such rows)

bench/defaults.py distils on the teacher's own training rows, where its soft labels say little beyond the
gold labels, and there KD was level with CE (bench/results/defaults.md). Here the pool is the next 3,000
training tweets after the 6,000 the demo's teacher was fine-tuned on (written once to a CSV with the
class names, by the demo's own `transfer_pool`), everything else as in the demo (its teacher and student must exist: run `make demo`):

    .venv/bin/python bench/transfer_set.py        # resumable: a finished run is reused

Writes bench/results/transfer_set.md with each run's command, the machine and the commit.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from selectkd.cache.store import Store
from selectkd.demo import transfer_pool
from selectkd.runtime import machine

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs" / "transfer"


def main() -> None:
    root = Store(None).root
    pool = transfer_pool(root, 3000, skip=6000)  # the demo's pool: training tweets 6,001-9,000
    teacher = os.path.relpath(root / "teachers" / "demo-minilm-l6-tweets-binary-6000-48-e1-s0", HERE.parent)
    student = os.path.relpath(root / "models" / "minilm-l6-first3", HERE.parent)
    common = ["--data", os.path.relpath(pool, HERE.parent), "--teacher", teacher, "--student", student, "--eval-data", "tweets-binary",
              "--eval-limit", "300", "--test-data", "tweets-binary", "--test-limit", "1000", "--max-length", "48",
              "--epochs", "2", "--min-steps", "0", "--no-progress", "--overwrite"]
    lines = ["# KD on rows the teacher never saw", "",
             f"Made by `python bench/transfer_set.py` on {machine()}, git "
             f"{os.popen('git rev-parse --short HEAD').read().strip()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
             "Pool: training tweets 6,001-9,000 (the demo's teacher was fine-tuned on the first 6,000); dev 300, "
             "test 1,000 tweets of tweets-binary; the demo's teacher (test 0.875) and student (its first 3 layers), "
             "2 epochs, distill's defaults otherwise (KL at T=2, lr 1e-4, probe head) and for no KD a random head. "
             "The first four runs were made by these same options from a scratch script (its pool CSV byte-identical "
             "to this one, its outputs under /tmp, "
             "then copied here) an hour before this file existed; two seeds only.", "",
             "| run | seed | test acc | macro-F1 | best dev |", "| --- | ---: | ---: | ---: | ---: |"]
    commands = []
    for seed in (0, 1):
        for name, extra in (("no KD", ["--kd-alpha", "0", "--head-init", "random"]), ("KD", [])):
            out = RUNS / f"{'nokd' if name == 'no KD' else 'kd'}-s{seed}"
            cmd = ["selectkd", "distill", *common, "--seed", str(seed), "--out", str(out.relative_to(HERE.parent)), *extra]
            if not (out / "summary.json").exists():
                subprocess.run([sys.executable, "-m", "selectkd", *cmd[1:]], check=True, cwd=HERE.parent)
            s = json.loads((out / "summary.json").read_text())
            lines.append(f"| {name} | {seed} | {s['test']['accuracy']:.3f} | {s['test']['macro_f1']:.3f} | "
                         f"{s['best_dev']['accuracy']:.3f} |")
            commands.append(shlex.join(cmd))
    lines += ["", "```sh", *commands, "```", ""]
    out = HERE / "results" / "transfer_set.md"
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
