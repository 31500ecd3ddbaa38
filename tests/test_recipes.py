"""The 10% recipes from cached signals (ccs, confident_uncertain, uncertainty_sampling) on hand-made pools."""

import importlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from selectkd.errors import SelectKDError
from selectkd.selection.choose import capped_quotas, choose
from selectkd.selection.strategies import STRATEGIES, Pool
from selectkd.specs import DEFAULT_LR, DEFAULT_RESELECT_EVERY, DEFAULT_STRATEGY, DEFAULT_TEMPERATURE
from selectkd.uncertainty import entropy, least_confidence, margin


def pool_of(student_probs, labels, teacher_probs) -> Pool:
    s = np.asarray(student_probs, dtype=np.float64)
    t = np.asarray(teacher_probs, dtype=np.float64)
    n = len(s)
    return Pool(uids=np.arange(1000, 1000 + n, dtype=np.int64), labels=np.asarray(labels, dtype=np.int64),
                entropy=entropy(s), margin=margin(s), least_confidence=least_confidence(s),
                teacher_logits=np.log(np.clip(t, 1e-9, None))[None])


def two_class(p_class0) -> np.ndarray:
    p = np.asarray(p_class0, dtype=np.float64)
    return np.stack([p, 1 - p], axis=1)


# -- capped quotas --------------------------------------------------------------------------------

def test_capped_quotas_share_by_weight_and_refill_from_small_groups():
    # equal weights: 12 rows over groups of 2, 10, 10 -> the small one gives its 2, the rest split 5 / 5
    assert capped_quotas(np.array([2, 10, 10]), np.ones(3), 12).tolist() == [2, 5, 5]
    # weights 1:3 without caps
    assert capped_quotas(np.array([40, 40]), np.array([1.0, 3.0]), 20).tolist() == [5, 15]
    # asking for more than the groups hold gives them all
    assert capped_quotas(np.array([3, 4]), np.ones(2), 100).tolist() == [3, 4]
    rng = np.random.default_rng(0)
    for _ in range(300):
        sizes = rng.integers(0, 30, size=rng.integers(1, 9))
        k = int(rng.integers(0, sizes.sum() + 1))
        q = capped_quotas(sizes, np.ones(len(sizes)), k)
        assert q.sum() == k and (q >= 0).all() and (q <= sizes).all()
        room = q < sizes  # equal weights: every group with rows left got within one row of the most any got
        if room.any():
            assert q.max() - q[room].min() <= 1


# -- ccs ------------------------------------------------------------------------------------------

def ccs_pool():
    """100 rows, 2 classes (60 / 40): 5 mislabelled (teacher 99% sure of the other class), 10 where the
    teacher is torn (50/50), the other 85 spread over teacher margins 0.2 .. 0.98."""
    rng = np.random.default_rng(7)
    labels = np.array([0] * 60 + [1] * 40)
    p_gold = np.concatenate([rng.uniform(0.6, 0.99, 60), rng.uniform(0.6, 0.99, 40)])
    wrong = np.array([0, 1, 2, 60, 61])  # the teacher contradicts the gold label with 0.99
    torn = np.array([10, 11, 12, 13, 14, 70, 71, 72, 73, 74])
    p_gold[wrong] = 0.01
    p_gold[torn] = 0.5
    p0 = np.where(labels == 0, p_gold, 1 - p_gold)
    student = two_class(rng.uniform(0.3, 0.9, 100))
    return pool_of(student, labels, two_class(p0)), labels, wrong, torn


def test_ccs_prunes_the_contradicted_then_the_torn_rows_first():
    pool, labels, wrong, torn = ccs_pool()
    choice = choose(pool, "ccs", 40, prune_hard=0.1, seed=0)
    pruned = np.flatnonzero(~choice.eligible)
    assert set(wrong) <= set(pruned) and len(pruned) == 10  # the 5 contradictions, then 5 of the 10 torn rows
    assert set(pruned) - set(wrong) <= set(torn)
    assert choice.dropped == {"ccs_pruned": 10}
    assert not set(choice.indices) & set(pruned)
    assert len(choice.indices) == 40 and len(set(choice.indices.tolist())) == 40


def test_ccs_fills_difficulty_bins_evenly_and_keeps_classes_inside_them():
    pool, labels, _, _ = ccs_pool()
    bins = 4
    choice = choose(pool, "ccs", 40, prune_hard=0.1, bins=bins, seed=3)
    ranking = choice.ranking
    bin_of = ranking.groups // 2
    live = choice.eligible
    sizes = np.bincount(bin_of[live], minlength=bins)
    got = np.bincount(bin_of[choice.indices], minlength=bins)
    expected = capped_quotas(sizes, np.ones(bins), 40)
    assert abs(got - expected).max() <= 1, (got, expected, sizes)  # classes round inside each bin
    assert got.sum() == 40
    # inside each bin, each class gets its share of the bin (to a row)
    for b in range(bins):
        in_bin = live & (bin_of == b)
        if got[b] == 0:
            continue
        share = np.bincount(labels[in_bin], minlength=2) / in_bin.sum() * got[b]
        picked = np.bincount(labels[choice.indices][bin_of[choice.indices] == b], minlength=2)
        assert (abs(picked - share) <= 1).all()


def test_ccs_prunes_each_class_in_proportion_so_no_class_is_pruned_away():
    # a skewed pool whose small classes the teacher gets right but softly (as r8's): one cut over the whole pool by
    # entropy would drop every row of them, and no selection could teach those classes
    labels = np.array([0] * 900 + [1] * 60 + [2] * 40)
    soft = {0: [0.98, 0.01, 0.01], 1: [0.25, 0.5, 0.25], 2: [0.25, 0.25, 0.5]}
    rng = np.random.default_rng(0)
    teacher = np.array([soft[c] for c in labels]) + rng.uniform(0, 0.01, (1000, 3))
    teacher /= teacher.sum(axis=1, keepdims=True)
    pool = pool_of(rng.dirichlet(np.ones(3), 1000), labels, teacher)
    choice = choose(pool, "ccs", 100, prune_hard=0.2, seed=0)
    pruned = ~choice.eligible
    assert np.bincount(labels[pruned], minlength=3).tolist() == [180, 12, 8]
    picked = np.bincount(labels[choice.indices], minlength=3)
    assert (picked > 0).all() and picked.sum() == 100, picked


def test_ccs_draws_at_random_inside_bins_seeded():
    pool, *_ = ccs_pool()
    a = choose(pool, "ccs", 30, seed=1).indices
    assert np.array_equal(a, choose(pool, "ccs", 30, seed=1).indices)
    assert set(a.tolist()) != set(choose(pool, "ccs", 30, seed=2).indices.tolist())


def test_ccs_never_prunes_below_the_budget_and_checks_its_options():
    pool, *_ = ccs_pool()
    choice = choose(pool, "ccs", 90, prune_hard=0.4)  # 40 would leave 60 < 90 rows: only 10 go
    assert choice.dropped["ccs_pruned"] == 10 and len(choice.indices) == 90
    with pytest.raises(SelectKDError, match="--prune-hard"):
        choose(pool, "ccs", 10, prune_hard=1.0)
    with pytest.raises(SelectKDError, match="--bins"):
        choose(pool, "ccs", 10, bins=0)
    no_teacher = Pool(pool.uids, pool.labels, pool.entropy, pool.margin, pool.least_confidence)
    with pytest.raises(SelectKDError, match="--teacher"):
        choose(no_teacher, "ccs", 10)


# -- confident_uncertain and uncertainty_sampling ------------------------------------------------

def draw_frequencies(pool: Pool, strategy: str, draws: int = 4000) -> np.ndarray:
    """How often each row is the one row chosen, over ``draws`` seeds."""
    counts = np.zeros(len(pool))
    for seed in range(draws):
        counts[choose(pool, strategy, 1, seed=seed).indices] += 1
    return counts / draws


def test_confident_uncertain_draws_in_proportion_to_teacher_confidence_times_student_entropy():
    # row 0: teacher sure of the gold label, student torn        -> the highest score
    # row 1: teacher sure of the gold label, student fairly sure -> lower
    # row 2: teacher sure of the *other* class, student torn     -> about 0 (confidence in gold 0.01)
    # row 3: teacher torn, student torn                          -> half of row 0
    student = two_class([0.5, 0.9, 0.5, 0.5])
    teacher = two_class([0.99, 0.99, 0.01, 0.5])
    pool = pool_of(student, [0, 0, 0, 0], teacher)
    score = STRATEGIES["confident_uncertain"].fn(pool).score
    assert score == pytest.approx(teacher[:, 0] * entropy(student) / np.log(2))
    freq = draw_frequencies(pool, "confident_uncertain")
    assert freq == pytest.approx(score / score.sum(), abs=0.03)
    # sampled, not top-k: the second-best rows are chosen too
    assert freq[1] > 0.1 and freq[3] > 0.2


def test_confident_uncertain_without_gold_labels_uses_the_teachers_top_probability():
    pool = pool_of(two_class([0.5, 0.5]), [-1, -1], two_class([0.01, 0.5]))
    assert STRATEGIES["confident_uncertain"].fn(pool).score == pytest.approx([0.99, 0.5])


def test_uncertainty_sampling_keeps_class_shares_and_favours_uncertain_rows():
    # 80 rows of class 0 (half torn, half sure), 20 of class 1 (all torn)
    labels = np.array([0] * 80 + [1] * 20)
    p0 = np.where(np.arange(100) % 2 == 0, 0.5, 0.999)
    p0[80:] = 0.5
    pool = pool_of(two_class(p0), labels, two_class(p0))
    for seed in range(20):
        picked = choose(pool, "uncertainty_sampling", 10, seed=seed).indices
        assert np.bincount(labels[picked], minlength=2).tolist() == [8, 2]  # the pool's 80 / 20
    picks = np.concatenate([choose(pool, "uncertainty_sampling", 10, seed=s).indices for s in range(200)])
    class0 = picks[labels[picks] == 0]
    assert np.mean(p0[class0] == 0.5) > 0.95  # entropy 0.69 vs 0.008: the sure rows of class 0 rarely come
    assert len(set(picks.tolist())) > 30  # many different rows over seeds: sampled, not the same top-k


def test_recipes_refuse_what_they_cannot_use_as_coverage_criterion():
    from selectkd.selection.strategies import check_criterion

    with pytest.raises(SelectKDError, match="criterion"):
        check_criterion("ccs")
    assert check_criterion("confident_uncertain").name == "confident_uncertain"


def test_dynamic_ccs_draws_afresh_each_epoch_without_a_student_pass():
    from selectkd.distillation.active import Dynamic
    from selectkd.specs import SelectSpec

    pool, labels, *_ = ccs_pool()
    calls = []
    teacher = pool.teacher_logits

    def student_scores(positions, embeddings):
        calls.append(positions)
        return np.zeros((len(positions), 2), dtype=np.float32), None

    active = Dynamic(pool.uids, labels, np.arange(len(pool)), SelectSpec(strategy="ccs"), 20, scored=None,
                     student_scores=student_scores, teacher_logits=lambda p: teacher[:, p])
    active.restore(list(range(20)), selected_epoch=0)
    draws = [set(active.rows_for_epoch(epoch).tolist()) for epoch in (1, 2)]
    assert not calls and all(len(d) == 20 for d in draws) and draws[0] != draws[1]


# -- the default follows the measurement ----------------------------------------------------------

def test_a_bare_budget_runs_the_strategy_the_study_chose_at_equal_time():
    """A bare `--budget 0.1` (select and distill) is the 10% configuration bench/reproduce.py measured best at
    the default's training time over every dataset and seed (#13), once the study has chosen one; until then
    the report claims no choice either."""
    repo = Path(__file__).resolve().parents[1]
    chosen = repo / "bench" / "results" / "reproduce" / "budget_strategy.json"
    report = json.loads((repo / "docs" / "results.json").read_text())
    if not chosen.exists():
        assert report["best_budget_strategy"] is None, "docs/results.json names a strategy the study has not recorded"
        return
    best = json.loads(chosen.read_text())["best"]
    assert report["best_budget_strategy"] == best, "render docs/RESULTS.md again: bench/reproduce.py --render-only"
    kind, strategy = best.split("-", 1)
    every = {"static": 0, "dynamic": 1}[kind]  # the study's dynamic runs re-select every epoch
    assert (strategy, every) == (DEFAULT_STRATEGY, DEFAULT_RESELECT_EVERY), (
        f"the study chose {best} ({chosen}): make it what a bare --budget runs (selectkd/specs.py "
        f"DEFAULT_STRATEGY, and DEFAULT_RESELECT_EVERY 0 for a static choice: distill --budget then selects once) "
        f"and say so in --help and the README")


def test_distill_learns_at_the_rate_bench_lr_chose_or_the_incumbent_until_it_has():
    """distill's default --lr is the one bench/lr.py's rule picked from the study's paired runs; until every
    dataset the rule names is measured, the incumbent it is compared against stays."""
    lr = json.loads((Path(__file__).resolve().parents[1] / "bench" / "results" / "lr.json").read_text())
    expected = lr["incumbent"] if lr["choice"] is None else lr["choice"]
    assert DEFAULT_LR == expected, (
        f"bench/results/lr.md chose lr {expected:g}: set selectkd/specs.py DEFAULT_LR and say so in distill --lr's "
        "help and the README")


def test_distill_distils_at_the_temperature_bench_temperature_chose_or_the_incumbent_until_it_has():
    """distill's default --temperature is the one bench/temperature.py's rule picked; until every dataset the rule
    names is measured (3 paired seeds each), the incumbent T=2 stays."""
    t = json.loads((Path(__file__).resolve().parents[1] / "bench" / "results" / "temperature.json").read_text())
    expected = t["incumbent"] if t["choice"] is None else t["choice"]
    assert DEFAULT_TEMPERATURE == expected, (
        f"bench/results/temperature.md chose T={expected:g}: set selectkd/specs.py DEFAULT_TEMPERATURE and say so "
        "in distill --temperature's help and the README (every study record is then made again)")


def _bench(name: str):
    """A module of bench/ (its scripts import each other by plain name)."""
    bench = str(Path(__file__).resolve().parents[1] / "bench")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    return importlib.import_module(name)


def test_the_lr_rule_waits_for_every_dataset_then_weighs_the_short_run_against_full_kd():
    """bench/lr.py's rule, written before the 20ng runs: 3e-4 only when the default 10% run gains on average
    over the datasets and full-data KD loses at most 0.5 points on any one."""
    lr = _bench("lr")

    def paired(full: tuple[float, float], short: tuple[float, float]) -> list[dict]:
        """Every dataset of the rule with the same (1e-4, 3e-4) accuracies, 3 seeds."""
        return [{"dataset": d, "run": run, "seeds": [0, 1, 2], "0.0001": [a] * 3, "0.0003": [b] * 3}
                for d in lr.RULE.datasets for run, (a, b) in (("full", full), (lr.rp.DEFAULT_RUN, short))]

    def choice(summary: list[dict]):
        return _bench("variants").decide(lr.RULE, lr.LR, summary)[1]["choice"]

    assert choice(paired((0.88, 0.88), (0.84, 0.86))[:-2]) is None  # the last dataset not measured yet
    assert choice(paired((0.88, 0.876), (0.84, 0.86))) == 3e-4  # full KD -0.4: inside the slack
    assert choice(paired((0.88, 0.87), (0.84, 0.86))) == 1e-4  # full KD -1.0 on every dataset
    assert choice(paired((0.88, 0.88), (0.84, 0.83))) == 1e-4  # the short run loses
    one_worse = paired((0.88, 0.88), (0.84, 0.86))
    one_worse[0]["0.0003"] = [0.87] * 3  # full KD -1.0 on the first dataset alone
    assert choice(one_worse) == 1e-4


def test_a_render_of_lr_md_today_is_refused_rather_than_dropping_the_first_studys_runs(capsys):
    """bench/results/lr holds runs of the first study's 3-layer student; the study's student is the whole MiniLM
    now, so those records no longer match its plan: a render would leave lr.md without them and lr.json
    without the choice distill's default follows."""
    lr = _bench("lr")
    report = Path(lr.rp.REPO) / "bench" / "results" / "lr.md"
    before = report.read_bytes()
    with pytest.raises(SystemExit) as stop:
        lr.main(["--render-only"])
    assert stop.value.code == 2
    assert "holds runs of the student minilm-l6-first3" in capsys.readouterr().err
    assert report.read_bytes() == before


def test_the_temperature_rule_waits_for_every_dataset_then_weighs_full_kd_against_the_short_run():
    """bench/temperature.py's rule, written after r8 seed 1's pair: T=1 only when full-data KD gains on average
    over the datasets and the default 10% run loses at most 0.5 points on any one."""
    temperature = _bench("temperature")

    def paired(full: tuple[float, float], short: tuple[float, float]) -> list[dict]:
        """Every dataset of the rule with the same (T=2, T=1) accuracies, 3 seeds."""
        return [{"dataset": d, "run": run, "seeds": [0, 1, 2], "T=2": [a] * 3, "T=1": [b] * 3}
                for d in temperature.RULE.datasets
                for run, (a, b) in (("full", full), (temperature.rp.DEFAULT_RUN, short))]

    def choice(summary: list[dict]):
        return _bench("variants").decide(temperature.RULE, temperature.TEMPERATURE, summary)[1]["choice"]

    assert choice(paired((0.90, 0.97), (0.97, 0.97))[:-2]) is None  # the last dataset not measured yet
    assert choice(paired((0.90, 0.97), (0.97, 0.966))) == 1.0  # the short run -0.4: inside the slack
    assert choice(paired((0.90, 0.97), (0.97, 0.96))) == 2.0  # the short run -1.0 on every dataset
    assert choice(paired((0.97, 0.96), (0.97, 0.98))) == 2.0  # full KD loses
    one_worse = paired((0.90, 0.97), (0.97, 0.97))
    assert one_worse[1]["run"] == temperature.rp.DEFAULT_RUN
    one_worse[1]["T=1"] = [0.96] * 3  # the short run -1.0 on the first dataset alone
    assert choice(one_worse) == 2.0
    lines, _ = _bench("variants").decide(temperature.RULE, temperature.TEMPERATURE, paired((0.90, 0.97), (0.97, 0.97)))
    assert "**Choice: T=1.**" in "\n".join(lines) and "set selectkd/specs.py DEFAULT_TEMPERATURE" in "\n".join(lines)


def test_the_report_names_the_most_accurate_10_percent_row_at_the_default_time_when_the_top_one_is_slower():
    """A dynamic row that re-scores the pool can top the table at 2.5x the default's seconds: the report then
    also names the best row that trains about as long as the default (bench/study.py EQUAL_TIME)."""
    rp, report = _bench("study"), _bench("study_report")

    def row(name: str, accuracy: float, seconds: float) -> dict:  # one seed, beside a default run of 60 s
        return {"name": name, "accuracy": accuracy, "seconds": seconds, "vs_default": rp.vs_default([seconds / 60.0])}

    full, default = row("full", 0.886, 400.0), row(rp.DEFAULT_RUN, 0.861, 60.0)
    fast, slow = row("static-confident_uncertain-10", 0.862, 57.0), row("dynamic-confident_uncertain-10", 0.863, 150.0)
    note = report.equal_time_note([default, fast, slow], full, default, slow)
    assert "`confident_uncertain` static: 2.4 points below full-data KD at 14% of its time, +0.1 points" in note
    assert report.equal_time_note([default, fast, slow], full, default, fast) == ""  # the top row is at equal time
    slower = row("static-confident_uncertain-10", 0.862, 76.0)  # 1.27x the default: no longer equal time
    assert "10% default" in report.equal_time_note([default, slower, slow], full, default, slow)


def test_equal_time_compares_seconds_at_one_machine_speed():
    """A run made while the machine ran twice as slow per step as at its default run took twice the seconds for
    the same work: at one speed it is level with the default. Without a speed probe on both, seconds as measured."""
    rp = _bench("study")
    default = {"seconds_train": 100.0, "step_speed_s": 1.5}
    assert rp.seconds_vs({"seconds_train": 240.0, "step_speed_s": 3.0}, default) == pytest.approx(1.2)
    assert rp.seconds_vs({"seconds_train": 240.0, "step_speed_s": 1.5}, default) == pytest.approx(2.4)
    assert rp.seconds_vs({"seconds_train": 240.0}, default) == pytest.approx(2.4)


def test_the_budget_strategy_waits_for_every_built_in_dataset(tmp_path):
    """The choice the tool's default follows is made over every built-in dataset: a budgets run of some of
    them (`--datasets tweets-binary --tiers budgets`) chooses nothing and writes nothing."""
    rp = _bench("study")
    some = list(rp.DATASETS)[:1]
    args = SimpleNamespace(results=str(tmp_path), datasets=some, tiers=["core", "strategies", "budgets"],
                           render_only=False, seeds=[0], commit=False)
    assert rp.best_strategy(args, {d: {} for d in some}) is None
    assert not (tmp_path / "budget_strategy.json").exists()
