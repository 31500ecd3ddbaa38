"""bench/reproduce.py end to end on tiny models: every planned run leaves a record, the report's numbers
are the records', a second invocation trains nothing, and a record from other settings is redone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest

from .conftest import build_bert, build_tokenizer, make_rows

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # ~40 tiny distillations


def run_study(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(REPO / "bench" / "reproduce.py"), *args], capture_output=True,
                          text=True, cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    base = tmp_path_factory.mktemp("reproduce")
    rows = make_rows(400, seed=3)
    data = base / "toy"
    cols = lambda rs: {"text": [r["text"] for r in rs], "label": [r["label"] for r in rs]}  # noqa: E731
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(cols(rows[:240])),
                          "dev": datasets.Dataset.from_dict(cols(rows[240:300])),
                          "test": datasets.Dataset.from_dict(cols(rows[300:]))}).save_to_disk(str(data))
    tok = build_tokenizer(base / "tok", [r["text"] for r in rows])
    teacher = build_bert(base / "teacher", tok, num_labels=None, layers=2, hidden=32, seed=1)
    large = build_bert(base / "large", tok, num_labels=None, layers=2, hidden=48, seed=2)
    args = ["--datasets", str(data), "--seeds", "0", "--teacher", str(large), "--small-teacher", str(teacher),
            "--student", str(teacher),
            "--student-layers", "1", "--epochs", "1", "--min-steps", "3", "--eval-every", "2", "--teacher-rows", "80",
            "--pool-rows", "160", "--test-rows", "100", "--dev-rows", "60", "--teacher-epochs", "1",
            "--max-length-cap", "32", "--cache-dir", str(base / "cache"), "--runs", str(base / "runs"),
            "--results", str(base / "results"), "--out", str(base / "docs")]
    first = run_study(args, base)
    return {"base": base, "args": args, "log": first.stdout, "docs": base / "docs",
            "records": base / "results" / "toy" / "s0"}


def run_lines(stdout: str) -> list[str]:
    """What the study logged for each run it trained or took, in order: "full", "same-time (--time-budget 1.2)",
    "full taken from ..." (a run found loaded, logged with ": again" before it is trained again, is left out)."""
    return [x.split("toy seed 0: ", 1)[1] for x in stdout.splitlines()
            if "toy seed 0: " in x and not x.endswith(": again")]


def trained(stdout: str) -> list[str]:
    """The names of the runs the study trained or took, in order."""
    return [x.split(" ")[0] for x in run_lines(stdout)]


def records(study) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in study["records"].glob("*.json")}


def test_every_planned_run_leaves_a_record_with_machine_load_and_curve(study):
    recs = records(study)
    # core 11, strategies 14, budgets 3 random + 3 of the best, teachers 5 adoption + 3 objective
    assert len(recs) == 39, sorted(recs)
    for name in ("no-kd", "full", "dynamic-random-10", "same-time", "static-ccs-10", "dynamic-ccs-10",
                 "static-confident_uncertain-10", "dynamic-uncertainty_sampling-10", "in-batch-10",
                 "static-random-5", "static-random-50", "adopt-soft-instance", "objective-uncertainty-r"):
        assert name in recs, name
    for name, rec in recs.items():
        assert rec["machine"] and rec["load_before"] is not None and rec["commit"]
        assert rec["step_speed_s"] > 0 and rec["cpu_speed_s"] > 0  # how fast the machine was, timed before the run
        assert "transformers" in rec["libraries"] and "numpy" in rec["libraries"]
        # same-time stops at the default run's seconds: on a busy machine that can be its first step
        points = 1 if name == "same-time" else 2
        assert len(rec["curve"]["seconds"]) == len(rec["curve"]["dev_accuracy"]) >= points, name
        assert rec["command"].startswith("selectkd distill ")
    # one machine, one student, one batch shape: the speed probe's seeded steps computed alike before every run
    assert len({rec["step_digest"] for rec in recs.values()}) == 1
    assert "Numerics (`step_digest`" in (study["docs"] / "RESULTS.md").read_text()
    # the full data for the default's time: its --time-budget is the default run's training seconds
    assert f"--time-budget {recs['dynamic-random-10']['seconds_train']}" in recs["same-time"]["command"]
    assert recs["static-ccs-10"]["selection"]["command"].startswith("selectkd select ")
    # the default without its step floor: the same recipe for exactly --epochs, never more steps than the default
    assert "--min-steps 0" in recs["floorless-random-10"]["command"]
    assert recs["floorless-random-10"]["steps"] <= recs["dynamic-random-10"]["steps"]


def at_one_speed(rec: dict, default: dict) -> float:
    """A run's training seconds over the default 10% run's, each over its speed probe's seconds per step."""
    assert rec["step_speed_s"] > 0 and default["step_speed_s"] > 0  # every run of the study times its probe
    return (rec["seconds_train"] / rec["step_speed_s"]) / (default["seconds_train"] / default["step_speed_s"])


def test_the_budget_strategy_is_the_best_10_percent_row_and_is_kept(study):
    chosen = json.loads((study["base"] / "results" / "budget_strategy.json").read_text())
    means, times = chosen["mean_test_accuracy"], chosen["mean_seconds_vs_default"]
    recs = records(study)
    # at equal compute: only configurations that train about as long as the default 10% run compete
    for name, ratio in times.items():
        own = at_one_speed(recs[f"{name}-10"], recs["dynamic-random-10"])
        assert ratio == pytest.approx(own, abs=1e-3), name
        assert (name in chosen["slower"]) == (ratio > 1.25), name
    equal = [k for k in sorted(means) if k not in chosen["slower"]]
    assert "dynamic-random" in equal and chosen["best"] == max(equal, key=means.get)
    kind, strategy = chosen["best"].split("-", 1)
    if strategy != "random":
        assert f"{kind}-{strategy}-20" in recs
    # a render writes the report only: without a recorded choice it makes none (it may cover some datasets);
    # it renders into its own folder (the last --out counts) so the report the other tests read stays as it was
    path = study["base"] / "results" / "budget_strategy.json"
    kept = path.read_text()
    path.unlink()
    try:
        run_study(study["args"] + ["--render-only", "--out", str(study["base"] / "docs-no-choice")], study["base"])
        assert not path.exists()
        rendered = json.loads((study["base"] / "docs-no-choice" / "results.json").read_text())
        assert rendered["best_budget_strategy"] is None
    finally:
        path.write_text(kept)


def test_report_numbers_are_the_records(study):
    doc = (study["docs"] / "RESULTS.md").read_text()
    results = json.loads((study["docs"] / "results.json").read_text())
    rows = results["datasets"]["toy"]["rows"]
    for name, rec in records(study).items():
        assert rows[name]["accuracy"] == rec["test"]["accuracy"]
    line = next(x for x in doc.splitlines() if x.startswith("| full-data KD |"))
    assert line.split("|")[2].strip() == f"{records(study)['full']['test']['accuracy'] * 100:.1f}"
    assert "the default 10% recipe **" in results["datasets"]["toy"]["verdict"]
    assert results["datasets"]["toy"]["verdict"] in doc
    # the default without its floor (1 step here against 3), paired by seed with full KD and the default
    assert "Without the step floor (`--min-steps 0`: 1 step instead of 3)" in doc
    assert "the same within each dataset" in doc
    # dev curves; every configuration against the promise; accuracy against the budget
    for plot in ("curve-toy.png", "promise-toy.png", "budgets-toy.png"):
        png = study["docs"] / "plots" / plot
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"(plots/{plot})" in doc
    for heading in ("### 10% of the pool", "### Budgets 5-50%", "### Teacher adoption and objective adaptation"):
        assert heading in doc
    assert "All rows, seed 0 (`--teachers-seeds`; full-data KD of the same seeds)" in doc
    # each run's speed beside its full-KD run's: 38 runs compared with full KD, ratios computed from the records
    recs = records(study)
    ratios = [r["step_speed_s"] / recs["full"]["step_speed_s"] for n, r in recs.items() if n != "full"]
    speed = next(x for x in doc.splitlines() if x.startswith("Machine speed: "))
    assert f"For the {len(ratios)} runs timed" in speed and f"{min(ratios):.2f}-{max(ratios):.2f}x" in speed, speed
    # the machine-free share of compute: rows trained against full KD's, a re-scoring run marked as such
    share = recs["static-random-10"]["student_rows_forward_backward"] / recs["full"]["student_rows_forward_backward"]
    assert 0 < share < 1
    line = next(x for x in doc.splitlines() if x.startswith("| 10% `random` static |"))
    assert line.split("|")[6].strip() == f"{share:.1%}", line
    line = next(x for x in doc.splitlines() if x.startswith("| 10% `uncertainty_sampling` dynamic |"))
    assert line.split("|")[6].strip().endswith("+ re-scoring"), line
    # what the teacher has to give: its lead over the student without KD, from prep.json and the no-KD record
    prep = json.loads((study["base"] / "results" / "toy" / "prep.json").read_text())
    lead = (prep["teacher_test"]["accuracy"] - recs["no-kd"]["test"]["accuracy"]) * 100
    assert f"The teacher is {abs(lead):.1f} points {'above' if lead >= 0 else 'below'} the student trained" in doc
    assert ("says little about distillation here" in doc) == (lead < 1)
    default = rows["dynamic-random-10"]
    assert f"It trains on {default['rows_share']:.1%} of full-data KD's" in results["datasets"]["toy"]["verdict"]
    # a miss on time says where the seconds went: steps x their seconds + the rest, adding up to the time ratio
    mine, full = recs["dynamic-random-10"], recs["full"]
    besides = mine["seconds"]["head_init"] + mine["seconds"]["rescore"]
    steps = mine["steps"] / full["steps"]
    speed = (mine["seconds_train"] - besides) / mine["steps"] / (full["seconds_train"] / full["steps"])
    assert steps * speed + besides / full["seconds_train"] == pytest.approx(mine["seconds_train"] / full["seconds_train"])
    timed = f"Its time against full KD's is its steps ({steps:.1%} of full KD's) times their seconds ({speed:.2f}x"
    verdict = results["datasets"]["toy"]["verdict"]
    assert (timed in verdict) == ("and time (" in verdict or "on time (" in verdict), verdict
    # what the rows trained on held: each epoch's class counts, from the run's metrics.jsonl into the record and table
    for name, rec in recs.items():
        assert len(rec["train_classes"]) == rec["epochs"] and all(len(e) == 2 for e in rec["train_classes"]), name
    epoch = recs["static-random-10"]["train_classes"][0]
    assert sum(epoch.values()) == round(0.1 * prep["pool_rows"])
    line = next(x for x in doc.splitlines() if x.startswith("| 10% `random` static |") and " of 2 |" in x)
    top = max(epoch, key=epoch.get)
    assert line.split("|")[3].strip() == f"{top}: {epoch[top] / sum(epoch.values()):.0%}", line
    pool = prep["pool_classes"]  # the reference row: every row of the pool, as the full-KD run's epochs saw it
    assert pool == recs["full"]["train_classes"][0] and sum(pool.values()) == prep["pool_rows"]
    top = max(pool, key=pool.get)
    assert f"| the pool (every row) | 2 of 2 | {top}: {pool[top] / prep['pool_rows']:.0%} |" in doc
    # the headline: the most accurate 10% row, and the most accurate at the default's time when that is another
    # (accuracies compared, not names: the toy's rows tie)
    head = (study["docs"] / "headline.md").read_text().splitlines()
    acc = {n: r["accuracy"] for n, r in rows.items() if n.endswith("-10") and n != "in-batch-10"}
    equal = [a for n, a in acc.items() if rows[n]["vs_default"] is not None and rows[n]["vs_default"] <= 1.25]
    shown = [acc[n] for n in ("dynamic-random-10", "static-random-10")]
    top = max(acc.values())
    for marker, best, also in (("| most accurate 10%: ", top, []),
                               ("at the default's time (<= 1.25x)", max(equal), [top])):
        line = next((x for x in head if marker in x), None)
        if line is not None:
            assert line.split("|")[3].strip() == f"{best * 100:.1f}", line
        else:  # the best is a row the headline shows anyway (at equal time: or the most accurate overall)
            assert best in shown + also, head
    # "at the default's time" is read as the budget strategy's choice reads it: seconds over the default's, per seed,
    # at one machine speed
    for name, rec in recs.items():
        own = at_one_speed(rec, recs["dynamic-random-10"])
        assert rows[name]["vs_default"] == pytest.approx(own, abs=1e-3), name
    # and the report lists them, so that a reader sees which rows count as the default's time
    listed = next(x for x in doc.splitlines() if "Training seconds against the default's, at one machine speed" in x)
    for name in recs:
        if name.endswith("-10") and name not in ("dynamic-random-10", "in-batch-10"):
            assert f" {rows[name]['vs_default']:.2f}x" in listed, name


def test_a_render_without_runs_removes_its_own_stale_curve(study):
    out = study["base"] / "docs-no-runs"
    (out / "plots").mkdir(parents=True)
    (out / "plots" / "curve-toy.png").write_bytes(b"a plot of runs that are no longer today's")
    run_study(study["args"] + ["--render-only", "--seeds", "7", "--out", str(out)], study["base"])
    assert "No finished runs yet." in (out / "RESULTS.md").read_text()
    assert not (out / "plots" / "curve-toy.png").exists()


def test_a_results_folder_of_another_student_is_refused_before_any_run(study):
    args = list(study["args"])
    args[args.index("--student-layers") + 1] = "0"  # the whole model: another student than its first layer
    done = subprocess.run([sys.executable, str(REPO / "bench" / "reproduce.py"), *args, "--render-only", "--out",
                           str(study["base"] / "docs-other-student")], capture_output=True, text=True, cwd=study["base"])
    assert done.returncode == 2
    assert "is a study with the student" in done.stderr and "another --results folder" in done.stderr
    assert not (study["base"] / "docs-other-student").exists()


def test_a_results_folder_of_another_teacher_is_refused_before_any_run(study):
    # another teacher would be fitted and taken for a re-fit of the first, its runs redone one by one in one table
    out = study["base"] / "docs-other-teacher"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "reproduce.py"), *study["args"], "--teacher-lr",
                           "1e-4", "--render-only", "--out", str(out)], capture_output=True, text=True,
                          cwd=study["base"])
    assert done.returncode == 2
    assert "is a study with the teacher fitted by --teacher-lr 3e-05 (given: 0.0001)" in done.stderr, done.stderr
    assert not out.exists()


def test_a_dataset_not_prepared_yet_has_no_curve_left_from_another_study(study):
    out = study["base"] / "docs-other-results"
    (out / "plots").mkdir(parents=True)
    (out / "plots" / "curve-toy.png").write_bytes(b"the plot of a study this results folder does not hold")
    run_study(study["args"] + ["--render-only", "--results", str(study["base"] / "results-empty"), "--out", str(out)],
              study["base"])
    text = (out / "RESULTS.md").read_text()
    assert "Not started yet" in text
    assert not (out / "plots" / "curve-toy.png").exists()
    # the report names its own records and the options that remake it, not the default study's
    assert f"run records in `{study['base'] / 'results-empty'}/`" in text
    command = next(x for x in text.splitlines() if "bench/reproduce.py" in x and "--render-only" in x)
    printed = command.split("bench/reproduce.py", 1)[1].split("--render-only")[0].split()
    given = dict(zip(study["args"][::2], study["args"][1::2]))  # every option of this study takes one value
    given.update({"--results": str(study["base"] / "results-empty"), "--out": str(out)})
    for option in ("--cache-dir", "--runs"):  # where this sitting keeps its store and run folders
        del given[option]
    assert dict(zip(printed[::2], printed[1::2])) == given and len(printed) == 2 * len(given), command


def test_prepare_only_fits_and_scores_then_stops_without_a_run(study):
    """What a variant bench (bench/temperature.py) needs of a dataset, without the study's runs."""
    results, runs = study["base"] / "results-prepared", study["base"] / "runs-prepared"
    args = list(study["args"])
    args[args.index("--results") + 1], args[args.index("--runs") + 1] = str(results), str(runs)
    done = run_study(args + ["--prepare-only", "--out", str(study["base"] / "docs-prepared")], study["base"])
    prep = json.loads((results / "toy" / "prep.json").read_text())
    assert prep["teacher_test"]["accuracy"] > 0 and prep["pool_rows"] == 160
    assert not list(results.glob("toy/s[0-9]*")) and not runs.exists()  # not one run
    assert "prepared: " in done.stdout and "toy seed 0: " not in done.stdout


def test_a_second_invocation_trains_nothing_and_other_settings_are_redone(study):
    before = records(study)
    path = study["records"] / "static-random-10.json"
    stale = json.loads(path.read_text())
    stale["signature"]["lr"] = 123.0  # as if it had run with other settings
    path.write_text(json.dumps(stale))
    # a dynamic run recorded before its training seconds counted the re-scoring of the pool is short by it
    dynamic = study["records"] / "dynamic-uncertainty_sampling-10.json"
    short = json.loads(dynamic.read_text())
    short["seconds"]["rescore"] = 2.0
    del short["train_counts_rescore"]
    dynamic.write_text(json.dumps(short))
    # a ccs run recorded before ccs pruned each class in proportion (one cut could prune whole classes away)
    for name in ("static-ccs-10", "dynamic-ccs-10"):
        ccs = json.loads((study["records"] / f"{name}.json").read_text())
        del ccs["ccs_prunes_per_class"]
        (study["records"] / f"{name}.json").write_text(json.dumps(ccs))
    again = run_study(study["args"], study["base"])
    redone = {"static-random-10", "dynamic-uncertainty_sampling-10", "static-ccs-10", "dynamic-ccs-10"}
    assert sorted(trained(again.stdout)) == sorted(redone), again.stdout
    after = records(study)
    assert {k: v["finished"] for k, v in after.items() if k not in redone} == \
        {k: v["finished"] for k, v in before.items() if k not in redone}
    assert after["static-random-10"]["signature"]["lr"] != 123.0
    assert after["dynamic-uncertainty_sampling-10"]["train_counts_rescore"]


def test_rerun_loaded_trains_again_only_the_runs_that_ran_beside_other_work(study):
    path = study["records"] / "static-ccs-10.json"
    rec = json.loads(path.read_text())
    assert rec["other_cores"] >= 0 and rec["load_after"] >= 0  # measured for every run
    rec["other_cores"] = 99.0  # as if other work had used 99 cores meanwhile
    path.write_text(json.dumps(rec))
    metrics = study["base"] / "runs" / "toy" / "s0" / "static-ccs-10" / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"marker": "the loaded run"}\n')
    # the report names it, so a reader knows which seconds to distrust until it is redone
    out = study["base"] / "docs-loaded"
    run_study([*study["args"], "--render-only", "--out", str(out)], study["base"])
    line = next(x for x in (out / "RESULTS.md").read_text().splitlines() if x.startswith("Runs: "))
    assert "ran beside other work (" in line and "toy seed 0 static-ccs-10" in line, line
    # thresholds no real run here reaches (the test itself may run beside other work)
    again = run_study([*study["args"], "--rerun-loaded", "90", "--other-cores", "50", "--tiers", "core"], study["base"])
    assert trained(again.stdout) == ["static-ccs-10"], again.stdout
    redone = json.loads(path.read_text())
    assert redone["other_cores"] != 99.0 and redone["started"] > rec["started"]
    # trained again for real: the finished run folder is replaced, not reused with today's load beside its seconds
    assert "the loaded run" not in metrics.read_text()


def test_take_from_copies_a_run_made_elsewhere_with_the_same_settings_and_not_a_loaded_one(study):
    path = study["records"] / "full.json"
    made = json.loads(path.read_text())
    other = study["base"] / "other" / "toy" / "s0"
    other.mkdir(parents=True)
    (other / "full-random-head.json").write_text(json.dumps({**made, "other_cores": 99.0}))  # beside other work
    path.unlink()
    again = run_study([*study["args"], "--tiers", "core", "--take-from", str(study["base"] / "other")], study["base"])
    assert run_lines(again.stdout)[0] == "full", again.stdout  # trained, not taken
    assert "taken_from" not in json.loads(path.read_text())

    (other / "full-random-head.json").write_text(json.dumps({**made, "other_cores": 0.0, "name": "full-random-head"}))
    path.unlink()
    again = run_study([*study["args"], "--tiers", "core", "--take-from", str(study["base"] / "other")], study["base"])
    assert run_lines(again.stdout) == ["full taken from other/toy/s0/full-random-head.json"], again.stdout
    rec = json.loads(path.read_text())
    assert rec["name"] == "full" and rec["taken_from"] == "other/toy/s0/full-random-head.json"
    assert rec["finished"] == made["finished"] and rec["test"] == made["test"]


def test_a_fresh_machine_restores_the_teachers_from_git_and_leaves_unrun_what_needs_their_weights(study):
    base, kept = study["base"], study["base"] / "results" / "toy"
    prep = json.loads((kept / "prep.json").read_text())
    copies = sorted(p.name for p in (kept / "teachers").iterdir())
    assert copies == sorted(Path(prep[r]).name for r in ("teacher", "small_teacher"))
    assert not [f for f in (kept / "teachers").rglob("*") if f.suffix in (".safetensors", ".bin")]  # no weights
    saved = {p.parent.name for p in (kept / "scores" / "teacher").glob("*/manifest.json")}
    assert len(saved) == 4  # each teacher on the pool and on the test rows, without [CLS] states (hundreds of MB)

    (base / "cache").rename(base / "cache-0")  # only git survives: the cache (teachers, scores) is gone
    (study["records"] / "static-random-10.json").unlink()
    again = run_study([*study["args"], "--tiers", "core"], base)
    assert "restored from git" in again.stdout and "fine-tuning" not in again.stdout, again.stdout
    assert trained(again.stdout) == ["static-random-10"], again.stdout
    after = json.loads((kept / "prep.json").read_text())
    assert after["teacher_weights"] == prep["teacher_weights"] and "refits" not in after
    assert after["teacher_test"] == prep["teacher_test"]  # read from the restored logits
    assert records(study)["static-random-10"]["teacher_weights"] == prep["teacher_weights"]

    # the objective rows' [CLS] states were never in git: without the weights they are not run, and said so
    (study["records"] / "objective-fixed.json").unlink()
    (study["records"] / "adopt-hard.json").unlink()
    again = run_study([*study["args"], "--tiers", "teachers"], base)
    assert "objective-fixed not run: " in again.stdout and "weights-free copy" in again.stdout, again.stdout
    assert [x for x in run_lines(again.stdout) if " not run: " not in x] == ["adopt-hard", "objective-fixed"]
    assert not (study["records"] / "objective-fixed.json").exists()


def test_a_fresh_machine_refits_a_teacher_only_when_a_run_needs_it_and_a_different_one_redoes_the_runs(study):
    base, prep_path = study["base"], study["base"] / "results" / "toy" / "prep.json"
    core = ("no-kd", "full", "dynamic-random-10", "same-time", "static-random-10", "in-batch-10")

    def fresh_machine(name: str) -> None:  # only git survives, from before the study kept its teachers there
        (base / "cache").rename(base / name)
        for folder in ("teachers", "scores"):
            shutil.rmtree(base / "results" / "toy" / folder)

    first_seconds = json.loads(prep_path.read_text())["teacher_seconds"]
    fresh_machine("cache-1")
    again = run_study([*study["args"], "--tiers", "core"], base)
    assert "fine-tuning" not in again.stdout and not run_lines(again.stdout), again.stdout

    # a run is missing: the teacher is fitted again; the same code and seed give the same teacher, so only it runs
    (study["records"] / "static-random-10.json").unlink()
    again = run_study([*study["args"], "--tiers", "core"], base)
    assert "fine-tuning teacher" in again.stdout
    assert trained(again.stdout) == ["static-random-10"], again.stdout
    prep = json.loads(prep_path.read_text())
    assert {(r["role"], r["same_teacher"]) for r in prep["refits"]} == {("teacher", True), ("small_teacher", True)}
    assert records(study)["static-random-10"]["teacher_weights"] == prep["teacher_weights"]

    # as if the records and the recorded weights came from another teacher: the re-fit is then another teacher, and
    # every core run is redone with it, those checked before the re-fit too (the missing run is the last of the tier)
    prep["teacher_weights"] = "0" * 24
    prep_path.write_text(json.dumps(prep))
    for path in study["records"].glob("*.json"):
        path.write_text(json.dumps({**json.loads(path.read_text()), "teacher_weights": "0" * 24}))
    fresh_machine("cache-2")
    (study["records"] / "in-batch-10.json").unlink()
    again = run_study([*study["args"], "--tiers", "core"], base)
    prep = json.loads(prep_path.read_text())
    assert [r["same_teacher"] for r in prep["refits"] if r["role"] == "teacher"] == [True, False]
    assert set(core) <= set(trained(again.stdout)), again.stdout
    recs = records(study)
    assert all(recs[n]["teacher_weights"] == prep["teacher_weights"] for n in core)
    assert all(recs[n]["finished"] >= prep["refits"][-1]["finished"] for n in core)
    assert prep["teacher_seconds"] == first_seconds  # the first fit's cost stays, through re-fits
    doc = (study["docs"] / "RESULTS.md").read_text()
    assert "Re-fits: " in doc and "another teacher" in doc

    # and through a later run on this machine, which reads the re-fit's own record in the teacher's folder
    (study["records"] / "no-kd.json").unlink()
    run_study([*study["args"], "--tiers", "core"], base)
    assert json.loads(prep_path.read_text())["teacher_seconds"] == first_seconds

    # a study stopped after a re-fit and before it recorded it (scoring the pool takes minutes) leaves the new
    # teacher in the cache and the first one's test metrics in prep.json (here as written before weights were
    # recorded): the next call, which fits nothing, still finds another teacher and redoes the first one's runs
    prep = json.loads(prep_path.read_text())
    refits = len(prep["refits"])
    del prep["teacher_weights"]
    real_test, prep["teacher_test"] = prep["teacher_test"], {"accuracy": 0.0, "macro_f1": 0.0}
    prep_path.write_text(json.dumps(prep))
    for path in study["records"].glob("*.json"):
        rec = json.loads(path.read_text())
        del rec["teacher_weights"]
        path.write_text(json.dumps(rec))
    fit = Path(prep["teacher"]) / "selectkd_finetune.json"
    os.utime(fit)  # the re-fit ended after every record
    (study["records"] / "no-kd.json").unlink()  # a run to make, so the study prepares the dataset
    again = run_study([*study["args"], "--tiers", "core"], base)
    assert "fine-tuning" not in again.stdout and "is another teacher" in again.stdout, again.stdout
    prep = json.loads(prep_path.read_text())
    assert len(prep["refits"]) == refits + 1
    last = prep["refits"][-1]
    assert (last["role"], last["same_teacher"], last["test"]) == ("teacher", False, real_test)
    assert last["finished"] == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(fit.stat().st_mtime))
    assert set(core) <= set(trained(again.stdout)), again.stdout
