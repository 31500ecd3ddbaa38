"""Faults lose nothing, and torchrun gives the same cache as one process.

SIGKILL `selectkd score` at random moments, two `score` processes on one key, corrupted and
truncated parts (`verify`, the refusal, `--repair`), a disk that fills up, and `score` /
`distill` under `torchrun` with 2 gloo processes compared to one process.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from selectkd.cache.arrays import column_matrix
from selectkd.cache.store import Store

from .conftest import build_bert, build_tokenizer, make_rows, run_cli, write_csv


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults")
    rows = make_rows(1200, seed=11, max_words=12)
    data = write_csv(base / "train.csv", rows)
    tok = build_tokenizer(base / "tok", [r["text"] for r in rows])
    teacher = build_bert(base / "teacher", tok, num_labels=2, layers=2, hidden=64, seed=1)
    student = build_bert(base / "student", tok, num_labels=None, layers=1, hidden=32, seed=2)
    args = ["--data", str(data), "--teacher", str(teacher), "--student", str(student), "--no-progress"]
    env = {"SELECTKD_PART_ROWS": "100"}  # 12 parts: kills land between and inside parts
    reference = base / "reference"
    run_cli("score", *args, cache=reference, check=True, env=env)
    return {"base": base, "data": data, "teacher": teacher, "student": student, "args": args, "env": env,
            "reference": reference, "rows": rows}


def entries(cache: Path) -> dict[str, dict]:
    """kind/key -> manifest 'files' (name -> sha256) of every complete entry."""
    found = {}
    for e in Store(cache).entries():
        m = e.manifest()
        if m.get("complete"):
            found[f"{e.kind}/{e.key}"] = m["files"]
    return found


def snapshot(cache: Path) -> dict[str, int]:
    """Every file under the entry folders (lock files aside) with its size."""
    return {str(p.relative_to(cache)): p.stat().st_size for kind in ("teacher", "embedding", "student")
            for p in sorted((cache / kind).rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


@pytest.mark.slow
def test_sigkill_at_ten_random_moments_then_rerun_equals_an_uninterrupted_run(setup, tmp_path):
    """Each kill lands at a random point of the work: once a random number of parts is on disk
    (24 in all: 12 teacher, 12 of the student's embeddings), plus a random few milliseconds."""
    cache = tmp_path / "cache"
    rng = random.Random(7)
    env = {**os.environ, "SELECTKD_CACHE": str(cache), **setup["env"]}
    targets = sorted(rng.sample(range(1, 25), 10))
    killed_mid_entry = 0
    for target in targets:
        proc = subprocess.Popen([sys.executable, "-m", "selectkd", "score", *setup["args"]], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and len(list(cache.glob("*/*/part-*"))) < target:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        incomplete = [e for e in Store(cache).entries() if not e.manifest().get("complete")]
        killed_mid_entry += proc.returncode == -signal.SIGKILL and any(e.part_names() for e in incomplete)
        # whatever the moment, the cache verifies: no torn file is recorded
        assert run_cli("cache", "verify", cache=cache).returncode == 0
    assert killed_mid_entry >= 5, f"only {killed_mid_entry} of 10 kills landed mid-entry; resuming was not tested"
    run_cli("score", *setup["args"], cache=cache, check=True, env=setup["env"])
    assert run_cli("cache", "verify", cache=cache).returncode == 0
    assert entries(cache) == entries(setup["reference"])  # same keys, byte-identical parts and scores
    assert not list(cache.rglob("*.tmp-*"))


def test_two_processes_on_one_key_one_computes_the_other_reuses(setup, tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "SELECTKD_CACHE": str(cache), **setup["env"]}
    cmd = [sys.executable, "-m", "selectkd", "score", *setup["args"]]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-500:] for o in outs]
    def written(stdout: str) -> dict[str, bool]:  # role -> whether this process wrote its entry
        return {line.split("│")[1].strip(): "written" in line for line in stdout.splitlines()
                if "│" in line and ("written" in line or "reused" in line)}

    first, second = (written(o[0]) for o in outs)
    assert set(first) == set(second) == {"teacher", "embedding", "student"}, [o[0] for o in outs]
    assert all(first[role] != second[role] for role in first), [o[0] for o in outs]  # each written once, reused once
    assert entries(cache) == entries(setup["reference"])
    assert run_cli("cache", "verify", cache=cache).returncode == 0


def damage(path: Path, how: str) -> None:
    if how == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 3)


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_a_damaged_part_is_named_refused_and_repaired_alone(setup, tmp_path, how):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(setup["reference"], cache)
    teacher = next(e for e in Store(cache).entries() if e.kind == "teacher")
    part = teacher.path / teacher.part_names()[4]
    damage(part, how)
    others = {p: p.stat().st_mtime_ns for p in teacher.path.glob("part-*") if p != part}

    verify = run_cli("cache", "verify", cache=cache)
    assert verify.returncode != 0 and part.name in verify.stdout + verify.stderr

    refused = run_cli("score", *setup["args"], cache=cache, env=setup["env"])
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert part.name in refused.stderr and f"selectkd cache rm {teacher.key}" in refused.stderr
    assert "--repair" in refused.stderr
    distill = run_cli("distill", "--data", str(setup["data"]), "--teacher", str(setup["teacher"]), "--student",
                      str(setup["student"]), "--epochs", "1", "--out",
                      str(tmp_path / "run"), cache=cache, env=setup["env"])
    assert distill.returncode == 2 and "selectkd cache rm" in distill.stderr and "Traceback" not in distill.stderr

    run_cli("score", *setup["args"], "--repair", cache=cache, check=True, env=setup["env"])
    assert run_cli("cache", "verify", cache=cache).returncode == 0
    assert entries(cache) == entries(setup["reference"])
    assert {p: p.stat().st_mtime_ns for p in others} == others  # only the damaged part was rewritten


def test_a_full_disk_leaves_the_cache_as_it_was(setup, tmp_path):
    cache = tmp_path / "cache"
    # a first, small entry (and the data loaded once), then a teacher with [CLS] states too big to write
    run_cli("score", "--data", str(setup["data"]), "--teacher", str(setup["teacher"]), "--no-progress", cache=cache,
            check=True, env=setup["env"])
    before = snapshot(cache)
    limit = 16 * 1024  # bytes per file: a part with [CLS] states of 100 rows is larger

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead of killing

    proc = subprocess.run([sys.executable, "-m", "selectkd", "score", "--data", str(setup["data"]), "--teacher",
                           str(setup["teacher"]), "--cls-states", "--no-progress"],
                          env={**os.environ, "SELECTKD_CACHE": str(cache), **setup["env"]}, capture_output=True,
                          text=True, preexec_fn=small_disk)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and "out of disk space" in proc.stderr and "re-run" in proc.stderr
    assert snapshot(cache) == before  # no new entry, no temp file, the old entry untouched
    assert run_cli("cache", "verify", cache=cache).returncode == 0
    run_cli("score", *setup["args"], cache=cache, check=True, env=setup["env"])  # space again: it completes


def torchrun(*args: str, env: dict, port: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
           "-m", "selectkd", *args]
    return subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", **env}, capture_output=True, text=True,
                          timeout=600)


def test_torchrun_score_writes_the_same_cache_as_one_process(setup, tmp_path):
    cache = tmp_path / "cache"
    proc = torchrun("score", *setup["args"], env={"SELECTKD_CACHE": str(cache), **setup["env"]}, port=29531)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("written") == 3  # one report (rank 0): teacher, the student's embeddings and scores
    ours, ref = Store(cache), Store(setup["reference"])
    assert sorted(entries(cache)) == sorted(entries(setup["reference"]))  # same keys
    for e in ours.entries():
        m = e.manifest()
        assert m["complete"] and m["processes"] == 2 and not list(e.path.glob(".*"))
        if e.kind == "student":  # probe and scores only, compared below
            continue
        mine, theirs = e.read_parts(), ref.entry(e.kind, e.key).read_parts()
        assert np.array_equal(mine.column("uid").to_numpy(), theirs.column("uid").to_numpy())
        for col in mine.column_names[1:]:
            np.testing.assert_allclose(column_matrix(mine, col), column_matrix(theirs, col), atol=1e-4)
    student = next(e for e in ours.entries() if e.kind == "student")
    a = student.read_file("scores.arrow").column("entropy").to_numpy()
    b = ref.entry("student", student.key).read_file("scores.arrow").column("entropy").to_numpy()
    np.testing.assert_allclose(a, b, atol=1e-3)
    assert run_cli("cache", "verify", cache=cache).returncode == 0


def test_torchrun_distill_reselects_across_ranks_and_resumes(setup, tmp_path):
    cache = tmp_path / "cache"
    rows = setup["rows"][:400]
    train = write_csv(tmp_path / "train.csv", rows[:320])
    test = write_csv(tmp_path / "test.csv", rows[320:])
    common = ["distill", "--data", str(train), "--test-data", str(test), "--teacher", str(setup["teacher"]),
              "--student", str(setup["student"]), "--budget", "0.25", "--strategy", "coverage", "--clusters", "4",
              "--epochs", "3", "--lr", "5e-3", "--batch-size", "16", "--no-progress"]
    env = {"SELECTKD_CACHE": str(cache)}
    run_cli("score", "--data", str(train), "--teacher", str(setup["teacher"]), "--student", str(setup["student"]),
            "--no-progress", cache=cache, check=True)
    whole = torchrun(*common, "--out", str(tmp_path / "whole"), env=env, port=29532)
    assert whole.returncode == 0, whole.stderr[-3000:]
    summary = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert summary["student_rows_forward_only"] >= 2 * 320 + 80  # epochs 2 and 3 re-scored the whole pool

    # killed after its first checkpoint, resumed under torchrun: the same final metrics
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
           "-m", "selectkd", *common, "--out", str(out)]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (out / "checkpoint" / "state.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists(), "the run finished before it could be killed"
    resumed = torchrun(*common, "--out", str(out), "--resume", env=env, port=29534)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][-1]
    reference = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()][-1]
    assert final == reference
