"""Export: every format round-trips the selected rows, their uids and every teacher's logits."""

import json

import numpy as np
import pyarrow as pa
import pytest

import selectkd
from selectkd.cache.arrays import column_matrix
from selectkd.cache.store import Store
from selectkd.errors import SelectKDError
from selectkd.selection.export import FORMATS, export, teacher_labels
from selectkd.selection.run import select
from selectkd.selection.saved import load_selection
from selectkd.specs import DataSpec, ScoreSpec, SelectSpec

from .conftest import build_bert


@pytest.fixture(scope="module")
def selected(tiny, tmp_path_factory):
    """Two teachers scored on the tiny CSV and a selection of 25 rows from them."""
    base = tmp_path_factory.mktemp("export")
    second = build_bert(base / "teacher2", tiny["tokenizer"], num_labels=2, seed=7)
    cache = base / "cache"
    teachers = [str(tiny["teacher"]), str(second)]
    sel = select(DataSpec(str(tiny["csv"])), ScoreSpec(teachers, str(tiny["student"])),
                 SelectSpec("random", 25, seed=3), name="sub", cache_dir=cache, progress=False)
    return {"cache": cache, "selection": sel, "rows": tiny["rows"]}


def expected(selected) -> dict:
    """What every export must hold, from the cache and the CSV directly."""
    sel = selected["selection"]
    store = Store(selected["cache"])
    logits = {}
    for label, key in zip(teacher_labels(sel.provenance["models"]["teachers"]), sel.provenance["cache"]["teachers"]):
        table = store.entry("teacher", key).read_parts()
        by_uid = dict(zip(table.column("uid").to_pylist(), column_matrix(table, "logits")))
        logits[f"logits_{label}"] = np.stack([by_uid[u] for u in sel.uids.tolist()])
    rows = [selected["rows"][u] for u in sel.uids.tolist()]  # uid = row position in the CSV
    return {"uid": sel.uids.tolist(), "text": [r["text"] for r in rows], "label": [r["label"] for r in rows],
            "logits": logits, "score": sel.scores}


def check(columns: dict, want: dict) -> None:
    assert list(columns["uid"]) == want["uid"]
    assert list(columns["text"]) == want["text"]
    assert list(columns["label"]) == want["label"]
    assert list(columns["rank"]) == list(range(len(want["uid"])))
    assert np.allclose(np.asarray(columns["score"], dtype=float), want["score"])
    assert len(want["logits"]) == 2
    for name, values in want["logits"].items():
        assert np.allclose(np.array([np.asarray(v, dtype=np.float32) for v in columns[name]]), values, atol=1e-6)


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_round_trips(selected, tmp_path, fmt):
    import datasets

    suffix = {"arrow": ".arrow", "parquet": ".parquet", "jsonl": ".jsonl", "csv": ".csv", "hf": ""}[fmt]
    out = tmp_path / f"subset{suffix}"
    assert export("sub", fmt, out, cache_dir=selected["cache"]) == out
    want = expected(selected)
    hf_cache = str(tmp_path / "hf-cache")
    if fmt == "arrow":
        columns = pa.ipc.open_file(pa.memory_map(str(out))).read_all().to_pydict()
    elif fmt == "parquet":
        columns = datasets.load_dataset("parquet", data_files=str(out), split="train", cache_dir=hf_cache).to_dict()
    elif fmt == "jsonl":
        columns = datasets.load_dataset("json", data_files=str(out), split="train", cache_dir=hf_cache).to_dict()
    elif fmt == "csv":
        columns = datasets.load_dataset("csv", data_files=str(out), split="train", cache_dir=hf_cache).to_dict()
        for name in want["logits"]:
            columns[name] = [json.loads(v) for v in columns[name]]
    else:
        columns = datasets.load_from_disk(str(out)).to_dict()
    check(columns, want)
    assert {"entropy", "margin", "least_confidence", "label_id", "kl_teacher", "kl_teacher2"} <= set(columns)
    assert set(want["logits"]) == {"logits_teacher", "logits_teacher2"}

    prov_path = out / "provenance.json" if fmt == "hf" else tmp_path / f"subset{suffix}.provenance.json"
    prov = json.loads(prov_path.read_text())
    sel = selected["selection"]
    assert prov["cache"] == sel.provenance["cache"] and prov["strategy"] == "random"
    first, second = sel.provenance["cache"]["teachers"]
    assert prov["export"]["teacher_columns"] == {"logits_teacher": first, "kl_teacher": first,
                                                 "logits_teacher2": second, "kl_teacher2": second}
    assert prov["export"]["format"] == fmt and prov["export"]["rows"] == 25
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_export_replaces_only_an_earlier_export_and_only_with_overwrite(selected, tmp_path):
    mine = tmp_path / "mine.parquet"
    mine.write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(SelectKDError, match="selectkd did not make; choose another --out"):
            export("sub", "parquet", mine, cache_dir=selected["cache"], overwrite=overwrite)
    assert mine.read_text() == "keep me"
    out = tmp_path / "s.parquet"
    export("sub", "parquet", out, cache_dir=selected["cache"])
    with pytest.raises(SelectKDError, match="earlier parquet export.*--overwrite"):
        export("sub", "parquet", out, cache_dir=selected["cache"])
    export("sub", "parquet", out, cache_dir=selected["cache"], overwrite=True)
    assert out.read_bytes()[:4] == b"PAR1"
    folder = tmp_path / "ds"
    export("sub", "hf", folder, cache_dir=selected["cache"])
    with pytest.raises(SelectKDError, match="earlier hf export.*--overwrite"):
        export("sub", "hf", folder, cache_dir=selected["cache"])
    export("sub", "hf", folder, cache_dir=selected["cache"], overwrite=True)
    assert (folder / "provenance.json").exists()


def test_export_errors(selected, tmp_path):
    with pytest.raises(SelectKDError, match="unknown format 'xml'"):
        export("sub", "xml", tmp_path / "x.xml", cache_dir=selected["cache"])
    with pytest.raises(SelectKDError, match="cannot tell the format"):
        export("sub", None, tmp_path / "x.bin", cache_dir=selected["cache"])
    with pytest.raises(SelectKDError, match="no selection 'missing'"):
        export("missing", "csv", tmp_path / "x.csv", cache_dir=selected["cache"])
    # the data the selection came from is no longer the same
    folder = selected["cache"] / "selections" / "sub"
    prov = json.loads((folder / "provenance.json").read_text())
    changed = {**prov, "data": {**prov["data"], "fingerprint": "0" * 24}}
    (folder / "provenance.json").write_text(json.dumps(changed))
    try:
        with pytest.raises(SelectKDError, match="changed since"):
            export("sub", "csv", tmp_path / "x.csv", cache_dir=selected["cache"])
    finally:
        (folder / "provenance.json").write_text(json.dumps(prov))
    assert not (tmp_path / "x.csv").exists()


def test_cli_export(selected, tmp_path):
    import typer
    from typer.testing import CliRunner

    from selectkd.cli.select_cmds import register

    app = typer.Typer()
    register(app)
    out = tmp_path / "cli.jsonl"
    res = CliRunner().invoke(app, ["export", "--selection", "sub", "--out", str(out),
                                   "--cache-dir", str(selected["cache"])])
    assert res.exit_code == 0, res.output
    lines = out.read_text().splitlines()
    assert [json.loads(line)["uid"] for line in lines] == load_selection(selected["cache"], "sub").uids.tolist()
    assert selectkd.__version__ == json.loads((tmp_path / "cli.jsonl.provenance.json").read_text())["export"]["selectkd_version"]


def test_label_ids_follow_the_teacher_order_the_selection_was_made_with(tiny, tmp_path):
    """A teacher saved with its classes in another order than sorted names gives the rows its ids at
    select time; the export's label_id must be those ids too, or label_id and the logits disagree."""
    teacher = build_bert(tmp_path / "named", tiny["tokenizer"], num_labels=2, seed=1,
                         label_names=["positive", "negative"])  # sorted would be negative=0, positive=1
    cache = tmp_path / "cache"
    sel = select(DataSpec(str(tiny["csv"])), ScoreSpec((str(teacher),), str(tiny["student"])),
                 SelectSpec("random", 20, seed=0), name="named", cache_dir=cache, progress=False)
    assert sel.provenance["data"]["label_names"] == ["positive", "negative"]
    out = export("named", "arrow", tmp_path / "named.arrow", cache_dir=cache)
    table = pa.ipc.open_file(pa.memory_map(str(out))).read_all()
    ids = dict(zip(table.column("label").to_pylist(), table.column("label_id").to_pylist()))
    assert ids == {"positive": 0, "negative": 1}
