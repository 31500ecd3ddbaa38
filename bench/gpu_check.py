"""The CUDA / bf16 path on a GPU, at the 10% study's tweets-binary sizes: does score -> select -> distill run
end to end there, how far are bf16-autocast teacher logits from float32 ones, and what does each stage cost?

The models are the study's shapes made in code with random weights, then trained here: a BERT-base teacher
(12 layers, hidden 768: mpnet-base's size) fine-tuned end to end on tweets 1-6,000, and a 3-layer, hidden-384
student (the study's MiniLM-L6 first 3 layers). Real weights cannot reach the GPU machines this project is lent
(their working tree travels in at most 64 MiB; mpnet-base alone is 420 MB), so accuracies here are those of
models trained from scratch: read them for the CUDA path working and for time ratios, not against the CPU study.

Per seed, the study's core runs (bench/reproduce.py): no-KD, full-data KD, the default `--budget 0.1`, static
random 10%, all rows for the default's seconds, and the paper's in-batch 10%; then the same test rows scored in
float32 on the CPU beside the bf16 ones.

    python bench/gpu_check.py --out bench/results            # on a machine with a GPU
    .venv/bin/python bench/gpu_check.py --device cpu --small --out /tmp/gpu   # a dry run of the script here
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from selectkd.atomic import atomic_write_json, atomic_write_text
from selectkd.cache.arrays import column_matrix
from selectkd.demo import transfer_pool
from selectkd.distillation.config import DistillConfig
from selectkd.distillation.head import resolved_head_init
from selectkd.distillation.loop import distill
from selectkd.pipeline import finetuned_teacher, make_selection, teacher_test_metrics
from selectkd.runtime import machine
from selectkd.scoring.run import score
from selectkd.specs import DEFAULT_HEAD_INIT, DEFAULT_STRATEGY, DataSpec, ScoreSpec

DATA = "tweets-binary"


def log(msg: str, t0: float = time.perf_counter()) -> None:
    print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", flush=True)


def build_models(root: Path, texts: list[str], small: bool) -> tuple[Path, Path]:
    """(teacher, student) folders: a WordPiece vocabulary trained on ``texts``, random BERTs of the study's shapes."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=30522, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    fast = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]")
    shapes = {"teacher": (2, 128, 2, 512) if small else (12, 768, 12, 3072),
              "student": (1, 64, 2, 256) if small else (3, 384, 12, 1536)}
    folders = []
    for seed, (role, (layers, hidden, heads, inner)) in enumerate(shapes.items()):
        torch.manual_seed(seed)
        config = BertConfig(vocab_size=len(fast), hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=heads, intermediate_size=inner, num_labels=2)
        model = BertForSequenceClassification(config) if role == "teacher" else BertModel(config)
        folder = root / f"{role}-init"
        model.save_pretrained(folder)
        fast.save_pretrained(folder)
        folders.append(folder)
    return folders[0], folders[1]


def bare_step_seconds(folder: Path, device: str, max_length: int, steps: int = 30) -> dict:
    """Seconds per training step of the model in ``folder`` in a bare loop (one fixed batch of 32 rows of
    ``max_length`` tokens, AdamW, clipping), float32 and bf16 autocast, each after three warm-up steps: the floor
    `selectkd finetune`'s steps are read against."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(folder).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    x = torch.randint(5, model.config.vocab_size, (32, max_length), device=device)
    y = torch.randint(0, model.config.num_labels, (32,), device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def run(n: int, bf16: bool) -> float:
        sync()
        t = time.perf_counter()
        for _ in range(n):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16 and device.startswith("cuda")):
                loss = torch.nn.functional.cross_entropy(model(input_ids=x).logits.float(), y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        sync()
        return (time.perf_counter() - t) / n

    found = {}
    for name, bf16 in (("float32", False), ("bf16", True))[:2 if device.startswith("cuda") else 1]:
        run(3, bf16)  # each mode's kernels chosen and compiled before its clock (bf16 once read 0.13 s unwarmed)
        found[name] = round(run(steps, bf16), 4)
    return found


def git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip() or "?"
    except OSError:
        return "?"


def test_logits(test) -> np.ndarray:
    return column_matrix(test.store.entry("teacher", test.teachers[0].key).read_parts(), "logits")


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - t, 2)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--cache-dir", default="cache", help="the store holding assets/data/tweets-binary")
    p.add_argument("--work", default=None, help="where models, pool and runs go (default: CACHE_DIR/gpu-check)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--small", action="store_true", help="tiny models and pools: a dry run of the script on a CPU")
    p.add_argument("--out", default="bench/results", help="writes gpu.json and gpu.md here")
    args = p.parse_args(argv)
    import torch
    import transformers

    sizes = dict(teacher_rows=6000, pool_rows=10000, test_rows=2000, dev_rows=500, max_length=48, teacher_epochs=2,
                 epochs=3)
    if args.small:
        sizes.update(teacher_rows=300, pool_rows=1000, test_rows=200, dev_rows=100, teacher_epochs=1, epochs=1)
    cache = Path(args.cache_dir)
    work = Path(args.work) if args.work else cache / "gpu-check"
    work.mkdir(parents=True, exist_ok=True)
    dev = args.device
    gpu = torch.cuda.get_device_name(0) if dev.startswith("cuda") else None
    env = {"device": dev, "gpu": gpu, "torch": torch.__version__, "transformers": transformers.__version__,
           "machine": machine(), "commit": git_rev(), "command": shlex.join(["python", "bench/gpu_check.py", *(argv or sys.argv[1:])]),
           "sizes": sizes, "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())}
    log(f"{dev} ({gpu or 'no GPU'}), torch {torch.__version__}")

    from selectkd.data.rows import load_rows
    train = load_rows(DataSpec(DATA, "train", limit=sizes["teacher_rows"] + sizes["pool_rows"]), cache)
    teacher_init, student = build_models(work, list(train.dataset["text"]), args.small)
    L = sizes["max_length"]
    bare = bare_step_seconds(teacher_init, dev, L)
    log(f"bare training step of the teacher: {bare}")
    # a model from scratch needs a higher lr than a pre-trained one's 3e-5 (with it this teacher stayed at the majority)
    teacher, record = finetuned_teacher(
        DATA, str(teacher_init), work / "teacher", sizes["teacher_rows"], epochs=sizes["teacher_epochs"], max_length=L,
        eval_limit=sizes["dev_rows"], seed=0, cache_dir=cache, device=dev, progress=False, lr=1e-4)
    log(f"teacher fine-tuned in {record['seconds']:.1f} s")
    pool = str(transfer_pool(work, sizes["pool_rows"], skip=sizes["teacher_rows"], data=DATA))
    stages = {"teacher_finetune_s": record["seconds"], "teacher_finetune_record": record, "bare_step_s": bare}
    scored, stages["score_pool_s"] = timed(lambda: score(
        DataSpec(pool, "train", limit=sizes["pool_rows"]),
        ScoreSpec(teachers=(teacher,), student=str(student), max_length=L, device=dev), cache_dir=work, progress=False))
    stages["score_pool_parts_s"] = {r.role: round(r.seconds, 2) for r in scored.reports}
    log(f"pool scored in {stages['score_pool_s']} s {stages['score_pool_parts_s']}")
    numerics = {}
    for d in dict.fromkeys([dev, "cpu"]):
        test, secs = timed(lambda: score(DataSpec(DATA, "test", limit=sizes["test_rows"]),
                                         ScoreSpec(teachers=(teacher,), max_length=L, device=d), cache_dir=work,
                                         progress=False))
        numerics[d] = {"seconds": secs, "logits": test_logits(test), "key": test.teachers[0].key,
                       "test": teacher_test_metrics(test)[0]}
        log(f"test rows scored on {d} in {secs} s: teacher accuracy {numerics[d]['test']['accuracy']:.4f}")
    a, b = numerics[dev]["logits"], numerics["cpu"]["logits"]
    pa, pb = torch.softmax(torch.tensor(a), 1), torch.softmax(torch.tensor(b), 1)
    compare = None if dev == "cpu" else {"rows": len(a), "max_abs_logit_diff": float(np.abs(a - b).max()),
               "mean_abs_logit_diff": float(np.abs(a - b).mean()),
               "argmax_agreement": float((a.argmax(1) == b.argmax(1)).mean()),
               "max_prob_diff": float((pa - pb).abs().max()),
               "separate_cache_entries": numerics[dev]["key"] != numerics["cpu"]["key"],
               "seconds": {d: v["seconds"] for d, v in numerics.items()},
               "teacher_test": {d: v["test"] for d, v in numerics.items()}}

    base = dict(data=pool, teachers=[teacher], student=str(student), limit=sizes["pool_rows"], eval_data=DATA,
                eval_limit=sizes["dev_rows"], test_data=DATA, test_limit=sizes["test_rows"], max_length=L,
                epochs=sizes["epochs"], eval_every=20, checkpoint=False, cache_dir=str(work), device=dev)
    runs: list[dict] = []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def write() -> None:  # after every run: a machine taken back half-way still leaves what finished
        result = {**env, "finished": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()), "stages": stages,
                  "numerics": compare, "runs": runs, "table": summarise(runs)}
        atomic_write_json(out / "gpu.json", result)
        atomic_write_text(out / "gpu.md", render(result))

    for seed in args.seeds:
        done = {}
        plan = [("no-kd", dict(kd_alpha=0.0, head_init="random")), ("full", {}),
                ("dynamic-random-10", dict(budget="0.1", strategy=DEFAULT_STRATEGY)),
                ("static-random-10", dict(selection=f"gpu-random-10-s{seed}")),
                ("same-time", dict(head_init=resolved_head_init(DEFAULT_HEAD_INIT, on_subset=True))),
                ("in-batch-10", dict(in_batch=0.1))]
        for name, extra in plan:
            if name == "static-random-10":
                make_selection(pool, [teacher], str(student), name=extra["selection"], budget=0.1, seed=seed,
                               rows=sizes["pool_rows"], max_length=L, cache_dir=work, strategy="random")
            if name == "same-time":
                extra = {**extra, "time_budget": done["dynamic-random-10"]["seconds_train"]}
            cfg = DistillConfig.from_options(**{**base, **extra, "seed": seed, "out": str(work / "runs" / f"s{seed}" / name)})
            t = time.perf_counter()
            summary = distill(cfg, overwrite=True, progress=False).summary
            rec = {"name": name, "seed": seed, "test": summary["test"]["accuracy"], "seconds_train": summary["seconds"]["train"],
                   "seconds_wall": round(time.perf_counter() - t, 2), "steps": summary["steps"],
                   "one_class": summary.get("one_class"), "stopped": summary.get("stopped")}
            done[name] = rec
            runs.append(rec)
            log(f"seed {seed} {name}: test {rec['test']:.4f}, train {rec['seconds_train']:.1f} s, {rec['steps']} steps")
            write()
    log(f"wrote {out / 'gpu.md'}")


def summarise(runs: list[dict]) -> list[dict]:
    """Per run name: mean ± std test accuracy over seeds, median training seconds and its ratio to full KD's."""
    table = []
    fulls = [r["seconds_train"] for r in runs if r["name"] == "full"]
    full = statistics.median(fulls) if fulls else None
    for name in dict.fromkeys(r["name"] for r in runs):
        rs = [r for r in runs if r["name"] == name]
        secs = statistics.median(r["seconds_train"] for r in rs)
        acc = [r["test"] for r in rs]
        table.append({"run": name, "test_mean": float(np.mean(acc)), "test_std": float(np.std(acc)),
                      "train_s_median": secs, "of_full_kd_time": secs / full if full else None,
                      "steps": statistics.median(r["steps"] for r in rs)})
    return table


def numerics_line(n: dict | None) -> str:
    if n is None:
        return "Not compared: the run was on the CPU."
    accuracy = ", ".join(f"{d} {v['accuracy']:.4f}" for d, v in n["teacher_test"].items())
    seconds = ", ".join(f"{d} {v:.1f}" for d, v in n["seconds"].items())
    kept = "two separate cache entries" if n["separate_cache_entries"] else "ONE cache entry (wrong)"
    return (f"{n['rows']:,} rows: argmax agreement {n['argmax_agreement']:.4f}, largest |logit difference| "
            f"{n['max_abs_logit_diff']:.4f} (mean {n['mean_abs_logit_diff']:.4f}), largest probability difference "
            f"{n['max_prob_diff']:.4f}; teacher test accuracy {accuracy}. Kept as {kept} (the numerics are part of "
            f"the key). Seconds: {seconds}.")


def render(r: dict) -> str:
    s, n = r["stages"], r["numerics"]
    metrics = s["teacher_finetune_record"].get("metrics", {})
    steps = metrics.get("steps", "?")
    dev_acc = f"{metrics['eval']['accuracy']:.3f}" if "eval" in metrics else "?"
    bare = s.get("bare_step_s")
    lines = [
        f"# The CUDA / bf16 path: {r['gpu'] or r['device']}",
        "",
        f"Made by `{r['command']}` (bench/gpu_check.py, commit {r.get('commit', '?')}) on {r['machine']}, "
        f"transformers {r['transformers']}, {r['started']} to {r['finished']} UTC.",
        "",
        "Models of the study's shapes with random weights, trained here (real weights cannot travel to the GPU "
        "machine: bench/gpu_check.py says why): a BERT-base teacher fine-tuned end to end on "
        f"{r['sizes']['teacher_rows']:,} tweets, a 3-layer hidden-384 student, a pool of {r['sizes']['pool_rows']:,} "
        f"other tweets, {r['sizes']['test_rows']:,} test rows, max length {r['sizes']['max_length']}. Accuracies are "
        "those of models trained from scratch: compare times and ratios, not accuracies, with docs/RESULTS.md.",
        "",
        "## One-off costs (paid once per teacher)",
        "",
        "| stage | seconds |",
        "| --- | ---: |",
        f"| teacher fine-tuned end to end ({r['sizes']['teacher_epochs']} epochs, {steps} steps; dev accuracy "
        f"{dev_acc}) | {s['teacher_finetune_s']:.1f} |",
        f"| pool scored (teacher logits, student uncertainty, embeddings + faiss) | {s['score_pool_s']:.1f} |",
        *(f"| - of which {role} | {sec:.1f} |" for role, sec in s["score_pool_parts_s"].items()),
        "",
        *([f"The fine-tune took {s['teacher_finetune_s'] / steps:.3f} s per step, everything included; a bare loop "
           f"of the same model on one fixed batch (32 rows x {r['sizes']['max_length']} tokens): {bare['float32']:.3f} s "
           f"float32" + (f", {bare['bf16']:.3f} s bf16 autocast." if "bf16" in bare else "."), ""] if bare and isinstance(steps, int) else []),
        "## bf16 autocast against float32 (teacher logits on the same test rows)",
        "",
        numerics_line(n),
        "",
        f"## Student runs on {r['device']} (seeds {', '.join(str(x) for x in sorted({x['seed'] for x in r['runs']}))})",
        "",
        "| run | test accuracy (mean ± std) | training s (median) | of full KD's time | steps |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(f"| {t['run']} | {t['test_mean']:.4f} ± {t['test_std']:.4f} | {t['train_s_median']:.1f} | "
          f"{'-' if t['of_full_kd_time'] is None else format(t['of_full_kd_time'], '.0%')} | {t['steps']:g} |" for t in r["table"]),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
