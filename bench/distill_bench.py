"""Step time of cached-logit KD vs online KD vs plain fine-tuning, side by side, same batches.

The real pair: all-mpnet-base-v2 (teacher) -> all-MiniLM-L6-v2 (student), real tweets.
Each method runs the same length-grouped batches; methods alternate batch by batch so they
see the same machine state, through the training step of `selectkd distill` (its Step); only the
teacher signal differs: none, the memory-mapped cache, or the teacher run in every step.

    .venv/bin/python bench/distill_bench.py --rows 640 --batch-size 32 --out bench/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from selectkd.cache.store import Store
from selectkd.distillation.evaluate import Encoded
from selectkd.distillation.loop import Step
from selectkd.distillation.signals import CachedSignal, LiveSignal
from selectkd.models import load_classifier, load_tokenizer, resolve
from selectkd.scoring.run import score
from selectkd.scoring.tokens import length_batches, tokenize
from selectkd.specs import DataSpec, ScoreSpec, TrainSpec

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=640)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--warmup-steps", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args()
    command = "python bench/distill_bench.py " + " ".join(sys.argv[1:])

    assets = REPO / "cache" / "assets"
    tmp = Path(tempfile.mkdtemp(prefix="selectkd-distill-bench-"))
    (tmp / "assets").symlink_to(assets)
    print("scoring the teacher into a fresh cache (paid once) ...", flush=True)
    t0 = time.perf_counter()
    res = score(DataSpec("tweets-binary", limit=args.rows), ScoreSpec(("mpnet-base",), allow_untrained_head=True),
                cache_dir=tmp, progress=False)
    score_seconds = time.perf_counter() - t0
    rows = res.rows
    sref, tref = resolve("minilm-l6", tmp), resolve("mpnet-base", tmp)
    s_tok, _ = load_tokenizer(sref)
    t_tok, _ = load_tokenizer(tref)
    tokens = Encoded.of(s_tok, rows, 128)
    groups = length_batches(tokens.lengths, args.batch_size)
    labels = rows.labels

    teacher, _ = load_classifier(tref, 2, allow_untrained_head=True)
    teacher.eval()
    signals = {  # the same step for each method; only the teacher signal differs
        "plain": [],
        "cached": [CachedSignal(Store(tmp).entry("teacher", res.teachers[0].key), "mpnet-base", rows.uids)],
        "online": [LiveSignal(teacher, t_tok.pad_token_id, tokenize(t_tok, list(rows.dataset["text"]), None, 128), "cpu")],
    }
    steps = {}
    for method, teacher_signals in signals.items():
        torch.manual_seed(0)
        st, _ = load_classifier(sref, 2, allow_untrained_head=True, role="student")
        params = list(st.parameters())
        steps[method] = Step(st, torch.optim.AdamW(params, lr=2e-5), params, TrainSpec(kd_loss="mse"), "cpu",
                             teacher_signals)

    def step(method: str, g) -> float:
        t = time.perf_counter()
        steps[method](tokens.inputs(g, "cpu"), torch.from_numpy(labels[g]), g)
        return time.perf_counter() - t

    times: dict[str, list[float]] = {m: [] for m in steps}
    order = list(steps)
    for i, g in enumerate(groups):
        for m in order if i % 2 == 0 else order[::-1]:  # alternate who goes first
            dt = step(m, g)
            if i >= args.warmup_steps:
                times[m].append(dt)
        print(f"batch {i + 1}/{len(groups)}: " + ", ".join(f"{m} {times[m][-1]:.2f}s" for m in order if times[m]), flush=True)

    med = {m: statistics.median(v) for m, v in times.items()}
    result = {
        "command": command, "date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine(),
        "rows": args.rows, "batch_size": args.batch_size, "timed_steps": len(times["plain"]),
        "teacher_score_seconds_paid_once": round(score_seconds, 2),
        "median_step_seconds": {m: round(v, 4) for m, v in med.items()},
        "cached_over_plain": round(med["cached"] / med["plain"], 3),
        "online_over_cached": round(med["online"] / med["cached"], 3),
        "step_seconds": times,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "distill.json").write_text(json.dumps(result, indent=2))
    md = [
        "# Distillation step time: cached KD vs online KD vs plain fine-tuning",
        "",
        f"Command: `{command}`  ",
        f"Date: {result['date']}; machine: {result['machine']}",
        "",
        f"all-mpnet-base-v2 -> all-MiniLM-L6-v2, {args.rows} real tweets (tweets-binary train), batches of "
        f"{args.batch_size} grouped by length, the same batches for every method, methods alternating; "
        f"median over {result['timed_steps']} steps after {args.warmup_steps} warm-up steps.",
        "",
        "| method | median step (s) | vs plain fine-tuning |",
        "| --- | --- | --- |",
    ]
    for m, label in (("plain", "plain fine-tuning (CE only)"), ("cached", "cached-logit KD (selectkd)"),
                     ("online", "online KD (teacher forward every step)")):
        md.append(f"| {label} | {med[m]:.3f} | {med[m] / med['plain']:.2f}x |")
    md += [
        "",
        f"- cached KD / plain fine-tuning: **{result['cached_over_plain']:.2f}x** (target <= 1.1x)",
        f"- online KD / cached KD: **{result['online_over_cached']:.2f}x** (target >= 2x)",
        f"- the teacher's logits for these rows cost {score_seconds:.1f} s once (`selectkd score`), "
        "then every experiment reuses them.",
    ]
    (out / "distill.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return f"{os.cpu_count()} cores, {cpu}, torch {torch.__version__}, Python {platform.python_version()}"


if __name__ == "__main__":
    main()
