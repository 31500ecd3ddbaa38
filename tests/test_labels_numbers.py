"""Silently wrong numbers, through the real command: labels mapped by the training rows' names (and
a teacher's own names), a loss that turns non-finite, a dev score where the data has no dev split,
and what --budget 1 means. The one-line refusals are in tests/test_bad_input.py."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pytest
import torch

from selectkd.cache.arrays import column_matrix
from selectkd.cache.store import EntryWriter, Store, part_name
from selectkd.data.holdout import holdout_split

from .conftest import build_bert, build_tokenizer, make_rows, run_cli, write_csv

SPAM = {"negative": "ham", "positive": "spam"}


@pytest.fixture(scope="module")
def spam(tmp_path_factory):
    """train.csv (300 rows of ham/spam), test files, a fine-tuned teacher (saved with id2label ham, spam),
    the same teacher with its classes in the other order (spam, ham), and a student without a head."""
    from selectkd.finetune import finetune

    base = tmp_path_factory.mktemp("spam")
    rows = [{**r, "label": SPAM[r["label"]]} for r in make_rows(400, seed=5, max_words=6)]
    files = {"train": write_csv(base / "train.csv", rows[:300]), "test": write_csv(base / "test.csv", rows[300:]),
             "spam_only": write_csv(base / "spam_only.csv", [r for r in rows[300:] if r["label"] == "spam"])}
    tok = build_tokenizer(base / "tok", [r["text"] for r in rows])
    raw = build_bert(base / "raw", tok, num_labels=2, seed=1)
    cache = base / "cache"
    res = finetune(str(files["train"]), str(raw), base / "teacher", eval_data=str(files["test"]), epochs=6, lr=5e-3,
                   cache_dir=cache, progress=False)
    assert res.metrics["eval"]["accuracy"] > 0.9
    flipped = flip_classes(base / "teacher", base / "flipped")
    student = build_bert(base / "student", tok, num_labels=None, layers=1, seed=2)
    return {"base": base, "cache": cache, "teacher": base / "teacher", "flipped": flipped, "student": student, **files}


def flip_classes(src, dst):
    """The same classifier saved with its classes in the other order: logit 0 is now spam."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(src)
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight.flip(0))
        model.classifier.bias.copy_(model.classifier.bias.flip(0))
    model.config.id2label, model.config.label2id = {0: "spam", 1: "ham"}, {"spam": 0, "ham": 1}
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


def distill_args(spam, out, *extra):
    return ["distill", "--data", str(spam["train"]), "--teacher", str(spam["teacher"]), "--student",
            str(spam["student"]), "--out", str(out), "--lr", "5e-3", "--epochs", "4", "--min-steps", "0",
            "--kd-loss", "mse", "--no-progress", *extra]


# -- labels ------------------------------------------------------------------------------------------

def test_a_test_file_of_one_class_is_scored_by_the_training_names(spam, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = tmp_path / "run"
    run_cli(*distill_args(spam, run, "--test-data", str(spam["spam_only"])), cache=spam["cache"], check=True)
    reported = json.loads((run / "summary.json").read_text())["test"]["accuracy"]
    # what the saved student really says about the spam rows, read through its own class names
    student = AutoModelForSequenceClassification.from_pretrained(run / "student").eval()
    texts = [line.rsplit(",", 1)[0] for line in spam["spam_only"].read_text().splitlines()[1:]]
    batch = AutoTokenizer.from_pretrained(run / "student")(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        said = [student.config.id2label[int(i)] for i in student(**batch).logits.argmax(-1)]
    truth = round(float(np.mean([s == "spam" for s in said])), 4)
    assert reported == truth and truth > 0.8, (reported, truth)  # per-file mapping made spam class 0: 1 - truth


def test_a_teacher_saved_with_other_class_order_maps_the_data_to_its_names(spam, tmp_path):
    """KD alone (no CE on gold labels): the student learns the flipped teacher's class order, so the
    test rows must take the teacher's ids too, or the accuracy comes out inverted."""
    run = tmp_path / "run"
    args = distill_args(spam, run, "--test-data", str(spam["test"]), "--ce-alpha", "0", "--lr", "2e-2")
    args[args.index(str(spam["teacher"]))] = str(spam["flipped"])
    run_cli(*args, cache=spam["cache"], check=True)
    assert json.loads((run / "summary.json").read_text())["test"]["accuracy"] > 0.8
    assert json.loads((run / "student" / "config.json").read_text())["id2label"] == {"0": "spam", "1": "ham"}


# -- a loss that turns non-finite --------------------------------------------------------------------

def plant_teacher_logit(cache, row: int, value: float) -> None:
    """Give one row a finite but huge teacher logit, rewritten with valid checksums (as score would)."""
    store = Store(cache)
    (entry,) = [e for e in store.entries() if e.kind == "teacher"]
    table = entry.read_parts()
    logits = column_matrix(table, "logits").copy()
    logits[row] = [value, -value]
    column = pa.FixedSizeListArray.from_arrays(pa.array(logits.ravel()), logits.shape[1])
    table = table.set_column(table.schema.get_field_index("logits"), "logits", column)
    writer = EntryWriter(entry, entry.manifest()["inputs"])
    for name in entry.part_names():
        (entry.path / name).unlink()
    writer.manifest["files"] = {}
    writer.write_table(part_name(0), table)
    writer.finish()


def test_a_loss_that_turns_non_finite_stops_the_run_and_keeps_the_last_good_checkpoint(spam, tmp_path):
    from selectkd.selection.choose import choose
    from selectkd.selection.strategies import Pool

    cache = tmp_path / "cache"
    common = ["--data", str(spam["train"]), "--teacher", str(spam["teacher"])]
    run_cli("score", *common, "--student", str(spam["student"]), "--no-progress", cache=cache, check=True)
    # dynamic random selection of half the rows: epoch 1 trains on seed 0's half, epoch 2 on seed 1's;
    # a row only epoch 2 sees gets a teacher logit of 1e38, whose squared error overflows to inf
    pool = Pool(np.arange(300), np.zeros(300, dtype=np.int64), *np.zeros((3, 300)))
    first, second = (set(choose(pool, "random", 150, seed=s).indices.tolist()) for s in (0, 1))
    plant_teacher_logit(cache, min(second - first), 1e38)
    run = tmp_path / "run"
    proc = run_cli(*distill_args(spam, run, "--eval-data", str(spam["test"]), "--budget", "0.5", "--strategy", "random",
                                 "--epochs", "3"), cache=cache)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    step = re.search(r"the training loss became inf at step (\d+) \(epoch 2\)", lines[0])
    assert len(lines) == 1 and step and 5 < int(step[1]) <= 10, lines  # 5 steps of 32 rows an epoch
    assert f"{run / 'checkpoint'} holds epoch 1" in lines[0] and "lower --lr" in lines[0]
    assert not (run / "student").exists() and not (run / "summary.json").exists()
    assert json.loads((run / "checkpoint" / "state.json").read_text())["epoch"] == 1
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1] and np.isfinite(records[0]["train_loss"])


def test_finetune_stops_at_a_non_finite_loss_and_saves_nothing(spam, tmp_path):
    out = tmp_path / "teacher"
    proc = run_cli("finetune", "--data", str(spam["train"]), "--model", str(spam["base"] / "raw"), "--out", str(out),
                   "--lr", "1e30", "--no-progress", cache=spam["cache"])
    assert proc.returncode == 2 and proc.stderr.startswith("error: the training loss became nan at step 2 (epoch 1)")
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()
    assert not list(tmp_path.glob(".teacher.tmp-*"))


# -- dev rows where the data has none -----------------------------------------------------------------

def test_holdout_split_is_seeded_stratified_and_disjoint():
    labels = np.repeat([0, 1, 2], [60, 30, 10])
    train, dev = holdout_split(labels, 0.1, seed=0)
    assert np.bincount(labels[dev]).tolist() == [6, 3, 1] and len(train) == 90
    assert not set(train) & set(dev) and sorted([*train, *dev]) == list(range(100))
    assert np.array_equal(dev, holdout_split(labels, 0.1, seed=0)[1])
    assert not np.array_equal(dev, holdout_split(labels, 0.1, seed=1)[1])
    assert len(holdout_split(np.array([0, 0, 1]), 0.5, 0)[1]) == 1  # a class's last row is never held out


def test_distill_and_finetune_without_dev_data_hold_out_a_dev_part(spam, tmp_path):
    from selectkd.distillation.config import DistillConfig, finished_summary

    run = tmp_path / "run"
    proc = run_cli(*distill_args(spam, run), cache=spam["cache"], check=True)
    assert "held out 10% of the training rows (30) as dev" in proc.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["dev"] == {"holdout": 0.1, "rows": 30, "held_out_rows": 30}
    assert summary["best_dev"]["accuracy"] > 0.5 and summary["student_rows_forward_backward"] == 4 * 270
    assert json.loads((run / "config.json").read_text())["holdout"] == 0.1
    # the bench's reuse sees the same run; a run made before holdout existed trained on every row: not reused
    cfg = DistillConfig.from_options(data=str(spam["train"]), teachers=[str(spam["teacher"])], student=str(spam["student"]),
                        out=str(run), lr=5e-3, epochs=4, min_steps=0, kd_loss="mse", cache_dir=str(spam["cache"]))
    assert finished_summary(run, cfg) == summary
    saved = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({k: v for k, v in saved.items() if k != "holdout"}))
    assert finished_summary(run, cfg) is None
    proc = run_cli(*distill_args(spam, run, "--resume"), cache=spam["cache"])
    assert proc.returncode == 2 and "other settings (holdout)" in proc.stderr

    out = tmp_path / "teacher"
    proc = run_cli("finetune", "--data", str(spam["train"]), "--model", str(spam["base"] / "raw"), "--out", str(out),
                   "--epochs", "1", "--lr", "5e-3", "--no-progress", cache=spam["cache"], check=True)
    assert "held out 10% of the training rows (30) as dev" in proc.stdout and "(270 rows" in proc.stdout
    record = json.loads((out / "selectkd_finetune.json").read_text())
    assert record["train_rows"] == 270 and record["dev"]["held_out_rows"] == 30 and "eval" in record["metrics"]
    proc = run_cli("finetune", "--data", str(spam["train"]), "--model", str(spam["base"] / "raw"), "--out", str(out),
                   "--epochs", "1", "--holdout", "0", "--overwrite", "--no-progress", cache=spam["cache"], check=True)
    assert "no dev evaluation ran" in proc.stdout and "(300 rows" in proc.stdout


# -- --budget 1 ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("budget", ["1", "1.0"])
def test_budget_1_selects_every_row(tiny, tmp_path, budget):
    cache = tmp_path / "cache"
    proc = run_cli("select", "--data", str(tiny["csv"]), "--teacher", str(tiny["teacher"]), "--student",
                   str(tiny["student"]), "--budget", budget, "--name", "all", "--no-progress", cache=cache, check=True)
    assert "saved selection 'all' (300 rows)" in proc.stdout
    provenance = json.loads((cache / "selections" / "all" / "provenance.json").read_text())
    assert provenance["rows"] == 300 and provenance["parameters"]["budget"] == 1.0


def test_budget_2_is_a_count():
    from selectkd.selection.choose import budget_rows, parse_budget

    assert budget_rows(parse_budget("2"), 300) == 2 and budget_rows(parse_budget("1"), 300) == 300
    assert budget_rows(parse_budget("0.5"), 300) == 150


# -- metrics -------------------------------------------------------------------------------------------

def test_classification_metrics_hand_computed_and_empty():
    from selectkd.metrics import classification_metrics

    # class 0: tp 2, fp 0, fn 1 -> F1 4/5; class 1: tp 1, fp 1, fn 0 -> F1 2/3
    got = classification_metrics(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]), 2)
    assert got == {"accuracy": 0.75, "macro_f1": round((0.8 + 2 / 3) / 2, 4)}
    assert classification_metrics(np.array([], dtype=np.int64), np.array([], dtype=np.int64), 2) == \
        {"accuracy": 0.0, "macro_f1": 0.0}
