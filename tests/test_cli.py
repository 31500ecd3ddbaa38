"""The real `selectkd` command on tiny real files, as a user runs it (bad input: test_bad_input.py)."""

import json

from selectkd.cache.store import Store, part_name

from .conftest import run_cli, write_csv


def score_args(tiny, data=None, *extra):
    return ["score", "--data", str(data or tiny["csv"]), "--teacher", str(tiny["teacher"]),
            "--student", str(tiny["student"]), "--no-progress", *extra]


def test_score_end_to_end_then_reuse_then_cache_commands(tiny, tmp_path):
    cache = tmp_path / "c"
    first = run_cli(*score_args(tiny), cache=cache, check=True)
    assert first.stdout.count("written") == 3  # teacher, the student's embeddings, its probe and scores
    second = run_cli(*score_args(tiny), cache=cache, check=True)
    assert second.stdout.count("│ reused") == 3 and "no model was run" in second.stdout
    ls = run_cli("cache", "ls", cache=cache, check=True)
    assert "3 entries" in ls.stdout
    key = Store(cache).entries()[0].key
    info = run_cli("cache", "info", key[:8], cache=cache, check=True)
    assert json.loads(info.stdout)["key"] == key
    assert "3 entries verified" in run_cli("cache", "verify", cache=cache, check=True).stdout
    run_cli("cache", "rm", key[:8], cache=cache, check=True)
    assert len(Store(cache).entries()) == 2


def test_config_file_sets_options_and_flags_win(tiny, tmp_path):
    cache = tmp_path / "c"
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'data = "{tiny["csv"]}"\nteacher = ["{tiny["teacher"]}"]\nmax-length = 16\nprogress = false\n')
    run_cli("score", "--config", str(cfg), cache=cache, check=True)
    assert Store(cache).entries()[0].manifest()["inputs"]["max_length"] == 16
    run_cli("score", "--config", str(cfg), "--max-length", "24", cache=cache, check=True)
    lengths = sorted(e.manifest()["inputs"]["max_length"] for e in Store(cache).entries())
    assert lengths == [16, 24]


def test_damaged_part_is_refused_with_the_fix(tiny, tmp_path):
    cache = tmp_path / "c"
    args = ["score", "--data", str(tiny["csv"]), "--teacher", str(tiny["teacher"]), "--no-progress"]
    run_cli(*args, cache=cache, check=True)
    entry = Store(cache).entries()[0]
    part = entry.path / part_name(0)
    data = bytearray(part.read_bytes())
    data[-100] ^= 0x01
    part.write_bytes(bytes(data))
    proc = run_cli(*args, cache=cache)
    assert proc.returncode == 2 and f"selectkd cache rm {entry.key}" in proc.stderr
    verify = run_cli("cache", "verify", cache=cache)
    assert verify.returncode == 1 and part_name(0) in verify.stderr


def test_string_labels_map_in_sorted_order(tiny, tmp_path):
    from selectkd.data.rows import DataSpec, load_rows

    rows = load_rows(DataSpec(str(tiny["csv"])), tmp_path)
    assert rows.label_names == ["negative", "positive"]
    assert rows.labels[:4].tolist() == [0, 1, 0, 1]
    assert rows.uids[:3].tolist() == [0, 1, 2]


def test_text_pairs_are_scored(tiny, tmp_path):
    rows = [{"premise": r["text"], "hypothesis": r["text"][::-1], "label": r["label"]} for r in tiny["rows"][:40]]
    f = write_csv(tmp_path / "pairs.csv", rows)
    run_cli("score", "--data", str(f), "--text-field", "premise", "--text-pair-field", "hypothesis",
                   "--teacher", str(tiny["teacher"]), "--no-progress", cache=tmp_path / "c", check=True)
    entry = Store(tmp_path / "c").entries()[0]
    assert entry.manifest()["inputs"]["text_pair_field"] == "hypothesis" and entry.is_complete()


def test_help_explains_every_command():
    for args in (["--help"], ["score", "--help"], ["cache", "--help"], ["assets", "install", "--help"]):
        proc = run_cli(*args, cache="/nonexistent")
        assert proc.returncode == 0 and "Usage" in proc.stdout


def test_a_teacher_scored_with_an_untrained_head_is_found_by_select(tiny, tmp_path):
    """Bug (issue 11): select's call to score() left --allow-untrained-head out, so it asked for another key."""
    cache = tmp_path / "c"
    untrained = tmp_path / "untrained-teacher"
    import shutil

    shutil.copytree(tiny["student"], untrained)  # an encoder without a classification head
    models = ["--data", str(tiny["csv"]), "--teacher", str(untrained), "--student", str(tiny["student"])]
    run_cli("score", *models, "--allow-untrained-head", "--no-progress", cache=cache, check=True)
    picked = run_cli("select", *models, "--allow-untrained-head", "--no-compute", "--budget", "30", "--name", "u",
                     "--no-progress", cache=cache)
    assert picked.returncode == 0, picked.stderr
    forgot = run_cli("select", *models, "--no-compute", "--budget", "30", "--name", "v", "--no-progress", cache=cache)
    assert forgot.returncode == 2 and "differs in --allow-untrained-head (cached on, asked off)" in forgot.stderr
    assert "add --allow-untrained-head or drop --no-compute" in forgot.stderr


def test_adding_a_teacher_reuses_the_student_embeddings(tiny, tmp_path):
    from .conftest import build_bert

    cache = tmp_path / "c"
    run_cli(*score_args(tiny), cache=cache, check=True)
    second = build_bert(tmp_path / "t2", tiny["tokenizer"], num_labels=2, seed=11)
    more = run_cli(*score_args(tiny), "--teacher", str(second), cache=cache, check=True).stdout
    assert "re-fitted for these teachers with 0 student rows run forward" in more
    roles = {line.split("│")[1].strip(): line for line in more.splitlines() if "│" in line and "/" in line}
    assert "reused" in roles["embedding"] and "written" in roles["student"]
