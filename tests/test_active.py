"""Each active-set mode on a tiny hand-made pool: which rows train each epoch, which rows get KD."""

import numpy as np
import pytest
import torch

from selectkd.distillation.active import ActiveSet, Dynamic, InBatch, batch_priority, rescore_sample
from selectkd.specs import SelectSpec

POOL = np.arange(10)
UIDS = 100 + POOL
LABELS = POOL % 2
UNCERTAIN = [3, 5, 7]  # the student gives these rows (0, 0): p = (1/2, 1/2)


def student_logits(positions: np.ndarray) -> np.ndarray:
    return np.array([[0.0, 0.0] if p in UNCERTAIN else [5.0, 0.0] for p in positions], dtype=np.float32)


def test_all_rows_and_a_static_selection_train_the_same_rows_every_epoch():
    every = ActiveSet(POOL)
    assert every.size == 10 and all(np.array_equal(every.rows_for_epoch(e), POOL) for e in range(3))
    assert every.kd_mask(torch.zeros(4, 2), [np.zeros((4, 2))]) is None  # KD on every row
    static = ActiveSet(np.array([2, 4, 8]))
    assert static.size == 3 and static.rows_for_epoch(5).tolist() == [2, 4, 8]


def test_in_batch_keeps_kd_for_the_top_fraction_by_each_criterion():
    z = torch.tensor([[4.0, 0.0], [0.0, 0.0], [2.0, 0.0], [0.1, 0.0]])  # rows 1 and 3 are the uncertain ones
    teacher = [np.array([[4.0, 0.0], [0.0, 0.0], [-6.0, 0.0], [1.5, 0.0]])]  # agrees on rows 0 and 1 only
    for criterion, expected in (("entropy", [1, 3]), ("margin", [1, 3]), ("least_confidence", [1, 3]), ("kl", [2, 3])):
        active = InBatch(POOL, 0.5, criterion, seed=0)
        assert np.array_equal(active.rows_for_epoch(0), POOL)
        assert sorted(active.kd_mask(z, teacher).tolist()) == expected, criterion
    assert InBatch(POOL, 0.01, "entropy", 0).kd_mask(z, teacher).tolist() == [1]  # at least one row


def test_in_batch_random_draws_again_each_epoch_and_alike_on_resume():
    z = torch.zeros(8, 2)
    a, b = InBatch(POOL, 0.5, "random", seed=3), InBatch(POOL, 0.5, "random", seed=3)
    a.rows_for_epoch(0)
    first = a.kd_mask(z, [np.zeros((8, 2))]).tolist()
    a.rows_for_epoch(1)
    second = a.kd_mask(z, [np.zeros((8, 2))]).tolist()
    b.rows_for_epoch(1)  # a run resumed at epoch 1 draws what the uninterrupted one drew
    assert b.kd_mask(z, [np.zeros((8, 2))]).tolist() == second and len(first) == 4 and first != second


def test_batch_priority_orders_by_uncertainty():
    z = np.array([[3.0, 0.0], [0.0, 0.0]])
    for name in ("entropy", "margin", "least_confidence"):
        p = batch_priority(name, z, None, np.random.default_rng(0))
        assert p[1] > p[0], name
    kl = batch_priority("kl", z, np.array([[[3.0, 0.0], [3.0, 0.0]]]), None)
    assert kl[0] == pytest.approx(0.0, abs=1e-9) and kl[1] > 0


def dynamic(calls: list, strategy: str = "entropy", **kw) -> Dynamic:
    def scores(positions, embeddings):
        calls.append(positions.copy())
        return student_logits(positions), None

    return Dynamic(UIDS, LABELS, POOL, SelectSpec(strategy=strategy), 3, scored=None, student_scores=scores,
                   teacher_logits=lambda p: np.zeros((1, len(p), 2)), **kw)


def test_dynamic_random_draws_afresh_without_a_student_pass():
    calls = []
    active = dynamic(calls, strategy="random")
    active.restore([0, 1, 2], selected_epoch=0)
    draws = [active.rows_for_epoch(epoch).tolist() for epoch in (1, 2, 3)]
    assert not calls  # random ranks by nothing the student computes: the pool is not re-scored
    assert all(len(d) == 3 and len(set(d)) == 3 for d in draws) and len({tuple(d) for d in draws}) > 1


def test_dynamic_reselects_the_rows_the_current_student_is_unsure_of():
    calls = []
    active = dynamic(calls, every=2)
    active.restore([0, 1, 2], selected_epoch=0)  # as after epoch 0 (chosen from the cached scores)
    assert active.rows_for_epoch(1).tolist() == [0, 1, 2] and not calls  # K = 2: epoch 1 keeps them
    assert active.rows_for_epoch(2).tolist() == UNCERTAIN and np.array_equal(calls[0], POOL)
    assert active.rows_for_epoch(2).tolist() == UNCERTAIN and len(calls) == 1  # chosen once per epoch
    assert active.selected_epoch == 2


def test_reselect_every_0_keeps_the_first_choice_and_never_rescores():
    """--reselect-every 0: a static selection made inside distill; even random keeps its first draw."""
    for strategy in ("entropy", "random"):
        calls = []
        active = dynamic(calls, strategy=strategy, every=0)
        active.restore([0, 1, 2], selected_epoch=0)  # as after epoch 0 (chosen from the cached scores)
        assert all(active.rows_for_epoch(e).tolist() == [0, 1, 2] for e in (1, 2, 3, 6)) and not calls, strategy


def test_dynamic_rescoring_a_fraction_tops_up_to_the_budget():
    calls = []
    active = dynamic(calls, rescore_pool=0.5)
    active.restore([0, 1, 2], selected_epoch=0)
    rows = active.rows_for_epoch(1)
    scored = calls[0]
    assert len(scored) == 5 and len(rows) == 3 and len(set(rows.tolist())) == 3
    assert set(UNCERTAIN) & set(scored.tolist()) <= set(rows.tolist())  # the unsure rows it saw are kept


def test_rescore_sample_keeps_every_clusters_share():
    groups = np.repeat([0, 1, 2], [60, 30, 10])
    picked = rescore_sample(100, 0.2, np.random.default_rng(0), groups)
    assert np.bincount(groups[picked]).tolist() == [12, 6, 2]
    assert len(set(picked.tolist())) == 20
    a = rescore_sample(100, 0.2, np.random.default_rng(1))
    assert len(a) == 20 and not np.array_equal(a, rescore_sample(100, 0.2, np.random.default_rng(2)))


