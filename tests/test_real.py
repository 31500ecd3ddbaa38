"""The real all-MiniLM-L6-v2 on a few hundred real tweets (wheels from PyPI, no hub)."""

from pathlib import Path

import numpy as np
import pytest

import selectkd
from selectkd import assets
from selectkd.cache.arrays import column_matrix
from selectkd.cache.store import Store
from selectkd.finetune import finetune

REPO_CACHE = Path(__file__).resolve().parents[1] / "cache"


@pytest.mark.slow
def test_real_minilm_scores_real_tweets(tmp_path):
    assets.install(REPO_CACHE, models=["minilm-l6"], data=["tweets-binary"])
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "assets").symlink_to(REPO_CACHE / "assets")

    teacher = finetune("tweets-binary", "minilm-l6", tmp_path / "teacher", limit=400, head_only=True,
                       cache_dir=cache, progress=False, eval_split=None)
    assert teacher.metrics["train_accuracy"] > 0.75

    data = selectkd.DataSpec("tweets-binary", split="dev", limit=300)
    scoring = selectkd.ScoreSpec(teachers=(str(tmp_path / "teacher"),), student="minilm-l6")
    res = selectkd.score(data, scoring, cache_dir=cache, progress=False)
    store = Store(cache)
    t_entry = store.entry("teacher", res.teachers[0].key)
    logits = column_matrix(t_entry.read_parts(), "logits")
    labels = res.rows.labels
    majority = np.bincount(labels).max() / len(labels)
    teacher_acc = (logits.argmax(1) == labels).mean()
    assert teacher_acc > majority, (teacher_acc, majority)  # the head learned the task, on rows it never saw

    s_entry = store.entry("student", res.student.key)
    probe = s_entry.manifest()["probe"]
    assert probe["heldout_agreement_with_teacher"] >= 0.8, probe
    scores = s_entry.read_file("scores.arrow")
    assert scores.num_rows == 300 and np.isfinite(scores.column("entropy").to_numpy()).all()
    assert store.entry("student", res.student.key).verify() == []

    again = selectkd.score(data, scoring, cache_dir=cache, progress=False)
    assert again.teachers[0].reused and again.student.reused
