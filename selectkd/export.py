"""The export stage: a saved selection as a file anyone can train on, with how it was made beside it.

The rows are reloaded from the dataset the selection recorded (its fingerprint must still
match), keep their original columns, and gain ``uid``, ``label_id``, the selection's
``score`` and ``rank``, the student's uncertainty and, per teacher, ``logits_<teacher>`` and
``kl_<teacher>`` (KL(teacher || student)), looked up by uid in the cache; <teacher> is the
teacher's folder or model name and the provenance maps each such column to its cache key. ``<out>.provenance.json`` (inside the folder for
``hf``) holds the selection's provenance plus what the export added. Every file is written
under a temp name and renamed into place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from . import __version__
from .errors import SelectKDError
from .select import Selection, load_selection, positions_of
from .store import Store, atomic_write_json

FORMATS = ("arrow", "parquet", "jsonl", "csv", "hf")
SUFFIXES = {".arrow": "arrow", ".parquet": "parquet", ".jsonl": "jsonl", ".csv": "csv"}
PREFIX = "selectkd_"  # for an added column whose name the dataset already uses


class ExportError(SelectKDError):
    """A selection cannot be exported as asked (format, path, changed data)."""


def export_format(fmt: str | None, out: Path) -> str:
    """The format asked for, or the one ``out``'s suffix names."""
    if fmt is None:
        if out.suffix.lower() not in SUFFIXES:
            raise ExportError(f"cannot tell the format from {out.name!r}; give --format ({', '.join(FORMATS)})")
        return SUFFIXES[out.suffix.lower()]
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    return fmt


def provenance_path(out: Path, fmt: str) -> Path:
    return out / "provenance.json" if fmt == "hf" else out.with_name(out.name + ".provenance.json")


def teacher_labels(teachers: list[str]) -> list[str]:
    """Column-safe, unique labels for the teachers as the user named them: a folder's own name, a
    built-in or hub model's name; ``_2``, ``_3`` ... where two would be the same."""
    labels: list[str] = []
    for name in teachers:
        label = re.sub(r"[^0-9A-Za-z_]+", "_", Path(name.rstrip("/")).name).strip("_") or "teacher"
        unique, n = label, 2
        while unique in labels:
            unique, n = f"{label}_{n}", n + 1
        labels.append(unique)
    return labels


def data_location(made_from: dict) -> str:
    """Where the selection's rows come from: a file or folder by its absolute path (a selection made
    before paths were recorded absolute keeps it in ``source``), a built-in or hub data set by name."""
    source = made_from.get("source") or {}
    return source.get("file") or source.get("folder") or made_from["data"]


def selected_rows(selection: Selection, root: Path):
    """The selected rows in rank order with every original column, plus what selectkd adds.

    Returns (datasets.Dataset, {added name: column name}, {teacher column: teacher key}).
    """
    import datasets
    from datasets.table import InMemoryTable

    from . import data as data_mod
    from .data import DataSpec, load_rows

    prov = selection.provenance
    d = prov["data"]
    spec = DataSpec(data_location(d), d["split"], d["text_field"], d.get("text_pair_field"), d["label_field"],
                    d.get("limit"))
    rows = load_rows(spec, root)
    if rows.fingerprint != d["fingerprint"]:
        raise ExportError(f"the data {spec.data} ({d['split']}) changed since selection {selection.name!r} was made; "
                          f"re-run `selectkd select` on the current data")
    # the rows as the user gave them, every column; row i here is row i of load_rows
    raw, _, _ = data_mod._open_source(spec, root)
    if spec.limit is not None:
        raw = raw.select(range(min(spec.limit, len(raw))))
    at = positions_of(rows.uids, selection.uids)
    table = raw.select(at).with_format("arrow")[:]
    features = dict(raw.features)

    added: dict[str, pa.Array] = {"uid": pa.array(selection.uids, pa.int64()),
                                  "label_id": pa.array(rows.labels[at], pa.int64()),
                                  "score": pa.array(selection.scores, pa.float64()),
                                  "rank": pa.array(selection.ranks, pa.int64())}
    teachers = teacher_columns(selection, Store(root), added)

    names = {}
    for name, values in added.items():
        if name == "uid" and "uid" in table.column_names:
            continue  # the dataset's own uid column is where selectkd's uids came from
        final = PREFIX + name if name in table.column_names else name
        table = table.append_column(final, values)
        names[name] = final
    features.update(datasets.Features.from_arrow_schema(pa.schema([table.schema.field(n) for n in names.values()])))
    ds = datasets.Dataset(InMemoryTable(table), info=datasets.DatasetInfo(features=datasets.Features(features)))
    return ds, names, {names[column]: key for column, key in teachers.items()}


def teacher_columns(selection: Selection, store: Store, added: dict[str, pa.Array]) -> dict[str, str]:
    """Add the student's scores and, per teacher, ``logits_<teacher>`` and ``kl_<teacher>`` (KL(teacher ||
    student)) to ``added``, looked up by uid; return {teacher column: teacher cache key}."""
    from .score import column_matrix

    prov = selection.provenance
    scores = store.entry("student", prov["cache"]["student"]).read_file("scores.arrow")
    s_at = positions_of(scores.column("uid").to_numpy(), selection.uids)
    for name in ("entropy", "margin", "least_confidence"):
        added[name] = pa.array(scores.column(name).to_numpy()[s_at])
    keys = prov["cache"]["teachers"]
    kl = column_matrix(scores, "kl")[s_at] if keys else None
    made = {}
    for i, (label, key) in enumerate(zip(teacher_labels(prov.get("models", {}).get("teachers") or keys), keys)):
        t = store.entry("teacher", key).read_parts()
        logits = column_matrix(t, "logits")[positions_of(t.column("uid").to_numpy(), selection.uids)]
        added[f"logits_{label}"] = pa.array(list(np.asarray(logits, dtype=np.float32)), pa.list_(pa.float32()))
        added[f"kl_{label}"] = pa.array(kl[:, i].astype(np.float32))
        made.update({f"logits_{label}": key, f"kl_{label}": key})
    return made


def _flat_for_csv(table: pa.Table) -> pa.Table:
    """CSV holds no lists: list and struct columns become JSON strings."""
    for i, f in enumerate(table.schema):
        if pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type) or pa.types.is_struct(f.type) \
                or pa.types.is_large_list(f.type):
            text = [None if v is None else json.dumps(v) for v in table.column(i).to_pylist()]
            table = table.set_column(i, f.name, pa.array(text, pa.string()))
    return table


def _write(ds, fmt: str, path: Path) -> None:
    if fmt == "hf":
        ds.save_to_disk(str(path))
        return
    table = ds.with_format("arrow")[:]
    if fmt == "arrow":
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, str(path))
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(_flat_for_csv(table), str(path))
    elif fmt == "jsonl":
        with open(path, "w", encoding="utf-8") as f:
            for batch in table.to_batches(max_chunksize=4096):
                for row in batch.to_pylist():
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _move_into_place(tmp: Path, out: Path) -> None:
    """os.replace for files; a folder in the way is renamed aside first, then deleted."""
    old = None
    if out.is_dir() and not out.is_symlink():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    elif out.is_symlink() or (out.exists() and tmp.is_dir()):
        out.unlink()
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old)


def export(
    selection_name: str,
    fmt: str | None = None,
    out: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the rows of a saved selection as ``fmt`` at ``out``; return ``out``.

    ``hf`` is a ``datasets`` ``save_to_disk`` folder (``datasets.load_from_disk`` reads it).
    """
    if out is None:
        raise ExportError("give --out, the file (or folder, for hf) to write")
    out = Path(out)
    fmt = export_format(fmt, out)
    prov_path = provenance_path(out, fmt)
    if (out.exists() or out.is_symlink() or (fmt != "hf" and prov_path.exists())) and not overwrite:
        raise ExportError(f"{out} exists; choose another --out or pass --overwrite")
    root = Store(cache_dir).root
    selection = load_selection(root, selection_name)
    ds, names, teacher_cols = selected_rows(selection, root)

    provenance = {
        **selection.provenance,
        "export": {
            "selection": selection.name, "format": fmt, "path": str(out.resolve()), "rows": len(ds),
            "columns": list(ds.column_names), "added_columns": names, "teacher_columns": teacher_cols,
            "selectkd_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        _write(ds, fmt, tmp)
        if fmt == "hf":
            atomic_write_json(tmp / "provenance.json", provenance)
        _move_into_place(tmp, out)
    finally:
        _remove(tmp)
    if fmt != "hf":
        atomic_write_json(prov_path, provenance)
    return out
