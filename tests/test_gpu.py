"""The CUDA path, where a GPU is (skipped elsewhere): the rest of the suite hides GPUs (conftest) because it checks
CPU float32 numbers exactly. Here the commands see the GPU again, as a user's would."""

from __future__ import annotations

import json

import numpy as np
import pytest

from .conftest import GPU_ENV, run_cli

pytestmark = pytest.mark.skipif(GPU_ENV is None, reason="no GPU on this machine")


def test_score_and_distill_run_on_cuda_under_bf16_autocast(tiny, tmp_path):
    from selectkd.cache.arrays import column_matrix
    from selectkd.cache.store import Store

    cache = tmp_path / "cache"
    models = ["--data", str(tiny["csv"]), "--teacher", str(tiny["teacher"]), "--student", str(tiny["student"]),
              "--max-length", "32", "--no-progress"]
    for device in ("cuda", "cpu"):
        run_cli("score", *models, "--device", device, cache=cache, env=GPU_ENV, check=True)
    teachers = {e.manifest()["inputs"]["numerics"]: e for e in Store(cache).entries() if e.kind == "teacher"}
    assert set(teachers) == {"bf16-autocast", "float32"}  # the numerics are part of the key: two entries
    gpu, cpu = (column_matrix(teachers[n].read_parts(), "logits") for n in ("bf16-autocast", "float32"))
    assert gpu.shape == cpu.shape == (len(tiny["rows"]), 2)
    assert np.abs(gpu - cpu).max() < 0.05 and (gpu.argmax(1) == cpu.argmax(1)).mean() >= 0.9

    run = tmp_path / "run"
    run_cli("distill", *models, "--device", "cuda", "--max-steps", "20", "--out", str(run), cache=cache, env=GPU_ENV,
            check=True)
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["device"], summary["numerics"]) == ("cuda", "bf16-autocast")
    assert summary["steps"] == 20 and summary["teacher_forwards"] == 0  # the logits came from the cache
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in epochs if "train_loss" in r]
    assert losses and np.isfinite(losses).all()
