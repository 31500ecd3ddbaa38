"""Classification metrics every stage reports the same way: accuracy and macro-F1."""

from __future__ import annotations

import numpy as np


def classification_metrics(preds: np.ndarray, labels: np.ndarray, num_labels: int) -> dict:
    """Accuracy and macro-F1 (over the classes that occur in ``labels`` or ``preds``), rounded to 4 places.

    No predictions at all score 0.0 on both, not a division by zero.
    """
    preds, labels = np.asarray(preds), np.asarray(labels)
    if len(labels) == 0:
        return {"accuracy": 0.0, "macro_f1": 0.0}
    f1s = []
    for c in range(num_labels):
        tp = np.sum((preds == c) & (labels == c))
        fp = np.sum((preds == c) & (labels != c))
        fn = np.sum((preds != c) & (labels == c))
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    macro_f1 = float(np.mean(f1s)) if f1s else 0.0
    return {"accuracy": round(float((preds == labels).mean()), 4), "macro_f1": round(macro_f1, 4)}
