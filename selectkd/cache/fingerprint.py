"""Fingerprints of the inputs that name a cache key: files, model folders, tokenizers.

File hashes are remembered per user, not per store (``memo_path``), by (path, size, mtime): a
warm run, or a run with a new --cache-dir, does not re-read a 400 MB weight file to find its key;
a file that changes (size or mtime) is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..atomic import atomic_write_json
from .files import file_sha256

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".h5", ".msgpack")
TOKENIZER_FILES = {"tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
                   "merges.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model", "added_tokens.json"}
OWN_RECORDS = "selectkd_"  # selectkd_finetune.json: what a fit cost and scored, not what the model computes
WEIGHTS_RECORD = "selectkd_weights.json"  # a weights-free copy: the sha256 of each weight file it left out

MEMO_ENV = "SELECTKD_FINGERPRINTS"


def memo_path() -> Path:
    """The user's memo of file hashes: $SELECTKD_FINGERPRINTS, else $XDG_CACHE_HOME (~/.cache)/selectkd/fingerprints.json."""
    if os.environ.get(MEMO_ENV):
        return Path(os.environ[MEMO_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "selectkd" / "fingerprints.json"


def path_fingerprint(path: Path) -> str:
    """sha256 of a file's bytes, remembered by (path, size, mtime) in the user's memo (``memo_path``)."""
    path = Path(path).resolve()
    st = path.stat()
    memo_file = memo_path()
    memo = _read_memo(memo_file)
    stamp = [st.st_size, st.st_mtime_ns]
    hit = memo.get(str(path))
    if isinstance(hit, list) and len(hit) == 3 and hit[:2] == stamp and isinstance(hit[2], str):
        return hit[2]
    digest = file_sha256(path)
    memo[str(path)] = [*stamp, digest]
    try:
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(memo_file, memo)
    except OSError:
        pass  # a read-only home still works, only slower
    return digest


def _read_memo(path: Path) -> dict:
    """The remembered hashes; anything unreadable or of another shape is only a memo lost, rebuilt as we go."""
    try:
        memo = json.loads(path.read_text())
    except (OSError, ValueError):  # missing, a folder, a store root that is a file; bad UTF-8 or JSON
        return {}
    return memo if isinstance(memo, dict) else {}


def model_fingerprint(folder: Path) -> str:
    """Hash of a model folder's config and weight files: not its tokenizer (that has its own), nor selectkd's
    own records beside them (``selectkd_finetune.json`` holds a fit's seconds: a re-fit to the same weights
    keeps its key and finds its cached scores)."""
    return _files_fingerprint(folder, lambda f: f.suffix in WEIGHT_SUFFIXES
                              or (f.suffix == ".json" and f.name not in TOKENIZER_FILES))


def weights_fingerprint(folder: Path) -> str:
    """Hash of a model folder's weight files alone: the same hash is the same weights, bit for bit, whatever
    the config around them says (the study names its teachers by it)."""
    return _files_fingerprint(folder, lambda f: f.suffix in WEIGHT_SUFFIXES)


def _files_fingerprint(folder: Path, keep) -> str:
    """sha256 over the names and bytes of the files in ``folder`` that ``keep`` accepts, selectkd's own aside; a
    weight file a weights-free copy left out counts by the hash it recorded (`recorded_weights`)."""
    folder = Path(folder)
    digests = {f.name: path_fingerprint(f) for f in folder.iterdir()
               if f.is_file() and not f.name.startswith(OWN_RECORDS) and keep(f)}
    for name, digest in recorded_weights(folder).items():
        if keep(folder / name):
            digests.setdefault(name, digest)  # a file that is there is hashed as it is
    parts = [[name, digests[name]] for name in sorted(digests)]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def recorded_weights(folder: Path) -> dict[str, str]:
    """{file: sha256} of the weight files a weights-free copy of a model folder (`models.weights_free_copy`)
    left out and recorded in ``WEIGHTS_RECORD``; {} for a folder without that record, or one it does not parse."""
    try:
        record = json.loads((Path(folder) / WEIGHTS_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict):
        return {}
    return {name: digest for name, digest in files.items() if isinstance(digest, str)
            and name == Path(name).name and Path(name).suffix in WEIGHT_SUFFIXES}


def missing_weights(folder: Path) -> list[str]:
    """The weight files a weights-free copy recorded and that are not (back) in ``folder``."""
    return sorted(name for name in recorded_weights(folder) if not (Path(folder) / name).is_file())


def folder_tokenizer_fingerprint(folder: Path) -> str | None:
    """Tokenizer fingerprint from a folder's tokenizer.json, without importing transformers."""
    path = Path(folder) / "tokenizer.json"
    if not path.exists():
        return None
    from tokenizers import Tokenizer

    payload = Tokenizer.from_file(str(path)).to_str()
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        extra = Path(folder) / name
        if extra.exists():
            payload += extra.read_text()
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of what decides segmentation: the fast tokenizer's full JSON, or the vocab."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        payload = backend.to_str()
    else:
        payload = json.dumps(sorted(tokenizer.get_vocab().items()))
    payload += json.dumps([type(tokenizer).__name__, getattr(tokenizer, "padding_side", None)])
    return hashlib.sha256(payload.encode()).hexdigest()[:24]

