"""Every cache key, derived from the specs in this one place.

As `datasets` fingerprints a transform, a key hashes *all* fields of the specs an entry depends
on, except those on its kind's explicit ignore list: a field added to ``DataSpec`` or
``ScoreSpec`` lands in every key unless someone decides here, with a reason, that it does not
change the numbers. Fields that name something are hashed as what they resolve to, never as
typed: the data as its rows' fingerprint, a model as its files, the device as its numerics.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields
from typing import Sequence

from ..data.rows import FILE_SPLIT, Rows
from ..models import ModelRef
from ..runtime import numeric_mode
from ..specs import ScoreSpec
from .files import canonical_json
from .store import FORMAT_VERSION

KINDS = ("teacher", "embedding", "student")

# hashed as what they stand for (see ``entry_inputs``), not as the text a user typed
RESOLVED = {
    "data": "the fingerprint of the rows (source, split and limit), so a moved file keeps its key",
    "split": "the split read: a single data file has one, whatever --split says",
    "device": "the numerics it computes in (float32 or bf16 autocast): cuda:0 and cuda:1 give the same numbers",
    "teachers": "a teacher entry: that teacher's model fingerprint; a student entry: the teachers' entry keys "
                "(an embedding entry ignores them)",
    "student": "the student's model fingerprint (a teacher entry ignores it); a student entry: its embedding entry's key",
}

_NO_NUMBERS = {
    "batch_size": "each batch is padded to its own longest row: the numbers do not depend on it",
    "trust_remote_code": "permits a model to run; the model's files are in the key",
}
IGNORED: dict[str, dict[str, str]] = {
    "teacher": {
        **_NO_NUMBERS,
        "student": "the student has an entry of its own",
        "student_head": "the student's head, not the teacher's",
        "probe_l2": "fits the student's probe",
        "probe_max_iter": "fits the student's probe",
    },
    "embedding": {
        **_NO_NUMBERS,
        "cls_states": "the teachers' [CLS] states; the student stores embeddings either way",
        "allow_untrained_head": "teachers only: a student's head is the probe or its own trained head",
        "probe_l2": "fits the probe, from the embeddings: the student entry's",
        "probe_max_iter": "fits the probe, from the embeddings: the student entry's",
    },
    "student": {
        **_NO_NUMBERS,
        "cls_states": "the teachers' [CLS] states; the student stores embeddings either way",
        "allow_untrained_head": "teachers only: a student's head is the probe or its own trained head",
    },
}


def entry_key(kind: str, rows: Rows, scoring: ScoreSpec, *, model: ModelRef, tokenizer: str, device: str,
              teacher_keys: Sequence[str] = (), embedding_key: str | None = None) -> tuple[str, dict]:
    """(key, inputs) of the ``kind`` entry of ``model`` over ``rows``; the inputs go into its manifest.

    ``rows.spec`` is the data spec as loaded (with the teacher's label names, where they were used);
    ``device`` the device scoring runs on; ``teacher_keys`` the teacher entries a student is scored against;
    ``embedding_key`` the embedding entry a student's probe and scores are computed from.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown cache kind {kind!r}")
    ignored = {*IGNORED[kind], *RESOLVED}
    inputs: dict = {"role": kind}
    for spec in (rows.spec, scoring):
        inputs.update({f.name: getattr(spec, f.name) for f in fields(spec) if f.name not in ignored})
    inputs.update(data=rows.fingerprint, split=FILE_SPLIT if "file" in rows.source else rows.spec.split,
                  model=model.fingerprint, tokenizer=tokenizer, num_labels=rows.num_labels,
                  numerics=numeric_mode(device))
    if kind == "embedding":
        inputs.update(pooling="mean")
    if kind == "student":
        inputs.update(teachers=list(teacher_keys), embedding=embedding_key, pooling="mean")
    inputs = json.loads(canonical_json(inputs))  # as the manifest stores them: tuples are lists
    return hash_inputs(inputs), inputs


def hash_inputs(inputs: dict) -> str:
    """The key of a cache entry: sha256 of the canonical JSON of its inputs and the cache format version."""
    payload = canonical_json({"format_version": FORMAT_VERSION, **inputs})
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


# -- what a key input is called on the command line (for "the nearest entry differs in ...") --------

OPTIONS = {"numerics": "--device", "teachers": "--teacher", "data": "--data"}
NOT_OPTIONS = {"role", "model", "tokenizer", "num_labels", "pooling", "label_names", "probe_l2", "probe_max_iter", "embedding"}


def option_of(name: str) -> str | None:
    """The option that sets key input ``name`` (``max_length`` -> ``--max-length``), None where none does."""
    if name in NOT_OPTIONS:
        return None
    return OPTIONS.get(name, "--" + name.replace("_", "-"))
