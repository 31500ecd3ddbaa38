"""Opening ``--data`` as a `datasets.Dataset`: a built-in name, a ``save_to_disk`` folder, a data file or a hub name.

Each opener returns the split with every original column, the source's fingerprint and a record of
where it came from (``{"builtin" | "folder" | "file" | "hub": ..., "split": ...}``). Reading the rows
into selectkd's columns and checking them is ``rows.load_rows``'s job.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .. import assets
from ..cache.fingerprint import path_fingerprint
from ..errors import DataError
from ..specs import DataSpec

FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
FILE_SPLIT = "train"  # a single data file has one split; --split names no part of it


def open_source(spec: DataSpec, root: Path):
    """Return (datasets.Dataset of the split, fingerprint of the source, description)."""
    if spec.data in assets.DATASETS:
        return _open_builtin(spec, root)
    path = Path(spec.data).expanduser()
    if path.is_dir():
        return _open_folder(spec, path)
    if path.suffix.lower() in FILE_BUILDERS and (path.exists() or "/" in spec.data or path.suffix):
        return _open_file(path, root)
    if path.exists():
        raise DataError(f"{path} is neither a dataset folder nor a .csv/.tsv/.json/.jsonl/.parquet file")
    if spec.data.startswith((".", "/", "~")) or spec.data.endswith(tuple(FILE_BUILDERS)):
        raise DataError(f"data path {spec.data} does not exist; check the path")
    return _open_hub(spec)


def source_rows(spec: DataSpec, root: Path):
    """The rows as the user gave them, every original column, ``spec.limit`` applied: row i here is
    row i of ``load_rows(spec, root)`` (export joins them by that position)."""
    raw, _, _ = open_source(spec, Path(root))
    if spec.limit is not None:
        raw = raw.select(range(min(spec.limit, len(raw))))
    return raw


def has_split(data: str, split: str, root: Path) -> bool:
    """Whether a built-in data set or a ``save_to_disk`` folder has ``split`` (a dev or test split)."""
    if data in assets.DATASETS:
        folder = assets.find_installed(assets.data_dir, root, data)
        return folder is not None and (folder / split).exists()
    path = Path(data)
    return path.is_dir() and (path / split).is_dir()


def key_split(spec: DataSpec, source: dict) -> str:
    """The split as cache keys record it: a single file's one split, whatever --split says."""
    return FILE_SPLIT if "file" in source else spec.split


def rows_fingerprint(source_fp: str, split: str | None, limit: int | None) -> str:
    return hashlib.sha256(json.dumps([source_fp, split, limit]).encode()).hexdigest()[:24]


def _open_builtin(spec: DataSpec, root: Path):
    import datasets

    folder = assets.find_installed(assets.data_dir, root, spec.data)
    if folder is None:
        raise DataError(f"built-in dataset {spec.data!r} is not installed in {assets.searched(root)}; run "
                        f"`selectkd assets install --data {spec.data} --cache-dir {root}`")
    dd = datasets.load_from_disk(str(folder))
    if spec.split not in dd:
        raise DataError(f"{spec.data!r} has no split {spec.split!r}; splits: {', '.join(dd)}")
    ds = dd[spec.split]
    return ds, ds._fingerprint, {"builtin": spec.data, "split": spec.split}


def _open_folder(spec: DataSpec, path: Path):
    import datasets

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


def _open_file(path: Path, root: Path):
    import datasets

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
    return ds, path_fingerprint(path), {"file": str(path.resolve())}


def _open_hub(spec: DataSpec):
    import datasets

    from ..runtime import hub_unreachable

    offline = hub_unreachable()
    if offline:
        raise DataError(f"{spec.data!r} is not a file, a folder or a built-in name, and the hub is out of reach "
                        f"({offline}); give a built-in name ({', '.join(assets.DATASETS)}), a data file or a "
                        f"`save_to_disk` folder")
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
