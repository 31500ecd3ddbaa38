"""A student head that starts informed: linear-probe-then-fine-tune (Kumar et al. 2022, arXiv 2202.10054).

A pre-trained encoder's fresh classification head is random, so the first hundreds of updates go to
finding the task, and a short run on a 10% subset never gets past the majority class. Instead the
head's last linear layer is fitted, before training, to the teachers' soft labels on exactly the
features it reads (for BERT: the pooler output of [CLS]), with the same L-BFGS probe that scoring
fits (``scoring.student.fit_probe``). In eval mode the student then predicts what the probe predicts.
"""

from __future__ import annotations

import numpy as np

from ..errors import SelectKDError
from ..scoring.tokens import length_batches

HEAD_INITS = ("auto", "probe", "random")


def resolved_head_init(head_init: str, on_subset: bool) -> str:
    """``auto`` as what it does for a run: the probe head when the student trains on a subset (--budget,
    --selection), transformers' fresh head when it trains on every row (full data, --in-batch). Measured on
    the study's runs (bench/results/head_init.md): the probe start helps a short run on 10% of the rows and
    holds back a run over all of them."""
    if head_init != "auto":
        return head_init
    return "probe" if on_subset else "random"


def head_linear(model, num_labels: int):
    """The linear layer that writes the logits: ``classifier`` (BERT, DistilBERT) or ``classifier.out_proj``
    (RoBERTa, MPNet, DeBERTa-style heads); anything else is refused with the fix."""
    import torch

    head = getattr(model, "classifier", None)
    for layer in (head, getattr(head, "out_proj", None)):
        if isinstance(layer, torch.nn.Linear) and layer.out_features == num_labels:
            return layer
    raise SelectKDError(f"{type(model).__name__}'s classification head is not a linear `classifier` or "
                        f"`classifier.out_proj`; pass --head-init random")


def head_features(model, enc, positions: np.ndarray, num_labels: int, device: str, batch_size: int = 128) -> np.ndarray:
    """What the head's last linear layer reads for the rows at ``positions`` (eval mode: no dropout)."""
    import torch

    layer = head_linear(model, num_labels)
    found: list[np.ndarray] = []
    order: list[np.ndarray] = []

    def grab(_module, inputs):
        x = inputs[0]
        found.append((x[:, 0, :] if x.dim() == 3 else x).detach().float().cpu().numpy())

    hook = layer.register_forward_pre_hook(grab)
    model.eval()
    try:
        with torch.inference_mode():
            for g in length_batches(enc.lengths[positions], batch_size):
                model(**enc.inputs(positions[g], device))
                order.append(g)
    finally:
        hook.remove()
    features = np.empty((len(positions), found[0].shape[1]), dtype=np.float32)
    for g, x in zip(order, found):
        features[g] = x
    return features


def init_head(model, enc, positions: np.ndarray, teacher_probs: np.ndarray, num_labels: int, device: str,
              seed: int = 0) -> dict:
    """Fit the head's last linear layer to ``teacher_probs`` (N, C) on the rows at ``positions``; return the fit."""
    import torch

    from ..scoring.student import fit_probe

    features = head_features(model, enc, positions, num_labels, device)
    w, b, fit = fit_probe(features, teacher_probs, seed=seed, standardize=False)
    layer = head_linear(model, num_labels)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w).to(layer.weight))
        layer.bias.copy_(torch.from_numpy(b).to(layer.bias))
    return {**fit, "rows": int(len(positions))}
