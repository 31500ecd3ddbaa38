"""Tokenise once, group rows by length, pad each batch only to its own longest row."""

from __future__ import annotations

from typing import Sequence

import numpy as np


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
