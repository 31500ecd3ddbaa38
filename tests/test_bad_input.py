"""Bad input through the real `selectkd` command: exit 2, one line that names the problem and the
fix, no traceback, nothing half-written. The run writes the table to docs/BAD_INPUT.md.

Commands are written as a user types them, with placeholders (DATA.csv, TEACHER/, RUN/ ...)
for files in a per-module folder; every command runs with SELECTKD_CACHE=CACHE/, a cache that
already holds DATA.csv scored by TEACHER/ and STUDENT/ and a selection named s1.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from selectkd.cache.store import Store
from selectkd.models import weights_free_copy

from .conftest import build_bert, run_cli, write_csv
from .test_security import plant_remote_code

DOC = Path(__file__).resolve().parents[1] / "docs" / "BAD_INPUT.md"
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(\.[a-z0-9]+)?(/[a-z0-9_.]+)*/?$")  # DATA.csv, RUN/, DATA.csv/x.csv
BOOKKEEPING = re.compile(r"^fingerprints\.json$")  # the file-hash memo; a lock file left by a failed run is output

TS = "--teacher TEACHER/ --student STUDENT/"


@dataclass(frozen=True)
class Case:
    command: str  # after `selectkd`, with placeholders
    problem: str
    expect: tuple[str, ...]  # distinctive words of the one line: the problem and the fix
    code: int = 2
    leaves: str = ""  # a known bug: what the command still leaves behind (the case xfails until fixed)


def score(data: str, extra: str = "") -> str:
    return f"score --data {data} {TS} {extra}".strip()


def select(extra: str) -> str:
    return f"select --data DATA.csv {TS} {extra}"


def distill(extra: str, data: str = "DATA.csv") -> str:
    return f"distill --data {data} {TS} {extra}"


CASES = [
    # -- score: the data ------------------------------------------------------------------------
    Case(score("NO_TEXT.csv"), "text column has another name", ("text field 'text' not found", "--text-field")),
    Case(score("NO_LABEL.csv"), "label column missing", ("label field 'label' not found", "--label-field")),
    Case(score("INT_LABELS.csv", "--text-field label"), "text field holds numbers", ("not text", "--text-field")),
    Case(score("FLOAT_LABELS.csv"), "a float label", ("label 0.5 in row 4", "class ids 0..C-1 or class names")),
    Case(score("NEGATIVE_LABEL.csv"), "a negative label", ("label -1 in row 3 is out of range", "fix the data")),
    Case(score("MISSING_LABEL.csv"), "a row without a label", ("row 2 has no label", "drop or fill them")),
    Case(score("INT_LABELS.csv"), "labels 0..2 for a teacher with 2 labels",
         ("has 2 labels but the data has 3", "selectkd finetune")),
    Case("score --data DATA.csv --teacher TEACHER3/", "teacher's label count does not match the data's (incompatible cache)",
         ("has 3 labels but the data has 2", "selectkd finetune")),
    Case(score("HEADER_ONLY.csv"), "data file with a header and no rows", ("has a header line but no rows", "add rows")),
    Case(score("EMPTY.csv"), "empty (0-byte) data file", ("is empty (0 bytes)", "header line and rows")),
    Case(score("LATIN1.csv"), "text file not UTF-8", ("is not UTF-8", "iconv")),
    Case(score("HUGE_TEXT.csv"), "a 200,000-character row: truncated to --max-length tokens", (), code=0),
    Case(score("DUPLICATE_UID.csv"), "duplicate ids in the uid column",
         ("duplicate values (uid 3 in rows 3 and 7", "make them unique")),
    Case(score("MISSING.csv"), "data file does not exist", ("does not exist", "check the path")),
    Case(score("DIRECTORY.csv"), "a folder where a data file is expected (unreadable)",
         ("DIRECTORY.csv is a folder, not a .csv file", "give the data file itself")),
    Case(score("no-such-dataset"), "unknown dataset name",
         ("'no-such-dataset' is not a file, a folder or a built-in name", "the hub is out of reach")),
    # -- score: models and options ---------------------------------------------------------------
    Case("score --data DATA.csv --teacher no-such-model", "unknown model name",
         ("'no-such-model' is not a model folder or a built-in name", "the hub is out of reach")),
    Case("score --data DATA.csv --teacher MISSING_MODEL/", "model folder does not exist",
         ("does not exist", "give a model folder")),
    Case("score --data DATA.csv --teacher NOT_A_MODEL/", "folder without config.json",
         ("is not a model folder (no config.json)", "save_pretrained")),
    Case("score --data DATA.csv --teacher BROKEN_CONFIG/", "config.json is not JSON", ("is not valid JSON", "save_pretrained")),
    Case("score --data DATA.csv --teacher REMOTE_CODE/", "model ships its own code (auto_map)",
         ("ships its own model code (modeling_evil.py", "--trust-remote-code")),
    Case(score("DATA.csv", "--student-head bogus"), "unknown student head", ("unknown --student-head 'bogus'", "probe, as-is")),
    Case(score("DATA.csv", "--limit 0"), "--limit 0", ("--limit must be a positive row count", "got 0")),
    Case(score("DATA.csv", "--max-length abc"), "option value of the wrong type",
         ("Invalid value for '--max-length'", "selectkd score --help")),
    Case("score --config UNKNOWN_KEY.toml", "unknown key in a --config file", ("unknown key(s) max_lenght", "max-length")),
    # -- select ----------------------------------------------------------------------------------
    Case(select("--strategy best"), "unknown strategy", ("unknown strategy 'best'", "selectkd select --list")),
    Case(select("--strategy coverage --criterion best"), "unknown coverage criterion",
         ("unknown criterion 'best'", "valid: entropy")),
    Case(select("--budget 0"), "budget 0", ("budget 0 must be > 0", "fraction in (0, 1]")),
    Case(select("--budget -5"), "negative budget", ("budget -5 must be > 0", "fraction in (0, 1]")),
    Case(select("--budget 5000"), "budget larger than the pool", ("more than the pool's 300", "lower --budget")),
    Case(select("--budget 1.5"), "fraction above 1", ("more than 1 as a fraction", "whole row count")),
    Case(select("--budget abc"), "budget is not a number", ("'abc' is neither a fraction", "row count like 300")),
    Case(select("--name s1"), "selection name already taken", ("selection 's1' exists", "--overwrite")),
    Case(select("--name ../escape"), "selection name with '..'", ("'../escape' is not a plain folder name", "no path separators")),
    Case(select("--name /tmp/escape"), "absolute selection name", ("'/tmp/escape' is not a plain folder name", "no path separators")),
    Case(select("--name a/b"), "selection name with a separator", ("'a/b' is not a plain folder name", "no path separators")),
    Case(select("--name ''"), "empty selection name", ("'' is not a plain folder name", "letters, digits")),
    Case("select --data DATA.csv --teacher TEACHER/", "no student", ("ranks rows by the student's", "give --student")),
    # -- export ------------------------------------------------------------------------------------
    Case("export --selection nope --out OUT.csv", "unknown selection", ("no selection 'nope'", "selectkd select --name nope")),
    Case("export --selection s1 --format xlsx --out OUT.xlsx", "unknown export format", ("unknown format 'xlsx'", "valid: arrow")),
    Case("export --selection s1 --out OUT.txt", "format not given and not in the suffix",
         ("cannot tell the format from 'OUT.txt'", "give --format")),
    Case("export --selection s1 --format hf --out FULL/", "--out is a folder of the user's files",
         ("FULL holds files selectkd did not make", "choose another --out")),
    Case("export --selection ../s1 --out OUT.csv", "selection name with '..'", ("'../s1' is not a plain folder name", "no path")),
    Case("export --selection /etc --out OUT.csv", "absolute selection name", ("'/etc' is not a plain folder name", "no path")),
    # -- distill -----------------------------------------------------------------------------------
    Case(distill("--out FULL/"), "--out is a folder of the user's files (not a run)",
         ("FULL holds files selectkd did not make", "choose another --out")),
    Case(distill("--out RUN/", data="FLOAT_LABELS.csv"), "a float label", ("label 0.5 in row 4", "class ids")),
    Case(distill("--selection nope --out RUN/"), "unknown selection", ("no selection 'nope'", "selectkd select --name nope")),
    Case(distill("--selection ../s1 --out RUN/"), "selection name with '..'", ("'../s1' is not a plain folder name", "no path")),
    Case(distill("--budget abc --out RUN/"), "budget is not a number", ("'abc' is neither a fraction", "row count like 300")),
    Case(distill("--budget 0.1 --strategy best --out RUN/"), "unknown strategy", ("unknown strategy 'best'", "--list")),
    Case(distill("--kd-loss l3 --out RUN/"), "unknown KD loss", ("unknown --kd-loss 'l3'", "valid: mse")),
    # -- finetune ----------------------------------------------------------------------------------
    Case("finetune --data DATA.csv --model STUDENT/ --out FULL/", "--out is a folder of the user's files",
         ("FULL holds files selectkd did not make", "choose another --out")),
    Case("finetune --data DATA.csv --model STUDENT/ --out RUN/ --max-steps 0", "zero fine-tuning steps",
         ("--max-steps 0 is out of range", "integer >= 1")),
    Case("finetune --data DATA.csv --model no-such-model --out RUN/", "unknown model name",
         ("'no-such-model' is not a model folder or a built-in name", "the hub is out of reach")),
    Case("finetune --data NO_LABEL.csv --model STUDENT/ --out RUN/", "label column missing",
         ("label field 'label' not found", "--label-field")),
    # -- cache ---------------------------------------------------------------------------------------
    Case("cache info 0000", "no entry has this key", ("no cache entry matches '0000'", "selectkd cache ls")),
    Case("cache info ../teacher", "key with '..'", ("'../teacher' is not a cache key", "selectkd cache ls")),
    Case("cache rm /etc", "absolute key", ("'/etc' is not a cache key", "no paths")),
    Case("cache rm ''", "empty key (would match every entry)", ("'' is not a cache key", "not empty")),
    Case("cache verify a/b", "key with a separator", ("'a/b' is not a cache key", "no paths")),
    Case("cache verify ''", "empty key", ("'' is not a cache key", "not empty")),
    # -- issue 10: the store --
    Case(score("DATA.csv", "--cache-dir CACHE_FILE.txt"), "--cache-dir is a file",
         ("CACHE_FILE.txt is a file, not a folder", "--cache-dir or SELECTKD_CACHE")),
    Case(select("--cache-dir CACHE_FILE.txt"), "--cache-dir is a file (select)",
         ("CACHE_FILE.txt is a file, not a folder", "--cache-dir or SELECTKD_CACHE")),
    Case("cache ls --cache-dir CACHE_FILE.txt", "--cache-dir is a file (cache ls)", ("is a file, not a folder", "--cache-dir")),
    Case("cache rm 0000 --cache-dir CACHE_FILE.txt", "--cache-dir is a file (cache rm)", ("is a file, not a folder", "--cache-dir")),
    Case(f"cache info {'a' * 24} --cache-dir DAMAGED/", "manifest.json is [1,2]",
         ("is damaged (manifest.json: not a JSON object but list)", f"selectkd cache rm {'a' * 24}")),
    Case(f"cache info {'b' * 24} --cache-dir DAMAGED/", "manifest.json is {}",
         ("is damaged (manifest.json: no inputs, files)", f"selectkd cache rm {'b' * 24}")),
    Case(f"cache info {'c' * 24} --cache-dir DAMAGED/", "manifest names a file outside the entry (../../x)",
         ("it names '../../x', which is not a file inside its folder", "selectkd cache rm")),
    Case(f"cache info {'d' * 24} --cache-dir DAMAGED/", "manifest.json is not JSON",
         ("is damaged (manifest.json is not valid JSON)", "selectkd cache rm")),
    Case("export --selection trunc --out OUT.csv --cache-dir DAMAGED/", "truncated selection.arrow",
         ("selection 'trunc' is damaged (selection.arrow is not a readable Arrow file", "--name trunc --overwrite")),
    Case(distill("--selection trunc --out RUN/ --cache-dir DAMAGED/"), "truncated selection.arrow (distill)",
         ("selection 'trunc' is damaged (selection.arrow is not a readable Arrow file", "--name trunc --overwrite")),
    Case("export --selection listprov --out OUT.csv --cache-dir DAMAGED/", "provenance.json is [1,2]",
         ("selection 'listprov' is damaged (provenance.json: not a JSON object", "--overwrite")),
    Case("export --selection escape --out OUT.csv --cache-dir DAMAGED/", "provenance names a file outside the selection",
         ("it names '/etc/passwd', which is not a file inside its folder", "--overwrite")),
    Case("cache info selection:nope", "unknown selection (cache info)", ("no selection 'nope'", "selectkd select --name nope")),
    Case("cache verify selection:../s1", "selection name with '..' (cache verify)", ("'../s1' is not a plain folder name", "no path")),
    Case("cache rm selection:nope --cache-dir DAMAGED/", "unknown selection (cache rm)",
         ("no selection 'nope'", "have: escape, listprov, trunc", "selectkd cache ls")),
    Case("cache rm selection:../s1", "selection name with '..' (cache rm)", ("'../s1' is not a plain folder name", "no path")),
    # -- issue 10: surprises in keys, export and models --------------------------------------------
    Case(select("--no-compute --max-length 64"), "--no-compute after scoring with another --max-length",
         ("the nearest", "differs in --max-length (cached 128, asked 64)", "add --max-length 128 or drop --no-compute")),
    Case(select("--no-compute --limit 100"), "--no-compute with a --limit the cache was not scored with",
         ("differs in --limit (cached none, asked 100)", "drop --limit or drop --no-compute")),
    Case(score("DATA.csv", "--max-length 100000"), "--max-length beyond the model's position embeddings",
         ("--max-length 100000 is more than TEACHER/ takes", "hold 128 tokens", "use --max-length 128 or less")),
    Case("finetune --data DATA.csv --model STUDENT/ --out RUN/ --max-length 100000", "--max-length beyond the model",
         ("--max-length 100000 is more than STUDENT/ takes", "use --max-length 128 or less")),
    Case(score("DATA.csv", "--device nonsense"), "unknown device", ("unknown --device 'nonsense'", "devices here: cpu")),
    Case(score("DATA.csv", "--device cuda:7"), "a GPU this machine does not have",
         ("--device cuda:7 is not usable", "devices here: cpu")),
    # -- issue 10: labels and numbers -------------------------------------------------------------
    Case(score("SPACE.csv"), "one class spelled two ways ('positive' and 'positive ')",
         ("labels 'positive' (row 1) and 'positive ' (row 5)", "differ only in case or surrounding spaces",
          "spell each class one way")),
    Case(distill("--test-data CASE.csv --out RUN/"), "test labels 'Positive' where training has 'positive'",
         ("label 'Positive' (row 1 of", "not one of the training data's labels", "did you mean 'positive'?")),
    Case(score("DATA.csv", "--teacher NAMED/"), "teacher saved with other class names than the data's",
         ("label 'negative' (row 0 of", "not one of teacher", "labels ('ham', 'spam')")),
    Case(select("--budget nan"), "budget nan", ("budget nan is not a finite number", "row count >= 2")),
    Case(distill("--budget nan --out RUN/"), "budget nan (dynamic selection)", ("budget nan is not a finite number",)),
    Case(select("--clusters 0 --strategy coverage"), "zero clusters", ("--clusters 0 is out of range", "integer >= 1")),
    Case(select("--strategy ccs --prune-hard 1"), "ccs pruning the whole pool",
         ("--prune-hard 1 is out of range", "[0, 1)")),
    Case(distill("--budget 0.1 --strategy ccs --bins 0 --out RUN/"), "ccs with zero difficulty bins",
         ("--bins 0 is out of range", "integer >= 1")),
    Case("cache gc --older-than soon", "an age gc cannot read", ("--older-than 'soon' is not an age like 30d",)),
    Case(select("--max-memory 1M"), "a pool needing more memory than --max-memory",
         ("needs about", "more than --max-memory: 0.0 GiB", "select from fewer rows", "raise --max-memory")),
    Case(select("--max-memory lots"), "a memory bound that is not a size", ("--max-memory 'lots' is not a size like 8G",)),
    Case(select("--dedup 3"), "a --dedup radius past the largest distance of unit vectors", ("--dedup 3",)),
    Case(select("--seed -1"), "negative seed", ("--seed -1 is out of range", "integer >= 0")),
    Case(score("DATA.csv", "--max-length 1"), "--max-length 1", ("--max-length 1 is out of range", "integer >= 2")),
    Case(distill("--lr -1 --out RUN/"), "negative learning rate", ("--lr -1 is out of range", "number > 0")),
    Case(distill("--lr nan --out RUN/"), "learning rate nan", ("--lr nan is not a finite number", "number > 0")),
    Case(distill("--kd-loss kl --temperature 0 --out RUN/"), "KL at temperature 0 (trained to NaN before)",
         ("--temperature 0 is out of range", "number > 0")),
    Case(distill("--warmup 1 --out RUN/"), "warm-up over every step", ("--warmup 1 is out of range", "[0, 1)")),
    Case(distill("--kd-alpha -0.5 --out RUN/"), "negative loss weight", ("--kd-alpha -0.5 is out of range", ">= 0")),
    Case(distill("--holdout 1 --out RUN/"), "hold out every row", ("--holdout 1 is out of range", "[0, 1)")),
    Case("finetune --data DATA.csv --model STUDENT/ --out RUN/ --lr nan", "learning rate nan",
         ("--lr nan is not a finite number", "number > 0")),
    Case("finetune --data DATA.csv --model STUDENT/ --out RUN/ --epochs 0", "zero epochs",
         ("--epochs 0 is out of range", "integer >= 1")),
    Case("finetune --data DATA.csv --model STUDENT/ --out RUN/ --checkpoint-minutes -5", "negative checkpoint period",
         ("--checkpoint-minutes -5 is out of range", ">= 0")),
    Case("demo --budget 0 --runs-dir RUN/", "demo budget 0", ("--budget 0 is out of range", "(0, 1]")),
    # -- issue 10: outputs --
    Case(select("--name " + "n" * 300), "a 300-character selection name", ("is 300 characters long", "at most 100")),
    Case(select("--budget 30 --name p1 --plot DATA.csv"), "--plot names a file that is not a PNG",
         ("DATA.csv is a file selectkd did not make", "choose another --plot")),
    Case("export --selection s1 --out DATA.csv/x.csv", "--out under a file",
         ("cannot write", "DATA.csv is a file, not a folder", "choose another --out")),
    Case("export --selection s1 --format csv --out FULL/ --overwrite", "--overwrite of a folder with a file",
         ("FULL is a folder and this command writes a file", "choose another --out")),
    Case(distill("--out FULL/ --overwrite"), "--overwrite of a folder of the user's files",
         ("FULL holds files selectkd did not make", "--overwrite replaces only a run")),
    Case(distill("--out DATA.csv/run/"), "--out under a file", ("DATA.csv is a file, not a folder", "another --out")),
    Case("finetune --data DATA.csv --model STUDENT/ --out FULL/ --overwrite", "--overwrite of a user's folder",
         ("FULL holds files selectkd did not make", "choose another --out")),
    Case("finetune --data DATA.csv --model STUDENT/ --out DATA.csv --overwrite", "--out is a file, a folder is written",
         ("DATA.csv is a file and this command writes a folder", "choose another --out")),
    Case(distill("--max-steps 0 --out RUN/"), "zero training steps", ("--max-steps 0 is out of range", "integer >= 1")),
    Case(distill("--time-budget -5 --out RUN/"), "negative time budget", ("--time-budget -5 is out of range", "number > 0")),
    Case(distill("--min-steps -1 --out RUN/"), "a negative step floor", ("--min-steps -1 is out of range", "integer >= 0")),
    Case(distill("--head-init best --out RUN/"), "an unknown head initialisation",
         ("unknown --head-init 'best'", "probe, random")),
    Case(distill("--eval-every 1000 --out RUN/"), "--eval-every beyond the run's steps",
         ("--eval-every 1000 is more than the run's", "steps", "give at most")),
    # -- plot --------------------------------------------------------------------------------------
    Case("plot FULL/ --out CURVE.png", "a folder that is not a run", ("FULL is not a run folder", "selectkd distill --out")),
    Case("plot NO_DEV_RUN/ --out CURVE.png", "a run with no dev rows",
         ("has no dev accuracy", "run `selectkd distill` with dev data")),
    Case("plot --out CURVE.png", "no RUN_DIR given", ("no RUN_DIR given", "selectkd distill --out")),
    # -- cache weights-free: a teacher's cached logits without its weights ----------------------------
    Case("cache weights-free NOT_A_MODEL/ --out COPY/", "not a model folder (weights-free)",
         ("is not a model folder (no config.json)", "save_pretrained")),
    Case("cache weights-free DATA.csv --out COPY/", "a file for the model (weights-free)",
         ("is a file, not a model folder", "save_pretrained")),
    Case("cache weights-free TEACHER/ --out STUDENT/", "--out is someone else's folder",
         ("exists and is not a weights-free copy", "give a new folder")),
    Case("cache weights-free WEIGHTS_FREE/ --out COPY/", "a weights-free copy given again",
         ("is a weights-free copy already", "copy the folder as it is")),
    Case("score --data DATA.csv --teacher WEIGHTS_FREE/ --limit 50", "a weights-free teacher on rows its cache lacks",
         ("is a weights-free copy", "copy model.safetensors back into")),
    # -- assets --------------------------------------------------------------------------------------
    Case("assets install --models nope", "unknown model asset", ("unknown model asset 'nope'", "valid: minilm-l6")),
    Case("assets install --data nope", "unknown dataset asset", ("unknown data asset 'nope'", "valid: tweets")),
]


def make_files(base: Path, tiny) -> None:
    """Every file and folder the placeholders name (those not made here must stay absent)."""
    rows = tiny["rows"][:40]
    shutil.copy(tiny["csv"], base / "DATA.csv")
    for name in ("TEACHER", "STUDENT"):
        shutil.copytree(tiny[name.lower()], base / name)
    build_bert(base / "TEACHER3", tiny["tokenizer"], num_labels=3, seed=1)
    weights_free_copy(base / "TEACHER", base / "WEIGHTS_FREE")
    csv = {
        "NO_TEXT.csv": [{"sentence": r["text"], "label": r["label"]} for r in rows],
        "NO_LABEL.csv": [{"text": r["text"], "y": r["label"]} for r in rows],
        "INT_LABELS.csv": [{"text": r["text"], "label": i % 3} for i, r in enumerate(rows)],
        "FLOAT_LABELS.csv": [{"text": r["text"], "label": 0.5 if i == 4 else i % 2} for i, r in enumerate(rows)],
        "NEGATIVE_LABEL.csv": [{"text": r["text"], "label": -1 if i == 3 else i % 2} for i, r in enumerate(rows)],
        "MISSING_LABEL.csv": [{"text": r["text"], "label": "" if i == 2 else r["label"]} for i, r in enumerate(rows)],
        "HUGE_TEXT.csv": [{"text": ("good " * 40_000) if i == 5 else r["text"], "label": r["label"]}
                          for i, r in enumerate(rows)],
        "DUPLICATE_UID.csv": [{"uid": 3 if i == 7 else i, "text": r["text"], "label": r["label"]} for i, r in enumerate(rows)],
    }
    for name, content in csv.items():
        write_csv(base / name, content)
    assert len(csv["HUGE_TEXT.csv"][5]["text"]) == 200_000
    (base / "HEADER_ONLY.csv").write_text("text,label\n")
    (base / "EMPTY.csv").write_bytes(b"")
    (base / "LATIN1.csv").write_bytes("text,label\ncaf\xe9 ol\xe9,0\nbad,1\n".encode("latin-1"))
    (base / "DIRECTORY.csv").mkdir()
    (base / "NOT_A_MODEL").mkdir()
    shutil.copytree(base / "TEACHER", base / "BROKEN_CONFIG")
    (base / "BROKEN_CONFIG" / "config.json").write_text('{"model_type": "bert",')
    plant_remote_code(base / "REMOTE_CODE", base / "TEACHER", base / "REMOTE_CODE_RAN")
    (base / "UNKNOWN_KEY.toml").write_text('data = "DATA.csv"\nmax_lenght = 16\n')
    (base / "FULL").mkdir()
    (base / "FULL" / "keep.txt").write_text("someone's file\n")
    (base / "NO_DEV_RUN").mkdir()  # a run trained without dev data: metrics but no dev accuracy
    (base / "NO_DEV_RUN" / "config.json").write_text("{}\n")
    (base / "NO_DEV_RUN" / "metrics.jsonl").write_text('{"epoch": 1, "step": 2, "train_loss": 0.5, "train_rows": 8}\n')
    (base / "CACHE_FILE.txt").write_text("not a folder\n")
    damaged_store(base / "DAMAGED")
    write_csv(base / "SPACE.csv", [{**r, "label": r["label"] + (" " if i == 5 else "")} for i, r in enumerate(rows)])
    write_csv(base / "CASE.csv", [{**r, "label": r["label"].replace("positive", "Positive")} for r in rows])
    build_bert(base / "NAMED", tiny["tokenizer"], num_labels=2, seed=1, label_names=["ham", "spam"])


def damaged_store(root: Path) -> None:
    """A store whose manifests and selections are damaged in the ways `Store` and `load_selection` refuse."""
    import json

    import pyarrow as pa

    from selectkd.cache.store import write_arrow

    manifests = {"a": "[1, 2]", "b": "{}", "c": json.dumps({"inputs": {}, "files": {"../../x": "0" * 64}}), "d": "{"}
    for letter, text in manifests.items():
        (root / "teacher" / (letter * 24)).mkdir(parents=True)
        (root / "teacher" / (letter * 24) / "manifest.json").write_text(text)
    prov = {"cache": {"student": "e" * 24, "teachers": []}, "strategy": "random", "rows": 3,
            "data": {"data": "DATA.csv", "split": "train", "text_field": "text", "label_field": "label", "fingerprint": "f"}}
    table = pa.table({"uid": pa.array([0, 1, 2], pa.int64()), "score": pa.array([0.1, 0.2, 0.3]),
                      "rank": pa.array([0, 1, 2], pa.int64())})
    for name, provenance in {"trunc": prov, "listprov": [1, 2], "escape": {**prov, "files": {"/etc/passwd": "0"}}}.items():
        (root / "selections" / name).mkdir(parents=True)
        write_arrow(root / "selections" / name / "selection.arrow", table)
        (root / "selections" / name / "provenance.json").write_text(json.dumps(provenance))
    path = root / "selections" / "trunc" / "selection.arrow"
    path.write_bytes(path.read_bytes()[:100])


@pytest.fixture(scope="module")
def world(tiny, tmp_path_factory):
    base = tmp_path_factory.mktemp("bad-input")
    make_files(base, tiny)
    cache = base / "CACHE"
    run_cli(*argv(select("--budget 30 --name s1 --no-progress"), base), cache=cache, check=True)
    return {"base": base, "cache": cache}


def argv(command: str, base: Path) -> list[str]:
    """The command's words with each placeholder made a path under ``base``."""
    return [str(base / w) + ("/" if w.endswith("/") else "") if PLACEHOLDER.match(w) else w for w in shlex.split(command)]


def remove_new(root: Path, before: dict, after: dict) -> None:
    """Take away what a case left behind, so that one failure does not fail the cases after it."""
    for rel in sorted(set(after) - set(before), key=len):
        path = root / rel.rstrip("/")
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file (size, mtime) and every folder that holds output, bookkeeping aside."""
    state = {}
    for folder, dirs, files in os.walk(root):
        kept = [f for f in files if not BOOKKEEPING.match(f)]
        for f in kept:
            st = (Path(folder) / f).stat()
            state[os.path.relpath(Path(folder) / f, root)] = (st.st_size, st.st_mtime_ns)
        if kept or not (dirs or files):
            state[os.path.relpath(folder, root) + "/"] = ()
    return state


@pytest.fixture(scope="module")
def table():
    """Rows collected by the cases; written to docs/BAD_INPUT.md once all of them ran."""
    rows: dict[int, tuple[str, ...]] = {}
    yield rows
    if len(rows) == len(CASES):
        write_doc([rows[i] for i in sorted(rows)])


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def write_doc(rows: list[tuple[str, ...]]) -> None:
    lines = [
        "# Bad input: what selectkd says",
        "",
        "<!-- Generated by `pytest tests/test_bad_input.py`; do not edit by hand. -->",
        "",
        "Each row is run through the real command by `tests/test_bad_input.py`, which checks the exit",
        "code, that stderr is exactly this one line (no traceback; `--debug` shows one), and that nothing",
        "was written: no new cache entry or part file, no selection, no `--out`. Placeholders: `DATA.csv`",
        "is 300 labelled sentences, `TEACHER/` a tiny BERT with a 2-label head, `STUDENT/` a tiny BERT",
        "without one; every command runs with `SELECTKD_CACHE=CACHE/`, which already holds `DATA.csv`",
        "scored by both and a selection `s1`. The other files are named for what is wrong with them.",
        "",
        "| command | problem | exit | message |",
        "| --- | --- | --- | --- |",
        *(f"| `selectkd {cell(c)}` | {cell(p)} | {code} | {cell(m)} |" for c, p, code, m in rows),
        "",
    ]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    tmp = DOC.with_name(f".{DOC.name}.tmp-{os.getpid()}")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, DOC)


@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"{i:02d}-{c.problem}" for i, c in enumerate(CASES)])
def test_bad_input(index, world, table):
    case = CASES[index]
    base = world["base"]
    before = snapshot(base)
    proc = run_cli(*argv(case.command, base), cache=world["cache"])
    assert proc.returncode == case.code, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    if case.code == 0:
        message = "(none: it succeeds; the long row is truncated like every other)"
    else:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        message = lines[0].replace(f"{base.resolve()}/", "").replace(f"{base}/", "")
        for e in Store(world["cache"]).entries():  # the tiny models' keys change from run to run; the doc should not
            message = message.replace(e.key[:12], f"<{e.kind} key>")
        for words in case.expect:
            assert words in message, (words, message)
    assert not (base / "REMOTE_CODE_RAN").exists()
    problem = f"{case.problem} (known bug: leaves {case.leaves})" if case.leaves else case.problem
    table[index] = (case.command, problem, str(proc.returncode), message)
    if case.code == 0:
        return
    after = snapshot(base)
    remove_new(base, before, after)
    if case.leaves:
        assert after != before, f"fixed: drop leaves= from the case ({case.leaves})"
        pytest.xfail(case.leaves)
    assert after == before, "a failing command left output behind"


def test_debug_turns_the_line_into_a_traceback(world):
    proc = run_cli(*argv(score("FLOAT_LABELS.csv", "--debug"), world["base"]), cache=world["cache"])
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr and "DataError: label 0.5 in row 4" in proc.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod-000 file anyway; DIRECTORY.csv covers unreadable")
def test_unreadable_file_is_one_line(world, tmp_path):
    locked = tmp_path / "LOCKED.csv"
    shutil.copy(world["base"] / "DATA.csv", locked)
    locked.chmod(0)
    try:
        proc = run_cli("score", "--data", str(locked), "--teacher", str(world["base"] / "TEACHER"), cache=world["cache"])
    finally:
        locked.chmod(0o644)
    assert proc.returncode == 2 and "cannot read data file" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_the_table_covers_every_command():
    words = [shlex.split(c.command) for c in CASES]
    commands = {" ".join(w[:2]) if w[0] in ("cache", "assets") else w[0] for w in words}
    assert commands >= {"score", "select", "export", "distill", "finetune", "cache info", "cache rm", "cache verify",
                        "assets install", "plot"}
    assert len(CASES) >= 22 and len({c.command for c in CASES}) == len(CASES)
