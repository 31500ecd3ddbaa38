"""Load a dataset split into rows ``(uid, text[, text_pair], label)`` through `datasets`.

``--data`` is opened by ``sources.open_source``; labels become integer ids by ``labels.label_ids``
(mapped by the training rows' names for dev and test rows). Every row gets a stable ``uid``: the
dataset's own ``uid`` column where there is one, else its position in the source.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..specs import DataSpec
from .labels import label_ids
from .sources import FILE_SPLIT, key_split, open_source, rows_fingerprint

FLAGS = {"text": "--text-field", "label": "--label-field", "text pair": "--text-pair-field"}


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
        return self._int_column("uid")

    @property
    def labels(self) -> np.ndarray:
        return self._int_column("label")

    def _int_column(self, name: str) -> np.ndarray:
        """One column, read from Arrow in one piece (that column alone): a numpy-formatted column is read row by
        row (0.3 s for 6,000 rows, which `selectkd finetune` paid on every step: 15x its training time on an H100)."""
        return np.asarray(self.dataset.with_format("arrow", columns=[name])[:][name].to_numpy(), dtype=np.int64)

    def key_inputs(self) -> dict:
        """What about the data changes the numbers in a cache entry (not --split on a single file)."""
        s = self.spec
        mapped = {"label_names": list(s.label_names)} if s.label_names else {}  # absent: keys made before stay
        return {"data": self.fingerprint, "split": key_split(s, self.source), "text_field": s.text_field,
                "text_pair_field": s.text_pair_field, "label_field": s.label_field, "limit": s.limit, **mapped}

    def take(self, positions: np.ndarray, why: str) -> Rows:
        """The rows at ``positions`` (a held-out dev part, or what is left to train on)."""
        fingerprint = hashlib.sha256(json.dumps([self.fingerprint, why, np.asarray(positions).tolist()]).encode())
        return Rows(self.spec, self.dataset.select(np.asarray(positions)), self.num_labels, self.label_names,
                    fingerprint.hexdigest()[:24], {**self.source, "part": why}, self.source_fingerprint)

    def fingerprint_for(self, split: str | None, limit: int | None) -> str:
        """The fingerprint these rows would have with another split and limit of the same source."""
        return rows_fingerprint(self.source_fingerprint, split, limit)


def load_rows(spec: DataSpec, root: Path, num_labels: int | None = None, names_from: str = "the training data") -> Rows:
    """Load and validate one split; raise ``DataError`` with the fix for anything unusable.

    ``num_labels`` is the class count the rows must fit (a dev split's, the training rows');
    ``names_from`` says whose names ``spec.label_names`` are, for the message about a label they lack.
    """
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # we report load failures ourselves, in one line
    ds, source_fp, source = open_source(spec, Path(root))
    _check_fields(ds, spec)
    if spec.limit is not None:
        if spec.limit <= 0:
            raise DataError(f"--limit must be a positive row count, got {spec.limit}")
        ds = ds.select(range(min(spec.limit, len(ds))))

    ids, n_labels, names = label_ids(ds, spec, names_from)
    if num_labels is not None:
        if ids.max() >= num_labels:
            row = int(np.argmax(ids >= num_labels))
            raise DataError(f"label {ids[row]} in row {row} is out of range for {num_labels} classes; fix the data or the model")
        n_labels = max(n_labels, num_labels) if names is None else n_labels
    _check_texts(ds, spec)

    cols = {"uid": _uids(ds, spec), "text": list(ds[spec.text_field]), "label": ids}
    if spec.text_pair_field:
        cols["text_pair"] = list(ds[spec.text_pair_field])
    rows = datasets.Dataset.from_dict(cols)
    fingerprint = rows_fingerprint(source_fp, key_split(spec, source), spec.limit)
    return Rows(spec, rows, n_labels, names, fingerprint, source, source_fp)


def _check_fields(ds, spec: DataSpec) -> None:
    """The named text, label and pair fields exist, and the split has rows."""
    columns = list(ds.column_names)
    for role, name in (("text", spec.text_field), ("label", spec.label_field), ("text pair", spec.text_pair_field)):
        if name is not None and name not in columns:
            raise DataError(f"{role} field {name!r} not found; fields: {', '.join(columns)} (use {FLAGS[role]})")
    if len(ds) == 0:
        raise DataError(f"split {spec.split!r} of {spec.data} is empty; give a split with rows")


def _check_texts(ds, spec: DataSpec) -> None:
    """The text fields hold strings, none missing."""
    import datasets

    for name in (spec.text_field, spec.text_pair_field):
        if name is None:
            continue
        feature = ds.features[name]
        if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
            raise DataError(f"field {name!r} holds {feature}, not text; choose a text field with --text-field")
        empty = [i for i, t in enumerate(ds[name]) if t is None]
        if empty:
            raise DataError(f"row {empty[0]} has no text in field {name!r} ({len(empty)} rows); drop or fill them")


def _uids(ds, spec: DataSpec) -> np.ndarray:
    """The dataset's own integer ``uid`` column (unique), else each row's position."""
    if "uid" not in ds.column_names or spec.text_field == "uid":
        return np.arange(len(ds), dtype=np.int64)
    uids = np.asarray(ds["uid"])
    if uids.dtype.kind not in "iu":
        raise DataError("column 'uid' must hold integers; rename it or drop it to let selectkd number the rows")
    uids = uids.astype(np.int64)
    values, counts = np.unique(uids, return_counts=True)
    if (counts > 1).any():
        dup = int(values[np.argmax(counts > 1)])
        rows_with = np.flatnonzero(uids == dup)[:2].tolist()
        raise DataError(f"column 'uid' has duplicate values (uid {dup} in rows {rows_with[0]} and {rows_with[1]}; "
                        f"{int((counts > 1).sum())} repeated in all); make them unique or drop the column")
    return uids
