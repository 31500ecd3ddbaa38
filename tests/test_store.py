import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from selectkd.cache.keys import hash_inputs
from selectkd.cache.store import EntryWriter, Store, part_name
from selectkd.errors import CacheError


def test_key_is_stable_and_sensitive():
    a = {"model": "m1", "max_length": 128, "data": "d", "fields": ["text", None]}
    assert hash_inputs(a) == hash_inputs(dict(reversed(list(a.items()))))
    assert hash_inputs(a) != hash_inputs({**a, "max_length": 64})
    assert hash_inputs(a) != hash_inputs({**a, "model": "m2"})


def _write(store: Store, n_parts: int = 3):
    entry = store.entry("teacher", "k1")
    with entry.lock():
        w = EntryWriter(entry, {"x": 1})
        for i in range(n_parts):
            w.write_table(part_name(i), pa.table({"uid": np.arange(i * 4, i * 4 + 4), "v": np.ones(4) * i}))
        w.finish()
    return entry


def test_parts_roundtrip_memory_mapped(tmp_path):
    entry = _write(Store(tmp_path))
    table = entry.read_parts()
    assert table.column("uid").to_pylist() == list(range(12))
    assert entry.verify() == []
    assert not list(entry.path.glob(".*tmp*"))


def test_verify_catches_a_flipped_byte(tmp_path):
    entry = _write(Store(tmp_path))
    part = entry.path / part_name(1)
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    assert entry.verify() == [part_name(1)]
    with pytest.raises(CacheError, match="cache rm"):
        entry.read_parts()


def test_writer_refuses_other_inputs_under_a_key(tmp_path):
    entry = _write(Store(tmp_path))
    with pytest.raises(CacheError, match="other inputs"):
        EntryWriter(entry, {"x": 2})


def test_remove_and_find_by_prefix(tmp_path):
    store = Store(tmp_path)
    entry = _write(store)
    assert store.find("k").key == "k1"
    store.remove(entry)
    assert store.entries() == []
    with pytest.raises(CacheError):
        store.find("k")


def _hold_lock(root, ready, seconds):
    entry = Store(root).entry("teacher", "k1")
    with entry.lock():
        ready.set()
        time.sleep(seconds)


def test_lock_makes_a_second_writer_wait(tmp_path):
    ready = mp.get_context("fork").Event()
    p = mp.get_context("fork").Process(target=_hold_lock, args=(tmp_path, ready, 1.0))
    p.start()
    ready.wait(10)
    entry = Store(tmp_path).entry("teacher", "k1")
    with pytest.raises(CacheError, match="another process"):
        with entry.lock(wait=False):
            pass
    t0 = time.perf_counter()
    with entry.lock():
        waited = time.perf_counter() - t0
    p.join()
    assert waited > 0.3


# -- every key from the specs (selectkd/cache/keys.py) ---------------------------------------------

def _key(kind="teacher", data=None, scoring=None, **kw):
    from dataclasses import replace
    from types import SimpleNamespace

    from selectkd.cache.keys import entry_key
    from selectkd.specs import DataSpec, ScoreSpec

    rows = SimpleNamespace(spec=replace(DataSpec("d.csv"), **(data or {})), fingerprint="f" * 24,
                           source={"file": "/x/d.csv"}, num_labels=2)
    scoring = scoring if isinstance(scoring, ScoreSpec) else ScoreSpec(teachers=("t",), student="s", **(scoring or {}))
    return entry_key(kind, rows, scoring, model=SimpleNamespace(fingerprint="m"), tokenizer="tok", device="cpu", **kw)


def test_a_new_spec_field_lands_in_every_key_unless_ignored():
    from dataclasses import field, make_dataclass

    from selectkd.specs import ScoreSpec

    Wider = make_dataclass("Wider", [("new_knob", int, field(default=0))], bases=(ScoreSpec,), frozen=True)
    for kind in ("teacher", "student"):
        assert _key(kind, scoring=Wider(teachers=("t",), student="s", new_knob=1))[0] != _key(kind)[0]
        assert _key(kind, scoring=Wider(teachers=("t",), student="s"))[1]["new_knob"] == 0


def test_each_key_holds_what_changes_its_numbers_and_nothing_else():
    teacher, student = _key("teacher")[0], _key("student")[0]
    assert _key("teacher", scoring={"probe_l2": 0.5})[0] == teacher  # the student's probe
    assert _key("student", scoring={"probe_l2": 0.5})[0] != student
    assert _key("student", scoring={"probe_max_iter": 50})[0] != student
    assert _key("teacher", scoring={"batch_size": 7, "trust_remote_code": True})[0] == teacher
    assert _key("teacher", scoring={"cls_states": True})[0] != teacher
    assert _key("student", scoring={"cls_states": True})[0] == student
    assert _key("teacher", scoring={"allow_untrained_head": True})[0] != teacher
    assert _key("teacher", data={"split": "dev"})[0] == teacher  # a single file has one split
    assert _key("teacher", data={"data": "moved/d.csv"})[0] == teacher  # its rows' fingerprint, not its name
    assert _key("teacher", data={"limit": 5})[0] != teacher
    assert _key("student", teacher_keys=["k1"])[0] != student
    assert "device" not in _key()[1] and _key()[1]["numerics"] == "float32"  # the device it ran on, as numerics


def test_an_entry_of_an_older_format_is_one_line_naming_the_fix(tmp_path):
    import json

    entry = _write(Store(tmp_path))
    manifest = json.loads(entry.manifest_path.read_text())
    entry.manifest_path.write_text(json.dumps({**manifest, "format_version": 1}))
    with pytest.raises(CacheError, match=r"cache format 1, this selectkd reads 3; remove it with `selectkd cache rm k1`"):
        entry.read_parts()
    assert entry.manifest(current=False)["format_version"] == 1  # `cache ls` and `cache info` still show it


def test_file_hashes_are_remembered_per_user_not_per_store(tmp_path, monkeypatch):
    """A new --cache-dir finds a model's key without re-reading its weights; a changed file is re-hashed."""
    import os

    from selectkd.cache import fingerprint

    memo = tmp_path / "home" / "fp.json"
    monkeypatch.setenv("SELECTKD_FINGERPRINTS", str(memo))
    reads = []
    real = fingerprint.file_sha256
    monkeypatch.setattr(fingerprint, "file_sha256", lambda p: reads.append(p) or real(p))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "model.safetensors").write_bytes(b"weights" * 1000)
    first = fingerprint.model_fingerprint(model)
    assert len(reads) == 2 and memo.exists()
    assert fingerprint.model_fingerprint(model) == first and len(reads) == 2  # any store: no re-read
    weights = model / "model.safetensors"
    weights.write_bytes(b"other weights" * 1000)
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert fingerprint.model_fingerprint(model) != first and len(reads) == 3  # only the changed file
    monkeypatch.delenv("SELECTKD_FINGERPRINTS")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fingerprint.memo_path() == tmp_path / "xdg" / "selectkd" / "fingerprints.json"


def model_folder(tmp_path, monkeypatch) -> Path:
    """A config and a weight file, hashed into this test's own memo."""
    monkeypatch.setenv("SELECTKD_FINGERPRINTS", str(tmp_path / "fp.json"))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "model.safetensors").write_bytes(b"weights" * 1000)
    return model


def test_a_model_key_ignores_selectkds_own_record_but_not_the_config(tmp_path, monkeypatch):
    """selectkd_finetune.json holds a fit's seconds: a re-fit to the same weights keeps the cached scores."""
    from selectkd.cache import fingerprint

    model = model_folder(tmp_path, monkeypatch)
    (model / "selectkd_finetune.json").write_text('{"seconds": 3793.2}')
    first = fingerprint.model_fingerprint(model)
    (model / "selectkd_finetune.json").write_text('{"seconds": 4261.2}')
    assert fingerprint.model_fingerprint(model) == first
    (model / "config.json").write_text('{"hidden_size": 8, "id2label": {"0": "b", "1": "a"}}')
    assert fingerprint.model_fingerprint(model) != first


def test_a_weights_fingerprint_names_the_weights_alone(tmp_path, monkeypatch):
    """The study names a teacher by its weights: a config edit keeps the name, one changed byte does not."""
    from selectkd.cache import fingerprint

    model = model_folder(tmp_path, monkeypatch)
    first = fingerprint.weights_fingerprint(model)
    assert first != fingerprint.model_fingerprint(model)
    (model / "config.json").write_text('{"hidden_size": 8, "id2label": {"0": "b", "1": "a"}}')
    (model / "selectkd_finetune.json").write_text('{"seconds": 3793.2}')
    assert fingerprint.weights_fingerprint(model) == first
    (model / "model.safetensors").write_bytes(b"weights" * 999 + b"weightZ")
    assert fingerprint.weights_fingerprint(model) != first


def test_column_matrix_of_a_sliced_table_is_its_rows():
    from selectkd.cache.arrays import column_matrix, fixed_list

    table = pa.table({"e": fixed_list(np.arange(20, dtype=np.float32).reshape(10, 2))})
    assert column_matrix(table.slice(3, 2), "e").tolist() == [[6, 7], [8, 9]]
    assert column_matrix(pa.concat_tables([table.slice(8), table.slice(0, 1)]), "e").tolist() == [
        [16, 17], [18, 19], [0, 1]]


def test_an_index_for_another_embedding_size_is_refused_in_one_line(tmp_path):
    import faiss

    from selectkd.cache.index import read_index
    from tests.conftest import run_cli

    store = Store(tmp_path)
    entries = {}
    for key, dim in (("e" * 24, 8), ("f" * 24, 4)):  # a sound entry, then one whose index has 4 dimensions, not 8
        entry = store.entry("embedding", key)
        with entry.lock():
            w = EntryWriter(entry, {"x": key}, {"num_rows": 5, "embedding_dim": 8})
            w.write_table(part_name(0), pa.table({"uid": np.arange(5)}))
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
            index.add_with_ids(np.eye(5, dim, dtype=np.float32), np.arange(5, dtype=np.int64))
            w.write_file("index.faiss", lambda tmp: faiss.write_index(index, str(tmp)))
            w.finish()
        entries[dim] = entry
    assert read_index(entries[8]).ntotal == 5
    with pytest.raises(CacheError, match="index.faiss is built for 4-dimensional embeddings, the entry holds 8"):
        read_index(entries[4])
    proc = run_cli("cache", "verify", cache=tmp_path)
    assert proc.returncode == 1 and f"ok  embedding/{'e' * 24}" in proc.stdout
    bad = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(bad) == 1 and "4-dimensional embeddings, the entry holds 8" in bad[0] and "cache rm" in bad[0]
