"""`selectkd plot`: time-to-accuracy curves from run folders written by hand (no model is trained)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selectkd.distillation.curves import read_curve
from selectkd.outputs import PNG_SIGNATURE

from .conftest import run_cli


def fake_run(path: Path, rows: list[dict], summary: dict | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"train": {"epochs": 2}}))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))
    return path


def dev(acc: float) -> dict:
    return {"accuracy": acc, "macro_f1": acc - 0.05}


@pytest.fixture
def runs(tmp_path):
    full = fake_run(tmp_path / "full-kd", [
        {"epoch": 1, "step": 50, "train_loss": 0.9, "train_rows": 400, "dev": dev(0.70)},
        {"epoch": 2, "step": 100, "train_loss": 0.6, "train_rows": 400, "dev": dev(0.80)},
    ], {"seconds": {"train": 40.0, "eval": 3.0}, "steps": 100})
    subset = fake_run(tmp_path / "random-10pct", [
        {"step": 5, "seconds": 1.5, "dev": dev(0.60)},
        {"step": 10, "seconds": 3.0, "dev": dev(0.72)},
        {"epoch": 1, "step": 10, "seconds": 3.0, "train_loss": 0.8, "train_rows": 40, "dev": dev(0.72)},
    ], {"seconds": {"train": 3.0}, "steps": 10})
    return full, subset


def test_read_curve_places_epoch_rows_by_step(runs):
    full, subset = runs
    c = read_curve(full)
    assert c.name == "full-kd" and c.seconds == [20.0, 40.0] and c.accuracy == [0.70, 0.80]
    assert read_curve(subset).seconds == [1.5, 3.0, 3.0]  # logged seconds are used as they are


def test_plot_writes_a_png(runs, tmp_path):
    full, subset = runs
    out = tmp_path / "c.png"
    proc = run_cli("plot", str(full), str(subset), "--out", str(out), cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    proc = run_cli("plot", str(subset), "--reference", str(full), "--out", str(out), cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr  # an earlier PNG is replaced
    assert out.read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.parametrize("args, words", [
    (["NOT_A_RUN"], ("is not a run folder", "selectkd distill --out")),
    (["NO_DEV"], ("has no dev accuracy", "with dev data")),
    ([], ("no RUN_DIR given",)),
    (["full-kd", "--reference", "NOT_A_RUN"], ("is not a run folder",)),
])
def test_bad_input_is_one_line(runs, tmp_path, args, words):
    (tmp_path / "NOT_A_RUN").mkdir()
    fake_run(tmp_path / "NO_DEV", [{"epoch": 1, "step": 10, "train_loss": 0.5, "train_rows": 40}])
    out = tmp_path / "c.png"
    argv = [str(tmp_path / a) if a.isupper() or a == "full-kd" else a for a in args]
    proc = run_cli("plot", *argv, "--out", str(out), cache=tmp_path / "cache")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), proc.stderr
    assert not out.exists()


def test_out_that_is_not_a_png_is_refused(runs, tmp_path):
    full, _ = runs
    out = tmp_path / "notes.png"
    out.write_text("mine\n")
    proc = run_cli("plot", str(full), "--out", str(out), cache=tmp_path / "cache")
    assert proc.returncode == 2 and "selectkd did not make" in proc.stderr and "--out" in proc.stderr
    assert out.read_text() == "mine\n"


def test_time_to_accuracy_reads_the_two_headline_figures_off_the_curves(tmp_path):
    from selectkd.distillation.curves import time_to_accuracy

    full = fake_run(tmp_path / "full", [{"step": s, "seconds_train": 10.0 * s, "dev": dev(a)}
                                        for s, a in ((1, 0.70), (5, 0.85), (10, 0.90))], {"seconds": {"train": 100.0}})
    subset = fake_run(tmp_path / "subset", [{"step": s, "seconds_train": t, "dev": dev(a)}
                                            for s, t, a in ((0, 1.0, 0.80), (1, 10.0, 0.86), (2, 20.0, 0.895))])
    tta = time_to_accuracy(read_curve(subset), read_curve(full))
    # 15% of full's 100 s is 15 s: the subset's last point by then is 0.86; 99% of 0.90 is 0.891, reached at 20 s
    assert tta["mark_seconds"] == 15.0 and tta["dev_accuracy_at_mark"] == 0.86
    assert tta["target_dev_accuracy"] == 0.891 and tta["seconds_to_target"] == 20.0
    slow = fake_run(tmp_path / "slow", [{"step": 1, "seconds_train": 30.0, "dev": dev(0.5)}])
    never = time_to_accuracy(read_curve(slow), read_curve(full))
    assert never["dev_accuracy_at_mark"] is None and never["seconds_to_target"] is None
