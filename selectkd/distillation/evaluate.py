"""The student without gradients: dev/test metrics, and its scores of the pool for dynamic re-selection.

Rows are tokenised once (``Encoded``) and run in batches grouped by length, each padded only to its
own longest row.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .. import parallel
from ..scoring.tokens import collate, encode, length_batches

EVAL_BATCH = 128


@dataclass
class Encoded:
    """Rows as the student's token ids (+ token type ids for pairs), unpadded."""

    ids: list[list[int]]
    types: list[list[int]] | None
    pad: int

    @classmethod
    def of(cls, tokenizer, rows, max_length: int) -> Encoded:
        pairs = list(rows.dataset["text_pair"]) if "text_pair" in rows.dataset.column_names else None
        ids, types = encode(tokenizer, list(rows.dataset["text"]), pairs, max_length)
        return cls(ids, types, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)

    @cached_property
    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.ids])

    def inputs(self, positions: np.ndarray, device: str) -> dict:
        """Padded model inputs for the rows at ``positions``, on ``device``."""
        tt = [self.types[i] for i in positions] if self.types is not None else None
        return {k: v.to(device) for k, v in collate([self.ids[i] for i in positions], self.pad, tt).items()}


def predictions(student, enc: Encoded, device: str) -> np.ndarray:
    """The student's class for every row of ``enc``."""
    import torch

    preds = np.zeros(len(enc.ids), dtype=np.int64)
    student.eval()
    with torch.inference_mode():
        for g in length_batches(enc.lengths, EVAL_BATCH):
            preds[g] = student(**enc.inputs(g, device)).logits.argmax(-1).cpu().numpy()
    return preds


def student_scores(student, enc: Encoded, positions: np.ndarray, num_labels: int, device: str,
                   embeddings: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Student logits (and mean-pooled, L2-normalised last-layer embeddings) for the rows at ``positions``."""
    import torch

    logits = np.zeros((len(positions), num_labels), dtype=np.float32)
    emb = None
    lengths = enc.lengths
    student.eval()
    with torch.inference_mode():
        for g in length_batches(lengths[positions], EVAL_BATCH):
            batch = enc.inputs(positions[g], device)
            o = student(**batch, output_hidden_states=embeddings)
            logits[g] = o.logits.float().cpu().numpy()
            if embeddings:
                h = o.hidden_states[-1]
                m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
                e = torch.nn.functional.normalize(((h * m).sum(1) / m.sum(1)).float(), dim=-1).cpu().numpy()
                if emb is None:
                    emb = np.zeros((len(positions), e.shape[1]), dtype=np.float32)
                emb[g] = e
    return logits, emb


def pool_scores(student, enc: Encoded, positions: np.ndarray, num_labels: int, device: str, embeddings: bool,
                rank: int, world: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``student_scores`` of the pool with each rank scoring every world-th row; the shares are gathered
    so that every rank holds all of them (and chooses alike)."""
    logits, emb = student_scores(student, enc, positions[rank::world], num_labels, device, embeddings)
    if world == 1:
        return logits, emb
    shares = parallel.gather((logits, emb), world)
    logits = np.zeros((len(positions), num_labels), dtype=np.float32)
    emb = np.zeros((len(positions), shares[0][1].shape[1]), dtype=np.float32) if embeddings else None
    for r, (lg, em) in enumerate(shares):
        logits[r::world] = lg
        if embeddings:
            emb[r::world] = em
    return logits, emb
