import multiprocessing as mp
import time

import numpy as np
import pyarrow as pa
import pytest

from selectkd.cache.store import EntryWriter, Store, hash_inputs, part_name
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
