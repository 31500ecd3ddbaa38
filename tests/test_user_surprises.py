"""Surprises a user meets, through the real command: a forgotten option that re-scores everything,
--split on a single file, export from another folder, export columns named after the teachers,
built-in models found from another store, and saved models that follow the umask."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from selectkd.cache.arrays import column_matrix
from selectkd.cache.store import Store
from selectkd.models import _max_positions
from selectkd.selection.export import teacher_labels

from .conftest import run_cli, write_csv

MODELS = ["--teacher", "TEACHER", "--student", "STUDENT"]


@pytest.fixture(scope="module")
def world(tiny, tmp_path_factory):
    """DATA.csv scored by TEACHER and STUDENT and a selection s1, made in ``base`` with relative paths."""
    base = tmp_path_factory.mktemp("surprises")
    shutil.copy(tiny["csv"], base / "DATA.csv")
    for name in ("TEACHER", "STUDENT"):
        shutil.copytree(tiny[name.lower()], base / name)
    cache = base / "CACHE"
    run_cli("select", "--data", "DATA.csv", *MODELS, "--budget", "30", "--name", "s1", "--no-progress",
            cache=cache, cwd=base, check=True)
    return {"base": base, "cache": cache}


def entries(cache: Path) -> list[str]:
    return sorted(e.key for e in Store(cache).entries())


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: ")]


# -- a forgotten option ---------------------------------------------------------------------------

def test_scoring_anew_under_a_near_key_warns_first(world, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(world["cache"], cache)
    proc = run_cli("score", "--data", "DATA.csv", "--teacher", "TEACHER", "--max-length", "64", "--no-progress",
                   cache=cache, cwd=world["base"], check=True)
    [line] = warnings_in(proc.stderr)
    assert "scoring teacher TEACHER anew" in line and "differs only in --max-length (cached 128, asked 64)" in line
    assert "stop now (Ctrl-C) and add --max-length 128" in line
    # the key it asked for is now cached: no warning the second time
    again = run_cli("score", "--data", "DATA.csv", "--teacher", "TEACHER", "--max-length", "64", "--no-progress",
                    cache=cache, cwd=world["base"], check=True)
    assert warnings_in(again.stderr) == []


def test_an_entry_of_the_older_cache_format_is_named_with_its_fix(world, tmp_path):
    """Cache format 2 keys hash every spec field: a format-1 entry is never reused, and --no-compute says so."""
    cache = tmp_path / "cache"
    shutil.copytree(world["cache"], cache)
    old = Store(cache).entries()[0]
    manifest = json.loads(old.manifest_path.read_text())
    moved = old.path.with_name("a" * 24)  # an older selectkd put it under another key
    old.path.rename(moved)
    (moved / "manifest.json").write_text(json.dumps({**manifest, "key": "a" * 24, "format_version": 1}))
    proc = run_cli("score", "--data", "DATA.csv", *MODELS, "--no-progress", cache=cache, cwd=world["base"])
    assert proc.returncode == 0, proc.stderr  # scored anew, no warning about an entry that cannot be reused
    assert warnings_in(proc.stderr) == []
    shutil.rmtree(Store(cache).entry(old.kind, old.key).path)
    again = run_cli("select", "--data", "DATA.csv", *MODELS, "--no-compute", "--budget", "30", "--name", "s9",
                    "--no-progress", cache=cache, cwd=world["base"])
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert f"was written in format 1: re-score it (drop --no-compute), then remove the old one with " \
           f"`selectkd cache rm {'a' * 24}`" in again.stderr
    listed = run_cli("cache", "ls", cache=cache, check=True).stdout
    assert f"1 entries of an older cache format, never reused: remove them with `selectkd cache rm {'a' * 24}`" in listed


def test_split_on_a_single_file_changes_no_key(world):
    before = entries(world["cache"])
    proc = run_cli("score", "--data", "DATA.csv", *MODELS, "--split", "dev", "--no-progress",
                   cache=world["cache"], cwd=world["base"], check=True)
    assert "all outputs reused from the cache" in proc.stdout  # the keys of --split train, already complete
    assert entries(world["cache"]) == before
    [line] = warnings_in(proc.stderr)
    assert "DATA.csv is a single file with one split: --split dev is ignored" in line


def test_device_cuda_on_a_machine_without_one_is_one_line(world):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    before = entries(world["cache"])
    proc = run_cli("score", "--data", "DATA.csv", "--teacher", "TEACHER", "--device", "cuda", "--max-length", "32",
                   cache=world["cache"], cwd=world["base"])
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "error: --device cuda is not usable" in proc.stderr and "devices here: cpu" in proc.stderr
    assert entries(world["cache"]) == before


def test_a_mistyped_name_with_no_hub_in_reach_is_one_line_at_once(world):
    """A name that is neither a path nor a built-in one is taken for a hub name; with the hub switched off or out
    of reach, that is one line naming the built-in names, not ~25 s of retries printed line by line first."""
    from selectkd.runtime import PROXY_VARIABLES

    no_proxy = {v: "" for v in PROXY_VARIABLES}
    unreachable = {**no_proxy, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens there
    for env, why in (({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"), (unreachable, "127.0.0.1 cannot be reached")):
        before = entries(world["cache"])
        model = run_cli("score", "--data", "DATA.csv", "--teacher", "minilm", cache=world["cache"], cwd=world["base"],
                        env=env)
        assert model.returncode == 2 and model.stderr.count("\n") == 1, model.stderr
        assert f"'minilm' is not a model folder or a built-in name, and the hub is out of reach ({why}" in model.stderr
        assert "minilm-l6" in model.stderr
        data = run_cli("score", "--data", "tweets_binary", "--teacher", "TEACHER", cache=world["cache"],
                       cwd=world["base"], env=env)
        assert data.returncode == 2 and data.stderr.count("\n") == 1, data.stderr
        assert "'tweets_binary' is not a file, a folder or a built-in name" in data.stderr
        assert "tweets-binary" in data.stderr and entries(world["cache"]) == before


def test_a_hanging_name_lookup_does_not_hold_the_offline_check(monkeypatch):
    """A resolver that never answers (the lookup comes before the connection's own timeout) costs the check its
    timeout and a second, not the resolver's half minute: the check says the hub did not answer."""
    import socket
    import time

    from huggingface_hub import constants

    from selectkd.runtime import PROXY_VARIABLES, hub_unreachable

    for v in PROXY_VARIABLES:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.example")
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: time.sleep(60))
    t0 = time.perf_counter()
    assert hub_unreachable(timeout=0.5) == "hub.example did not answer within 1.5 s"
    assert time.perf_counter() - t0 < 10


def test_max_positions_leave_out_the_padding_offset():
    assert _max_positions({"model_type": "bert", "max_position_embeddings": 512}) == 512
    assert _max_positions({"model_type": "mpnet", "max_position_embeddings": 514, "pad_token_id": 1}) == 512
    assert _max_positions({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}) == 512
    assert _max_positions({"model_type": "distilbert"}) is None


# -- export ---------------------------------------------------------------------------------------

def test_export_from_another_folder_reads_the_data_the_selection_was_made_from(world, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_csv(elsewhere / "DATA.csv", [{"text": "another file with the same name", "label": "positive"}] * 300)
    out = elsewhere / "s1.jsonl"
    run_cli("export", "--selection", "s1", "--out", "s1.jsonl", cache=world["cache"], cwd=elsewhere, check=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    original = (world["base"] / "DATA.csv").read_text().splitlines()[1:]
    assert len(rows) == 30 and all(f"{r['text']},{r['label']}" == original[r["uid"]] for r in rows)
    prov = json.loads((elsewhere / "s1.jsonl.provenance.json").read_text())
    assert prov["data"]["data"] == str((world["base"] / "DATA.csv").resolve()) and prov["data"]["given"] == "DATA.csv"

    data = world["base"] / "DATA.csv"
    kept = data.read_bytes()
    try:
        data.write_bytes(kept.replace(b"good", b"fine", 1))
        proc = run_cli("export", "--selection", "s1", "--out", "again.jsonl", cache=world["cache"], cwd=elsewhere)
    finally:
        data.write_bytes(kept)
    assert proc.returncode == 2 and "changed since selection 's1' was made" in proc.stderr
    assert not (elsewhere / "again.jsonl").exists()


def test_export_names_columns_after_the_teachers_and_holds_their_kl(world, tmp_path):
    out = tmp_path / "s1.arrow"
    run_cli("export", "--selection", "s1", "--out", str(out), cache=world["cache"], check=True)
    table = pa.ipc.open_file(pa.memory_map(str(out))).read_all()
    assert {"logits_TEACHER", "kl_TEACHER", "entropy", "margin", "least_confidence"} <= set(table.column_names)
    assert not [c for c in table.column_names if c.startswith("logits_") and c != "logits_TEACHER"]
    prov = json.loads(out.with_name("s1.arrow.provenance.json").read_text())
    key = prov["cache"]["teachers"][0]
    assert prov["export"]["teacher_columns"] == {"logits_TEACHER": key, "kl_TEACHER": key}
    # kl is KL(teacher || student) as the student entry holds it, row by row
    scores = Store(world["cache"]).entry("student", prov["cache"]["student"]).read_file("scores.arrow")
    by_uid = dict(zip(scores.column("uid").to_pylist(), column_matrix(scores, "kl")[:, 0]))
    uids = table.column("uid").to_pylist()
    assert np.allclose(table.column("kl_TEACHER").to_numpy(), [by_uid[u] for u in uids])


def test_teacher_labels_are_column_safe_and_unique():
    assert teacher_labels(["runs/a/teacher/", "runs/b/teacher", "minilm-l6", "org/bert.base"]) == \
        ["teacher", "teacher_2", "minilm_l6", "bert_base"]


# -- built-in models from another store -----------------------------------------------------------

def fake_builtin(store: Path, model: Path) -> None:
    """What `assets install` leaves: the model folder under assets/models/NAME with its marker file."""
    folder = store / "assets" / "models" / "minilm-l6"
    shutil.copytree(model, folder)
    (folder / ".selectkd-installed").write_text('{"name": "minilm-l6"}\n')


def test_builtin_model_is_found_in_the_default_stores(world, tmp_path):
    home, other = tmp_path / "home", tmp_path / "other"
    fake_builtin(home / "cache", world["base"] / "TEACHER")
    args = ["score", "--data", str(world["base"] / "DATA.csv"), "--teacher", "minilm-l6", "--max-length", "32",
            "--no-progress"]
    there = run_cli(*args, cache=home / "cache", cwd=home, check=True)  # installed in the store in use
    found = run_cli(*args, "--cache-dir", str(other), cache=home / "cache", cwd=tmp_path, check=True)  # $SELECTKD_CACHE
    in_cwd = run_cli(*args, cache=tmp_path / "third", cwd=home, check=True)  # ./cache
    assert entries(home / "cache") == entries(other) == entries(tmp_path / "third")  # the key hashes the files

    missing = run_cli(*args, cache=tmp_path / "empty", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "built-in model 'minilm-l6' is not installed in" in missing.stderr
    assert f"selectkd assets install --models minilm-l6 --cache-dir {tmp_path / 'empty'}" in missing.stderr
    assert not (tmp_path / "empty" / "teacher").exists()
    assert there.returncode == found.returncode == in_cwd.returncode == 0


# -- saved models follow the umask ----------------------------------------------------------------

def modes(folder: Path) -> set[tuple[str, str]]:
    return {("dir" if p.is_dir() else "file", oct(stat.S_IMODE(p.stat().st_mode))) for p in [folder, *folder.rglob("*")]}


def test_saved_models_follow_the_umask(world, tmp_path):
    old = os.umask(0o022)
    try:
        run_cli("finetune", "--data", "DATA.csv", "--model", "STUDENT", "--out", str(tmp_path / "tuned"),
                "--head-only", "--max-length", "32", "--no-progress", cache=world["cache"], cwd=world["base"], check=True)
        run_cli("distill", "--data", "DATA.csv", "--teacher", "TEACHER", "--student", "STUDENT", "--epochs", "1",
                "--max-length", "32", "--out", str(tmp_path / "run"), "--no-progress", cache=world["cache"],
                cwd=world["base"], check=True)
    finally:
        os.umask(old)
    assert any(p.suffix == ".safetensors" for p in (tmp_path / "tuned").iterdir())
    assert modes(tmp_path / "tuned") == {("dir", "0o755"), ("file", "0o644")}
    assert (tmp_path / "run" / "student" / "model.safetensors").exists()
    assert modes(tmp_path / "run") == {("dir", "0o755"), ("file", "0o644")}
