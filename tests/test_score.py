import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import selectkd
from selectkd.cache.arrays import column_matrix
from selectkd.cache.store import Store
from selectkd.errors import SelectKDError
from selectkd.scoring import student as student_mod
from selectkd.scoring import teacher as teacher_mod
from selectkd.scoring.tokens import length_batches
from selectkd.specs import DataSpec, ScoreSpec

from .conftest import build_bert, run_cli, write_csv


def test_length_batches_group_similar_lengths():
    lengths = np.array([5, 50, 6, 49, 7, 48])
    batches = length_batches(lengths, 2)
    assert [sorted(lengths[b].tolist()) for b in batches] == [[49, 50], [7, 48], [5, 6]]


def test_score_writes_teacher_and_student_and_reuses(tiny, tmp_path, monkeypatch):
    data = DataSpec(str(tiny["csv"]))
    scoring = ScoreSpec(teachers=(str(tiny["teacher"]),), student=str(tiny["student"]), cls_states=True)
    res = selectkd.score(data, scoring, cache_dir=tmp_path, progress=False, part_rows=128)
    t, s = res.teachers[0], res.student
    assert not t.reused and not s.reused
    store = Store(tmp_path)
    tentry = store.entry("teacher", t.key)
    table = tentry.read_parts()
    assert table.num_rows == 300 and len(tentry.part_names()) == 3
    logits = column_matrix(table, "logits")
    assert logits.shape == (300, 2) and np.isfinite(logits).all()
    assert column_matrix(table, "cls").shape == (300, 3 * 32)  # embeddings + 2 layers, hidden 32
    assert table.column("cls").type.value_type == "halffloat"
    # the cached logits are what the model gives for the row, independent of batching
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny["teacher"])
    model = AutoModelForSequenceClassification.from_pretrained(tiny["teacher"]).eval()
    import torch

    with torch.inference_mode():
        direct = model(**tok(tiny["rows"][7]["text"], return_tensors="pt")).logits[0].numpy()
    assert np.allclose(logits[7], direct, atol=1e-4)

    sentry = store.entry("student", s.key)
    scores = sentry.read_file("scores.arrow")
    assert scores.column("uid").to_pylist() == list(range(300))
    ent = scores.column("entropy").to_numpy()
    assert ((ent >= 0) & (ent <= np.log(2) + 1e-6)).all()
    assert column_matrix(scores, "kl").shape == (300, 1)
    manifest = sentry.manifest()
    assert manifest["complete"] and manifest["probe"]["heldout_rows"] == 60
    import faiss

    eentry = store.entry("embedding", res.embedding.key)
    assert manifest["embedding"] == eentry.key and eentry.manifest()["student_forward_rows"] == 300
    index = faiss.read_index(str(eentry.path / "index.faiss"))
    assert index.ntotal == 300
    emb = column_matrix(eentry.read_parts(), "embedding")
    _, ids = index.search(emb[:5].copy(), 1)
    assert ids[:, 0].tolist() == [0, 1, 2, 3, 4]

    # a second identical call runs no model at all
    def boom(*a, **k):
        raise AssertionError("a model was loaded on a warm run")

    monkeypatch.setattr(teacher_mod, "load_classifier", boom)
    monkeypatch.setattr(student_mod, "load_classifier", boom)
    monkeypatch.setattr(student_mod, "load_encoder", boom)
    again = selectkd.score(data, scoring, cache_dir=tmp_path, progress=False, part_rows=128)
    assert again.teachers[0].reused and again.student.reused and again.embedding.reused
    assert again.teachers[0].key == t.key and again.student.key == s.key


def test_a_second_teacher_reuses_the_students_embeddings(tiny, tmp_path, monkeypatch):
    """Adding a teacher re-fits the probe and re-scores uncertainty from the cached embeddings: the student
    never runs (zero forward rows), only the new teacher does."""
    data = DataSpec(str(tiny["csv"]))
    first = selectkd.score(data, ScoreSpec(teachers=(str(tiny["teacher"]),), student=str(tiny["student"])),
                           cache_dir=tmp_path, progress=False)
    second_teacher = build_bert(tmp_path / "t2", tiny["tokenizer"], num_labels=2, seed=7)

    def boom(*a, **k):
        raise AssertionError("the student ran again")

    monkeypatch.setattr(student_mod, "load_encoder", boom)
    monkeypatch.setattr(student_mod, "load_classifier", boom)
    both = selectkd.score(data, ScoreSpec(teachers=(str(tiny["teacher"]), str(second_teacher)),
                                          student=str(tiny["student"])), cache_dir=tmp_path, progress=False)
    assert both.embedding.reused and both.embedding.key == first.embedding.key
    assert not both.student.reused and both.student.key != first.student.key
    manifest = Store(tmp_path).entry("student", both.student.key).manifest()
    assert manifest["student_forward_rows"] == 0 and manifest["embedding"] == first.embedding.key
    assert column_matrix(Store(tmp_path).entry("student", both.student.key).read_file("scores.arrow"), "kl").shape == (300, 2)


def _teacher_key(tiny, cache, data=None, teacher=None, **scoring):
    spec = ScoreSpec(teachers=(str(teacher or tiny["teacher"]),), **scoring)
    return selectkd.score(DataSpec(str(data or tiny["csv"])), spec, cache_dir=cache, progress=False).teachers[0].key


def test_key_sensitivity(tiny, tmp_path):
    base = _teacher_key(tiny, tmp_path, max_length=32)
    assert _teacher_key(tiny, tmp_path, max_length=32) == base
    assert _teacher_key(tiny, tmp_path, max_length=16) != base
    # new weights, same everything else
    other_weights = tmp_path / "t2"
    shutil.copytree(tiny["teacher"], other_weights)
    build_bert(other_weights, tiny["tokenizer"], num_labels=2, seed=99)
    assert _teacher_key(tiny, tmp_path, teacher=other_weights, max_length=32) != base
    # same weights, another tokenizer (lower-casing turned off)
    other_tok = tmp_path / "t3"
    shutil.copytree(tiny["teacher"], other_tok)
    cfg = json.loads((other_tok / "tokenizer.json").read_text())
    cfg["normalizer"]["lowercase"] = False
    (other_tok / "tokenizer.json").write_text(json.dumps(cfg))
    assert _teacher_key(tiny, tmp_path, teacher=other_tok, max_length=32) != base
    # other data
    data2 = write_csv(tmp_path / "other.csv", tiny["rows"][:100])
    assert _teacher_key(tiny, tmp_path, data=str(data2), max_length=32) != base


def test_sigkill_mid_run_then_rerun_gives_the_same_cache(tiny, tmp_path):
    rows = tiny["rows"] * 5  # 1,500 rows in 6 parts: long enough to be killed in the middle
    data = write_csv(tmp_path / "big.csv", rows)
    args = ["score", "--data", str(data), "--teacher", str(tiny["teacher"]), "--batch-size", "8", "--no-progress"]
    env = {**os.environ, "SELECTKD_CACHE": str(tmp_path / "killed"), "SELECTKD_PART_ROWS": "256"}
    proc = subprocess.Popen([sys.executable, "-m", "selectkd", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_store = Store(tmp_path / "killed")
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once some parts but not all are written
        entries = killed_store.entries()
        if entries and entries[0].exists() and len(entries[0].manifest()["files"]) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    entry = killed_store.entries()[0]
    assert not entry.is_complete(), "the run finished before it was killed; make the data larger"
    assert run_cli(*args, cache=tmp_path / "killed", env={"SELECTKD_PART_ROWS": "256"}).returncode == 0
    assert run_cli(*args, cache=tmp_path / "clean", env={"SELECTKD_PART_ROWS": "256"}).returncode == 0
    clean = Store(tmp_path / "clean").entries()[0]
    assert clean.key == entry.key and entry.is_complete()
    assert run_cli("cache", "verify", cache=tmp_path / "killed").returncode == 0
    a, b = entry.read_parts(), clean.read_parts()
    assert a.column("uid").equals(b.column("uid"))
    assert np.array_equal(column_matrix(a, "logits"), column_matrix(b, "logits"))
    assert not list(entry.path.glob(".*tmp*"))


def test_probe_needs_a_teacher(tiny, tmp_path):
    with pytest.raises(SelectKDError, match="--student-head as-is"):
        selectkd.score(DataSpec(str(tiny["csv"])), ScoreSpec(student=str(tiny["student"])), cache_dir=tmp_path,
                       progress=False)


def test_a_weights_free_copy_finds_the_teachers_scores_and_refuses_to_run_it(tiny, tmp_path):
    """A teacher's logits travel without its weights: a weights-free copy has the teacher's fingerprint, so
    score() and `distill` reuse every entry scored with it; what must run it fails in one line naming the fix."""
    from selectkd.errors import ModelError
    from selectkd.models import weights_free_copy

    cache, data = tmp_path / "cache", DataSpec(str(tiny["csv"]))
    first = selectkd.score(data, ScoreSpec(teachers=(str(tiny["teacher"]),), student=str(tiny["student"])),
                           cache_dir=cache, progress=False)
    copy = tmp_path / "teacher-copy"
    made = run_cli("cache", "weights-free", str(tiny["teacher"]), "--out", str(copy), cache=cache)
    assert made.returncode == 0 and f"selectkd distill --teacher {copy}" in made.stdout, made.stderr
    assert not list(copy.glob("*.safetensors")) and (copy / "tokenizer.json").exists()
    again = selectkd.score(data, ScoreSpec(teachers=(str(copy),), student=str(tiny["student"])),
                           cache_dir=cache, progress=False)
    assert again.teachers[0].reused and again.teachers[0].key == first.teachers[0].key
    assert again.student.reused and again.student.key == first.student.key  # keyed by the teacher entries
    entries = sorted(e.path for e in Store(cache).entries())

    # new rows need the teacher itself: refused before anything is written
    with pytest.raises(ModelError, match=r"weights-free copy \(model\.safetensors left out.*copy model\.safetensors "
                                         r"back into"):
        selectkd.score(DataSpec(str(tiny["csv"]), limit=50), ScoreSpec(teachers=(str(copy),)), cache_dir=cache,
                       progress=False)
    assert sorted(e.path for e in Store(cache).entries()) == entries
    proc = run_cli("score", "--data", str(tiny["csv"]), "--limit", "50", "--teacher", str(copy), cache=cache)
    assert proc.returncode == 2 and "copy model.safetensors back into" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr

    # a distillation from the cached logits needs no weights
    proc = run_cli("distill", "--data", str(tiny["csv"]), "--teacher", str(copy), "--student", str(tiny["student"]),
                   "--epochs", "1", "--out", str(tmp_path / "run"), cache=cache)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] > 0

    # the copy replaces only a copy of its own; with its weights back it is the teacher again
    with pytest.raises(ModelError, match="is not a weights-free copy"):
        weights_free_copy(tiny["teacher"], tiny["student"])
    assert list(tiny["student"].glob("*.safetensors"))
    shutil.copy2(tiny["teacher"] / "model.safetensors", copy)
    back = selectkd.score(DataSpec(str(tiny["csv"]), limit=50), ScoreSpec(teachers=(str(copy),)), cache_dir=cache,
                          progress=False)
    assert not back.teachers[0].reused


def test_a_recorded_weight_name_never_leads_outside_the_folder(tmp_path):
    from selectkd.cache.fingerprint import WEIGHTS_RECORD, missing_weights, recorded_weights

    (tmp_path / WEIGHTS_RECORD).write_text(json.dumps({"files": {"../model.safetensors": "ab", "model.bin": "cd",
                                                                 "notes.txt": "ef", "model.pt": 3}}))
    assert recorded_weights(tmp_path) == {"model.bin": "cd"}
    assert missing_weights(tmp_path) == ["model.bin"]
    (tmp_path / WEIGHTS_RECORD).write_text("not json")
    assert recorded_weights(tmp_path) == {}
