"""The student's two cache entries: its pooled embeddings with a faiss index (kind "embedding", keyed by the
student, the data and the max length only), and the probe head and uncertainty scores fitted to the teachers
from them (kind "student"): a new teacher re-fits the probe without a student forward pass.

A pre-trained student's fresh head knows nothing of the task, so by default its head is
fitted as a linear probe on the frozen embeddings against the teachers' soft labels."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from .._version import __version__
from ..cache.arrays import column_matrix, fixed_list
from ..cache.store import Entry, EntryWriter
from ..data.rows import Rows
from ..errors import CacheError, SelectKDError
from ..models import ModelRef, load_classifier, load_encoder
from ..runtime import _autocast
from ..specs import ScoreSpec
from ..uncertainty import entropy, kl_divergence, least_confidence, margin, softmax
from .parts import Work, forward_parts, gathered, open_writer
from .teacher import teacher_logits


def fit_probe(features: np.ndarray, targets: np.ndarray, labels: np.ndarray | None = None,
              l2: float = 1e-3, seed: int = 0, max_iter: int = 200,
              standardize: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    """A linear head on frozen features, fitted to soft targets (teacher probabilities).

    Full-batch L-BFGS (``max_iter`` iterations) on soft cross-entropy + ``l2`` * |W|^2. First fitted on 80% to report held-out
    agreement with the teacher, then refitted on every row. Returns (W (C, D), b (C,), fit).
    ``standardize`` fits on features scaled to unit variance (then folded back into W and b); without it the
    penalty bounds W on the raw features, as a head that goes on training needs (a near-constant feature
    would otherwise get a huge weight).
    """
    import torch

    x_all = torch.from_numpy(np.array(features, dtype=np.float32))
    t_all = torch.from_numpy(np.array(targets, dtype=np.float32))
    mean, std = x_all.mean(0), x_all.std(0).clamp_min(1e-6)
    if not standardize:
        mean, std = torch.zeros_like(mean), torch.ones_like(std)

    def train(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(seed)
        w = torch.zeros(x.shape[1], t.shape[1], requires_grad=True)
        b = torch.zeros(t.shape[1], requires_grad=True)
        xs = (x - mean) / std
        opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

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
    report = {"l2": l2, "rows": int(len(x_all)), "optimizer": f"L-BFGS, {max_iter} iterations, soft cross-entropy"}
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


def score_embeddings(entry: Entry, inputs: dict, ref: ModelRef, tokenizer, rows: Rows, scoring: ScoreSpec,
                     work: Work) -> tuple[int, int, dict]:
    """Write the embedding entry: the student's mean-pooled embedding parts (+ its own head's logits with
    --student-head as-is), then (rank 0) the faiss index. Keyed without the teachers: any teacher reuses it."""
    meta = {"role": "embedding", "model_name": ref.name, "model_source": ref.source, "num_rows": len(rows),
            "num_labels": rows.num_labels, "label_names": rows.label_names, "head": scoring.student_head,
            "part_rows": work.part_rows, "selectkd_version": __version__, "data_source": rows.source}
    writer = open_writer(entry, inputs, meta, work)
    t0 = time.perf_counter()
    n, tokens = forward_parts(rows, tokenizer, scoring.max_length, writer,
                              _pooled_batches(ref, rows, scoring.student_head, work.device), scoring.batch_size,
                              f"student {Path(ref.name).name}", work)
    forward_s = time.perf_counter() - t0
    first, tokens = gathered(writer, tokens, work)
    if not first:  # rank 0 builds the index over all parts
        return n, tokens, {}
    import faiss

    parts = sorted(x for x in writer.manifest["files"] if x.startswith("part-"))
    table = pa.concat_tables([entry.read_file(x) for x in parts])  # the entry is complete only once finished
    index = build_index(table.column("uid").to_numpy(), column_matrix(table, "embedding"))
    writer.write_file("index.faiss", lambda tmp: faiss.write_index(index, str(tmp)))
    extra = {"embedding_dim": int(index.d), "student_forward_rows": n}
    writer.finish(seconds=round(time.perf_counter() - t0, 3), forward_seconds=round(forward_s, 3),
                  tokens_scored=tokens, processes=work.world, **extra)
    return n, tokens, extra


def score_student(entry: Entry, inputs: dict, embedding: Entry, ref: ModelRef, rows: Rows,
                  teacher_entries: list[Entry], scoring: ScoreSpec, work: Work) -> tuple[int, int, dict]:
    """Write the student entry from the cached ``embedding`` entry: the probe fitted to the teachers and
    scores.arrow. No student forward pass (``student_forward_rows`` 0): a new teacher costs a probe fit."""
    if work.rank != 0:
        return len(rows), 0, {}
    meta = {"role": "student", "model_name": ref.name, "model_source": ref.source, "num_rows": len(rows),
            "num_labels": rows.num_labels, "label_names": rows.label_names, "head": scoring.student_head,
            "teachers": [e.key for e in teacher_entries], "embedding": embedding.key,
            "selectkd_version": __version__, "data_source": rows.source}
    writer = EntryWriter(entry, inputs, meta)
    t0 = time.perf_counter()
    # verify=False: the embedding report just before this one checked (or wrote) every part
    extra = _write_scores(writer, embedding.read_parts(verify=False), rows, teacher_entries, scoring)
    extra["student_forward_rows"] = 0
    writer.finish(seconds=round(time.perf_counter() - t0, 3), tokens_scored=0, processes=work.world, **extra)
    return len(rows), 0, extra


def _pooled_batches(ref: ModelRef, rows: Rows, head: str, device: str):
    """``run_batch`` for the student: a mean-pooled, L2-normalised embedding per row (+ its own head's logits)."""
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

    return run_batch


def _write_scores(writer: EntryWriter, table: pa.Table, rows: Rows, teacher_entries: list[Entry],
                  scoring: ScoreSpec) -> dict:
    """The probe (fitted to the teachers' mean probabilities) and scores.arrow from the embedding parts
    ``table``; returns the fit."""
    uids = table.column("uid").to_numpy()
    emb = column_matrix(table, "embedding")
    teacher_probs = [softmax(logits) for logits in _teacher_logits_for(teacher_entries, uids)]
    labels = rows.labels
    extra: dict = {}
    if scoring.student_head == "probe":
        if not teacher_probs:
            raise SelectKDError("--student-head probe fits the head to teacher soft labels; give --teacher, or use --student-head as-is")
        w, b, fit = fit_probe(emb, np.mean(teacher_probs, axis=0), labels, l2=scoring.probe_l2,
                              max_iter=scoring.probe_max_iter)
        logits = emb @ w.T + b
        writer.write_table("probe.arrow", pa.table({"class": pa.array(np.arange(len(b)), pa.int64()),
                                                    "weight": fixed_list(w.astype(np.float32)),
                                                    "bias": pa.array(b.astype(np.float32))}))
        extra["probe"] = fit
    else:
        logits = column_matrix(table, "head_logits")
    writer.write_table("scores.arrow", scores_table(uids, labels, logits, teacher_probs))
    extra["student_accuracy_gold"] = round(float((softmax(logits).argmax(1) == labels).mean()), 4)
    return extra


def _teacher_logits_for(teacher_entries: list[Entry], uids: np.ndarray) -> list[np.ndarray]:
    """Each teacher's logits, which must cover exactly the student's rows."""
    found = []
    for t in teacher_entries:
        t_uids, t_logits = teacher_logits(t)
        if not np.array_equal(t_uids, uids):
            raise CacheError(f"teacher cache {t.key} covers other rows than the student; score both on the same data and split")
        found.append(t_logits)
    return found


def scores_table(uids: np.ndarray, labels: np.ndarray, logits: np.ndarray, teacher_probs: list[np.ndarray],
                 chunk: int = 1_000_000) -> pa.Table:
    """scores.arrow: uid, label, the student's logits, entropy, margin, least confidence and, with
    teachers, KL(teacher || student) per teacher (N, T). Computed ``chunk`` rows at a time."""
    n = len(uids)
    ent, mar, lc = (np.empty(n, np.float32) for _ in range(3))
    kl = np.empty((n, len(teacher_probs)), np.float32)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        probs = softmax(logits[lo:hi])
        ent[lo:hi], mar[lo:hi], lc[lo:hi] = entropy(probs), margin(probs), least_confidence(probs)
        for j, p in enumerate(teacher_probs):
            kl[lo:hi, j] = kl_divergence(p[lo:hi], probs)
    cols = {"uid": pa.array(uids), "label": pa.array(labels), "logits": fixed_list(logits.astype(np.float32)),
            "entropy": pa.array(ent), "margin": pa.array(mar), "least_confidence": pa.array(lc)}
    if teacher_probs:
        cols["kl"] = fixed_list(kl)
    return pa.table(cols)
