"""The real `selectkd` command on tiny real files, as a user runs it."""

import json

from selectkd.store import Store, part_name

from .conftest import run_cli, write_csv


def score_args(tiny, data=None, *extra):
    return ["score", "--data", str(data or tiny["csv"]), "--teacher", str(tiny["teacher"]),
            "--student", str(tiny["student"]), "--no-progress", *extra]


def test_score_end_to_end_then_reuse_then_cache_commands(tiny, tmp_path):
    cache = tmp_path / "c"
    first = run_cli(*score_args(tiny), cache=cache, check=True)
    assert first.stdout.count("written") == 2
    second = run_cli(*score_args(tiny), cache=cache, check=True)
    assert second.stdout.count("│ reused") == 2 and "no model was run" in second.stdout
    ls = run_cli("cache", "ls", cache=cache, check=True)
    assert "2 entries" in ls.stdout
    key = Store(cache).entries()[0].key
    info = run_cli("cache", "info", key[:8], cache=cache, check=True)
    assert json.loads(info.stdout)["key"] == key
    assert "2 entries verified" in run_cli("cache", "verify", cache=cache, check=True).stdout
    run_cli("cache", "rm", key[:8], cache=cache, check=True)
    assert len(Store(cache).entries()) == 1


def test_config_file_sets_options_and_flags_win(tiny, tmp_path):
    cache = tmp_path / "c"
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'data = "{tiny["csv"]}"\nteacher = ["{tiny["teacher"]}"]\nmax-length = 16\nprogress = false\n')
    run_cli("score", "--config", str(cfg), cache=cache, check=True)
    assert Store(cache).entries()[0].manifest()["inputs"]["max_length"] == 16
    run_cli("score", "--config", str(cfg), "--max-length", "24", cache=cache, check=True)
    lengths = sorted(e.manifest()["inputs"]["max_length"] for e in Store(cache).entries())
    assert lengths == [16, 24]


def test_config_file_with_an_unknown_key_is_refused(tiny, tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('data = "x.csv"\nmax_lenght = 16\n')
    proc = run_cli("score", "--config", str(cfg), cache=tmp_path / "c")
    assert proc.returncode == 2
    assert "max_lenght" in proc.stderr and "max-length" in proc.stderr


def _bad_inputs(tiny, tmp_path):
    """(case, args, words the one-line message must contain)."""
    rows = tiny["rows"][:20]
    cases = []
    f = write_csv(tmp_path / "other_fields.csv", [{"sentence": r["text"], "label": r["label"]} for r in rows])
    cases.append(("missing text field", score_args(tiny, f), ["'text'", "sentence", "--text-field"]))
    f = write_csv(tmp_path / "no_label.csv", [{"text": r["text"], "y": r["label"]} for r in rows])
    cases.append(("missing label field", score_args(tiny, f), ["'label'", "text, y", "--label-field"]))
    f = write_csv(tmp_path / "negative.csv", [{"text": r["text"], "label": -1 if i == 3 else 0} for i, r in enumerate(rows)])
    cases.append(("negative label", score_args(tiny, f), ["out of range", "row 3"]))
    f = write_csv(tmp_path / "too_big.csv", [{"text": r["text"], "label": i % 3} for i, r in enumerate(rows)])
    cases.append(("label beyond the teacher's classes", score_args(tiny, f), ["2 labels", "finetune"]))
    f = write_csv(tmp_path / "float.csv", [{"text": r["text"], "label": 0.5 if i == 4 else 1} for i, r in enumerate(rows)])
    cases.append(("non-integer label", score_args(tiny, f), ["0.5", "not an integer or a string"]))
    f = tmp_path / "empty.csv"
    f.write_text("text,label\n")
    cases.append(("empty split", score_args(tiny, f), ["empty"]))
    cases.append(("model path does not exist",
                  ["score", "--data", str(tiny["csv"]), "--teacher", str(tmp_path / "nope"), "--no-progress"],
                  ["does not exist"]))
    f = tmp_path / "latin1.csv"
    f.write_bytes("text,label\ncaf\xe9 ol\xe9,0\nbad,1\n".encode("latin-1"))
    cases.append(("non-UTF-8 file", score_args(tiny, f), ["not UTF-8", "iconv"]))
    d = tmp_path / "dir.csv"
    d.mkdir()
    cases.append(("unreadable file", score_args(tiny, d), ["cannot read"]))
    cases.append(("data file does not exist", score_args(tiny, tmp_path / "missing.csv"), ["does not exist"]))
    return cases


def test_bad_input_gives_one_line_exit_2_and_writes_nothing(tiny, tmp_path):
    for case, args, words in _bad_inputs(tiny, tmp_path):
        cache = tmp_path / f"cache-{case.replace(' ', '-')}"
        proc = run_cli(*args, cache=cache)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (case, proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: "), (case, proc.stderr)
        assert "Traceback" not in proc.stderr
        for word in words:
            assert word in lines[0], (case, word, lines[0])
        assert Store(cache).entries() == [], case


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


def test_debug_shows_the_traceback(tiny, tmp_path):
    proc = run_cli("score", "--data", str(tmp_path / "missing.csv"), "--teacher", str(tiny["teacher"]), "--debug",
                   cache=tmp_path / "c")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_string_labels_map_in_sorted_order(tiny, tmp_path):
    from selectkd.data import DataSpec, load_rows

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
