"""What does the student's classification head read? The features behind it, before any training.

The first study's student (the first 3 layers of all-MiniLM-L6-v2) and the whole 6-layer model are sentence
encoders trained for mean pooling; transformers' BertForSequenceClassification head reads the pooler
output of [CLS]. Per study dataset, on the first `--rows` training rows and `--dev` dev rows, at the
study's max length: how much three candidate features differ between rows (spread: the mean distance of
a row's vector from the rows' mean, over the mean vector length; 0 = every row the same vector), and how
well a linear probe on each predicts the gold label of the dev rows. `pooler` is what the head's last
linear layer reads (what `--head-init probe` fits to), `cls` the last layer's [CLS] state, `mean` the
mask-weighted mean of the last layer's states (what the encoder was trained to give). Two probes: the one
`--head-init probe` fits (raw features, L2 1e-3) and the same on features scaled to unit variance.

With `--distill DATASET ...`, each model is also the student of the first study's default 10% run on that
dataset (its command from that study's seed-0 record in --study-results, only `--student` and `--out` changed): test accuracy after the
same steps, and dev accuracy at step 0 (the probe head's start) and at the end. The study's own student is
taken from the study's record; a run folder under --runs whose config.json equals the study run's but for
student and out is reused (resumable).

    .venv/bin/python bench/head_features.py                     # about a minute per model on 2 cores
    .venv/bin/python bench/head_features.py --distill 20ng      # + ~15 minutes per model and dataset

Writes bench/results/head_features.md and .json (command, machine, commit, date). Needs the first
study's records (bench/results/reproduce-minilm-first3: bench/reproduce.py with `--student-layers 3`, the
study's student until these results moved it to the whole model), its teachers and the built-in minilm-l6.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study as rp  # noqa: E402  (the study's default run, records and helpers)

from selectkd import assets  # noqa: E402
from selectkd.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from selectkd.cache.store import Store  # noqa: E402
from selectkd.distillation.curves import json_lines  # noqa: E402
from selectkd.distillation.head import head_linear  # noqa: E402
from selectkd.models import first_layers, load_classifier, load_tokenizer, resolve  # noqa: E402
from selectkd.runtime import machine  # noqa: E402
from selectkd.scoring.student import fit_probe  # noqa: E402

FEATURES = ("pooler", "cls", "mean")
REPO, RUN = rp.REPO, rp.DEFAULT_RUN


def distilled(model: str, ds: str, study_results: Path, study_runs: Path, runs: Path) -> dict:
    """The study's seed-0 default 10% run on ``ds`` with ``model`` as the student: taken from the study when
    the student is the study's, reused from ``runs`` when its config matches, else trained now."""
    rec = json.loads((study_results / ds / "s0" / f"{RUN}.json").read_text())
    study_cfg = json.loads((study_runs / ds / "s0" / RUN / "config.json").read_text())
    if study_cfg["student"] == model:
        return {"source": "study", "command": rec["command"], "test": rec["test"], "steps": rec["steps"],
                "seconds_train": rec["seconds_train"], "dev_start": rec["curve"]["dev_accuracy"][0],
                "dev_end": rec["curve"]["dev_accuracy"][-1], "commit": rec["commit"]}
    out = runs / Path(model).name / ds
    same = {k: v for k, v in study_cfg.items() if k not in ("out", "student")}
    cfg_path, summary_path = out / "config.json", out / "summary.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() and summary_path.exists() else None
    reused = (cfg is not None and cfg["student"] == model
              and {k: v for k, v in cfg.items() if k not in ("out", "student")} == same)
    argv = shlex.split(rec["command"])
    argv[argv.index("--student") + 1] = model
    argv[argv.index("--out") + 1] = str(out.relative_to(REPO) if out.is_relative_to(REPO) else out)
    if not reused:
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(Path(sys.executable).parent / "selectkd"), *argv[1:]], check=True, cwd=REPO,
                       stdout=subprocess.DEVNULL)
    summary = json.loads(summary_path.read_text())
    curve = json_lines(out / "metrics.jsonl")
    dev = [c["dev"]["accuracy"] for c in curve if "dev" in c]
    return {"source": "reused" if reused else "this", "command": " ".join(map(shlex.quote, argv)),
            "test": summary["test"], "steps": summary["steps"], "seconds_train": summary["seconds"]["train"],
            "dev_start": dev[0], "dev_end": dev[-1]}


def features(model, tokenizer, texts: list[str], max_length: int, num_labels: int, batch_size: int = 32) -> dict:
    """{feature name: (rows, dim) array} for ``texts``, model in eval mode."""
    import torch

    grabbed: list = []
    hook = head_linear(model, num_labels).register_forward_pre_hook(lambda _m, inp: grabbed.append(inp[0]))
    out: dict[str, list[np.ndarray]] = {k: [] for k in FEATURES}
    try:
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                enc = tokenizer(texts[i:i + batch_size], truncation=True, max_length=max_length, padding=True,
                                return_tensors="pt")
                grabbed.clear()
                hidden = model(**enc, output_hidden_states=True).hidden_states[-1]
                mask = enc["attention_mask"][..., None].to(hidden.dtype)
                x = grabbed[0]
                out["pooler"].append((x[:, 0] if x.dim() == 3 else x).float().numpy())
                out["cls"].append(hidden[:, 0].float().numpy())
                out["mean"].append(((hidden * mask).sum(1) / mask.sum(1)).float().numpy())
    finally:
        hook.remove()
    return {k: np.concatenate(v) for k, v in out.items()}


def spread(x: np.ndarray) -> float:
    """Mean distance of a row from the rows' mean vector, over the mean vector length (0: all rows alike)."""
    return float(np.linalg.norm(x - x.mean(0), axis=1).mean() / np.linalg.norm(x, axis=1).mean())


def probe_accuracy(train: np.ndarray, y_train: np.ndarray, dev: np.ndarray, y_dev: np.ndarray, num_labels: int,
                   standardize: bool) -> float:
    w, b, _ = fit_probe(train, np.eye(num_labels, dtype=np.float32)[y_train], seed=0, standardize=standardize)
    return float(((dev @ w.T + b).argmax(1) == y_dev).mean())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", default=["tweets-binary", "r8", "20ng"])
    p.add_argument("--models", nargs="+", default=None,
                   help="student folders or built-in names (default: the first study's student, the first 3 "
                        "layers of minilm-l6 made in the store by models.first_layers, then all 6 layers)")
    p.add_argument("--rows", type=int, default=1000, help="training rows the probes are fitted on")
    p.add_argument("--dev", type=int, default=500, help="dev rows the probes are scored on")
    p.add_argument("--cache-dir", default=None, help="the store (default: $SELECTKD_CACHE or ./cache)")
    p.add_argument("--study-results", default=str(REPO / "bench" / "results" / "reproduce-minilm-first3"))
    p.add_argument("--study-runs", default=str(REPO / "bench" / "runs" / "reproduce-minilm-first3"))
    p.add_argument("--distill", nargs="*", default=[], metavar="DATASET",
                   help="also run the study's default 10%% run on these datasets with each model as the student")
    p.add_argument("--runs", default=str(REPO / "bench" / "runs" / "head_features"), help="their run folders")
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = p.parse_args(argv)

    import datasets
    import torch

    torch.manual_seed(0)
    root = Store(args.cache_dir).root
    args.models = args.models or [first_layers("minilm-l6", 3, root), "minilm-l6"]
    rows = []
    for name in args.models:
        ref = resolve(name, root)
        tokenizer, _ = load_tokenizer(ref)
        for ds in args.datasets:
            max_length = json.loads((Path(args.study_results) / ds / "prep.json").read_text())["max_length"]
            dd = datasets.load_from_disk(str(assets.data_dir(root, ds)))
            train, dev = dd["train"].select(range(args.rows)), dd["dev"].select(range(args.dev))
            num_labels = dd["train"].features["label"].num_classes
            model, _ = load_classifier(ref, num_labels, allow_untrained_head=True, role="student", seed=0)
            t0 = time.perf_counter()
            f_train = features(model, tokenizer, list(train["text"]), max_length, num_labels)
            f_dev = features(model, tokenizer, list(dev["text"]), max_length, num_labels)
            y_train, y_dev = np.asarray(train["label"]), np.asarray(dev["label"])
            row = {"model": name, "dataset": ds, "max_length": max_length, "labels": num_labels,
                   "majority_dev": float(np.bincount(y_dev).max() / len(y_dev))}
            for k in FEATURES:
                row[k] = {"spread": round(spread(f_dev[k]), 5),
                          "probe_as_head_init": round(probe_accuracy(f_train[k], y_train, f_dev[k], y_dev,
                                                                     num_labels, False), 4),
                          "probe_standardized": round(probe_accuracy(f_train[k], y_train, f_dev[k], y_dev,
                                                                     num_labels, True), 4)}
            row["seconds"] = round(time.perf_counter() - t0, 1)
            if ds in args.distill:
                row["distill"] = distilled(name, ds, Path(args.study_results), Path(args.study_runs), Path(args.runs))
            rows.append(row)
            print(json.dumps(row), flush=True)

    commit = rp.git_rev()
    command = " ".join([".venv/bin/python", "bench/head_features.py", *map(shlex.quote, argv or sys.argv[1:])])
    meta = {"command": command, "machine": machine(), "commit": commit,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": args.rows, "dev": args.dev}
    out = Path(args.out)
    atomic_write_json(out / "head_features.json", {**meta, "results": rows})
    md = ["# What the student's classification head reads, before training", "",
          f"Made by `{command}` on {meta['date']}, commit {commit}, {meta['machine']}. "
          f"Probes fitted on the first {args.rows:,} training rows to the gold labels, scored on the first "
          f"{args.dev:,} dev rows; max length as in the study of --study-results. Spread: mean distance of a row's "
          "vector from the "
          "rows' mean over the mean vector length (0 = all rows the same). `pooler` is what "
          "BertForSequenceClassification's head reads and `--head-init probe` fits; `cls` the last layer's [CLS] "
          "state; `mean` the mask-weighted mean of the last layer's states.", "",
          "| model | dataset | majority | feature | spread | probe as head-init (raw, L2 1e-3) | probe, standardized |",
          "| --- | --- | ---: | --- | ---: | ---: | ---: |"]
    for r in rows:
        for k in FEATURES:
            md.append(f"| {r['model']} | {r['dataset']} | {r['majority_dev'] * 100:.1f}% | {k} | {r[k]['spread']:.4f} | "
                      f"{r[k]['probe_as_head_init'] * 100:.1f}% | {r[k]['probe_standardized'] * 100:.1f}% |")
    runs = [r for r in rows if "distill" in r]
    if runs:
        md += ["", f"## The default 10% run of the study in {rp.where(args.study_results)} with each model as the "
               "student (seed 0)", "", "That study's command, only `--student` changed (`--head-init probe`, 10% of "
               "the pool re-drawn each "
               "epoch, at least 100 steps). Dev accuracy at step 0 is the probe head's start. Seconds are training "
               "seconds (the head's fit included) on this machine, each run alone.", "",
               "| student | dataset | steps | train s | dev at step 0 | dev at end | test acc | macro-F1 | source |",
               "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for r in runs:
            d = r["distill"]
            md.append(f"| {r['model']} | {r['dataset']} | {d['steps']} | {d['seconds_train']:.0f} | "
                      f"{d['dev_start'] * 100:.1f}% | {d['dev_end'] * 100:.1f}% | {d['test']['accuracy'] * 100:.1f}% | "
                      f"{d['test']['macro_f1'] * 100:.1f}% | {d['source']} |")
        md += ["", "Commands:", "", "```sh"] + [r["distill"]["command"] for r in runs] + ["```"]
    atomic_write_text(out / "head_features.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
