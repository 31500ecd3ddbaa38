"""Load a dataset split into rows ``(uid, text[, text_pair], label)`` through `datasets`.

``--data`` is a built-in name (installed by ``selectkd assets install``), a ``save_to_disk``
folder, a CSV/TSV/JSON/JSONL/Parquet file, or a hub name. Labels become integer ids:
a ClassLabel keeps its names, string labels are mapped in sorted order (recorded), integer
labels are used as they are. Dev and test rows (and data scored by a teacher that knows its
label names) are mapped by the training rows' names (``DataSpec.label_names``), never by their
own: a test file of "spam" rows only must not make "spam" class 0. Every row gets a stable
``uid``: the dataset's own ``uid`` column where there is one, else its position in the source.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import assets
from ..cache.fingerprint import path_fingerprint
from ..errors import DataError
from ..specs import DataSpec

FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
FILE_SPLIT = "train"  # a single data file has one split; --split names no part of it


@dataclass
class Rows:
    """A loaded split: ``dataset`` has columns uid, text, [text_pair], label (int64)."""

    spec: DataSpec
    dataset: object  # datasets.Dataset
    num_labels: int
    label_names: list[str] | None
    fingerprint: str
    source: dict = field(default_factory=dict)
    source_fingerprint: str = ""  # of the source before split and limit are applied

    @property
    def split_ignored(self) -> bool:
        """A single file has one split: whatever --split says, every row of it is read."""
        return "file" in self.source and self.spec.split != FILE_SPLIT

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def uids(self) -> np.ndarray:
        return np.asarray(self.dataset.with_format("numpy")["uid"], dtype=np.int64)

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.dataset.with_format("numpy")["label"], dtype=np.int64)

    def key_inputs(self) -> dict:
        """What about the data changes the numbers in a cache entry (not --split on a single file)."""
        s = self.spec
        mapped = {"label_names": list(s.label_names)} if s.label_names else {}  # absent: keys made before stay
        return {"data": self.fingerprint, "split": _key_split(s, self.source), "text_field": s.text_field,
                "text_pair_field": s.text_pair_field, "label_field": s.label_field, "limit": s.limit, **mapped}

    def take(self, positions: np.ndarray, why: str) -> Rows:
        """The rows at ``positions`` (a held-out dev part, or what is left to train on)."""
        fingerprint = hashlib.sha256(json.dumps([self.fingerprint, why, np.asarray(positions).tolist()]).encode())
        return Rows(self.spec, self.dataset.select(np.asarray(positions)), self.num_labels, self.label_names,
                    fingerprint.hexdigest()[:24], {**self.source, "part": why}, self.source_fingerprint)

    def fingerprint_for(self, split: str | None, limit: int | None) -> str:
        """The fingerprint these rows would have with another split and limit of the same source."""
        return _rows_fingerprint(self.source_fingerprint, split, limit)


def hold_out_dev(rows: Rows, fraction: float, seed: int, limit: int | None = None) -> tuple[np.ndarray, Rows | None, dict]:
    """(positions to train on, the held-out dev rows or None, what was done, for the run's record).

    For data without a dev split: a dev score from rows the model never saw, instead of no score.
    ``limit`` evaluates only the first N held-out rows; all of them stay out of training.
    """
    train, held = holdout_split(rows.labels, fraction, seed)
    dev = rows.take(held[:limit], "holdout dev") if len(held) else None
    return train, dev, {"holdout": fraction, "rows": len(dev) if dev is not None else 0, "held_out_rows": len(held)}


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train positions, dev positions): a seeded dev part of ``fraction`` of the rows, every class in
    its share (largest remainder), never a class's last row; sorted. No dev rows when too few."""
    from ..selection.choose import largest_remainder

    counts = np.bincount(labels)
    quotas = np.minimum(largest_remainder(counts, int(round(fraction * len(labels)))), np.maximum(counts - 1, 0))
    rng = np.random.default_rng(seed)
    dev = [rng.choice(np.flatnonzero(labels == c), q, replace=False) for c, q in enumerate(quotas) if q]
    dev_pos = np.sort(np.concatenate(dev)) if dev else np.zeros(0, dtype=np.int64)
    return np.setdiff1d(np.arange(len(labels)), dev_pos), dev_pos


def _key_split(spec: DataSpec, source: dict) -> str:
    return FILE_SPLIT if "file" in source else spec.split


def _rows_fingerprint(source_fp: str, split: str | None, limit: int | None) -> str:
    return hashlib.sha256(json.dumps([source_fp, split, limit]).encode()).hexdigest()[:24]


def _open_source(spec: DataSpec, root: Path):
    """Return (datasets.Dataset of the split, fingerprint of the source, description)."""
    import datasets

    if spec.data in assets.DATASETS:
        folder = assets.find_installed(assets.data_dir, root, spec.data)
        if folder is None:
            raise DataError(f"built-in dataset {spec.data!r} is not installed in {assets.searched(root)}; run "
                            f"`selectkd assets install --data {spec.data} --cache-dir {root}`")
        dd = datasets.load_from_disk(str(folder))
        if spec.split not in dd:
            raise DataError(f"{spec.data!r} has no split {spec.split!r}; splits: {', '.join(dd)}")
        ds = dd[spec.split]
        return ds, ds._fingerprint, {"builtin": spec.data, "split": spec.split}

    path = Path(spec.data).expanduser()
    if path.is_dir():
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as exc:  # noqa: BLE001 - any failure means "not a dataset folder"
            if path.suffix.lower() in FILE_BUILDERS:
                raise DataError(f"{path} is a folder, not a {path.suffix} file; give the data file itself") from None
            raise DataError(f"cannot read {path} as a `save_to_disk` folder ({type(exc).__name__}); give a dataset folder or a data file") from None
        if isinstance(loaded, datasets.DatasetDict):
            if spec.split not in loaded:
                raise DataError(f"{path} has no split {spec.split!r}; splits: {', '.join(loaded)} (use --split)")
            loaded = loaded[spec.split]
        return loaded, loaded._fingerprint, {"folder": str(path.resolve()), "split": spec.split}

    if path.suffix.lower() in FILE_BUILDERS and (path.exists() or "/" in spec.data or path.suffix):
        if not path.exists():
            raise DataError(f"data file {path} does not exist; check the path")
        if not path.is_file() or not _readable(path):
            raise DataError(f"cannot read data file {path}; check that it is a file and its permissions")
        if path.stat().st_size == 0:
            raise DataError(f"data file {path} is empty (0 bytes); give a file with a header line and rows")
        builder = FILE_BUILDERS[path.suffix.lower()]
        if builder == "csv" and _header_only(path):
            raise DataError(f"data file {path} has a header line but no rows; add rows below the header")
        kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
        try:
            ds = datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
        except Exception as exc:  # noqa: BLE001 - the loader wraps the real cause
            if _caused_by(exc, UnicodeDecodeError):
                raise DataError(f"{path} is not UTF-8 text; convert it (e.g. `iconv -f latin1 -t utf-8`) and retry") from None
            cause = _root_cause(exc)
            msg = (str(cause).splitlines() or [type(cause).__name__])[0]
            raise DataError(f"cannot read {path} as {builder}: {msg[:200]}") from None
        return ds, path_fingerprint(path, root), {"file": str(path.resolve())}

    if path.exists():
        raise DataError(f"{path} is neither a dataset folder nor a .csv/.tsv/.json/.jsonl/.parquet file")
    if spec.data.startswith((".", "/", "~")) or spec.data.endswith(tuple(FILE_BUILDERS)):
        raise DataError(f"data path {spec.data} does not exist; check the path")
    try:
        ds = datasets.load_dataset(spec.data, split=spec.split)
    except Exception as exc:  # noqa: BLE001 - hub failures come in many types
        raise DataError(
            f"cannot load {spec.data!r} from the hub ({type(exc).__name__}); give a built-in name "
            f"({', '.join(assets.DATASETS)}), a data file or a `save_to_disk` folder"
        ) from None
    return ds, ds._fingerprint, {"hub": spec.data, "split": spec.split}


def _caused_by(exc: BaseException, kind: type) -> bool:
    while exc is not None:
        if isinstance(exc, kind):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ or exc.__context__:
        exc = exc.__cause__ or exc.__context__
    return exc


def _header_only(path: Path) -> bool:
    """A small CSV whose only non-blank line is the header (the loader's own error names no cause)."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    return len(head) < 1 << 16 and sum(1 for line in head.splitlines() if line.strip()) <= 1


def _readable(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.read(1)
        return True
    except OSError:
        return False


def _label_ids(ds, spec: DataSpec, names_from: str) -> tuple[np.ndarray, int, list[str] | None]:
    """Integer label ids, the number of classes and their names (None for bare integers)."""
    import datasets

    feature = ds.features[spec.label_field]
    column = ds[spec.label_field]
    if isinstance(feature, datasets.ClassLabel):
        ids = np.asarray(column, dtype=np.int64)
        names = list(feature.names)
        bad = np.flatnonzero((ids < 0) | (ids >= len(names)))
        if bad.size:
            raise DataError(f"label {ids[bad[0]]} in row {bad[0]} is out of range 0..{len(names) - 1}; fix the data")
        if not spec.label_names or names == list(spec.label_names):
            return ids, len(names), names
        column = [names[i] for i in ids]  # other names or order than the training rows: map by name
    values = list(column)
    missing = [i for i, v in enumerate(values) if v is None]
    if missing:
        raise DataError(f"row {missing[0]} has no label in field {spec.label_field!r} ({len(missing)} rows); drop or fill them")
    if all(isinstance(v, str) for v in values):
        return _string_ids(values, spec, names_from)
    if all(isinstance(v, (bool, int, np.integer)) for v in values):
        ids = np.asarray(values, dtype=np.int64)
    elif all(isinstance(v, (int, float, np.integer, np.floating)) for v in values) and all(
        np.isfinite(v) and float(v).is_integer() for v in values
    ):
        ids = np.asarray(values, dtype=np.int64)
    else:
        bad = next(i for i, v in enumerate(values)
                   if not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v) or not float(v).is_integer())
        raise DataError(
            f"label {values[bad]!r} in row {bad} is not an integer or a string; "
            f"field {spec.label_field!r} must hold class ids 0..C-1 or class names"
        )
    if (ids < 0).any():
        row = int(np.flatnonzero(ids < 0)[0])
        raise DataError(f"label {ids[row]} in row {row} is out of range (must be >= 0); fix the data")
    return ids, int(ids.max()) + 1, None


def _string_ids(values: list[str], spec: DataSpec, names_from: str) -> tuple[np.ndarray, int, list[str]]:
    """Ids of string labels: by ``spec.label_names`` when given, else by the file's own sorted names.

    Two spellings of one class ("spam" and "spam ", "Spam") in one file are an error, not two classes.
    """
    first_row = {}
    for i, v in enumerate(values):
        first_row.setdefault(v, i)
    spelled: dict[str, str] = {}
    for v in sorted(first_row, key=first_row.get):
        other = spelled.setdefault(v.strip().casefold(), v)
        if other != v:
            raise DataError(f"labels {other!r} (row {first_row[other]}) and {v!r} (row {first_row[v]}) of {spec.data} "
                            f"differ only in case or surrounding spaces; spell each class one way in the data")
    names = list(spec.label_names) if spec.label_names else sorted(first_row)
    index = {n: i for i, n in enumerate(names)}
    unknown = [v for v in first_row if v not in index]
    if unknown:
        v = unknown[0]
        near = [n for n in names if n.strip().casefold() == v.strip().casefold()]
        fix = f"did you mean {near[0]!r}? fix the data" if near else "fix the data, or use training data or a model that has it"
        raise DataError(f"label {v!r} (row {first_row[v]} of {spec.data}) is not one of {names_from}'s labels "
                        f"({', '.join(map(repr, names))}); {fix}")
    return np.array([index[v] for v in values], dtype=np.int64), len(names), names


def load_rows(spec: DataSpec, root: Path, num_labels: int | None = None, names_from: str = "the training data") -> Rows:
    """Load and validate one split; raise ``DataError`` with the fix for anything unusable.

    ``names_from`` says whose names ``spec.label_names`` are, for the message about a label they lack.
    """
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # we report load failures ourselves, in one line
    ds, source_fp, source = _open_source(spec, Path(root))
    columns = list(ds.column_names)
    for role, name in (("text", spec.text_field), ("label", spec.label_field), ("text pair", spec.text_pair_field)):
        if name is not None and name not in columns:
            flag = {"text": "--text-field", "label": "--label-field", "text pair": "--text-pair-field"}[role]
            raise DataError(f"{role} field {name!r} not found; fields: {', '.join(columns)} (use {flag})")
    if len(ds) == 0:
        raise DataError(f"split {spec.split!r} of {spec.data} is empty; give a split with rows")
    if spec.limit is not None:
        if spec.limit <= 0:
            raise DataError(f"--limit must be a positive row count, got {spec.limit}")
        ds = ds.select(range(min(spec.limit, len(ds))))

    ids, n_labels, names = _label_ids(ds, spec, names_from)
    if num_labels is not None:
        if ids.max() >= num_labels:
            row = int(np.argmax(ids >= num_labels))
            raise DataError(f"label {ids[row]} in row {row} is out of range for {num_labels} classes; fix the data or the model")
        n_labels = max(n_labels, num_labels) if names is None else n_labels

    for name in (spec.text_field, spec.text_pair_field):
        if name is None:
            continue
        feature = ds.features[name]
        if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
            raise DataError(f"field {name!r} holds {feature}, not text; choose a text field with --text-field")
        empty = [i for i, t in enumerate(ds[name]) if t is None]
        if empty:
            raise DataError(f"row {empty[0]} has no text in field {name!r} ({len(empty)} rows); drop or fill them")

    if "uid" in columns and spec.text_field != "uid":
        uids = np.asarray(ds["uid"])
        if uids.dtype.kind not in "iu":
            raise DataError("column 'uid' must hold integers; rename it or drop it to let selectkd number the rows")
        uids = uids.astype(np.int64)
    else:
        uids = np.arange(len(ds), dtype=np.int64)
    values, counts = np.unique(uids, return_counts=True)
    if (counts > 1).any():
        dup = int(values[np.argmax(counts > 1)])
        rows_with = np.flatnonzero(uids == dup)[:2].tolist()
        raise DataError(f"column 'uid' has duplicate values (uid {dup} in rows {rows_with[0]} and {rows_with[1]}; "
                        f"{int((counts > 1).sum())} repeated in all); make them unique or drop the column")

    cols = {"uid": uids, "text": list(ds[spec.text_field]), "label": ids}
    if spec.text_pair_field:
        cols["text_pair"] = list(ds[spec.text_pair_field])
    rows = datasets.Dataset.from_dict(cols)
    fingerprint = _rows_fingerprint(source_fp, _key_split(spec, source), spec.limit)
    return Rows(spec, rows, n_labels, names, fingerprint, source, source_fp)
