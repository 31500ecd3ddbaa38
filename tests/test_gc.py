"""`selectkd cache gc`: lists exactly what nothing needs, removes it only with --yes, never an entry in use."""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import time
from pathlib import Path

import pytest

from selectkd.cache import gc
from selectkd.cache.store import Store
from selectkd.errors import CacheError, OptionError
from selectkd.scoring.run import score
from selectkd.selection.run import select
from selectkd.specs import DataSpec, ScoreSpec, SelectSpec

from .conftest import build_bert, run_cli
from .test_security import one_line_error


@pytest.fixture(scope="module")
def store_made(tiny, tmp_path_factory):
    """A store with: a selection (student + teacher A), teacher B that nothing uses, teacher C read by a live
    run, an entry of an old format, a killed writer's temp file, a stale lock and a gone run's registration."""
    base = tmp_path_factory.mktemp("gc")
    root = base / "cache"
    data = DataSpec(str(tiny["csv"]))
    teacher_b = build_bert(base / "teacher-b", tiny["tokenizer"], num_labels=2, seed=5)
    teacher_c = build_bert(base / "teacher-c", tiny["tokenizer"], num_labels=2, seed=6)
    sel = select(data, ScoreSpec((str(tiny["teacher"]),), str(tiny["student"])), SelectSpec(budget=30), name="s1",
                 cache_dir=root, progress=False)
    b = score(data, ScoreSpec((str(teacher_b),)), cache_dir=root, progress=False).teachers[0].key
    c = score(data, ScoreSpec((str(teacher_c),)), cache_dir=root, progress=False).teachers[0].key
    live = base / "run-live"
    live.mkdir()
    (live / "config.json").write_text("{}")
    gc.register_run(root, live, [c], None)
    gone = gc.register_run(root, base / "run-gone", [b], None)
    old = root / "teacher" / ("0" * 24)
    shutil.copytree(root / "teacher" / b, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["format_version"] = 1
    (old / "manifest.json").write_text(json.dumps(manifest))
    tmp = root / "selections" / ".s2.tmp-999999999"
    tmp.mkdir()
    (tmp / "half.arrow").write_bytes(b"x" * 10)
    lock = root / "teacher" / ".abcdef123456.lock"
    lock.write_text("")
    return {"root": root, "selection": sel, "unused": b, "live": c, "old": old.name, "tmp": tmp, "lock": lock,
            "gone": gone}


@pytest.fixture
def store(store_made, tmp_path):
    copy = tmp_path / "cache"
    shutil.copytree(store_made["root"], copy)
    return {**store_made, "root": copy, "tmp": copy / store_made["tmp"].relative_to(store_made["root"]),
            "lock": copy / store_made["lock"].relative_to(store_made["root"]),
            "gone": copy / store_made["gone"].relative_to(store_made["root"])}


def listing(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.lstat().st_mtime_ns for p in sorted(root.rglob("*"))}


def test_plan_lists_exactly_what_nothing_needs_and_changes_nothing(store):
    root = store["root"]
    before = listing(root)
    found = gc.plan(Store(root))
    assert listing(root) == before  # planning touches nothing, not even lock files
    names = {c.name for c in found.remove}
    assert names == {f"teacher/{store['unused']}", f"teacher/{store['old']}", str(store["tmp"]), str(store["lock"]),
                     str(store["gone"])}
    why = {c.name: c.why for c in found.remove}
    assert "cache format 1" in why[f"teacher/{store['old']}"] and "killed writer" in why[str(store["tmp"])]
    # kept: the selection's student, its embeddings and teacher, the teacher a live run reads
    assert found.kept == 4 and not found.in_use


def test_older_than_keeps_young_entries_and_apply_removes_only_the_plan(store):
    root = store["root"]
    young = gc.plan(Store(root), gc.parse_age("30d"))
    assert {c.name for c in young.remove} == {str(store["tmp"]), str(store["lock"]), str(store["gone"])}
    removed = gc.apply(gc.plan(Store(root)))
    assert len(removed) == 5
    left = {e.key for e in Store(root).entries()}
    prov = store["selection"].provenance["cache"]
    assert left == {prov["student"], prov["embedding"], *prov["teachers"], store["live"]}
    assert not store["tmp"].exists() and not store["lock"].exists() and not store["gone"].exists()
    assert gc.plan(Store(root)).remove == []  # a second gc finds nothing


def _hold(root: str, key: str, ready, seconds: float) -> None:
    with Store(root).entry("teacher", key).lock():
        ready.set()
        time.sleep(seconds)


def test_an_entry_being_written_is_never_touched(store):
    root = store["root"]
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    p = ctx.Process(target=_hold, args=(str(root), store["unused"], ready, 30))
    p.start()
    try:
        assert ready.wait(20)
        found = gc.plan(Store(root))
        assert [e.key for e in found.in_use] == [store["unused"]]
        before = listing(root)
        with pytest.raises(CacheError, match="being written by another process"):
            gc.apply(found)
        assert listing(root).keys() == before.keys()  # nothing removed
        line = one_line_error(run_cli("cache", "gc", "--yes", cache=root))
        assert "being written by another process" in line and "cache gc" in line
        assert listing(root).keys() == before.keys()
    finally:
        p.kill()
        p.join()


def test_cli_lists_without_yes_and_refuses_a_bad_age(store):
    root = store["root"]
    before = listing(root).keys()
    shown = run_cli("cache", "gc", cache=root, check=True)
    assert "5 to remove" in shown.stdout and "--yes" in shown.stdout
    assert listing(root).keys() == before
    line = one_line_error(run_cli("cache", "gc", "--older-than", "thirty days", cache=root))
    assert "--older-than 'thirty days'" in line and "30d" in line
    with pytest.raises(OptionError):
        gc.parse_age("5y")
    done = run_cli("cache", "gc", "--yes", cache=root, check=True)
    assert "removed 5" in done.stdout


def test_a_distill_run_registers_the_entries_it_reads(tiny, tmp_path):
    from selectkd.distillation.config import DistillConfig
    from selectkd.distillation.loop import distill

    root = tmp_path / "cache"
    cfg = DistillConfig.from_options(data=str(tiny["csv"]), teachers=[str(tiny["teacher"])], student=str(tiny["student"]),
                                     out=str(tmp_path / "run"), epochs=1, min_steps=0, limit=60, holdout=0.0,
                                     test_limit=0, checkpoint=False, cache_dir=str(root))
    distill(cfg, progress=False)
    [teacher] = [e.key for e in Store(root).entries() if e.kind == "teacher"]
    assert gc.plan(Store(root)).remove == []  # the run's teacher is kept while the run folder exists
    shutil.rmtree(tmp_path / "run")
    assert {c.name for c in gc.plan(Store(root)).remove} >= {f"teacher/{teacher}"}


def test_removing_a_selection_frees_its_entries_for_gc(store):
    root = store["root"]
    prov = store["selection"].provenance["cache"]
    kept = {f"student/{prov['student']}", f"embedding/{prov['embedding']}", *(f"teacher/{k}" for k in prov["teachers"])}
    assert not kept & {c.name for c in gc.plan(Store(root)).remove}
    line = one_line_error(run_cli("cache", "rm", prov["student"][:10], "selection:nope", cache=root))
    assert "no selection 'nope'" in line and "have: s1" in line
    assert Store(root).entry("student", prov["student"]).exists()  # every name is checked before the first removal
    done = run_cli("cache", "rm", "s1", cache=root, check=True)
    assert "removed selection s1" in done.stdout
    assert not (root / "selections" / "s1").exists() and Store(root).entry("student", prov["student"]).exists()
    assert kept <= {c.name for c in gc.plan(Store(root)).remove}


def test_an_entry_referred_to_after_the_plan_is_kept(store):
    root = store["root"]
    found = gc.plan(Store(root))
    assert f"teacher/{store['unused']}" in {c.name for c in found.remove}
    late = root / "selections" / "late"  # a selection saved between the plan and --yes names the unused teacher
    shutil.copytree(root / "selections" / "s1", late)
    prov = json.loads((late / "provenance.json").read_text())
    prov["cache"]["teachers"] = [store["unused"]]
    (late / "provenance.json").write_text(json.dumps(prov))
    removed = gc.apply(found)
    assert f"teacher/{store['unused']}" not in {c.name for c in removed} and len(removed) == len(found.remove) - 1
    assert Store(root).entry("teacher", store["unused"]).exists()
    assert not Store(root).entry("teacher", store["old"]).exists()


def test_an_older_selectkds_hash_memo_is_listed(store, monkeypatch):
    root = store["root"]
    (root / "fingerprints.json").write_text("{}")
    monkeypatch.setenv("SELECTKD_FINGERPRINTS", str(root / "fingerprints.json"))
    assert str(root / "fingerprints.json") not in {c.name for c in gc.plan(Store(root)).remove}  # the memo in use
    monkeypatch.delenv("SELECTKD_FINGERPRINTS")
    found = gc.plan(Store(root))
    assert "older selectkd" in {c.name: c.why for c in found.remove}[str(root / "fingerprints.json")]
    gc.apply(found)
    assert not (root / "fingerprints.json").exists()
