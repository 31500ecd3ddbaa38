"""The dev split when the data has none: a seeded, stratified part of the training rows, never trained on."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .rows import Rows


def hold_out_dev(rows: Rows, fraction: float, seed: int, limit: int | None = None) -> tuple[np.ndarray, Rows | None, dict]:
    """(positions to train on, the held-out dev rows or None, what was done, for the run's record).

    For data without a dev split: a dev score from rows the model never saw, instead of no score.
    ``limit`` evaluates only the first N held-out rows; all of them stay out of training.
    """
    train, held = holdout_split(rows.labels, fraction, seed)
    dev = rows.take(held[:limit], "holdout dev") if len(held) else None
    return train, dev, {"holdout": fraction, "rows": len(dev) if dev is not None else 0, "held_out_rows": len(held)}


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train positions, dev positions): a seeded dev part of ``fraction`` of the rows, every class in
    its share (largest remainder), never a class's last row; sorted. No dev rows when too few."""
    from ..selection.choose import largest_remainder

    counts = np.bincount(labels)
    quotas = np.minimum(largest_remainder(counts, int(round(fraction * len(labels)))), np.maximum(counts - 1, 0))
    rng = np.random.default_rng(seed)
    dev = [rng.choice(np.flatnonzero(labels == c), q, replace=False) for c, q in enumerate(quotas) if q]
    dev_pos = np.sort(np.concatenate(dev)) if dev else np.zeros(0, dtype=np.int64)
    return np.setdiff1d(np.arange(len(labels)), dev_pos), dev_pos
