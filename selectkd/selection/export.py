"""The export stage: a saved selection as a file anyone can train on, with how it was made beside it.

The rows are reloaded from the dataset the selection recorded (its fingerprint must still
match), keep their original columns, and gain ``uid``, ``label_id``, the selection's
``score`` and ``rank``, the student's uncertainty and, per teacher, ``logits_<teacher>`` and
``kl_<teacher>`` (KL(teacher || student)), looked up by uid in the cache; <teacher> is the
teacher's folder or model name and the provenance maps each such column to its cache key. ``<out>.provenance.json`` (inside the folder for
``hf``) holds the selection's provenance plus what the export added, and the data file's
sha256. Every file is written under a temp name and renamed into place.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from .._version import __version__
from ..atomic import atomic_write_json, clean_stale, remove_path, replace_path, temp_name
from ..cache.store import Store, file_sha256
from ..errors import SelectKDError
from ..outputs import check_output, check_sidecar, claim, export_kind, sidecar
from ..specs import DataSpec
from .pool import positions_of
from .saved import Selection, load_selection

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
    return out / "provenance.json" if fmt == "hf" else sidecar(out)


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

    from ..data.rows import load_rows
    from ..data.sources import source_rows

    prov = selection.provenance
    d = prov["data"]
    names = tuple(d["label_names"]) if d.get("label_names") else None  # the ids the selection was made with
    spec = DataSpec(data_location(d), d["split"], d["text_field"], d.get("text_pair_field"), d["label_field"],
                    d.get("limit"), names)
    rows = load_rows(spec, root)
    if rows.fingerprint != d["fingerprint"]:
        raise ExportError(f"the data {spec.data} ({d['split']}) changed since selection {selection.name!r} was made; "
                          f"re-run `selectkd select` on the current data")
    raw = source_rows(spec, root)  # the rows as the user gave them, every column; row i is row i of load_rows
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
    from ..cache.arrays import column_matrix

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


def _publish_file(tmp: Path, out: Path, provenance: dict) -> None:
    """Swap the written file in with a provenance that names its sha256, so the pair never disagrees.

    The new provenance waits under a hidden name; the old one is moved aside (hidden) before the
    data file is swapped in, and the new one renamed in after. A kill in between leaves a file
    with no provenance beside it, never one with another export's: the hidden provenance that
    matches its checksum is how the next ``--overwrite`` recognises it.
    """
    prov = sidecar(out)
    provenance["export"]["sha256"] = file_sha256(tmp)
    waiting, previous = temp_name(prov), temp_name(prov, "previous")
    atomic_write_json(waiting, provenance)
    new_inode = os.stat(tmp).st_ino
    try:
        if os.path.lexists(prov):
            os.rename(prov, previous)
        replace_path(tmp, out)
    finally:  # whatever happened: the provenance beside out is the one of the file now there
        swapped = os.path.lexists(out) and os.lstat(out).st_ino == new_inode
        keep, drop = (waiting, previous) if swapped else (previous, waiting)
        if os.path.lexists(keep):
            os.rename(keep, prov)
        drop.unlink(missing_ok=True)


def export(
    selection_name: str,
    fmt: str | None = None,
    out: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the rows of a saved selection as ``fmt`` at ``out``; return ``out``.

    ``hf`` is a ``datasets`` ``save_to_disk`` folder (``datasets.load_from_disk`` reads it) that
    holds its provenance.json and is swapped in whole. ``--overwrite`` replaces only an earlier
    export of the same format (selectkd/outputs.py); the old one stays whole until the swap.
    """
    if out is None:
        raise ExportError("give --out, the file (or folder, for hf) to write")
    out = Path(out)
    fmt = export_format(fmt, out)
    kind = export_kind(fmt)
    root = Store(cache_dir).root
    check_output(out, kind, overwrite, root)
    if fmt != "hf":
        check_sidecar(out, overwrite)
    selection = load_selection(root, selection_name)
    ds, names, teacher_cols = selected_rows(selection, root)

    provenance = {
        **{k: v for k, v in selection.provenance.items() if k != "files"},  # those name the selection's files
        "export": {
            "selection": selection.name, "format": fmt, "path": str(out.resolve()), "rows": len(ds),
            "columns": list(ds.column_names), "added_columns": names, "teacher_columns": teacher_cols,
            "selectkd_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    }
    tmp = temp_name(out)
    try:
        with claim(out, kind, overwrite, root):
            if fmt != "hf":
                clean_stale(sidecar(out), ("tmp", "previous"))
            _write(ds, fmt, tmp)
            if fmt == "hf":
                atomic_write_json(tmp / "provenance.json", provenance)
                replace_path(tmp, out)
            else:
                _publish_file(tmp, out, provenance)
    finally:
        if os.path.lexists(tmp):
            remove_path(tmp)
    return out
