"""The distillation losses, in one place: the three mechanisms of Li et al. 2021 (arXiv 2109.11295), data
selection, teacher adoption and objective adaptation.

The formulas (``ce``, ``kd``, ``hidden_alignment``) return one value per row (shape (B,)), so a
term can weight rows by uncertainty, keep a top fraction of a batch, or average. The terms of the
training loss are registered by name (``@loss_term``, as torchdistill does): each reduces its rows
to the batch's value, and ``total_loss`` sums the terms that apply, each times its weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import TrainingError
from ..specs import TrainSpec

KD_LOSSES = ("mse", "kl")
ADOPTIONS = ("hard", "soft", "soft-instance")
OBJECTIVES = ("none", "uncertainty", "uncertainty-r")


def ce(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on gold labels, per row."""
    return F.cross_entropy(student_logits.float(), labels, reduction="none")


def kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str = "mse", temperature: float = 1.0) -> torch.Tensor:
    """KD per row: MSE between raw logits (mean over classes: the reference code's default)
    or ``T^2 * KL(softmax(z_t/T) || softmax(z_s/T))``."""
    zs, zt = student_logits.float(), teacher_logits.float()
    if kind == "mse":
        return ((zs - zt) ** 2).mean(-1)
    if kind == "kl":
        t = temperature
        log_p_s = F.log_softmax(zs / t, dim=-1)
        log_p_t = F.log_softmax(zt / t, dim=-1)
        return (t * t) * (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    raise ValueError(f"unknown KD loss {kind!r}; valid: {', '.join(KD_LOSSES)}")


def uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """u = H(softmax(z)) / log C in [0, 1], detached: the paper's instance weight."""
    p = F.softmax(logits.detach().float(), dim=-1)
    h = -(p * torch.log(p + 1e-12)).sum(-1)
    return h / math.log(logits.shape[-1])


def adoption_weights(u: torch.Tensor, mode: str) -> torch.Tensor:
    """Weight of the SMALL teacher per row (the large one gets 1 - w).

    Uncertain rows learn from the smaller teacher, confident rows from the larger one.
    ``hard``: the most uncertain half of the batch -> small (1), the rest -> large (0).
    ``soft``: the batch mean uncertainty for every row. ``soft-instance``: each row's own u.
    """
    if mode == "hard":
        w = torch.zeros_like(u)
        order = torch.argsort(u, descending=True, stable=True)
        w[order[: (len(u) + 1) // 2]] = 1.0
        return w
    if mode == "soft":
        return u.mean().expand_as(u).clone()
    if mode == "soft-instance":
        return u.clone()
    raise ValueError(f"unknown adoption {mode!r}; valid: {', '.join(ADOPTIONS)}")


def adopted_kd(kd_small: torch.Tensor, kd_large: torch.Tensor, w_small: torch.Tensor, mode: str) -> torch.Tensor:
    """The batch KD term under teacher adoption (a scalar).

    ``hard`` averages each teacher's KD over its own half, as the reference code does;
    the soft modes average ``w * KD_small + (1 - w) * KD_large`` over the batch.
    """
    if mode == "hard":
        small, large = w_small > 0.5, w_small <= 0.5
        total = kd_small.new_zeros(())
        if small.any():
            total = total + kd_small[small].mean()
        if large.any():
            total = total + kd_large[large].mean()
        return total
    return (w_small * kd_small + (1 - w_small) * kd_large).mean()


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher state index for student states 0..L_s (embeddings + each layer): k * l, k = L_t / L_s."""
    if teacher_layers % student_layers:
        raise ValueError(f"teacher layers ({teacher_layers}) must be a multiple of student layers ({student_layers})")
    k = teacher_layers // student_layers
    return [k * l for l in range(student_layers + 1)]


def hidden_alignment(student_states: torch.Tensor, teacher_states: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PT per row: sum over layers of the mean squared distance of L2-normalised states.

    States are (B, L, H) for [CLS] vectors or (B, L, T, H) for tokens; ``mask`` (B, T) drops
    padding positions from the token mean (the reference code includes them; we do not).
    """
    s = F.normalize(student_states.float(), dim=-1)
    t = F.normalize(teacher_states.float(), dim=-1)
    sq = ((s - t) ** 2).mean(-1)  # (B, L) or (B, L, T)
    if sq.dim() == 3:
        if mask is None:
            sq = sq.mean(-1)
        else:
            m = mask[:, None, :].float()
            sq = (sq * m).sum(-1) / m.sum(-1).clamp_min(1)
    return sq.sum(-1)


def objective_weights(u: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight of KD, weight of PT) per row.

    ``uncertainty``: confident rows lean on the logits (1 - u), uncertain ones on hidden
    alignment (u), as in the paper. ``uncertainty-r``: the reverse assignment, to test the
    direction. ``none``: fixed weights of 1 for both.
    """
    if mode == "none":
        return torch.ones_like(u), torch.ones_like(u)
    if mode == "uncertainty":
        return 1 - u, u
    if mode == "uncertainty-r":
        return u, 1 - u
    raise ValueError(f"unknown objective {mode!r}; valid: {', '.join(OBJECTIVES)}")


def top_fraction(criterion: torch.Tensor, fraction: float) -> torch.Tensor:
    """Indices of the top ``int(B * fraction)`` rows by ``criterion`` (at least one)."""
    k = max(1, int(len(criterion) * fraction))
    return torch.topk(criterion, k).indices


def check_finite(loss: torch.Tensor | float, grad_norm: torch.Tensor | float, step: int, epoch: int,
                 kept: Callable[[], str],
                 fix: str = "lower --lr, check the teacher logits and the loss options, and run again") -> None:
    """Stop at the first non-finite loss or gradient norm, before an optimizer step writes it into the
    weights: a NaN student must never be saved. ``kept()`` says what the user still has."""
    loss, grad_norm = float(loss), float(grad_norm)
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return
    what = f"the training loss became {loss:g}" if not math.isfinite(loss) else f"the gradient norm became {grad_norm:g}"
    raise TrainingError(f"{what} at step {step} (epoch {epoch}); {kept()}: {fix}")


# -- the registry of loss terms ---------------------------------------------------------------------

@dataclass
class LossInputs:
    """What the loss terms of one batch read. ``teacher_logits``: one (B, C) per teacher (adoption's
    smaller teacher first); ``kd_keep``: in-batch mode's rows that get KD; the states: hidden alignment's
    pair, [CLS] (B, L, H) or tokens (B, L, T, H) with their ``mask``."""

    student_logits: torch.Tensor
    labels: torch.Tensor
    teacher_logits: list[torch.Tensor]
    kd_keep: torch.Tensor | None = None
    student_states: torch.Tensor | None = None
    teacher_states: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    @cached_property
    def uncertainty(self) -> torch.Tensor:
        return uncertainty(self.student_logits)


TermFn = Callable[[LossInputs, TrainSpec], torch.Tensor]


@dataclass(frozen=True)
class LossTerm:
    name: str
    weight: str  # the TrainSpec field that weighs it
    fn: TermFn
    applies: Callable[[LossInputs], bool]


LOSS_TERMS: dict[str, LossTerm] = {}


def loss_term(name: str, weight: str, applies: Callable[[LossInputs], bool] = lambda x: True) -> Callable[[TermFn], TermFn]:
    """Register ``fn(inputs, train_spec) -> scalar`` as the loss term ``name``, weighed by ``train_spec.<weight>``
    and added to the loss of every batch for which ``applies(inputs)``."""

    def register(fn: TermFn) -> TermFn:
        LOSS_TERMS[name] = LossTerm(name, weight, fn, applies)
        return fn

    return register


def total_loss(x: LossInputs, spec) -> torch.Tensor:
    """The batch's loss: the sum of every applying term times its weight, in registration order."""
    return sum(getattr(spec, t.weight) * t.fn(x, spec) for t in LOSS_TERMS.values() if t.applies(x))


@loss_term("ce", weight="ce_alpha")
def ce_term(x: LossInputs, spec) -> torch.Tensor:
    """Cross-entropy on the gold labels, every row."""
    return ce(x.student_logits, x.labels).mean()


@loss_term("kd", weight="kd_alpha", applies=lambda x: bool(x.teacher_logits))
def kd_term(x: LossInputs, spec) -> torch.Tensor:
    """KD against the teachers' logits: on in-batch mode's kept rows, split between two teachers by
    adoption, or averaged over the teachers and weighted per row by the objective."""
    rows = [kd(x.student_logits, zt, spec.kd_loss, spec.temperature) for zt in x.teacher_logits]
    if x.kd_keep is not None:  # the paper: KD only on the chosen rows of the batch
        return torch.stack(rows).mean(0)[x.kd_keep].mean()
    if spec.adoption:
        return adopted_kd(rows[0], rows[-1], adoption_weights(x.uncertainty, spec.adoption), spec.adoption)
    return (objective_weights(x.uncertainty, spec.objective)[0] * torch.stack(rows).mean(0)).mean()


@loss_term("pt", weight="pt_alpha", applies=lambda x: x.teacher_states is not None)
def alignment_term(x: LossInputs, spec) -> torch.Tensor:
    """Hidden-state alignment, weighted per row by the objective."""
    rows = hidden_alignment(x.student_states, x.teacher_states, x.mask)
    return (objective_weights(x.uncertainty, spec.objective)[1] * rows).mean()
