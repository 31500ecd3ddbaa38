"""What commands write outside the cache: only what selectkd made is replaced, and by an atomic swap.

Through the real command: `--overwrite` refuses the working folder, a folder of the user's files
and a folder where a file is written; it still replaces a real earlier run, finetune output or
export. Kills are simulated by running the CLI in a subprocess whose swap step SIGKILLs it (a
patch applied before `main`), at the moments between the steps of a replace.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.csv as pacsv
import pytest

from selectkd.cache.store import file_sha256

from .conftest import run_cli

KILL_BEFORE_SWAP = "m.replace_path = lambda new, final: os.kill(os.getpid(), signal.SIGKILL)"
KILL_AFTER_SWAP = ("def swap_then_die(new, final):\n    atomic.replace_path(new, final)\n"
                   "    os.kill(os.getpid(), signal.SIGKILL)\nm.replace_path = swap_then_die")


def hold_until(release: Path) -> str:
    """A patch: the swap (made under the name's lock) waits until ``release`` exists."""
    return (f"def held(new, final):\n    while not os.path.exists({str(release)!r}):\n        time.sleep(0.05)\n"
            f"    atomic.replace_path(new, final)\nm.replace_path = held")

# no atomic exchange on this system: the old copy goes aside, and the process dies right after
KILL_BETWEEN_FALLBACK_RENAMES = (
    "atomic._exchange = lambda a, b: False\nreal_rename = os.rename\n"
    "def rename(src, dst):\n    real_rename(src, dst)\n"
    "    if atomic.ASIDE in str(dst):\n        os.kill(os.getpid(), signal.SIGKILL)\n"
    "m.os.rename = rename")


def patched(module: str, patch: str, *args: str, cache: Path, wait: bool = True):
    """The real CLI with ``patch`` applied to ``selectkd.<module>`` (as ``m``) first."""
    code = (f"import importlib, os, signal, sys, time\nimport selectkd.atomic as atomic\n"
            f"m = importlib.import_module('selectkd.{module}')\n"
            f"{patch}\nfrom selectkd.cli.main import main\nmain(sys.argv[1:])\n")
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env={**os.environ, "SELECTKD_CACHE": str(cache)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        proc.communicate()
    return proc


@pytest.fixture(scope="module")
def world(tiny, tmp_path_factory):
    base = tmp_path_factory.mktemp("outputs")
    cache = base / "cache"
    models = ["--teacher", str(tiny["teacher"]), "--student", str(tiny["student"])]
    for name, seed in (("s1", "0"), ("s2", "1")):
        run_cli("select", "--data", str(tiny["csv"]), *models, "--budget", "30", "--name", name, "--seed", seed,
                "--no-progress", cache=cache, check=True)
    return {"base": base, "cache": cache, "csv": tiny["csv"], "models": models, "teacher": tiny["teacher"]}


def one_line(proc, *words: str) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def distill_args(world, out: str, *extra: str) -> list[str]:
    return ["distill", "--data", str(world["csv"]), *world["models"], "--out", out, "--epochs", "1",
            "--no-progress", *extra]


# -- distill --------------------------------------------------------------------------------------

def test_distill_out_dot_overwrite_keeps_the_working_folder(world, tmp_path):
    shutil.copy(world["csv"], tmp_path / "train.csv")
    before = listing(tmp_path)
    proc = run_cli(*distill_args(world, ".", "--overwrite"), cache=world["cache"], cwd=tmp_path)
    one_line(proc, "holds files selectkd did not make", "choose another --out")
    assert listing(tmp_path) == before


def test_distill_overwrite_of_a_data_folder_keeps_the_users_files(world, tmp_path):
    data_dir = tmp_path / "DATA_DIR"
    data_dir.mkdir()
    shutil.copy(world["csv"], data_dir / "train.csv")
    (data_dir / "notes.txt").write_text("mine\n")
    before = listing(data_dir)
    refused = run_cli(*distill_args(world, str(data_dir), "--overwrite"), cache=world["cache"])
    one_line(refused, "holds files selectkd did not make", "--overwrite replaces only a run")
    asked = run_cli(*distill_args(world, str(data_dir)), cache=world["cache"])
    assert "holds another run" not in one_line(asked, "holds files selectkd did not make")
    assert listing(data_dir) == before


def test_distill_overwrite_replaces_a_real_earlier_run(world, tmp_path):
    run = tmp_path / "RUN"
    run_cli(*distill_args(world, str(run)), cache=world["cache"], check=True)
    again = run_cli(*distill_args(world, str(run)), cache=world["cache"])
    one_line(again, "holds another run", "--overwrite")
    run_cli(*distill_args(world, str(run), "--overwrite", "--seed", "5"), cache=world["cache"], check=True)
    assert json.loads((run / "config.json").read_text())["seed"] == 5
    assert (run / "student" / "config.json").exists() and (run / "summary.json").exists()
    assert hidden(tmp_path) == [] and hidden(run) == []


# -- finetune -------------------------------------------------------------------------------------

def finetune_args(world, out: Path, *extra: str) -> list[str]:
    return ["finetune", "--data", str(world["csv"]), "--model", str(world["teacher"]), "--out", str(out),
            "--head-only", "--no-progress", *extra]


def finetuned_seed(out: Path) -> int:
    """The seed recorded by the model at ``out``, after loading it as `score` would."""
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_pretrained(out)
    return json.loads((out / "selectkd_finetune.json").read_text())["seed"]


def test_finetune_overwrite_swaps_and_a_kill_keeps_the_old_model(world, tmp_path):
    out = tmp_path / "FT"
    run_cli(*finetune_args(world, out), cache=world["cache"], check=True)
    one_line(run_cli(*finetune_args(world, out), cache=world["cache"]), "holds a model from `selectkd finetune`",
             "--overwrite")
    killed = patched("finetune", KILL_BEFORE_SWAP, *finetune_args(world, out, "--overwrite", "--seed", "1"),
                     cache=world["cache"])
    assert killed.returncode == -signal.SIGKILL
    assert finetuned_seed(out) == 0 and hidden(tmp_path)  # the new one waits, hidden, beside the old
    run_cli(*finetune_args(world, out, "--overwrite", "--seed", "2"), cache=world["cache"], check=True)
    assert finetuned_seed(out) == 2 and hidden(tmp_path) == []  # the leftover is cleared


def test_finetune_killed_between_the_fallback_renames_gets_the_old_model_back(world, tmp_path):
    out = tmp_path / "FT"
    run_cli(*finetune_args(world, out), cache=world["cache"], check=True)
    killed = patched("atomic", KILL_BETWEEN_FALLBACK_RENAMES, *finetune_args(world, out, "--overwrite", "--seed", "1"),
                     cache=world["cache"])
    assert killed.returncode == -signal.SIGKILL and not out.exists()  # the old model sits aside
    again = run_cli(*finetune_args(world, out), cache=world["cache"])  # any write of FT puts it back first
    one_line(again, "holds a model from `selectkd finetune`")
    assert finetuned_seed(out) == 0


# -- export ---------------------------------------------------------------------------------------

def export_args(name: str, out: Path, *extra: str) -> list[str]:
    return ["export", "--selection", name, "--out", str(out), *extra]


def test_export_csv_over_an_existing_folder_is_refused(world, tmp_path):
    folder = tmp_path / "EXISTING_DIR"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine\n")
    proc = run_cli(*export_args("s1", folder, "--format", "csv", "--overwrite"), cache=world["cache"])
    one_line(proc, "is a folder and this command writes a file", "choose another --out")
    assert listing(folder) == {"keep.txt": b"mine\n"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["EXISTING_DIR"]


def uids(out: Path) -> list[int]:
    return pacsv.read_csv(out).column("uid").to_pylist()


@pytest.mark.parametrize("patch", [KILL_BEFORE_SWAP, KILL_AFTER_SWAP], ids=["before-swap", "after-swap"])
def test_export_killed_mid_replace_never_pairs_a_file_with_another_exports_provenance(world, tmp_path, patch):
    out = tmp_path / "OUT.csv"
    prov = tmp_path / "OUT.csv.provenance.json"
    run_cli(*export_args("s1", out), cache=world["cache"], check=True)
    first = uids(out)
    killed = patched("selection.export", patch, *export_args("s2", out, "--overwrite"), cache=world["cache"])
    assert killed.returncode == -signal.SIGKILL
    now = uids(out)
    assert now == first if patch == KILL_BEFORE_SWAP else now != first
    if prov.exists():  # a provenance beside the file describes that file (none at all: incomplete, not wrong)
        record = json.loads(prov.read_text())["export"]
        assert record["selection"] == ("s1" if now == first else "s2")
        assert record["sha256"] == file_sha256(out)
    run_cli(*export_args("s2", out, "--overwrite"), cache=world["cache"], check=True)  # still recognised as ours
    record = json.loads(prov.read_text())["export"]
    assert record["selection"] == "s2" and record["sha256"] == file_sha256(out) and uids(out) != first
    assert hidden(tmp_path) == []


def test_export_into_a_read_only_folder_is_one_line(world, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(ro)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("no read-only mount here (needs mount rights); root ignores chmod, so nothing else is read-only")
    try:
        proc = run_cli(*export_args("s1", ro / "x.csv"), cache=world["cache"])
        one_line(proc, f"cannot write {ro / 'x.csv'}", "is read-only", "choose another --out")
        assert list(ro.iterdir()) == []
    finally:
        subprocess.run(["umount", str(ro)], check=True)


# -- select --name: one writer per name -------------------------------------------------------------

def select_args(world, name: str, seed: str, *extra: str) -> list[str]:
    return ["select", "--data", str(world["csv"]), *world["models"], "--budget", "30", "--name", name,
            "--seed", seed, "--no-progress", *extra]


def saved(name: str, cache: Path) -> dict:
    """The saved selection's provenance, after checking its arrow file is the one it records."""
    folder = cache / "selections" / name
    prov = json.loads((folder / "provenance.json").read_text())
    assert prov["files"] == {"selection.arrow": file_sha256(folder / "selection.arrow")}
    assert hidden(cache / "selections") == []  # no temp folder, no lock file
    return prov


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
def test_two_selects_of_one_name_at_once_never_both_say_saved_with_one_lost(world, overwrite):
    name = f"twin-{overwrite}"
    extra = ["--overwrite"] if overwrite else []
    procs = [subprocess.Popen([sys.executable, "-m", "selectkd", *select_args(world, name, seed, *extra)],
                              env={**os.environ, "SELECTKD_CACHE": str(world["cache"])}, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for seed in ("3", "4")]
    outputs = [p.communicate() for p in procs]
    results = [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]
    said_saved = [i for i, (rc, out, _) in enumerate(results) if rc == 0 and "saved selection" in out]
    if overwrite:
        assert len(said_saved) == 2  # both saved; the later one replaced the first whole
    else:
        assert len(said_saved) == 1, results
        loser = results[1 - said_saved[0]]
        assert loser[0] == 2 and ("exists" in loser[2] or "being written" in loser[2]), loser
    assert saved(name, world["cache"])["seed"] in (3, 4)


def waits_for_a_lock(pid: int) -> bool:
    """Whether process ``pid`` is blocked on a lock (Linux lists blocked waiters as '-> FLOCK')."""
    return any(line.split()[1:3] == ["->", "FLOCK"] and line.split()[5] == str(pid)
               for line in Path("/proc/locks").read_text().splitlines())


def test_a_select_while_another_writes_the_name_waits_or_is_refused(world, tmp_path):
    name = "held"
    release = tmp_path / "release"
    first = patched("selection.saved", hold_until(release), *select_args(world, name, "5"), cache=world["cache"], wait=False)
    lock = world["cache"] / "selections" / f".{name}.lock"
    deadline = time.monotonic() + 120
    while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lock.exists(), first.communicate()
    refused = run_cli(*select_args(world, name, "6"), cache=world["cache"])
    one_line(refused, f"selection '{name}' is being written by another process", "choose another --name")
    replacing = subprocess.Popen([sys.executable, "-m", "selectkd", *select_args(world, name, "7", "--overwrite")],
                                 env={**os.environ, "SELECTKD_CACHE": str(world["cache"])}, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not waits_for_a_lock(replacing.pid) and replacing.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert waits_for_a_lock(replacing.pid)  # --overwrite waits for the first writer instead of failing
    release.touch()
    for proc in (first, replacing):
        out, err = proc.communicate()
        assert proc.returncode == 0 and "saved selection" in out, err
    assert saved(name, world["cache"])["seed"] == 7


# -- the swap itself --------------------------------------------------------------------------------

@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "fallback"])
def test_replace_path_swaps_a_file_or_a_folder_and_leaves_nothing_beside(tmp_path, monkeypatch, exchange):
    from selectkd import atomic

    if exchange:
        a, b = tmp_path / "a", tmp_path / "b"
        a.write_text("a")
        b.mkdir()
        if not atomic._exchange(a, b):
            pytest.skip("this filesystem has no RENAME_EXCHANGE; the fallback case covers it")
        assert a.is_dir() and b.read_text() == "a"
        atomic.remove_path(a), atomic.remove_path(b)
    else:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    for folder in (False, True):
        final, new = tmp_path / f"final-{folder}", tmp_path / f"new-{folder}"
        for path, text in ((final, "old"), (new, "new")):
            if folder:
                path.mkdir()
                (path / "f").write_text(text)
            else:
                path.write_text(text)
        atomic.replace_path(new, final)
        assert (final / "f" if folder else final).read_text() == "new" and not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final-False", "final-True"]
