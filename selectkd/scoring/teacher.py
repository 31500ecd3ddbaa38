"""A teacher's cache entry: logits per row (+ every layer's [CLS] state with --cls-states)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .._version import __version__
from ..cache.arrays import column_matrix
from ..cache.store import Entry
from ..data.rows import Rows
from ..errors import CacheError
from ..models import ModelRef, load_classifier
from ..runtime import _autocast
from ..specs import ScoreSpec
from .parts import Work, forward_parts, gathered, open_writer


def score_teacher(entry: Entry, inputs: dict, ref: ModelRef, tokenizer, rows: Rows, scoring: ScoreSpec,
                  work: Work) -> tuple[int, int, dict]:
    """Write the teacher entry: logits per row (+ every layer's [CLS] state with ``scoring.cls_states``)."""
    import torch

    cls_states, device = scoring.cls_states, work.device
    model, trained = load_classifier(ref, rows.num_labels, scoring.allow_untrained_head, role="teacher")
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
            "part_rows": work.part_rows, "selectkd_version": __version__, "data_source": rows.source,
            "columns": {"logits": [rows.num_labels]}}
    if cls_states:
        meta["columns"]["cls"] = [n_layers + 1, model.config.hidden_size]
    writer = open_writer(entry, inputs, meta, work)
    t0 = time.perf_counter()
    n, tokens = forward_parts(rows, tokenizer, scoring.max_length, writer, run_batch, scoring.batch_size,
                              f"teacher {Path(ref.name).name}", work)
    first, tokens = gathered(writer, tokens, work)
    if first:
        writer.finish(seconds=round(time.perf_counter() - t0, 3), tokens_scored=tokens, processes=work.world)
    return n, tokens, {}


def teacher_logits(entry: Entry) -> tuple[np.ndarray, np.ndarray]:
    """(uids, logits) of a complete teacher entry, memory-mapped."""
    table = entry.read_parts()
    logits = column_matrix(table, "logits")
    if not np.isfinite(logits).all():
        raise CacheError(f"teacher cache {entry.key} holds NaN or Inf logits; remove it with `selectkd cache rm {entry.key}` and re-score")
    return table.column("uid").to_numpy(), logits
