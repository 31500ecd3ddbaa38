"""Each loss formula and each registered loss term against a hand-computed case."""

import math

import pytest
import torch

import selectkd.distillation.losses as losses
from selectkd.distillation.losses import LOSS_TERMS, LossInputs, total_loss
from selectkd.specs import TrainSpec

def test_mse_and_kl_against_hand_computed_values():
    zs = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    zt = torch.tensor([[2.0, 0.0], [0.0, math.log(3.0)]])
    assert losses.kd(zs, zt, "mse").tolist() == pytest.approx([(1 + 4) / 2, math.log(3.0) ** 2 / 2])
    # row 2 at T=1: p_t = (1/4, 3/4), p_s = (1/2, 1/2)
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert losses.kd(zs, zt, "kl")[1].item() == pytest.approx(kl, rel=1e-5)
    # at T=2 the logits are halved and the loss scaled by T^2 = 4
    pt = torch.softmax(zt[1] / 2, -1)
    ps = torch.softmax(zs[1] / 2, -1)
    assert losses.kd(zs, zt, "kl", 2.0)[1].item() == pytest.approx(4 * float((pt * (pt / ps).log()).sum()), rel=1e-5)
    assert losses.ce(torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([1])).item() == pytest.approx(-math.log(0.75))


def test_uncertainty_is_normalised_entropy():
    u = losses.uncertainty(torch.tensor([[0.0, 0.0, 0.0], [100.0, 0.0, 0.0]]))
    assert u.tolist() == pytest.approx([1.0, 0.0], abs=1e-6)


def test_adoption_weights_and_terms():
    u = torch.tensor([0.9, 0.1, 0.5, 0.3])
    assert losses.adoption_weights(u, "hard").tolist() == [1.0, 0.0, 1.0, 0.0]  # most uncertain half -> small
    assert losses.adoption_weights(u, "soft").tolist() == pytest.approx([0.45] * 4)
    assert losses.adoption_weights(u, "soft-instance").tolist() == pytest.approx(u.tolist())
    kd_small = torch.tensor([1.0, 2.0, 3.0, 4.0])
    kd_large = torch.tensor([10.0, 20.0, 30.0, 40.0])
    hard = losses.adopted_kd(kd_small, kd_large, losses.adoption_weights(u, "hard"), "hard")
    assert hard.item() == pytest.approx((1 + 3) / 2 + (20 + 40) / 2)
    soft = losses.adopted_kd(kd_small, kd_large, losses.adoption_weights(u, "soft"), "soft")
    assert soft.item() == pytest.approx(float((0.45 * kd_small + 0.55 * kd_large).mean()))
    inst = losses.adopted_kd(kd_small, kd_large, u, "soft-instance")
    assert inst.item() == pytest.approx(float((u * kd_small + (1 - u) * kd_large).mean()))


def test_in_batch_keeps_exactly_the_top_rows():
    crit = torch.tensor([0.1, 0.9, 0.3, 0.8, 0.2, 0.7, 0.0, 0.5, 0.6, 0.4])
    assert sorted(losses.top_fraction(crit, 0.3).tolist()) == [1, 3, 5]
    assert losses.top_fraction(crit, 0.01).tolist() == [1]  # at least one row


def test_layer_map_and_hidden_alignment():
    assert losses.layer_map(6, 12) == [0, 2, 4, 6, 8, 10, 12]
    assert losses.layer_map(3, 12) == [0, 4, 8, 12]
    with pytest.raises(ValueError):
        losses.layer_map(5, 12)
    s = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (B=1, L=2, H=2)
    t = torch.tensor([[[0.0, 2.0], [0.0, 3.0]]])
    # layer 0: (1,0) vs (0,1): mean((1,-1)^2) = 1; layer 1: identical after normalising
    assert losses.hidden_alignment(s, t).tolist() == pytest.approx([1.0])
    # tokens: padding position (mask 0) must not count
    s_tok = torch.tensor([[[[1.0, 0.0], [5.0, 5.0]]]])  # (B, L=1, T=2, H)
    t_tok = torch.tensor([[[[1.0, 0.0], [-5.0, 5.0]]]])
    assert losses.hidden_alignment(s_tok, t_tok, torch.tensor([[1, 0]])).tolist() == pytest.approx([0.0])
    assert losses.hidden_alignment(s_tok, t_tok, torch.tensor([[1, 1]])).item() > 0.4


def test_objective_weights():
    u = torch.tensor([0.2, 0.8])
    w_kd, w_pt = losses.objective_weights(u, "uncertainty")
    assert w_kd.tolist() == pytest.approx([0.8, 0.2]) and w_pt.tolist() == pytest.approx([0.2, 0.8])
    w_kd, w_pt = losses.objective_weights(u, "uncertainty-r")
    assert w_kd.tolist() == pytest.approx([0.2, 0.8])
    assert [w.tolist() for w in losses.objective_weights(u, "none")] == [[1.0, 1.0], [1.0, 1.0]]


# -- the registered terms and their sum ---------------------------------------------------------------

ZS = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # p = (1/2, 1/2) and (3/4, 1/4)
ZT = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
Y = torch.tensor([0, 1])


def test_the_registry_holds_ce_kd_and_alignment_in_order():
    assert list(LOSS_TERMS)[:3] == ["ce", "kd", "pt"]
    assert [LOSS_TERMS[n].weight for n in ("ce", "kd", "pt")] == ["ce_alpha", "kd_alpha", "pt_alpha"]


def test_ce_and_kd_terms_by_hand():
    x = LossInputs(ZS, Y, [ZT])
    ce = (math.log(2) + math.log(4)) / 2  # -log p(gold): 1/2 and 1/4
    assert LOSS_TERMS["ce"].fn(x, TrainSpec()).item() == pytest.approx(ce)
    mse = ((1 + 0) / 2 + (math.log(3.0) ** 2 + 0) / 2) / 2
    assert LOSS_TERMS["kd"].fn(x, TrainSpec(kd_loss="mse")).item() == pytest.approx(mse)
    # KL at T=1, row 2: p_t = (1/2, 1/2), p_s = (3/4, 1/4)
    kl2 = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    kl1 = (math.e / (1 + math.e)) * math.log((math.e / (1 + math.e)) / 0.5) + (1 / (1 + math.e)) * math.log((1 / (1 + math.e)) / 0.5)
    assert LOSS_TERMS["kd"].fn(x, TrainSpec(kd_loss="kl", temperature=1.0)).item() == pytest.approx((kl1 + kl2) / 2, rel=1e-5)


def test_kd_term_averages_teachers_keeps_in_batch_rows_and_splits_by_adoption():
    zt2 = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    per_row = [(0.5 + 0.5) / 2, math.log(3.0) ** 2 / 2]  # both teachers: row 1 off by 1 in one logit
    x = LossInputs(ZS, Y, [ZT, zt2])
    assert LOSS_TERMS["kd"].fn(x, TrainSpec(kd_loss="mse")).item() == pytest.approx(sum(per_row) / 2)
    x.kd_keep = torch.tensor([1])
    assert LOSS_TERMS["kd"].fn(x, TrainSpec(kd_loss="mse")).item() == pytest.approx(per_row[1])
    # hard adoption: the more uncertain row 1 (p = 1/2, 1/2) learns from the small (first) teacher only
    x = LossInputs(ZS, Y, [ZT, zt2])
    assert LOSS_TERMS["kd"].fn(x, TrainSpec(adoption="hard", kd_loss="mse")).item() == pytest.approx(0.5 + math.log(3.0) ** 2 / 2)


def test_objective_weighs_kd_by_confidence_and_alignment_by_uncertainty():
    u = losses.uncertainty(ZS)  # (1, H(3/4, 1/4) / log 2)
    s = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]])  # (B, L=1, H)
    t = torch.tensor([[[0.0, 1.0]], [[1.0, 0.0]]])  # row 1: orthogonal (distance 1), row 2: aligned (0)
    x = LossInputs(ZS, Y, [ZT], student_states=s, teacher_states=t)
    spec = TrainSpec(objective="uncertainty", pt_alpha=1.0, kd_loss="mse")
    mse = torch.tensor([0.5, math.log(3.0) ** 2 / 2])
    assert LOSS_TERMS["kd"].fn(x, spec).item() == pytest.approx(float(((1 - u) * mse).mean()))
    assert LOSS_TERMS["pt"].fn(x, spec).item() == pytest.approx(float(u[0]) * 1.0 / 2)
    assert LOSS_TERMS["pt"].fn(x, TrainSpec(pt_alpha=1.0)).item() == pytest.approx(0.5)


def test_total_loss_sums_the_applying_terms_with_their_weights():
    spec = TrainSpec(ce_alpha=0.5, kd_alpha=2.0, pt_alpha=3.0)
    x = LossInputs(ZS, Y, [ZT])
    ce, kd = LOSS_TERMS["ce"].fn(x, spec), LOSS_TERMS["kd"].fn(x, spec)
    assert total_loss(x, spec).item() == pytest.approx(float(0.5 * ce + 2.0 * kd))  # no states: no alignment
    assert total_loss(LossInputs(ZS, Y, []), spec).item() == pytest.approx(float(0.5 * ce))  # no teacher: CE only
    x = LossInputs(ZS, Y, [ZT], student_states=torch.ones(2, 1, 2), teacher_states=-torch.ones(2, 1, 2))
    assert total_loss(x, spec).item() == pytest.approx(float(0.5 * ce + 2.0 * kd + 3.0 * 2.0))


def test_a_registered_term_joins_the_loss(monkeypatch):
    monkeypatch.setitem(LOSS_TERMS, "rows", losses.LossTerm("rows", "ce_alpha", lambda x, spec: torch.tensor(7.0),
                                                              lambda x: True))
    x = LossInputs(ZS, Y, [])
    assert total_loss(x, TrainSpec()).item() == pytest.approx(LOSS_TERMS["ce"].fn(x, TrainSpec()).item() + 7.0)
