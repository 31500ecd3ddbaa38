"""A bare BERT-base training loop (float32, bf16) beside `selectkd finetune` for 100 steps, on a GPU: the
measurement that found `Rows.labels` read row by row on every fine-tuning step (bench/results/gpu_diag.log,
made by this script as of commit 0489224, which timed the bare loop on a BertConfig() model of its own).

    python bench/gpu_diag.py     # on a machine with a GPU, from the repository root
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from selectkd.data.rows import load_rows
from selectkd.finetune import finetune
from selectkd.specs import DataSpec

sys.path.insert(0, str(Path(__file__).parent))
from gpu_check import bare_step_seconds, build_models  # noqa: E402


def main() -> None:
    t = time.perf_counter()
    texts = list(load_rows(DataSpec("tweets-binary", "train", limit=16000), Path("cache")).dataset["text"])
    init, _ = build_models(Path("/tmp/w"), texts, small=False)
    print("models built s", round(time.perf_counter() - t, 1), flush=True)
    print("bare loop s/step", bare_step_seconds(init, "cuda", 48, steps=40), flush=True)
    for i in range(2):
        t = time.perf_counter()
        r = finetune("tweets-binary", str(init), f"/tmp/ft{i}", limit=6000, max_steps=100, max_length=48,
                     eval_limit=500, cache_dir="cache", device="cuda", progress=False, overwrite=True)
        print("selectkd finetune 100 steps: record s", round(r.seconds, 2), "wall", round(time.perf_counter() - t, 2),
              r.metrics.get("eval"), flush=True)


if __name__ == "__main__":
    main()
