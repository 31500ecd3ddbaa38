"""Uncertainty of a classifier's predictions, from logits (the measures of Li et al. 2021, arXiv 2109.11295).

All functions take logits of shape (N, C) and return one value per row; higher means
more uncertain for every one of them, so a strategy can always rank "highest first".
"""

from __future__ import annotations

import numpy as np

EPS = 1e-12


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def entropy(probs: np.ndarray) -> np.ndarray:
    """H = -sum_c p_c log p_c (nats)."""
    p = np.asarray(probs, dtype=np.float64)
    return -(p * np.log(p + EPS)).sum(axis=-1)


def normalized_entropy(probs: np.ndarray) -> np.ndarray:
    """u = H / log C, in [0, 1]: the paper's instance uncertainty."""
    return entropy(probs) / np.log(np.asarray(probs).shape[-1])


def margin(probs: np.ndarray) -> np.ndarray:
    """p_top1 - p_top2: small means uncertain (rank smallest first)."""
    top2 = np.sort(np.asarray(probs, dtype=np.float64), axis=-1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def least_confidence(probs: np.ndarray) -> np.ndarray:
    """1 - max_c p_c: large means uncertain."""
    return 1.0 - np.asarray(probs, dtype=np.float64).max(axis=-1)


def kl_divergence(p_teacher: np.ndarray, p_student: np.ndarray) -> np.ndarray:
    """KL(teacher || student) per row: how far the student is from the teacher."""
    p = np.asarray(p_teacher, dtype=np.float64)
    q = np.asarray(p_student, dtype=np.float64)
    return (p * (np.log(p + EPS) - np.log(q + EPS))).sum(axis=-1)
