"""The score stage: run each teacher (and the student) over a split once, into the cache.

Teacher entries hold ``uid, logits[, cls]`` per row. The student entry holds pooled
embeddings (parts), a faiss index over them, the fitted probe head and, in
``scores.arrow``, the student's probabilities, entropy, margin, least confidence and
KL(teacher || student) against every teacher given. A second identical call finds every
key complete and runs no model at all.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa

from . import __version__, parallel
from .data import DataSpec, Rows, load_rows
from .errors import CacheError, ModelError, SelectKDError, SelectKDWarning
from .models import ModelRef, check_max_length, load_classifier, load_encoder, load_tokenizer, resolve, tokenizer_key
from .store import Entry, EntryWriter, Store, part_name
from .uncertainty import entropy, kl_divergence, least_confidence, margin, softmax

PART_ROWS = 4096
STUDENT_HEADS = ("probe", "as-is")


@dataclass
class EntryReport:
    """What happened to one cache key in a score call."""

    role: str
    model: str
    kind: str
    key: str
    rows: int
    reused: bool
    seconds: float
    tokens: int = 0
    extra: dict = field(default_factory=dict)


@dataclass
class ScoreResult:
    rows: Rows
    teachers: list[EntryReport]
    student: EntryReport | None
    store: Store

    @property
    def reports(self) -> list[EntryReport]:
        return [*self.teachers, *([self.student] if self.student else [])]


# -- tokens and batches ---------------------------------------------------------------------

def encode(tokenizer, texts: Sequence[str], pairs: Sequence[str] | None,
           max_length: int) -> tuple[list[list[int]], list[list[int]] | None]:
    """Token ids per row, truncated to ``max_length``, no padding (that happens per batch),
    and for sentence pairs the token type ids where the model takes them (BERT)."""
    types = pairs is not None and "token_type_ids" in tokenizer.model_input_names
    enc = tokenizer(list(texts), list(pairs) if pairs is not None else None, truncation=True,
                    max_length=max_length, padding=False, return_attention_mask=False,
                    return_token_type_ids=types)
    return enc["input_ids"], (enc["token_type_ids"] if types else None)


def tokenize(tokenizer, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int) -> list[list[int]]:
    """Token ids per row (see ``encode``)."""
    return encode(tokenizer, texts, pairs, max_length)[0]


def length_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Row indices grouped by length (longest first), so each batch pads only to its own max."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def collate(ids: list[list[int]], pad_id: int, type_ids: list[list[int]] | None = None) -> dict:
    """Pad a batch to its longest row: input_ids + attention_mask (+ token_type_ids)."""
    import torch

    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    batch = {"input_ids": input_ids, "attention_mask": mask}
    if type_ids is not None:
        tt = torch.zeros((len(ids), width), dtype=torch.long)
        for i, row in enumerate(type_ids):
            tt[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        batch["token_type_ids"] = tt
    return batch


def pick_device(device: str | None = None) -> str:
    """The device asked for, checked; else cuda when a GPU is usable, else cpu (no torch import without a GPU)."""
    if device:
        return check_device(device)
    if not any(Path("/dev").glob("nvidia*")) and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def available_devices() -> list[str]:
    """The devices this torch build can run on here: cpu, cuda:0.. and mps."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    return ["cpu", *(f"cuda:{i}" for i in range(gpus)), *(["mps"] if mps else [])]


def check_device(device: str) -> str:
    """``device`` when this machine can run on it; else a one-line error naming the devices it has."""
    import torch

    available = available_devices()
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise SelectKDError(f"unknown --device {device!r}; devices here: {', '.join(available)}") from None
    usable = {torch.device(d).type for d in available}
    if dev.type in usable and (dev.type != "cuda" or dev.index is None or f"cuda:{dev.index}" in available):
        return device
    if dev.type not in ("cuda", "mps"):
        why = "selectkd runs on cpu, cuda or mps"
    elif dev.type == "cuda" and not torch.backends.cuda.is_built():
        why = "this torch build has no CUDA"
    else:
        why = f"this machine has no {dev}"
    raise SelectKDError(f"--device {device} is not usable ({why}); devices here: {', '.join(available)}")


def _autocast(device: str):
    import torch

    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def numeric_mode(device: str) -> str:
    return "bf16-autocast" if device.startswith("cuda") else "float32"


# -- progress ---------------------------------------------------------------------------------

@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool) -> Iterator:
    """A rich progress bar in rows, with rows/s; a no-op when disabled."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.text import Text

    class RowsPerSecond(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:,.0f} rows/s" if task.speed else "- rows/s")

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RowsPerSecond(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


# -- the forward loop -------------------------------------------------------------------------

def forward_parts(
    rows: Rows, tokenizer, max_length: int, writer: EntryWriter,
    run_batch, batch_size: int, description: str, progress: bool, rank: int = 0, world: int = 1,
) -> tuple[int, int]:
    """Tokenise and run ``run_batch`` over every part not yet on disk; return (rows, tokens) done.

    Under torchrun, rank r takes parts r, r + world, ...: each rank writes only its own parts.
    """
    ds = rows.dataset
    n = len(ds)
    part_rows = int(writer.manifest["part_rows"])  # a resumed entry keeps its part size
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    pending = [i for i in range(rank, (n + part_rows - 1) // part_rows, world) if not writer.done(part_name(i))]
    todo = sum(min(part_rows, n - i * part_rows) for i in pending)
    done_rows = done_tokens = 0
    with progress_bar(description, todo, progress) as advance:
        for part in pending:
            lo, hi = part * part_rows, min(n, (part + 1) * part_rows)
            chunk = ds[lo:hi]
            pairs = chunk.get("text_pair")
            ids, types = encode(tokenizer, chunk["text"], pairs, max_length)
            lengths = np.array([len(x) for x in ids])
            outputs: dict[str, np.ndarray] = {}
            for batch_rows in length_batches(lengths, batch_size):
                batch = collate([ids[i] for i in batch_rows], pad_id,
                                [types[i] for i in batch_rows] if types is not None else None)
                for name, values in run_batch(batch).items():
                    if name not in outputs:
                        outputs[name] = np.zeros((hi - lo, *values.shape[1:]), dtype=values.dtype)
                    outputs[name][batch_rows] = values
                advance(len(batch_rows))
            table = {"uid": pa.array(np.asarray(chunk["uid"], dtype=np.int64))}
            for name, values in outputs.items():
                table[name] = fixed_list(values)
            writer.write_table(part_name(part), pa.table(table))
            done_rows += hi - lo
            done_tokens += int(lengths.sum())
    return done_rows, done_tokens


def fixed_list(values: np.ndarray) -> pa.Array:
    """(N, D...) numpy -> Arrow FixedSizeList of the flattened row (zero-copy on read)."""
    flat = np.ascontiguousarray(values).reshape(len(values), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])


def column_matrix(table: pa.Table, name: str) -> np.ndarray:
    """A FixedSizeList column as an (N, D) numpy array (one chunk: zero-copy)."""
    col = table.column(name)
    width = col.type.list_size
    chunks = [c.values.to_numpy(zero_copy_only=False).reshape(-1, width) for c in col.chunks]
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


# -- teachers ---------------------------------------------------------------------------------

def teacher_inputs(ref: ModelRef, tok_fp: str, rows: Rows, max_length: int, cls_states: bool,
                   allow_untrained_head: bool, device: str) -> dict:
    return {"role": "teacher", "model": ref.fingerprint, "tokenizer": tok_fp, **rows.key_inputs(),
            "num_labels": rows.num_labels, "max_length": max_length, "cls_states": cls_states,
            "untrained_head_seed": 0 if allow_untrained_head else None, "numerics": numeric_mode(device)}


def _writer(entry: Entry, inputs: dict, meta: dict, rank: int, world: int) -> EntryWriter:
    """Rank 0 opens (or resumes) the entry and its manifest; the other ranks join after it."""
    writer = EntryWriter(entry, inputs, meta) if rank == 0 else None
    parallel.barrier(world)
    return writer or EntryWriter(entry, inputs, meta, primary=False)


def _gathered(writer: EntryWriter, tokens: int, rank: int, world: int) -> tuple[bool, int]:
    """Wait for every rank's parts; rank 0 records them. (True on rank 0, tokens of all ranks)."""
    total = sum(parallel.gather(tokens, world))
    if rank == 0 and world > 1:
        writer.adopt_shared()
    return rank == 0, total


def _score_teacher(entry: Entry, inputs: dict, ref: ModelRef, tokenizer, rows: Rows, *, max_length: int,
                   batch_size: int, cls_states: bool, allow_untrained_head: bool, device: str,
                   progress: bool, part_rows: int, rank: int = 0, world: int = 1) -> tuple[int, int, dict]:
    import torch

    model, trained = load_classifier(ref, rows.num_labels, allow_untrained_head, role="teacher")
    model.to(device)
    n_layers = model.config.num_hidden_layers

    @torch.inference_mode()
    def run_batch(batch: dict) -> dict:
        batch = {k: v.to(device) for k, v in batch.items()}
        with _autocast(device):
            out = model(**batch, output_hidden_states=cls_states)
        result = {"logits": out.logits.float().cpu().numpy()}
        if cls_states:
            cls = torch.stack([h[:, 0, :] for h in out.hidden_states], dim=1)
            result["cls"] = cls.to(torch.float16).cpu().numpy()
        return result

    meta = {"role": "teacher", "model_name": ref.name, "model_source": ref.source, "num_rows": len(rows),
            "num_labels": rows.num_labels, "label_names": rows.label_names, "head_trained": trained,
            "num_parameters": int(model.num_parameters()),
            "part_rows": part_rows, "selectkd_version": __version__, "data_source": rows.source,
            "columns": {"logits": [rows.num_labels]}}
    if cls_states:
        meta["columns"]["cls"] = [n_layers + 1, model.config.hidden_size]
    writer = _writer(entry, inputs, meta, rank, world)
    t0 = time.perf_counter()
    n, tokens = forward_parts(rows, tokenizer, max_length, writer, run_batch, batch_size,
                              f"teacher {Path(ref.name).name}", progress, rank, world)
    first, tokens = _gathered(writer, tokens, rank, world)
    if first:
        writer.finish(seconds=round(time.perf_counter() - t0, 3), tokens_scored=tokens, processes=world)
    return n, tokens, {}


def teacher_logits(entry: Entry) -> tuple[np.ndarray, np.ndarray]:
    """(uids, logits) of a complete teacher entry, memory-mapped."""
    table = entry.read_parts()
    logits = column_matrix(table, "logits")
    if not np.isfinite(logits).all():
        raise CacheError(f"teacher cache {entry.key} holds NaN or Inf logits; remove it with `selectkd cache rm {entry.key}` and re-score")
    return table.column("uid").to_numpy(), logits


# -- the student ------------------------------------------------------------------------------

def fit_probe(features: np.ndarray, targets: np.ndarray, labels: np.ndarray | None = None,
              l2: float = 1e-3, seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """A linear head on frozen features, fitted to soft targets (teacher probabilities).

    Full-batch L-BFGS on soft cross-entropy + L2. First fitted on 80% to report held-out
    agreement with the teacher, then refitted on every row. Returns (W (C, D), b (C,), fit).
    """
    import torch

    x_all = torch.from_numpy(np.array(features, dtype=np.float32))
    t_all = torch.from_numpy(np.array(targets, dtype=np.float32))
    mean, std = x_all.mean(0), x_all.std(0).clamp_min(1e-6)

    def train(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(seed)
        w = torch.zeros(x.shape[1], t.shape[1], requires_grad=True)
        b = torch.zeros(t.shape[1], requires_grad=True)
        xs = (x - mean) / std
        opt = torch.optim.LBFGS([w, b], lr=1, max_iter=200, history_size=20, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = -(t * torch.log_softmax(xs @ w + b, dim=1)).sum(1).mean() + l2 * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        w_eff = (w / std[:, None]).detach()
        return w_eff, (b - (mean / std) @ w).detach()

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x_all))
    cut = int(0.8 * len(order)) if len(order) >= 10 else len(order)
    fit_rows, held = order[:cut], order[cut:]
    w, b = train(x_all[fit_rows], t_all[fit_rows])
    report = {"l2": l2, "rows": int(len(x_all)), "optimizer": "L-BFGS, 200 iterations, soft cross-entropy"}
    if len(held):
        pred = (x_all[held] @ w + b).argmax(1).numpy()
        report["heldout_rows"] = int(len(held))
        report["heldout_agreement_with_teacher"] = round(float((pred == targets[held].argmax(1)).mean()), 4)
        if labels is not None:
            report["heldout_gold_accuracy"] = round(float((pred == labels[held]).mean()), 4)
    w, b = train(x_all, t_all)
    logits = (x_all @ w + b).numpy()
    report["train_agreement_with_teacher"] = round(float((logits.argmax(1) == targets.argmax(1)).mean()), 4)
    return w.T.numpy(), b.numpy(), report


def build_index(uids: np.ndarray, embeddings: np.ndarray):
    """A faiss inner-product index over L2-normalised embeddings, ids = uids.

    Exact (flat) up to 200k rows; above that IVF trained on a 100k sample.
    """
    import faiss

    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    dim = x.shape[1]
    if len(x) <= 200_000:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    else:
        nlist = int(4 * np.sqrt(len(x)))
        quantizer = faiss.IndexFlatIP(dim)
        ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(len(x), size=min(len(x), 100_000), replace=False)
        ivf.train(x[np.sort(sample)])
        index = faiss.IndexIDMap2(ivf)
    index.add_with_ids(x, np.ascontiguousarray(uids, dtype=np.int64))
    return index


def student_inputs(ref: ModelRef, tok_fp: str, rows: Rows, max_length: int, head: str,
                   teacher_keys: list[str], device: str) -> dict:
    return {"role": "student", "model": ref.fingerprint, "tokenizer": tok_fp, **rows.key_inputs(),
            "num_labels": rows.num_labels, "max_length": max_length, "head": head,
            "teachers": teacher_keys, "pooling": "mean", "numerics": numeric_mode(device)}


def _score_student(entry: Entry, inputs: dict, ref: ModelRef, tokenizer, rows: Rows, teacher_entries: list[Entry],
                   *, head: str, max_length: int, batch_size: int, device: str, progress: bool,
                   part_rows: int, rank: int = 0, world: int = 1) -> tuple[int, int, dict]:
    import faiss
    import torch

    if head == "as-is":
        model, _ = load_classifier(ref, rows.num_labels, allow_untrained_head=False, role="student")
    else:
        model = load_encoder(ref)
    model.to(device)

    @torch.inference_mode()
    def run_batch(batch: dict) -> dict:
        batch = {k: v.to(device) for k, v in batch.items()}
        with _autocast(device):
            out = model(**batch, output_hidden_states=head == "as-is")
        hidden = out.hidden_states[-1] if head == "as-is" else out.last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)
        pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
        result = {"embedding": pooled.cpu().numpy()}
        if head == "as-is":
            result["head_logits"] = out.logits.float().cpu().numpy()
        return result

    meta = {"role": "student", "model_name": ref.name, "model_source": ref.source, "num_rows": len(rows),
            "num_labels": rows.num_labels, "label_names": rows.label_names, "head": head, "part_rows": part_rows,
            "teachers": [e.key for e in teacher_entries], "selectkd_version": __version__,
            "data_source": rows.source}
    writer = _writer(entry, inputs, meta, rank, world)
    t0 = time.perf_counter()
    n, tokens = forward_parts(rows, tokenizer, max_length, writer, run_batch, batch_size,
                              f"student {Path(ref.name).name}", progress, rank, world)
    forward_s = time.perf_counter() - t0
    first, tokens = _gathered(writer, tokens, rank, world)
    if not first:  # rank 0 fits the probe and builds the index over all parts
        return n, tokens, {}

    table = pa.concat_tables([entry.read_file(p) for p in sorted(x for x in writer.manifest["files"] if x.startswith("part-"))])
    uids = table.column("uid").to_numpy()
    emb = column_matrix(table, "embedding")
    teacher_probs = []
    for t in teacher_entries:
        t_uids, t_logits = teacher_logits(t)
        if not np.array_equal(t_uids, uids):
            raise CacheError(f"teacher cache {t.key} covers other rows than the student; score both on the same data and split")
        teacher_probs.append(softmax(t_logits))
    labels = rows.labels
    extra: dict = {}
    if head == "probe":
        if not teacher_probs:
            raise SelectKDError("--student-head probe fits the head to teacher soft labels; give --teacher, or use --student-head as-is")
        target = np.mean(teacher_probs, axis=0)
        w, b, fit = fit_probe(emb, target, labels)
        logits = emb @ w.T + b
        writer.write_table("probe.arrow", pa.table({"class": pa.array(np.arange(len(b)), pa.int64()),
                                                    "weight": fixed_list(w.astype(np.float32)),
                                                    "bias": pa.array(b.astype(np.float32))}))
        extra["probe"] = fit
    else:
        logits = column_matrix(table, "head_logits")
    probs = softmax(logits)
    cols = {
        "uid": pa.array(uids),
        "label": pa.array(labels),
        "logits": fixed_list(logits.astype(np.float32)),
        "entropy": pa.array(entropy(probs).astype(np.float32)),
        "margin": pa.array(margin(probs).astype(np.float32)),
        "least_confidence": pa.array(least_confidence(probs).astype(np.float32)),
    }
    if teacher_probs:
        cols["kl"] = fixed_list(np.stack([kl_divergence(p, probs) for p in teacher_probs], axis=1).astype(np.float32))
    writer.write_table("scores.arrow", pa.table(cols))
    index = build_index(uids, emb)
    writer.write_file("index.faiss", lambda tmp: faiss.write_index(index, str(tmp)))
    extra["student_accuracy_gold"] = round(float((probs.argmax(1) == labels).mean()), 4)
    writer.finish(seconds=round(time.perf_counter() - t0, 3), forward_seconds=round(forward_s, 3),
                  tokens_scored=tokens, embedding_dim=int(emb.shape[1]), processes=world, **extra)
    return n, tokens, extra


# -- the entry point ---------------------------------------------------------------------------

def score(
    data: str,
    split: str = "train",
    teachers: Sequence[str] = (),
    student: str | None = None,
    *,
    text_field: str = "text",
    text_pair_field: str | None = None,
    label_field: str = "label",
    limit: int | None = None,
    max_length: int = 128,
    batch_size: int = 64,
    cls_states: bool = False,
    student_head: str = "probe",
    allow_untrained_head: bool = False,
    cache_dir: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
    part_rows: int | None = None,
    compute: bool = True,
    repair: bool = False,
    trust_remote_code: bool = False,
) -> ScoreResult:
    """Fill the cache for (data, split) with every teacher's logits and the student's scores.

    Returns which keys were written or reused. Bad input raises ``SelectKDError`` before
    anything is written under a key. ``compute=False`` only finds complete entries and
    raises ``CacheError`` for a missing one (`select --no-compute`). ``repair=True`` recomputes
    only the damaged files of an entry that fails its checksums, instead of refusing it.
    Under torchrun every rank scores its own share of the parts; rank 0 writes the manifest.
    """
    if not teachers and not student:
        raise SelectKDError("nothing to score; give --teacher and/or --student")
    if student_head not in STUDENT_HEADS:
        raise SelectKDError(f"unknown --student-head {student_head!r}; valid: {', '.join(STUDENT_HEADS)}")
    part_rows = part_rows or int(os.environ.get("SELECTKD_PART_ROWS", PART_ROWS))
    if max_length < 8 or batch_size < 1 or part_rows < 1:
        raise SelectKDError("--max-length must be >= 8 and --batch-size >= 1")
    if student and student_head == "probe" and not teachers:
        raise SelectKDError("--student-head probe fits the head to teacher soft labels; give --teacher, or use --student-head as-is")
    if len(set(teachers)) != len(teachers):
        raise SelectKDError("the same --teacher is given twice; give each teacher once")
    store = Store(cache_dir)
    store.check_root()
    root = store.root
    rank, world, device = parallel.setup(pick_device(device))
    progress = progress and rank == 0
    spec = DataSpec(data, split, text_field, text_pair_field, label_field, limit)
    rows = load_rows(spec, root)

    teacher_refs = [resolve(t, root, trust_remote_code) for t in teachers]
    student_ref = resolve(student, root, trust_remote_code) if student else None
    _check_before_scoring(rows, [*teacher_refs, *([student_ref] if student_ref else [])], max_length, rank)

    def fill(entry: Entry, inputs: dict, role: str, ref: ModelRef, work) -> tuple[bool, int, dict]:
        """Make ``entry`` complete (rank 0 holds the key's lock; every rank computes its share)."""
        complete = entry.is_complete()
        damaged = entry.verify() if complete else []
        if complete and not damaged:
            return True, 0, {}
        if damaged and not repair:
            entry.check(damaged)  # a damaged part is refused (the error names the fixes), never silently reused
        if rank == 0 or not compute:  # --no-compute raises here, naming the option that differs
            _no_silent_rescore(store, entry, inputs, rows, role, ref.name, compute)
        store.check_writable()  # a fully cached score reads only; writing must be possible before the lock file
        tokenizer = load_tokenizer(ref)[0]  # a bad tokenizer is refused before the key's lock file exists
        with entry.lock() if rank == 0 else contextlib.nullcontext():
            if damaged and rank == 0:  # --repair: forget the damaged files; only they are recomputed
                entry.forget(damaged)
            # another process may have finished it while we waited for the lock
            reused = parallel.broadcast(entry.is_complete() if rank == 0 else None, world)
            try:
                result = (0, 0, {}) if reused else work(tokenizer)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                    if rank == 0:
                        entry.discard_if_empty()  # nothing whole was written: leave no trace of the attempt
                    raise CacheError(f"out of disk space writing {entry.kind}/{entry.key[:12]} under {root} "
                                     f"({os.strerror(exc.errno)}); whole parts are kept and nothing else changed: "
                                     f"free space (or use --cache-dir on a larger disk) and re-run to resume") from None
                raise
            parallel.barrier(world)
        _, tokens, extra = result
        return reused, tokens, extra

    reports: list[EntryReport] = []
    teacher_entries: list[Entry] = []
    for ref in teacher_refs:
        inputs = teacher_inputs(ref, tokenizer_key(ref), rows, max_length, cls_states, allow_untrained_head, device)
        entry = store.entry("teacher", _key(inputs))
        t0 = time.perf_counter()
        reused, tokens, _ = fill(entry, inputs, "teacher", ref, lambda tok: _score_teacher(
            entry, inputs, ref, tok, rows, max_length=max_length, batch_size=batch_size, cls_states=cls_states,
            allow_untrained_head=allow_untrained_head, device=device, progress=progress, part_rows=part_rows,
            rank=rank, world=world))
        teacher_entries.append(entry)
        reports.append(EntryReport("teacher", ref.name, "teacher", entry.key, len(rows), reused,
                                   time.perf_counter() - t0, tokens))

    student_report = None
    if student_ref is not None:
        inputs = student_inputs(student_ref, tokenizer_key(student_ref), rows, max_length, student_head,
                                [e.key for e in teacher_entries], device)
        entry = store.entry("student", _key(inputs))
        t0 = time.perf_counter()
        reused, tokens, extra = fill(entry, inputs, "student", student_ref, lambda tok: _score_student(
            entry, inputs, student_ref, tok, rows, teacher_entries, head=student_head, max_length=max_length,
            batch_size=batch_size, device=device, progress=progress, part_rows=part_rows, rank=rank, world=world))
        student_report = EntryReport("student", student_ref.name, "student", entry.key, len(rows), reused,
                                     time.perf_counter() - t0, tokens, extra)
    return ScoreResult(rows, reports, student_report, store)


def _check_before_scoring(rows: Rows, refs: list[ModelRef], max_length: int, rank: int) -> None:
    """What would fail mid-run is refused, and what would surprise is said, before any entry is made."""
    if rows.split_ignored and rank == 0:
        warnings.warn(f"{rows.spec.data} is a single file with one split: --split {rows.spec.split} is ignored; all "
                      f"its rows are scored, under the same cache keys as without --split", SelectKDWarning)
    for ref in refs:
        check_max_length(ref, max_length)
        _check_label_count(ref, rows)


def _no_silent_rescore(store: Store, entry: Entry, inputs: dict, rows: Rows, role: str, name: str,
                       compute: bool) -> None:
    """A forgotten option must not pass unnoticed: --no-compute names it; otherwise a warning does, before the work."""
    near = nearest_entry(store, entry, inputs, rows)
    if not compute:
        raise _missing(role, name, entry, near)
    if near and near.forgotten and not entry.exists():
        warnings.warn(f"scoring {role} {name} anew, though cached entry {near.key[:12]} differs only in "
                      f"{near.described()}: to reuse it, stop now (Ctrl-C) and {near.fix()}", SelectKDWarning)


def _missing(role: str, name: str, entry: Entry, near: NearEntry | None) -> CacheError:
    if near is not None:
        fix = f"{near.fix()} or drop --no-compute" if near.fix() else "score it first (drop --no-compute)"
        return CacheError(f"no cached {role} entry for {name} with these options; the nearest, {near.key[:12]}, "
                          f"differs in {near.described()}; {fix}")
    if entry.exists():
        return CacheError(f"the {role} cache entry for {name} ({entry.key[:12]}) is incomplete; finish it with "
                          f"`selectkd score` and the same options (or drop --no-compute)")
    return CacheError(f"no complete {role} cache for {name} with these arguments ({entry.key[:12]}); run `selectkd score` "
                      f"with the same --data/--split/--teacher/--student options first (or drop --no-compute)")


# -- the nearest cached entry: which option the user forgot ------------------------------------

# key inputs a user sets with an option, and that option
OPTIONS = {"split": "--split", "limit": "--limit", "max_length": "--max-length", "text_field": "--text-field",
           "text_pair_field": "--text-pair-field", "label_field": "--label-field", "cls_states": "--cls-states",
           "untrained_head_seed": "--allow-untrained-head", "head": "--student-head", "numerics": "--device",
           "teachers": "--teacher"}
FLAGS = {"cls_states", "untrained_head_seed"}  # on/off options: the fix adds or drops the flag
NOT_OPTIONS = ("data", "tokenizer")  # no option brings these back: the entry must be scored


@dataclass
class NearEntry:
    """A complete entry of the same kind and model whose key inputs differ from the wanted ones."""

    key: str
    diff: dict  # key input -> (cached value, asked value)

    @property
    def forgotten(self) -> bool:
        """Only options a user forgets differ: worth a warning before scoring anew. Another split or
        teacher is chosen on purpose, and distill sets the [CLS] states itself (--pt-alpha)."""
        return bool(self.diff) and set(self.diff) <= set(OPTIONS) - {"split", "teachers", "cls_states"}

    def described(self) -> str:
        parts = []
        for name, (cached, asked) in self.diff.items():
            if name == "tokenizer":
                parts.append("the tokenizer")
            elif name == "data" and cached == asked:
                parts.append(f"--data (the rows of {cached} changed since)")
            else:
                option = "--data" if name == "data" else OPTIONS[name]
                parts.append(f"{option} (cached {_shown(name, cached)}, asked {_shown(name, asked)})")
        return " and ".join(parts)

    def fix(self) -> str:
        """The options that bring the wanted key back to this entry's, or '' when none does."""
        steps = []
        for name, (cached, _) in self.diff.items():
            option = OPTIONS.get(name)
            if name in NOT_OPTIONS:
                continue
            if name == "teachers":
                steps.append("give the --teacher options it was scored with")
            elif name == "numerics":
                steps.append(f"add --device {'cpu' if cached == 'float32' else 'cuda'}")
            elif name in FLAGS or cached is None:
                steps.append(f"{'add' if cached not in (None, False) else 'drop'} {option}")
            else:
                steps.append(f"add {option} {cached}")
        return ", ".join(steps)


def _shown(name: str, value) -> str:
    if name in FLAGS:
        return "on" if value not in (None, False) else "off"
    if name == "teachers":
        return "[" + ", ".join(str(k)[:12] for k in value or []) + "]"
    return "none" if value is None else str(value)


def _place(source: dict | None) -> str:
    """Where rows come from, whatever the split: a file or folder path, a built-in or hub name."""
    source = source or {}
    return str(next((source[k] for k in ("file", "folder", "builtin", "hub") if k in source), "?"))


def key_differences(wanted: dict, manifest: dict, rows: Rows) -> dict:
    """Key inputs that differ, as {input: (cached, asked)}, in terms of what the user can change.

    The data fingerprint folds in split and limit, so another --split or --limit of the same
    source is not reported as other data; the teacher keys of a student follow from the teacher
    options, so they are named only when nothing else differs.
    """
    cached = manifest.get("inputs") or {}
    names = [n for n in (*OPTIONS, "tokenizer") if cached.get(n) != wanted.get(n)]
    if "teachers" in names and len(names) > 1:
        names.remove("teachers")
    diff = {n: (cached.get(n), wanted.get(n)) for n in names}
    if cached.get("data") != wanted.get("data") or cached.get("num_labels") != wanted.get("num_labels"):
        here, there = _place(rows.source), _place(manifest.get("data_source"))
        same_rows = cached.get("data") == rows.fingerprint_for(cached.get("split"), cached.get("limit"))
        other_split = "split" in names and "file" not in rows.source  # a dataset's splits: fingerprints of their own
        if here != there or not (same_rows or other_split):
            diff["data"] = (there, here)
    return diff


def nearest_entry(store: Store, entry: Entry, inputs: dict, rows: Rows) -> NearEntry | None:
    """The complete entry of ``entry``'s kind and model whose inputs differ from ``inputs`` in the fewest fields."""
    import json

    from .store import FORMAT_VERSION, canonical_json

    wanted = json.loads(canonical_json(inputs))
    best = None
    for other in store.entries():
        if other.kind != entry.kind or other.key == entry.key:
            continue
        try:
            manifest = other.manifest()
        except CacheError:
            continue
        cached = manifest.get("inputs") or {}
        if (not manifest.get("complete") or manifest.get("format_version") != FORMAT_VERSION
                or cached.get("model") != wanted.get("model")):
            continue
        diff = key_differences(wanted, manifest, rows)
        if diff and (best is None or len(diff) < len(best.diff)):
            best = NearEntry(other.key, diff)
    return best


def _key(inputs: dict) -> str:
    from .store import hash_inputs

    return hash_inputs(inputs)


def _check_label_count(ref: ModelRef, rows: Rows) -> None:
    """Labels beyond what a trained head can output are an error before any work starts."""
    if not ref.local:
        return
    import json

    config = json.loads((Path(ref.source) / "config.json").read_text())
    id2label = config.get("id2label")
    n = len(id2label) if id2label else config.get("num_labels")
    arch = " ".join(config.get("architectures") or [])
    if n and "ForSequenceClassification" in arch and int(rows.labels.max()) >= int(n):
        raise ModelError(
            f"{ref.name} predicts {n} labels but the data has label {int(rows.labels.max())}; "
            f"use a model trained on this task (`selectkd finetune`)"
        )
