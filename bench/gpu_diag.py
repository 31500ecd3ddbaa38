"""A bare BERT-base training loop (float32, bf16) beside `selectkd finetune` for 100 steps, on a GPU: the
measurement that found `Rows.labels` read row by row on every fine-tuning step (bench/results/gpu_diag.log).

    python bench/gpu_diag.py     # on a machine with a GPU, from the repository root
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForSequenceClassification

from selectkd.data.rows import load_rows
from selectkd.finetune import finetune
from selectkd.specs import DataSpec

sys.path.insert(0, str(Path(__file__).parent))
from gpu_check import build_models  # noqa: E402


def main() -> None:
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=30522, num_labels=2)).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-5)
    x = torch.randint(0, 30522, (32, 48), device="cuda")
    y = torch.randint(0, 2, (32,), device="cuda")

    def steps(n: int, bf16: bool) -> float:
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(input_ids=x).logits.float(), y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        torch.cuda.synchronize()
        return (time.perf_counter() - t) / n

    print("first step fp32 s", steps(1, False), flush=True)
    for bf16 in (False, True, False, True):
        print("bf16" if bf16 else "fp32", "s/step", round(steps(40, bf16), 4), flush=True)
    t = time.perf_counter()
    texts = list(load_rows(DataSpec("tweets-binary", "train", limit=16000), Path("cache")).dataset["text"])
    init, _ = build_models(Path("/tmp/w"), texts, small=False)
    print("models built s", round(time.perf_counter() - t, 1), flush=True)
    for i in range(2):
        t = time.perf_counter()
        r = finetune("tweets-binary", str(init), f"/tmp/ft{i}", limit=6000, max_steps=100, max_length=48,
                     eval_limit=500, cache_dir="cache", device="cuda", progress=False, overwrite=True)
        print("selectkd finetune 100 steps: record s", round(r.seconds, 2), "wall", round(time.perf_counter() - t, 2),
              r.metrics.get("eval"), flush=True)


if __name__ == "__main__":
    main()
