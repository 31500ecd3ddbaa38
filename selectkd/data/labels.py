"""Labels as integer ids, and their names: the same class is the same id in every split.

A ClassLabel keeps its names, string labels are mapped in sorted order (recorded), integer labels
are used as they are. Dev and test rows (and data scored by a teacher that knows its label names)
are mapped by the training rows' names (``DataSpec.label_names``, see ``split_spec``), never by
their own: a test file of "spam" rows only must not make "spam" class 0.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError
from ..specs import DataSpec

if TYPE_CHECKING:
    from .rows import Rows


def split_spec(train: Rows, data: str, split: str, limit: int | None) -> DataSpec:
    """The spec of another split (dev, test) read like ``train``: its fields, and its labels mapped
    by the training rows' names (``load_rows(..., num_labels=train.num_labels)`` reads it)."""
    names = tuple(train.label_names) if train.label_names else None
    return replace(train.spec, data=data, split=split, limit=limit, label_names=names)


def label_ids(ds, spec: DataSpec, names_from: str) -> tuple[np.ndarray, int, list[str] | None]:
    """Integer label ids, the number of classes and their names (None for bare integers).

    ``names_from`` says whose names ``spec.label_names`` are, for the message about a label they lack.
    """
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
    ids = _integer_ids(values, spec)
    return ids, int(ids.max()) + 1, None


def _integer_ids(values: list, spec: DataSpec) -> np.ndarray:
    """Ids of numeric labels: whole numbers >= 0 (1.0 is class 1; 0.5, NaN and "x" are errors)."""
    def whole(v: object) -> bool:
        return isinstance(v, (int, float, np.integer, np.floating)) and bool(np.isfinite(v)) and float(v).is_integer()

    if not all(isinstance(v, (bool, int, np.integer)) for v in values) and not all(map(whole, values)):
        bad = next(i for i, v in enumerate(values) if not whole(v))
        raise DataError(
            f"label {values[bad]!r} in row {bad} is not an integer or a string; "
            f"field {spec.label_field!r} must hold class ids 0..C-1 or class names"
        )
    ids = np.asarray(values, dtype=np.int64)
    if (ids < 0).any():
        row = int(np.flatnonzero(ids < 0)[0])
        raise DataError(f"label {ids[row]} in row {row} is out of range (must be >= 0); fix the data")
    return ids


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
