"""What the study's teachers give a student to learn from: their soft labels on the pool, class by class.

KD pulls the student towards the teacher's probabilities at distill's temperature (`--temperature`, 2 by
default). A teacher that is right on a class but barely sure of it (gold probability near 1 / classes) gives
that class a soft label close to uniform, and KD then teaches the student to stay unsure there. This reads the
teacher logits the study cached for each prepared dataset (bench/reproduce.py's prep.json names the entry) and
the pool's gold labels, and writes per class: rows, the teacher's accuracy, and its mean probability on the
gold class at temperature 1 and at distill's temperature. No model runs; a dataset whose entry is not in the
cache (a fresh machine before the study prepared it) is named and skipped.

    .venv/bin/python bench/soft_labels.py    # -> bench/results/soft_labels.{md,json}
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from selectkd.atomic import atomic_write_json, atomic_write_text
from selectkd.cache.arrays import column_matrix
from selectkd.cache.store import Store
from selectkd.data.rows import load_rows
from selectkd.runtime import machine
from selectkd.specs import DEFAULT_TEMPERATURE, DataSpec
from selectkd.uncertainty import softmax

REPO = Path(__file__).resolve().parents[1]
COMMAND = "python bench/soft_labels.py"


def per_class(logits: np.ndarray, labels: np.ndarray, names: list[str], temperature: float) -> list[dict]:
    """One row per class: its rows, the teacher's accuracy on them and mean gold-class probability."""
    p1, pt = softmax(logits), softmax(logits, temperature)
    found = []
    for c, name in enumerate(names):
        m = labels == c
        if not m.any():
            continue
        found.append({"class": name, "rows": int(m.sum()), "accuracy": float((p1[m].argmax(1) == c).mean()),
                      "gold_p": float(p1[m, c].mean()), "gold_p_at_t": float(pt[m, c].mean())})
    return found


def dataset_rows(prep: dict, store: Store, temperature: float) -> dict | None:
    key = prep["score_teacher"]["key"]
    entry = store.entry("teacher", key)
    if not entry.is_complete():
        return None
    table = entry.read_parts()
    rows = load_rows(DataSpec(prep["pool"], "train", limit=prep["pool_rows"]), store.root)
    gold = dict(zip(rows.uids.tolist(), rows.labels.tolist()))
    labels = np.asarray([gold[u] for u in table.column("uid").to_pylist()])  # the entry's own row order
    names = rows.label_names or [str(c) for c in range(rows.num_labels)]
    return {"data": prep["data"], "entry": key, "teacher": prep["teacher"], "rows": len(labels),
            "num_labels": rows.num_labels, "classes": per_class(column_matrix(table, "logits"), labels, names, temperature)}


def render(found: list[dict], missing: list[str], temperature: float) -> str:
    lines = ["# The teachers' soft labels, class by class", "",
             f"Made by `{COMMAND}` on {time.strftime('%Y-%m-%d', time.gmtime())} ({machine()}) from the teacher "
             "logits the 10% study cached for its pools (bench/reproduce.py; no model ran). *gold p*: the teacher's "
             f"mean probability on the gold class; *at T={temperature:g}*: the same at distill's default KD "
             f"temperature, the soft label KD trains the student towards. Uniform is 1/classes.", ""]
    for d in found:
        k = d["num_labels"]
        worst = min(d["classes"], key=lambda c: c["gold_p_at_t"])
        lines += [f"## {d['data']} ({d['rows']:,} pool rows, {k} classes: uniform {1 / k:.2f})", "",
                  f"Teacher `{d['teacher']}`, cache entry `teacher/{d['entry']}`.", "",
                  f"| class | rows | teacher accuracy % | gold p | gold p at T={temperature:g} |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {c['class']} | {c['rows']:,} | {c['accuracy'] * 100:.1f} | {c['gold_p']:.2f} | "
                  f"{c['gold_p_at_t']:.2f} |" for c in d["classes"]]
        lines += ["", f"Least sure: `{worst['class']}`, {worst['gold_p_at_t']:.2f} on the gold class at "
                  f"T={temperature:g} ({worst['gold_p_at_t'] * k:.1f}x uniform) while the teacher is right on "
                  f"{worst['accuracy']:.1%} of its rows.", ""]
    if missing:
        lines += [f"Not in this machine's cache (the study has not scored them here): {', '.join(missing)}.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default=str(REPO / "bench" / "results" / "reproduce"), help="the study's records")
    ap.add_argument("--cache-dir", default="cache", help="the study's store (its default: ./cache)")
    ap.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE, help="KD temperature to show")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "soft_labels"), help="writes OUT.md, OUT.json")
    args = ap.parse_args()
    store = Store(args.cache_dir)
    found, missing = [], []
    for path in sorted(Path(args.results).glob("*/prep.json")):
        prep = json.loads(path.read_text())
        got = dataset_rows(prep, store, args.temperature)
        (found.append(got) if got else missing.append(prep["data"]))
    out = Path(args.out)
    atomic_write_json(out.with_suffix(".json"), {"command": COMMAND, "machine": machine(),
                                                 "temperature": args.temperature, "datasets": found, "missing": missing})
    atomic_write_text(out.with_suffix(".md"), render(found, missing, args.temperature))
    print(out.with_suffix(".md"))


if __name__ == "__main__":
    main()
