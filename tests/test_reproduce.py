"""bench/reproduce.py end to end in a tiny configuration: every table and plot it promises is
written, and the numbers in the tables are the ones in the run folders' metrics.jsonl."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest

from .conftest import build_bert, build_tokenizer, make_rows

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    base = tmp_path_factory.mktemp("reproduce")
    rows = make_rows(420, seed=3)
    data = base / "toy"
    cols = lambda rs: {"text": [r["text"] for r in rs], "label": [r["label"] for r in rs]}  # noqa: E731
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(cols(rows[:300])),
                          "test": datasets.Dataset.from_dict(cols(rows[300:]))}).save_to_disk(str(data))
    tok = build_tokenizer(base / "tok", [r["text"] for r in rows])
    teacher = build_bert(base / "teacher", tok, num_labels=None, layers=2, hidden=32, seed=1)
    small_teacher = build_bert(base / "small-teacher", tok, num_labels=None, layers=1, hidden=32, seed=2)
    student = build_bert(base / "student", tok, num_labels=None, layers=2, hidden=16, seed=3)
    cmd = [sys.executable, str(REPO / "bench" / "reproduce.py"), "--datasets", str(data), "--seeds", "0",
           "--train-rows", "200", "--test-rows", "120", "--epochs", "1", "--batch-size", "16", "--lr", "1e-3",
           "--max-length", "32", "--teacher", str(teacher), "--small-teacher", str(small_teacher),
           "--student", str(student), "--small-student-layers", "1", "--budgets", "0.05", "0.1", "0.5", "1.0",
           "--cache-dir", str(base / "cache"), "--runs", str(base / "runs"), "--out", str(base / "docs")]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=base)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"base": base, "cmd": cmd, "docs": base / "docs", "runs": base / "runs" / "toy" / "s0", "log": done.stdout}


def test_every_table_and_plot_is_written(report):
    doc = (report["docs"] / "RESULTS.md").read_text()
    for heading in ("1. Data selection", "2. Budget curve", "3. Teacher adoption", "4. Objective adaptation",
                    "5. Cost", "Where the paper's claims held"):
        assert f"{heading}" in doc, heading
    for png in ("selection-toy.png", "budget-toy.png"):
        path = report["docs"] / "plots" / png
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(plots/{png})" in doc
    for row in ("full-data KD", "student without KD", "`entropy` static", "`coverage` dynamic", "in-batch",
                "full KD's step count", "adoption `soft-instance`", "objective `uncertainty-r`", "average of both"):
        assert row in doc, row
    assert "**The bar on toy:**" in doc
    assert (report["docs"] / "headline.md").read_text().count("| toy |") == 4


def test_table_numbers_are_the_runs_metrics(report):
    results = json.loads((report["docs"] / "results.json").read_text())
    rows = results["datasets"]["toy"]["rows"]
    doc = (report["docs"] / "RESULTS.md").read_text()
    run_dirs = sorted(p for p in report["runs"].iterdir() if (p / "metrics.jsonl").exists())
    assert len(run_dirs) == len(rows) == 27  # 2 + 6 static + 2 dynamic + in-batch + matched + 6 curve + 6 + 3
    for run in run_dirs:
        final = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"final"' in x][-1]
        row = rows[run.name]
        assert row["accuracy"] == [final["test"]["accuracy"]]
        assert row["macro_f1"] == [final["test"]["macro_f1"]]
        # the markdown row shows that accuracy and that run's command
        line = next(x for x in doc.splitlines() if f"--out {run.relative_to(report['base'])}".replace("s0", "s$SEED") in x)
        cells = [c.strip() for c in line.split("|")]
        assert cells[2] == f"{final['test']['accuracy'] * 100:.1f}"
        assert cells[3] == f"{final['test']['macro_f1'] * 100:.1f}"
    # a 10% static run trained on exactly the rows of its selection, for the same epochs as full KD
    steps = {name: r["steps"][0] for name, r in rows.items()}
    assert steps["static-entropy-10"] == int(np.ceil(20 / 16)) and steps["full"] == int(np.ceil(200 / 16))
    assert steps["matched-random-10"] >= steps["full"] - 1


def test_a_rerun_reuses_every_finished_run(report):
    before = {p: p.stat().st_mtime for p in report["runs"].glob("*/summary.json")}
    done = subprocess.run(report["cmd"], capture_output=True, text=True, cwd=report["base"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert {p: p.stat().st_mtime for p in report["runs"].glob("*/summary.json")} == before
    assert not re.search(r"seed 0: ", done.stdout)  # no run was started again
