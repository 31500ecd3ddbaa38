"""What the store reads back cannot lead outside it or crash a command: damaged manifests,
links, truncated selections, a store root that is a file or read-only, and the lock files of
failed runs. Every case runs the real command on a copy of one scored cache."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from selectkd.cache.store import Store, part_name

from .conftest import run_cli
from .test_security import one_line_error

WIDE = {"COLUMNS": "250"}  # rich cuts table cells to the terminal's width


def models(tiny) -> list[str]:
    return ["--data", str(tiny["csv"]), "--teacher", str(tiny["teacher"]), "--student", str(tiny["student"]),
            "--no-progress"]


@pytest.fixture(scope="module")
def scored(tiny, tmp_path_factory):
    """A cache with DATA scored by the teacher and the student and a selection s1 (copied by `cache`)."""
    cache = tmp_path_factory.mktemp("scored") / "cache"
    run_cli("select", *models(tiny), "--budget", "30", "--name", "s1", cache=cache, check=True)
    return cache


@pytest.fixture
def cache(scored, tmp_path):
    copy = tmp_path / "cache"
    shutil.copytree(scored, copy)
    return copy


def teacher_entry(cache: Path):
    return next(e for e in Store(cache).entries() if e.kind == "teacher")


def edit_manifest(entry, change) -> None:
    manifest = json.loads(entry.manifest_path.read_text())
    change(manifest)
    entry.manifest_path.write_text(json.dumps(manifest))


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# -- names read from the store ---------------------------------------------------------------------

@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_repair_never_deletes_a_file_the_manifest_names_outside_the_entry(tiny, cache, tmp_path, where):
    victim = tmp_path / "victim.txt"
    victim.write_text("someone's file\n")
    entry = teacher_entry(cache)
    name = str(victim) if where == "absolute" else "../../../victim.txt"
    assert (entry.path / name).resolve() == victim.resolve()
    edit_manifest(entry, lambda m: m["files"].update({name: "0" * 64}))

    line = one_line_error(run_cli("score", *models(tiny), "--repair", cache=cache))
    assert f"cache entry teacher/{entry.key} is damaged" in line and "not a file inside its folder" in line
    assert f"selectkd cache rm {entry.key}" in line
    assert victim.read_text() == "someone's file\n"
    verify = run_cli("cache", "verify", cache=cache)
    assert verify.returncode == 1 and f"BAD teacher/{entry.key}" in verify.stderr
    assert victim.exists()


def test_a_symlink_in_an_entry_is_damage_and_repair_replaces_the_link_not_its_target(tiny, cache, tmp_path):
    entry = teacher_entry(cache)
    part = entry.path / part_name(0)
    outside = tmp_path / "outside.arrow"
    shutil.move(part, outside)
    before = outside.read_bytes()
    part.symlink_to(outside)  # the same bytes, so the checksum alone would pass it

    verify = run_cli("cache", "verify", entry.key, cache=cache)
    assert verify.returncode == 1 and part_name(0) in verify.stderr and "not a plain file" in verify.stderr
    line = one_line_error(run_cli("score", *models(tiny), cache=cache))
    assert part_name(0) in line and "--repair" in line
    run_cli("score", *models(tiny), "--repair", cache=cache, check=True)
    assert outside.read_bytes() == before
    assert not part.is_symlink() and part.read_bytes() == before
    assert run_cli("cache", "verify", cache=cache).returncode == 0


def test_an_entry_folder_that_is_a_link_is_damaged_and_rm_removes_only_the_link(cache, tmp_path):
    entry = teacher_entry(cache)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(entry.path, elsewhere)
    entry.path.symlink_to(elsewhere, target_is_directory=True)
    kept = files_under(elsewhere)

    ls = run_cli("cache", "ls", cache=cache, env=WIDE, check=True)
    assert next(line for line in ls.stdout.splitlines() if entry.key in line).rstrip(" │").endswith("damaged")
    line = one_line_error(run_cli("cache", "info", entry.key, cache=cache))
    assert "its folder is a symlink" in line
    run_cli("cache", "rm", entry.key, cache=cache, check=True)
    assert not entry.path.is_symlink() and files_under(elsewhere) == kept


@pytest.mark.parametrize("text", ["[1, 2]", "{}", '{"inputs": [], "files": {}}', "\xff not utf-8"])
def test_one_bad_manifest_does_not_break_cache_ls(cache, text):
    entry = teacher_entry(cache)
    entry.manifest_path.write_bytes(text.encode("latin-1"))
    (cache / "teacher" / "stray.txt").write_text("not an entry\n")
    (cache / "teacher" / "not-a-key").mkdir()
    ls = run_cli("cache", "ls", cache=cache, env=WIDE, check=True)
    rows = {line.split("│")[2].strip(): line for line in ls.stdout.splitlines() if line.count("│") > 3}
    assert rows[entry.key].rstrip(" │").endswith("damaged")
    student = next(e for e in Store(cache).entries() if e.kind == "student")
    assert rows[student.key].rstrip(" │").endswith("yes")
    assert "3 entries and 1 selections" in ls.stdout  # the stray file and folder are not entries
    verify = run_cli("cache", "verify", cache=cache)
    assert verify.returncode == 1 and f"BAD teacher/{entry.key}: cache entry teacher/{entry.key} is damaged" in verify.stderr
    assert f"ok  student/{student.key}" in verify.stdout


def test_fingerprints_json_of_another_shape_is_rebuilt(tiny, cache, tmp_path):
    memo = tmp_path / "fp.json"
    memo.write_text("[]")
    proc = run_cli("score", *models(tiny), cache=cache, check=True, env={"SELECTKD_FINGERPRINTS": str(memo)})
    assert proc.stdout.count("│ reused") == 3  # same keys as before: the memo only saves re-reading weights
    assert isinstance(json.loads(memo.read_text()), dict)


# -- selections ------------------------------------------------------------------------------------

def test_a_truncated_selection_is_damaged_for_export_distill_and_verify(tiny, cache, tmp_path):
    path = cache / "selections" / "s1" / "selection.arrow"
    path.write_bytes(path.read_bytes()[:200])
    out = tmp_path / "out.csv"
    line = one_line_error(run_cli("export", "--selection", "s1", "--out", str(out), cache=cache))
    # select records selection.arrow's sha256 in provenance.json, so the checksum catches the truncation
    assert "selection 's1' is damaged (selection.arrow is missing or fails its checksum" in line and "--overwrite" in line
    assert not out.exists()
    run = tmp_path / "run"
    line = one_line_error(run_cli("distill", *models(tiny), "--selection", "s1", "--out", str(run), cache=cache))
    assert "selection 's1' is damaged" in line and not run.exists()
    verify = run_cli("cache", "verify", cache=cache)
    assert verify.returncode == 1 and "BAD selection/s1" in verify.stderr
    assert verify.stdout.count("ok  ") == 3  # every entry is fine


def test_verify_checks_a_selection_checksum_when_one_is_recorded(cache):
    folder = cache / "selections" / "s1"
    prov = json.loads((folder / "provenance.json").read_text())
    digest = hashlib.sha256((folder / "selection.arrow").read_bytes()).hexdigest()
    (folder / "provenance.json").write_text(json.dumps({**prov, "files": {"selection.arrow": digest}}))
    assert "ok  selection/s1" in run_cli("cache", "verify", "s1", cache=cache, check=True).stdout

    (folder / "provenance.json").write_text(json.dumps({**prov, "files": {"selection.arrow": "0" * 64}}))
    verify = run_cli("cache", "verify", "s1", cache=cache)
    assert verify.returncode == 1 and "selection.arrow is missing or fails its checksum" in verify.stderr


def test_verify_reports_a_selection_whose_cache_entries_are_gone(cache):
    entry = teacher_entry(cache)
    run_cli("cache", "rm", entry.key, cache=cache, check=True)
    verify = run_cli("cache", "verify", "selection:s1", cache=cache)
    assert verify.returncode == 1 and f"names cache entries that are gone (teacher/{entry.key})" in verify.stderr


def test_cache_ls_shows_max_length_limit_and_selections(tiny, tmp_path):
    cache = tmp_path / "c"
    run_cli("select", *models(tiny), "--max-length", "16", "--limit", "50", "--budget", "10", "--name", "small",
            cache=cache, check=True)
    ls = run_cli("cache", "ls", cache=cache, env=WIDE, check=True).stdout
    header = next(line for line in ls.splitlines() if "max len" in line)
    assert [c.strip() for c in header.strip("┃ ").split("┃")][4:6] == ["max len", "limit"]
    entries = [line for line in ls.splitlines() if "train.csv:train" in line and "student/" not in line]
    assert len(entries) == 3 and all([c.strip() for c in e.split("│")][5:7] == ["16", "50"] for e in entries)
    student = next(e for e in Store(cache).entries() if e.kind == "student")
    row = next(line for line in ls.splitlines() if line.startswith("│ small"))
    assert "random" in row and "10" in row and f"student/{student.key[:12]}" in row
    assert "3 entries and 1 selections" in ls


def test_cache_info_reads_selections_and_an_exact_selection_name_wins(tiny, cache):
    key = teacher_entry(cache).key
    info = json.loads(run_cli("cache", "info", "s1", cache=cache, check=True).stdout)
    assert info["name"] == "s1" and info["strategy"] == "random"
    # a selection named like a key prefix: the bare name is the selection, more of the key the entry
    run_cli("select", *models(tiny), "--budget", "10", "--name", key[:4], cache=cache, check=True)
    assert json.loads(run_cli("cache", "info", key[:4], cache=cache, check=True).stdout)["name"] == key[:4]
    assert json.loads(run_cli("cache", "info", key[:8], cache=cache, check=True).stdout)["key"] == key
    assert json.loads(run_cli("cache", "info", f"selection:{key[:4]}", cache=cache, check=True).stdout)["rows"] == 10


# -- the store root ----------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["score", "select", "cache rm"])
def test_a_store_under_a_file_is_refused_before_any_work(tiny, tmp_path, command):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file\n")
    args = ["rm", "0000"] if command == "cache rm" else models(tiny)
    line = one_line_error(run_cli(*command.split()[:1], *args, "--cache-dir", str(blocker / "cache"), cache=tmp_path))
    assert f"cannot make cache folder {blocker / 'cache'}: {blocker} is a file" in line and "--cache-dir" in line
    assert blocker.read_text() == "a file\n" and sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_a_failed_run_leaves_no_lock_file(tiny, tmp_path):
    cache = tmp_path / "c"
    # the student has no trained head: refused when the model loads, inside the key's lock
    line = one_line_error(run_cli("score", "--data", str(tiny["csv"]), "--teacher", str(tiny["student"]),
                                  "--no-progress", cache=cache))
    assert "no trained classification head" in line
    assert files_under(cache) == set()


@pytest.fixture
def read_only(scored, tmp_path):
    """A copy of the scored cache on a tmpfs remounted read-only (root in a container that allows mounts)."""
    mount = tmp_path / f"ro-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root and mount rights); the ENOTDIR test covers the same check")
    try:
        shutil.copytree(scored, mount, dirs_exist_ok=True)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_read_only_store_is_refused_in_one_line(tiny, read_only, tmp_path):
    before = files_under(read_only)
    fix = "(read-only file system); choose a writable folder with --cache-dir or SELECTKD_CACHE"
    for args in (["select", *models(tiny), "--name", "s2"], ["score", *models(tiny), "--max-length", "32"],
                 ["cache", "rm", teacher_entry(read_only).key]):
        line = one_line_error(run_cli(*args, cache=read_only))
        assert f"cannot write cache folder {read_only} {fix}" in line, args
    # reading works: a fully cached score writes nothing
    assert "no model was run" in run_cli("score", *models(tiny), cache=read_only, check=True).stdout
    assert files_under(read_only) == before
    # export's --out on the read-only disk: refused up front (selectkd/outputs.py), one line naming the fix
    line = one_line_error(run_cli("export", "--selection", "s1", "--out", str(read_only / "x.csv"), cache=read_only))
    assert "is read-only" in line.lower() and "choose another --out" in line


def test_os_error_line_names_the_path_and_the_fix():
    import errno

    from selectkd.cli.main import os_error_line

    line = os_error_line(OSError(errno.EROFS, "Read-only file system", "/mnt/c/x"))
    assert line == "cannot use /mnt/c/x: read-only file system; choose a writable --cache-dir / SELECTKD_CACHE or --out"
    assert os_error_line(OSError(errno.ENAMETOOLONG, "File name too long", "a" * 300)).endswith(
        "the name is too long; choose a shorter name or path")
    assert "\n" not in os_error_line(OSError("Failed to open 'x'.\nDetail: [errno 5] I/O error"))
