"""Find, fingerprint and load models: built-in names, local HF folders, hub names.

Models load with ``trust_remote_code=False`` unless the user passes ``--trust-remote-code``
(a folder whose config.json points at its own code is refused before anything is imported),
from safetensors weights where the folder has them, and never unpickle arbitrary objects
(``weights_only=True`` for any ``.bin`` checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from . import assets
from .cache.fingerprint import (WEIGHT_SUFFIXES, WEIGHTS_RECORD, folder_tokenizer_fingerprint, missing_weights,
                                model_fingerprint, path_fingerprint, tokenizer_fingerprint)
from .errors import ModelError


def _quiet_transformers() -> None:
    """Our own progress bar is the one users see; silence the per-load chatter."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


@dataclass
class ModelRef:
    """A model the user named, resolved to where it loads from and what identifies it."""

    name: str
    source: str  # local folder or hub name
    local: bool
    fingerprint: str
    trust_remote_code: bool = False  # every load of this model runs its own code only when True
    max_positions: int | None = None  # the longest input its position embeddings take (None: unknown)


# Models whose position ids start after the padding index, so padding_idx + 1 positions are never used.
OFFSET_POSITIONS = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "mpnet", "longformer", "data2vec-text",
                    "roberta-prelayernorm", "ibert"}


def _max_positions(config: dict) -> int | None:
    """Longest input a config's position embeddings take: max_position_embeddings less any offset."""
    n = config.get("max_position_embeddings")
    if not isinstance(n, int) or isinstance(n, bool):
        return None
    if config.get("model_type") in OFFSET_POSITIONS:
        pad = config.get("pad_token_id")
        n -= (pad if isinstance(pad, int) else 1) + 1
    return n


def check_max_length(ref: ModelRef, max_length: int) -> None:
    """A --max-length beyond the position embeddings fails mid-run; refuse it before anything is written."""
    if ref.max_positions is not None and max_length > ref.max_positions:
        raise ModelError(f"--max-length {max_length} is more than {ref.name} takes: its position embeddings hold "
                         f"{ref.max_positions} tokens (max_position_embeddings in its config); "
                         f"use --max-length {ref.max_positions} or less")


def _load_kwargs(ref: ModelRef) -> dict:
    """from_pretrained arguments for weights: safetensors where the folder has them, never a pickle."""
    kwargs = {"trust_remote_code": ref.trust_remote_code, "weights_only": True}
    if ref.local and any(Path(ref.source).glob("*.safetensors")):
        kwargs["use_safetensors"] = True
    return kwargs


def check_weights(ref: ModelRef) -> None:
    """A weights-free copy (`weights_free_copy`) names cached scores; running the model needs its weights back."""
    missing = missing_weights(Path(ref.source)) if ref.local else []
    if missing:
        raise ModelError(f"{ref.name} is a weights-free copy ({', '.join(missing)} left out, their hashes kept in "
                         f"{WEIGHTS_RECORD}): its cached scores are found from it, but this needs to run the model; "
                         f"copy {', '.join(missing)} back into {ref.source}")


def weights_free_copy(folder: str | Path, out: str | Path) -> Path:
    """``out``: model folder ``folder`` without its weight files, their sha256 kept in ``WEIGHTS_RECORD``. It has
    the model's fingerprint, so every cache entry scored with the model is found from it (a 400 MB teacher's
    logits travel as a few hundred kB, to a machine that only distils); anything that runs the model refuses
    it (`check_weights`). Built under a temp name and renamed into ``out``; what ``out`` replaces must be a
    weights-free copy itself (made here), never a folder of anything else."""
    import shutil

    from .atomic import atomic_write_json, replacing

    folder, out = Path(folder), Path(out)
    files = sorted(f for f in folder.iterdir() if f.is_file())
    weights = {f.name: path_fingerprint(f) for f in files if f.suffix in WEIGHT_SUFFIXES}
    if not weights and missing_weights(folder):
        raise ModelError(f"{folder} is a weights-free copy already; copy the folder as it is")
    if not weights:
        raise ModelError(f"{folder} has no weight files ({', '.join(WEIGHT_SUFFIXES)}) to leave out")
    if os.path.lexists(out) and not (out / WEIGHTS_RECORD).is_file():
        raise ModelError(f"{out} exists and is not a weights-free copy; give a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    with replacing(out) as tmp:
        tmp.mkdir()
        for f in files:
            if f.suffix not in WEIGHT_SUFFIXES and f.name != WEIGHTS_RECORD:
                shutil.copy2(f, tmp / f.name)
        atomic_write_json(tmp / WEIGHTS_RECORD, {"files": weights, "from": str(folder)})
    return out


def _one_line(exc: BaseException, width: int) -> str:
    """An exception as one short line: library messages often span several."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:width]}"


def _read_config(path: Path) -> dict:
    try:
        return json.loads((path / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelError(f"{path / 'config.json'} is not valid JSON; re-save the model with save_pretrained") from None


def _check_no_remote_code(path: Path, trust_remote_code: bool) -> str:
    """Refuse a folder that ships model code unless trusted; return a fingerprint of that code."""
    config = _read_config(path)
    if not config.get("auto_map"):
        return ""
    code = sorted(p for p in path.glob("*.py") if p.is_file())
    if not trust_remote_code:
        files = ", ".join(p.name for p in code) or "code it names in auto_map"
        raise ModelError(f"{path} ships its own model code ({files}, named by auto_map in config.json); selectkd "
                         f"does not run it unless you pass --trust-remote-code (only for code you have read)")
    return hashlib.sha256(b"".join(p.read_bytes() for p in code)).hexdigest()[:24]


def resolve(name: str, root: Path, trust_remote_code: bool = False) -> ModelRef:
    """Built-in name -> store folder; an existing folder -> itself; otherwise a hub name.

    With ``trust_remote_code`` the folder's own code is part of the fingerprint (it makes the numbers).
    """
    if name in assets.MODELS:
        folder = assets.find_installed(assets.model_dir, root, name)
        if folder is None:
            raise ModelError(f"built-in model {name!r} is not installed in {assets.searched(root)}; run "
                             f"`selectkd assets install --models {name} --cache-dir {root}`")
        return ModelRef(name, str(folder), True, model_fingerprint(folder), trust_remote_code,
                        _max_positions(_read_config(folder)))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelError(f"{path} is not a model folder (no config.json); give a folder saved with save_pretrained")
        code = _check_no_remote_code(path, trust_remote_code)
        fingerprint = model_fingerprint(path) + (f"+code:{code}" if code else "")
        return ModelRef(name, str(path), True, fingerprint, trust_remote_code, _max_positions(_read_config(path)))
    if path.exists():
        raise ModelError(f"{name} is a file, not a model folder; give a folder saved with save_pretrained")
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"model path {name} does not exist; give a model folder, a hub name or one of: {', '.join(assets.MODELS)}")
    from .runtime import hub_unreachable

    offline = hub_unreachable()
    if offline:
        raise ModelError(f"{name!r} is not a model folder or a built-in name, and the hub is out of reach ({offline}); "
                         f"give a local folder or one of: {', '.join(assets.MODELS)}")
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo, ... all mean "cannot get it"
        raise ModelError(
            f"cannot load model {name!r} from the hub ({type(exc).__name__}); give a local folder "
            f"or a built-in name ({', '.join(assets.MODELS)})"
        ) from None
    revision = getattr(config, "_commit_hash", None) or "unknown"
    return ModelRef(name, name, False, f"hub:{name}@{revision}", trust_remote_code, _max_positions(config.to_dict()))


def tokenizer_key(ref: ModelRef) -> str:
    """What identifies the model's segmentation; cheap for local folders (no transformers import)."""
    if ref.local:
        fp = folder_tokenizer_fingerprint(Path(ref.source))
        if fp:
            return fp
    return load_tokenizer(ref)[1]


def load_tokenizer(ref: ModelRef):
    """(fast tokenizer, its fingerprint) - the fingerprint is the same one ``tokenizer_key`` gives."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(ref.source, use_fast=True, trust_remote_code=ref.trust_remote_code)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"cannot load the tokenizer of {ref.name} ({_one_line(exc, 120)})") from None
    if not getattr(tok, "is_fast", False):
        raise ModelError(f"{ref.name} has no fast tokenizer (tokenizer.json); selectkd needs one to batch by length")
    fp = folder_tokenizer_fingerprint(Path(ref.source)) if ref.local else None
    return tok, fp or tokenizer_fingerprint(tok)


def _head_is_trained(model, missing: list[str]) -> bool:
    """A head is untrained when any of its parameters was freshly initialised on load."""
    head_names = {n for n, _ in model.named_parameters() if not n.startswith(model.base_model_prefix + ".")}
    return not any(m in head_names or not m.startswith(model.base_model_prefix + ".") for m in missing)


def load_classifier(ref: ModelRef, num_labels: int, allow_untrained_head: bool = False, role: str = "teacher",
                    seed: int = 0):
    """A sequence classifier for ``num_labels`` classes; refuse an untrained or mismatched head.

    A fresh head is drawn from ``seed`` (it is part of the numbers) without touching the
    caller's random state. Returns (model in eval mode, whether the head was trained).
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    check_weights(ref)
    _quiet_transformers()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            config = AutoConfig.from_pretrained(ref.source, trust_remote_code=ref.trust_remote_code)
            model, info = AutoModelForSequenceClassification.from_pretrained(
                ref.source, config=config, output_loading_info=True, **_load_kwargs(ref)
            )
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"cannot load {ref.name} as a sequence classifier ({_one_line(exc, 160)})") from None
        trained = _head_is_trained(model, list(info.get("missing_keys", [])))
        if trained and model.config.num_labels != num_labels:
            raise ModelError(
                f"{role} {ref.name} has {model.config.num_labels} labels but the data has {num_labels}; "
                f"use a {role} trained on this task (`selectkd finetune`)"
            )
        if not trained:
            if not allow_untrained_head:
                raise ModelError(
                    f"{role} {ref.name} has no trained classification head for this task; fine-tune it first "
                    f"(`selectkd finetune --model {ref.name} ...`) or pass --allow-untrained-head"
                )
            if model.config.num_labels != num_labels:  # only then is a second load needed
                config.num_labels = num_labels
                torch.manual_seed(seed)
                model = AutoModelForSequenceClassification.from_pretrained(ref.source, config=config, **_load_kwargs(ref))
    model.eval()
    return model, trained


GENERIC_LABEL = re.compile(r"^LABEL_\d+$")  # what transformers names classes it was told nothing about


def label_names(ref: ModelRef) -> list[str] | None:
    """The class names a local model's trained head was saved with, in id order (``finetune`` writes
    them); None for a model without a head or with only LABEL_0, LABEL_1, ..."""
    if not ref.local:
        return None
    config = json.loads((Path(ref.source) / "config.json").read_text())
    if "ForSequenceClassification" not in " ".join(config.get("architectures") or []):
        return None
    id2label = config.get("id2label") or {}
    names = [str(id2label[k]) for k in sorted(id2label, key=int)]
    if not names or len(set(names)) != len(names) or all(GENERIC_LABEL.match(n) for n in names):
        return None
    return names


def load_encoder(ref: ModelRef):
    """The bare encoder (no head), for pooled embeddings."""
    from transformers import AutoModel

    check_weights(ref)
    _quiet_transformers()
    try:
        model = AutoModel.from_pretrained(ref.source, **_load_kwargs(ref))
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"cannot load {ref.name} ({_one_line(exc, 160)})") from None
    return model.eval()


def follow_umask(folder: Path) -> None:
    """Give a written folder the modes any new file gets: safetensors writes its files 0600 whatever the umask."""
    mask = os.umask(0)
    os.umask(mask)
    for path in [Path(folder), *Path(folder).rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def save_model(model, tokenizer, folder: Path) -> None:
    """``save_pretrained`` of model and tokenizer into ``folder``, readable as the umask says."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    follow_umask(folder)


def first_layers(name: str, layers: int, root: Path) -> str:
    """The first ``layers`` transformer layers of encoder ``name`` (embeddings and pooler kept), saved once
    as a normal HF folder in the store's models/ and reused: a student that starts from its teacher's own
    lower layers (DistilBERT, PKD), sharing its tokenizer. Returns the folder."""
    from transformers import AutoModel

    from .atomic import replacing

    ref = resolve(name, root)
    out = root / "models" / f"{re.sub(r'[^A-Za-z0-9._-]+', '-', Path(name).name)}-first{layers}"
    if (out / "config.json").exists():
        return str(out)
    check_weights(ref)
    _quiet_transformers()
    model = AutoModel.from_pretrained(ref.source, **_load_kwargs(ref))
    if not 1 <= layers < model.config.num_hidden_layers:
        raise ModelError(f"a student of the first {layers} layers needs 1 to {model.config.num_hidden_layers - 1} "
                         f"layers: {name} has {model.config.num_hidden_layers}")
    model.encoder.layer = model.encoder.layer[:layers]
    model.config.num_hidden_layers = layers
    tokenizer, _ = load_tokenizer(ref)
    out.parent.mkdir(parents=True, exist_ok=True)
    with replacing(out) as tmp:
        save_model(model, tokenizer, tmp)
    return str(out)
