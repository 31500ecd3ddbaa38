"""The distillation trainer end to end: the selection modes, resume, DDP, the refusals, the cache entries it
uses (the losses, active sets and signals have their own tests)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from selectkd.cache.store import EntryWriter, Store, part_name
from selectkd.distillation.loop import DistillConfig, distill
from selectkd.errors import SelectKDError
from selectkd.finetune import finetune

from .conftest import build_bert, build_tokenizer, make_rows, run_cli, write_csv

# -- a tiny task the tiny models can learn ------------------------------------------------------------

@pytest.fixture(scope="module")
def task(tmp_path_factory):
    base = tmp_path_factory.mktemp("distill")
    rows = make_rows(500, seed=5, max_words=6)
    paths = {name: write_csv(base / f"{name}.csv", part)
             for name, part in (("train", rows[:300]), ("dev", rows[300:400]), ("test", rows[400:]))}
    tok = build_tokenizer(base / "tok", [r["text"] for r in rows])
    raw_teacher = build_bert(base / "teacher0", tok, num_labels=2, seed=1)
    student = build_bert(base / "student", tok, num_labels=None, layers=1, seed=2)
    cache = base / "cache"
    teacher = finetune(str(paths["train"]), str(raw_teacher), base / "teacher", eval_data=str(paths["dev"]),
                       epochs=6, lr=5e-3, cache_dir=cache, progress=False)
    assert teacher.metrics["eval"]["accuracy"] > 0.9
    return {"base": base, "cache": cache, "teacher": str(base / "teacher"), "student": str(student), "tok": tok, **paths}


def config(task, out, **kw):
    base = dict(data=str(task["train"]), teachers=[task["teacher"]], student=task["student"], out=str(out),
                eval_data=str(task["dev"]), test_data=str(task["test"]), lr=5e-3, epochs=3, min_steps=0,
                cache_dir=str(task["cache"]))
    return DistillConfig.from_options(**{**base, **kw})


def test_end_to_end_beats_the_untrained_student_and_saves_a_loadable_model(task, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from selectkd.data.rows import DataSpec, load_rows
    from selectkd.finetune import evaluate

    res = distill(config(task, tmp_path / "run"), progress=False)
    dev = load_rows(DataSpec(str(task["dev"])), task["cache"])
    torch.manual_seed(0)
    untrained = AutoModelForSequenceClassification.from_pretrained(task["student"], num_labels=2)
    before = evaluate(untrained, dev, task["tok"], 128, 64, "cpu")["accuracy"]
    assert res.best_dev["accuracy"] >= before + 0.3, (before, res.best_dev)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if "epoch" in r] == [1, 2, 3] and records[-1]["final"]
    assert res.summary["teacher_forwards"] == 0 and res.summary["student_rows_forward_backward"] == 900
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "student")
    assert evaluate(loaded, dev, task["tok"], 128, 64, "cpu")["accuracy"] == records[-2]["dev"]["accuracy"]


@pytest.mark.parametrize("mode", [dict(in_batch=0.5), dict(budget="0.5", strategy="entropy"),
                                  dict(budget="0.5", strategy="coverage", clusters=4, rescore_pool=0.5),
                                  dict(budget="0.5", strategy="margin", clusters=4, rescore_pool=0.5, rescore_by="cluster"),
                                  dict(budget="0.5", strategy="entropy", reselect_every=0)])
def test_selection_modes_train_on_what_they_say(task, tmp_path, mode):
    res = distill(config(task, tmp_path / "run", **mode), progress=False)
    rows_per_epoch = 150 if "budget" in mode else 300
    assert res.summary["student_rows_forward_backward"] == 3 * rows_per_epoch
    if "budget" in mode:  # re-scoring the pool is paid for and counted, unless the rows are chosen only once
        once = mode.get("reselect_every") == 0  # from the cached scores
        assert (res.summary["seconds"]["rescore"] == 0) == once, res.summary["seconds"]
    if "in_batch" in mode:  # every row still gets CE, so it must learn; a top-k subset may collapse
        assert res.best_dev["accuracy"] > 0.6
    # a dynamic run keeps the rows of each choice, by uid, where metrics.jsonl points
    from pyarrow import feather

    from selectkd.data.rows import DataSpec, load_rows

    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    named = [r.get("rows_file") for r in records if "epoch" in r]
    chosen = [] if "budget" not in mode else [0] if mode.get("reselect_every") == 0 else [0, 1, 2]
    assert named == [f"rows/epoch-{e + 1:03d}.arrow" if e in chosen else None for e in range(3)]
    assert sorted(p.name for p in (tmp_path / "run").glob("rows/*")) == [Path(n).name for n in named if n]
    train = load_rows(DataSpec(str(task["train"])), task["cache"])
    label_of = dict(zip(train.uids.tolist(), train.labels.tolist()))
    for name in filter(None, named):
        table = feather.read_table(tmp_path / "run" / name)  # Arrow IPC: Feather v2
        assert table.column_names == ["uid", "label"] and table.num_rows == 150
        uids = table["uid"].to_pylist()
        assert len(set(uids)) == 150 and [label_of[u] for u in uids] == table["label"].to_pylist()


@pytest.mark.parametrize("strategy", ["random", "ccs", "confident_uncertain", "uncertainty_sampling"])
def test_distill_choosing_once_trains_on_the_rows_select_saves(task, tmp_path, strategy):
    """`distill --budget 0.1 --strategy S --reselect-every 0` starts from the rows `select --budget 0.1 --strategy S`
    saves for the same seed, each with its own defaults: a static default inside distill is the static selection
    the study measures (bench/reproduce.py's static-S-10 runs)."""
    from selectkd.distillation.active import Dynamic
    from selectkd.scoring.run import score
    from selectkd.selection.choose import budget_rows
    from selectkd.selection.saved import load_selection

    cfg = config(task, tmp_path / "run", budget="0.1", strategy=strategy, reselect_every=0, seed=3)
    scored = score(cfg.data, cfg.scoring, cache_dir=task["cache"], progress=False)
    pool = np.arange(len(scored.rows.uids))  # --eval-data given: no row is held out
    active = Dynamic(scored.rows.uids, scored.rows.labels, pool, cfg.selecting, budget_rows(cfg.selecting.budget, len(pool)),
                     scored=scored, teacher_logits=None, student_scores=None, every=0)
    trained = scored.rows.uids[active.rows_for_epoch(0)]
    run_cli("select", "--data", str(task["train"]), "--teacher", task["teacher"], "--student", task["student"],
            "--budget", "0.1", "--strategy", strategy, "--seed", "3", "--name", f"once-{strategy}",
            cache=task["cache"], check=True)
    saved = load_selection(task["cache"], f"once-{strategy}")
    assert len(trained) == 30 and sorted(trained.tolist()) == sorted(saved.uids.tolist())


def test_adoption_and_objective_run(task, tmp_path):
    second = build_bert(task["base"] / "teacher-big", task["tok"], num_labels=2, layers=2, hidden=64, seed=3)
    res = distill(config(task, tmp_path / "adopt", teachers=[task["teacher"], str(second)], adoption="soft-instance",
                         epochs=1), progress=False)
    assert res.summary["teacher_cache_keys"][0] != res.summary["teacher_cache_keys"][1]
    res = distill(config(task, tmp_path / "obj", objective="uncertainty", pt_alpha=1.0, epochs=1), progress=False)
    assert res.summary["teacher_forwards"] == 0
    res = distill(config(task, tmp_path / "live", pt_alpha=1.0, live_teacher=True, epochs=1), progress=False)
    assert res.summary["teacher_forwards"] == 300


def test_kill_and_resume_gives_the_same_final_weights(task, tmp_path):
    from safetensors.torch import load_file

    args = ["distill", "--data", str(task["train"]), "--eval-data", str(task["dev"]), "--test-data", str(task["test"]),
            "--teacher", task["teacher"], "--student", task["student"], "--lr", "5e-3", "--epochs", "4", "--min-steps", "0",
            "--no-progress", "--seed", "3"]
    env = {**os.environ, "SELECTKD_CACHE": str(task["cache"])}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "selectkd", *args, "--out", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (killed / "checkpoint" / "state.json").exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists(), "finished before it was killed"
    assert run_cli(*args, "--out", str(killed), "--resume", cache=task["cache"]).returncode == 0
    assert run_cli(*args, "--out", str(tmp_path / "clean"), cache=task["cache"]).returncode == 0
    a = load_file(str(killed / "student" / "model.safetensors"))
    b = load_file(str(tmp_path / "clean" / "student" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    final = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in final if "epoch" in r] == [1, 2, 3, 4]


def test_a_killed_finetune_resumes_to_the_same_weights_and_cleans_up(task, tmp_path):
    from safetensors.torch import load_file

    args = ["finetune", "--data", str(task["train"]), "--eval-data", str(task["dev"]), "--model",
            str(task["base"] / "teacher0"), "--lr", "5e-3", "--epochs", "4", "--no-progress", "--seed", "3"]
    env = {**os.environ, "SELECTKD_CACHE": str(task["cache"])}
    killed = tmp_path / "killed"
    ckpt = tmp_path / ".killed.finetune-checkpoint"
    proc = subprocess.Popen([sys.executable, "-m", "selectkd", *args, "--out", str(killed), "--checkpoint-minutes",
                             "0.0001"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (ckpt / "selectkd_finetune_checkpoint.json").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not killed.exists(), "finished before it was killed"
    step = json.loads((ckpt / "selectkd_finetune_checkpoint.json").read_text())["step"]
    assert 0 < step < 40
    # the same command again would lose the checkpoint: refused in one line that names both ways on
    again = run_cli(*args, "--out", str(killed), cache=task["cache"])
    assert again.returncode == 2 and "add --resume to continue it, or --overwrite" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1 and ckpt.exists()
    other = run_cli(*args[:-2], "--seed", "4", "--out", str(killed), "--resume", cache=task["cache"])
    assert other.returncode == 2 and "made with other seed" in other.stderr
    assert run_cli(*args, "--out", str(killed), "--resume", cache=task["cache"]).returncode == 0
    assert not ckpt.exists()  # the finished model replaces the checkpoint
    record = json.loads((killed / "selectkd_finetune.json").read_text())
    assert record["metrics"]["resumed_at_step"] == step  # and its seconds include those before the kill
    assert record["seconds"] >= record["metrics"]["seconds_before_resume"] > 0
    assert run_cli(*args, "--out", str(tmp_path / "clean"), cache=task["cache"]).returncode == 0
    a = load_file(str(killed / "model.safetensors"))
    b = load_file(str(tmp_path / "clean" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the same weights are the same teacher to the cache, whatever each fit's own record says it cost
    from selectkd.cache.fingerprint import model_fingerprint
    assert model_fingerprint(killed) == model_fingerprint(tmp_path / "clean")


# -- schedules by compute: --max-steps, --time-budget, --eval-every --------------------------------------

def test_max_steps_trains_exactly_n_steps_and_eval_every_logs_dev_points(task, tmp_path):
    res = distill(config(task, tmp_path / "run", max_steps=13, eval_every=4, epochs=1), progress=False)
    assert res.summary["steps"] == 13 and res.summary["stopped"] == "max steps"  # 10 steps an epoch: 1 epoch + 3
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in records if "epoch" in r] == [(1, 10), (2, 13)]
    points = [r for r in records if "epoch" not in r and "final" not in r]
    assert [p["step"] for p in points] == [0, 4, 8, 12]  # 0: the student before training
    seconds, trained = [p["seconds_train"] for p in points], [p["student_rows_trained"] for p in points]
    assert seconds == sorted(seconds) and seconds[1] > 0 and seconds[-1] <= res.summary["seconds"]["train"] + 0.01
    assert trained == sorted(trained) and len(set(trained)) == 4 and trained[-1] < res.summary["student_rows_forward_backward"]
    assert all(set(p["dev"]) == {"accuracy", "macro_f1"} for p in points)
    sched = torch.load(tmp_path / "run" / "checkpoint" / "optim.pt", weights_only=True)["scheduler"]
    assert sched["last_epoch"] == 13 and sched["_last_lr"] == [0.0]  # decayed over the 13 real steps


def test_schedule_reaches_zero_at_the_last_real_step():
    from selectkd.distillation.loop import optimizer, run_steps
    from selectkd.specs import TrainSpec

    spec = TrainSpec(epochs=3, lr=1.0, warmup=0.1, max_steps=7)
    assert run_steps(spec, 10) == 7 and run_steps(TrainSpec(epochs=3, min_steps=0), 10) == 30
    assert run_steps(TrainSpec(epochs=3, min_steps=0, time_budget=5.0), 10) == 30  # the budget's end is not known
    assert run_steps(TrainSpec(epochs=3, min_steps=100), 9) == 108  # a small subset: whole epochs up to the floor
    assert run_steps(TrainSpec(epochs=3, min_steps=100), 50) == 150 and run_steps(TrainSpec(epochs=3, min_steps=0), 9) == 27
    opt, sched = optimizer([torch.nn.Parameter(torch.zeros(1))], spec, run_steps(spec, 10))
    used = []
    for _ in range(7):
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert all(lr > 0 for lr in used) and opt.param_groups[0]["lr"] == 0.0


def test_a_time_budget_decays_the_learning_rate_by_seconds_to_zero_when_it_runs_out():
    from selectkd.distillation.loop import lr_factor

    # 1,000 planned steps, a 10 s budget: warm-up over the first second, then linear decay to 0 at 10 s
    assert lr_factor(0, 1000, 0.1, seconds=0.5, budget=10.0) == pytest.approx(0.5)
    assert lr_factor(20, 1000, 0.1, seconds=5.5, budget=10.0) == pytest.approx(0.5)
    assert lr_factor(30, 1000, 0.1, seconds=10.0, budget=10.0) == 0.0
    assert lr_factor(999, 1000, 0.1, seconds=1.0, budget=10.0) == pytest.approx(1 / 900)  # the steps end first


def test_a_run_cut_by_its_time_budget_ends_near_lr_zero(task, tmp_path):
    res = distill(config(task, tmp_path / "run", epochs=50, time_budget=1.0, lr=1e-3), progress=False)
    s = res.summary
    assert s["stopped"] == "time budget" and 1 < s["steps"] < 500 and s["seconds"]["train"] >= 1.0
    assert s["lr_at_end"] < 0.1 * 1e-3  # a step-based schedule would still be near its peak here


def test_time_budget_stops_after_the_first_step(task, tmp_path):
    res = distill(config(task, tmp_path / "run", time_budget=0.001, head_init="random"), progress=False)
    assert res.summary["steps"] == 1 and res.summary["stopped"] == "time budget"
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "epoch" in r] == [1] and records[-1]["final"]


def test_a_dynamic_run_counts_its_re_scoring_as_training_time(task, tmp_path, monkeypatch):
    """Re-scoring the pool is what dynamic selection pays to train: it is in seconds.train (so in --time-budget
    and the dev curve), or a dynamic run would look cheaper than a static one at equal compute."""
    from selectkd.distillation.active import Dynamic

    real = Dynamic.reselect

    def slow(self, epoch):  # a re-scoring that costs a known second, far more than this tiny run's steps
        time.sleep(1.0)
        return real(self, epoch)

    monkeypatch.setattr(Dynamic, "reselect", slow)
    res = distill(config(task, tmp_path / "run", budget="0.1", strategy="entropy", epochs=3, eval_every=1),
                  progress=False)
    s = res.summary["seconds"]
    assert s["rescore"] >= 2.0 and s["train"] >= s["rescore"] + s["head_init"]  # epochs 2 and 3 re-score
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["seconds_train"] for r in lines if "seconds_train" in r) >= 2.0  # the curve pays it too


def test_eval_every_beyond_the_run_is_refused_before_the_run_folder(task, tmp_path):
    with pytest.raises(SelectKDError, match="--eval-every 31 is more than the run's 30 steps"):
        distill(config(task, tmp_path / "run", eval_every=31), progress=False)
    assert not (tmp_path / "run").exists()


# -- refusals --------------------------------------------------------------------------------------

def test_bad_input_is_refused_before_any_training(task, tmp_path):
    with pytest.raises(SelectKDError, match="two --teacher"):
        distill(config(task, tmp_path / "a", adoption="hard"), progress=False)
    with pytest.raises(SelectKDError, match="--pt-alpha"):
        distill(config(task, tmp_path / "b", objective="uncertainty"), progress=False)
    distill(config(task, tmp_path / "c", epochs=1), progress=False)
    with pytest.raises(SelectKDError, match="--resume.*--overwrite"):
        distill(config(task, tmp_path / "c", epochs=1), progress=False)
    with pytest.raises(SelectKDError, match="other settings"):
        distill(config(task, tmp_path / "c", epochs=2), resume=True, progress=False)
    # a student that segments text differently cannot align token states (its [CLS] state it can)
    other_tok = build_tokenizer(tmp_path / "tok2", ["completely different words here"] * 50)
    odd = build_bert(tmp_path / "odd", other_tok, num_labels=None, layers=1)
    with pytest.raises(SelectKDError, match="split text differently"):
        distill(config(task, tmp_path / "d", pt_alpha=1.0, live_teacher=True, student=str(odd)), progress=False)
    res = distill(config(task, tmp_path / "e", pt_alpha=1.0, student=str(odd), epochs=1), progress=False)
    assert np.isfinite(res.summary["test"]["accuracy"])


def test_selection_from_other_data_is_refused(task, tmp_path):
    from selectkd.selection.run import select
    from selectkd.specs import DataSpec, ScoreSpec, SelectSpec

    other = write_csv(tmp_path / "other.csv", make_rows(120, seed=9, max_words=6))
    select(DataSpec(str(other)), ScoreSpec([task["teacher"]], task["student"]), SelectSpec("random", 20),
           name="elsewhere", cache_dir=task["cache"], progress=False, overwrite=True)
    with pytest.raises(SelectKDError, match="other data"):
        distill(config(task, tmp_path / "e", selection="elsewhere"), progress=False)


def test_nan_in_cached_logits_is_refused(task, tmp_path):
    cache = tmp_path / "nan-cache"
    res = distill(config(task, tmp_path / "f", epochs=1), progress=False)
    key = res.summary["teacher_cache_keys"][0]
    src = Store(task["cache"]).entry("teacher", key)
    dst = Store(cache).entry("teacher", key)
    dst.path.parent.mkdir(parents=True)
    import shutil

    shutil.copytree(src.path, dst.path)
    table = dst.read_parts()
    logits = table.column("logits").combine_chunks().flatten().to_numpy().copy()
    logits[5] = np.nan
    nan_table = table.set_column(1, "logits", pa.FixedSizeListArray.from_arrays(pa.array(logits), 2))
    manifest = dst.manifest()
    w = EntryWriter(dst, manifest["inputs"])
    for name in dst.part_names():
        (dst.path / name).unlink()
    w.manifest["files"] = {}
    w.write_table(part_name(0), nan_table)
    w.finish()
    cfg = config(task, tmp_path / "g", epochs=1, cache_dir=str(cache))
    (cache / "assets").mkdir(exist_ok=True)
    with pytest.raises(SelectKDError, match="NaN or Inf"):
        distill(cfg, progress=False)


def test_torchrun_two_gloo_processes_train_with_ddp(task, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
           "-m", "selectkd", "distill", "--data", str(task["train"]), "--eval-data", str(task["dev"]),
           "--test-data", str(task["test"]), "--teacher", task["teacher"], "--student", task["student"],
           "--lr", "5e-3", "--epochs", "3", "--min-steps", "0", "--batch-size", "16", "--no-progress", "--out", str(out)]
    env = {**os.environ, "SELECTKD_CACHE": str(task["cache"]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    # 300 rows in batches of 16 = 19 batches; each of the 2 ranks steps on 9 of them per epoch
    assert summary["steps"] == 3 * 9
    assert summary["best_dev"]["accuracy"] > 0.6
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in records if "epoch" in r]) == 3  # written once, by rank 0


# -- the teacher entries a run uses ----------------------------------------------------------------------

def teacher_entries(cache) -> list[str]:
    return sorted(p.name for p in (cache / "teacher").iterdir() if (p / "manifest.json").exists())


def test_dynamic_selection_with_alignment_keys_one_teacher_entry(task, tmp_path):
    """The epoch-0 selection reads the same teacher entry (with [CLS] states) as the training signal."""
    cache = tmp_path / "cache"
    res = distill(config(task, tmp_path / "run", pt_alpha=1.0, objective="uncertainty", budget="0.1", epochs=1,
                         cache_dir=str(cache)), progress=False)
    assert teacher_entries(cache) == res.summary["teacher_cache_keys"]


def test_distill_finds_a_teacher_scored_with_an_untrained_head(task, tmp_path):
    headless = build_bert(tmp_path / "headless", task["tok"], num_labels=None, seed=4)
    cache = tmp_path / "cache"
    common = ["--data", str(task["train"]), "--teacher", str(headless), "--allow-untrained-head", "--no-progress"]
    run_cli("score", *common, cache=cache, check=True)
    scored = teacher_entries(cache)
    run_cli("distill", *common, "--student", task["student"], "--eval-data", str(task["dev"]), "--epochs", "1",
            "--out", str(tmp_path / "run"), cache=cache, check=True)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(scored) == 1 and summary["teacher_cache_keys"] == scored and teacher_entries(cache) == scored


# -- a student head that starts informed, enough steps, and a collapse said out loud ----------------------

def test_the_probe_fitted_head_predicts_what_the_probe_predicts_before_training(task):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from selectkd.data.rows import DataSpec, load_rows
    from selectkd.distillation.evaluate import Encoded
    from selectkd.distillation.head import head_features, init_head
    from selectkd.scoring.student import fit_probe

    rows = load_rows(DataSpec(str(task["train"])), task["cache"])
    student = AutoModelForSequenceClassification.from_pretrained(task["student"], num_labels=2)
    enc = Encoded.of(AutoTokenizer.from_pretrained(task["student"]), rows, 128)
    positions = np.arange(0, len(rows), 2)  # the rows a run trains on: any subset
    probs = np.full((len(positions), 2), 0.1) + 0.8 * np.eye(2)[rows.labels[positions]]  # soft labels
    features = head_features(student, enc, positions, 2, "cpu")
    w, b, _ = fit_probe(features, probs, standardize=False)
    fit = init_head(student, enc, positions, probs, 2, "cpu")
    student.eval()
    with torch.no_grad():
        logits = torch.cat([student(**enc.inputs(positions[i:i + 50], "cpu")).logits
                            for i in range(0, len(positions), 50)]).numpy()
    probe = features @ w.T + b
    assert np.allclose(logits, probe, atol=1e-4) and (logits.argmax(1) == probe.argmax(1)).all()
    assert fit["rows"] == len(positions) and fit["train_agreement_with_teacher"] > 0.5


def test_head_init_auto_probes_a_subset_and_keeps_the_fresh_head_on_all_rows():
    base = dict(data="d.csv", teachers=["t"], student="s", out="run")
    head = {mode: DistillConfig.from_options(**base, **kw).train.head_init
            for mode, kw in (("full", {}), ("budget", {"budget": "0.1"}), ("selection", {"selection": "sel"}),
                             ("in-batch", {"in_batch": 0.1}), ("full, asked probe", {"head_init": "probe"}),
                             ("budget, asked random", {"budget": "0.1", "head_init": "random"}))}
    assert head == {"full": "random", "budget": "probe", "selection": "probe", "in-batch": "random",
                    "full, asked probe": "probe", "budget, asked random": "random"}
    # config.json records what auto did: a run resumed with the default compares equal
    cfg = DistillConfig.from_options(**base, budget="0.1")
    assert cfg.options()["head_init"] == "probe" and DistillConfig.from_options(**cfg.options()).train.head_init == "probe"
    # a full-data run saved when probe was the default differs from today's default in the head alone
    from selectkd.distillation.config import config_diff

    old = {**DistillConfig.from_options(**base).options(), "head_init": "probe"}
    assert config_diff(old, DistillConfig.from_options(**base).options()) == ["head_init"]
    assert config_diff(old, DistillConfig.from_options(**base, head_init="probe").options()) == []


def test_a_small_subset_gets_the_step_floor_and_a_probe_head_by_default(task, tmp_path):
    from selectkd.specs import DEFAULT_MIN_STEPS

    res = distill(config(task, tmp_path / "run", budget="30", strategy="random", min_steps=DEFAULT_MIN_STEPS),
                  progress=False)  # 30 rows: 1 step an epoch
    s = res.summary
    assert s["steps"] == DEFAULT_MIN_STEPS and s["epochs"] == DEFAULT_MIN_STEPS and s["lr_at_end"] == 0.0
    assert s["head_init"]["rows"] == 30 and s["seconds"]["head_init"] > 0  # dynamic: on the first selection
    assert s["seconds"]["train"] >= s["seconds"]["head_init"]


def test_a_student_that_collapses_to_one_class_is_flagged(task, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from selectkd.errors import SelectKDWarning

    # a teacher that says "class 0" for every row, and a student that learns only from it
    teacher = AutoModelForSequenceClassification.from_pretrained(task["teacher"])
    with torch.no_grad():
        teacher.classifier.weight.zero_()
        teacher.classifier.bias.copy_(torch.tensor([6.0, -6.0]))
    teacher.save_pretrained(tmp_path / "one-class-teacher")
    AutoTokenizer.from_pretrained(task["teacher"]).save_pretrained(tmp_path / "one-class-teacher")
    cfg = config(task, tmp_path / "run", teachers=[str(tmp_path / "one-class-teacher")], ce_alpha=0.0, epochs=1)
    with pytest.warns(SelectKDWarning, match="for 100% of the dev rows: it has not learnt the task") as said:
        res = distill(cfg, progress=False)
    assert "--head-init probe" in str(said[0].message)  # all rows: it started from the fresh head
    name = teacher.config.id2label[0]
    assert res.summary["one_class"] == {"class": name, "share": 1.0, "rows": "dev"}
    healthy = distill(config(task, tmp_path / "healthy"), progress=False)
    assert healthy.summary["one_class"] is None

