"""Selection: every strategy on hand-made arrays with a known answer, the budget and strata
rules, every user error, and an end-to-end select on the tiny models."""

import importlib
import json

import numpy as np
import pyarrow as pa
import pytest

import selectkd
from selectkd.cache.arrays import fixed_list
from selectkd.cache.store import EntryWriter, Store, file_sha256, part_name
from selectkd.errors import SelectKDError
from selectkd.selection.choose import choose, largest_remainder, parse_budget
from selectkd.selection.pool import load_pool
from selectkd.selection.report import plot_histogram, summary
from selectkd.selection.run import select
from selectkd.selection.saved import Selection, load_selection, save_selection
from selectkd.selection.strategies import STRATEGIES, Pool, batch_priority
from selectkd.specs import DataSpec, ScoreSpec, SelectSpec
from selectkd.uncertainty import entropy, least_confidence, margin


def pool_from_probs(probs, labels=None, **extra) -> Pool:
    p = np.asarray(probs, dtype=np.float64)
    n = len(p)
    return Pool(uids=np.arange(100, 100 + n, dtype=np.int64),
                labels=np.zeros(n, dtype=np.int64) if labels is None else np.asarray(labels),
                entropy=entropy(p), margin=margin(p), least_confidence=least_confidence(p), **extra)


def picked_uids(pool, strategy, budget, **kw) -> list[int]:
    return pool.uids[choose(pool, strategy, budget, **kw).indices].tolist()


# -- strategies on crafted arrays ------------------------------------------------------------------

# Three rows where the three uncertainty criteria each pick a different one:
#   A: a coin flip between two classes      -> smallest margin (0)
#   B: top class only 0.42                  -> lowest confidence (1 - 0.42 = 0.58)
#   C: mass spread over the other three     -> highest entropy
CRAFTED = [[0.50, 0.50, 0.00, 0.00],
           [0.42, 0.38, 0.20, 0.00],
           [0.47, 0.1767, 0.1767, 0.1766]]


def test_entropy_margin_and_least_confidence_disagree_on_crafted_rows():
    pool = pool_from_probs(CRAFTED)
    assert picked_uids(pool, "entropy", 1) == [102]
    assert picked_uids(pool, "margin", 1) == [100]
    assert picked_uids(pool, "least_confidence", 1) == [101]
    # full orders, best first
    assert picked_uids(pool, "entropy", 3) == [102, 101, 100]
    assert picked_uids(pool, "margin", 3) == [100, 101, 102]
    assert picked_uids(pool, "least_confidence", 3) == [101, 102, 100]


def test_margin_scores_are_kept_as_margins_and_ranked_smallest_first():
    pool = pool_from_probs(CRAFTED)
    choice = choose(pool, "margin", 3)
    assert not choice.ranking.higher_first
    assert np.allclose(choice.ranking.score[choice.indices], [0.0, 0.04, 0.2933])


def test_kl_averages_over_teachers():
    # row 2 is the top of neither teacher but has the largest mean KL
    kl = np.array([[1.0, 0.0], [0.2, 0.9], [0.6, 0.6], [0.1, 0.1]])
    pool = pool_from_probs([[0.5, 0.5]] * 4, kl=kl)
    assert picked_uids(pool, "kl", 4) == [102, 101, 100, 103]


def test_teacher_entropy_uses_the_mean_of_teacher_probabilities():
    # row 0: each teacher is sure, but of opposite classes -> the mean is 50/50, highest entropy
    t1 = np.array([[9.0, -9.0], [1.0, 0.0], [3.0, 0.0]])
    t2 = np.array([[-9.0, 9.0], [1.0, 0.0], [3.0, 0.0]])
    pool = pool_from_probs([[0.9, 0.1]] * 3, teacher_logits=np.stack([t1, t2]))
    assert picked_uids(pool, "teacher_entropy", 3) == [100, 101, 102]
    with pytest.raises(SelectKDError, match="--teacher"):
        choose(pool_from_probs([[0.9, 0.1]] * 3), "teacher_entropy", 1)


def test_random_is_reproducible_by_seed_and_differs_across_seeds():
    pool = pool_from_probs(np.full((500, 2), 0.5))
    a = picked_uids(pool, "random", 50, seed=1)
    assert a == picked_uids(pool, "random", 50, seed=1)
    assert a != picked_uids(pool, "random", 50, seed=2)
    assert len(set(a)) == 50


def clustered_pool(sizes=(50, 30, 20), dim=8, seed=0) -> tuple[Pool, np.ndarray]:
    """Well-separated blobs; entropy is highest in the first blob, so plain top-k never leaves it."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[: len(sizes)]
    blob = np.repeat(np.arange(len(sizes)), sizes)
    emb = centres[blob] + 0.05 * rng.normal(size=(len(blob), dim))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    p1 = np.where(blob == 0, 0.5, 0.9) - 0.01 * rng.random(len(blob))
    pool = pool_from_probs(np.stack([p1, 1 - p1], axis=1), embeddings=emb)
    return pool, blob


def test_coverage_picks_from_every_cluster_in_proportion():
    pool, blob = clustered_pool()
    top = choose(pool, "entropy", 10).indices
    assert set(blob[top]) == {0}
    choice = choose(pool, "coverage", 10, clusters=3, criterion="entropy")
    assert np.bincount(blob[choice.indices], minlength=3).tolist() == [5, 3, 2]
    # inside each cluster the most uncertain rows come first
    first = choice.indices[blob[choice.indices] == 0]
    assert set(first) == set(np.argsort(-pool.entropy[blob == 0], kind="stable")[:5])
    assert len(np.unique(choice.ranking.groups[choice.indices])) == 3


def test_coverage_with_other_criteria_and_errors():
    pool, blob = clustered_pool()
    for criterion in ("margin", "least_confidence", "random"):
        choice = choose(pool, "coverage", 10, clusters=3, criterion=criterion)
        assert np.bincount(blob[choice.indices], minlength=3).tolist() == [5, 3, 2]
    with pytest.raises(SelectKDError, match=r"--clusters 101 .*lower --clusters"):
        choose(pool, "coverage", 10, clusters=101)
    with pytest.raises(SelectKDError, match="unknown criterion 'nope'.*entropy"):
        choose(pool, "coverage", 10, clusters=3, criterion="nope")


def test_per_class_keeps_the_pool_proportions():
    # 70 rows of class 0, 30 of class 1; class 1 is far more uncertain
    labels = np.array([0] * 70 + [1] * 30)
    p1 = np.where(labels == 1, 0.5, 0.95)
    pool = pool_from_probs(np.stack([p1, 1 - p1], axis=1), labels=labels)
    assert np.bincount(labels[choose(pool, "entropy", 10).indices], minlength=2).tolist() == [0, 10]
    balanced = choose(pool, "entropy", 10, per_class=True).indices
    assert np.bincount(labels[balanced], minlength=2).tolist() == [7, 3]
    odd = choose(pool, "entropy", 11, per_class=True).indices  # 7.7 / 3.3 -> largest remainder
    assert np.bincount(labels[odd], minlength=2).tolist() == [8, 3]


def test_largest_remainder_is_exact_and_proportional():
    rng = np.random.default_rng(0)
    for _ in range(200):
        sizes = rng.integers(0, 50, size=rng.integers(1, 12))
        if sizes.sum() == 0:
            continue
        k = int(rng.integers(0, sizes.sum() + 1))
        q = largest_remainder(sizes, k)
        assert q.sum() == k and (q <= sizes).all()
        assert (np.abs(q - sizes * k / sizes.sum()) < 1).all()
    assert largest_remainder(np.array([5, 3, 2]), 4).tolist() == [2, 1, 1]


def test_budget_as_count_and_fraction():
    pool = pool_from_probs(np.full((200, 2), 0.5))
    assert len(choose(pool, "entropy", 0.1).indices) == 20
    assert len(choose(pool, "entropy", 7).indices) == 7
    assert len(choose(pool, "entropy", 1.0).indices) == 200
    assert len(choose(pool, "entropy", 1).indices) == 1  # an int is a count
    assert parse_budget("0.25") == 0.25 and parse_budget("300") == 300 and isinstance(parse_budget("300"), int)


@pytest.mark.parametrize("budget, message", [
    (0, "must be > 0"), (-0.1, "must be > 0"), (1.5, "more than 1 as a fraction"), (201, "more than the pool's 200"),
])
def test_budget_errors(budget, message):
    pool = pool_from_probs(np.full((200, 2), 0.5))
    with pytest.raises(SelectKDError, match=message):
        choose(pool, "entropy", budget)


def test_unknown_strategy_lists_the_valid_ones():
    with pytest.raises(SelectKDError) as info:
        choose(pool_from_probs(CRAFTED), "nope", 1)
    assert all(name in str(info.value) for name in STRATEGIES)
    assert "\n" not in str(info.value)


def test_sampling_is_seeded_and_tends_to_top_k_at_low_temperature():
    rng = np.random.default_rng(0)
    p1 = rng.uniform(0.5, 1.0, size=400)
    pool = pool_from_probs(np.stack([p1, 1 - p1], axis=1))
    top = set(picked_uids(pool, "entropy", 40))
    a = picked_uids(pool, "entropy", 40, sample=True, seed=3)
    assert a == picked_uids(pool, "entropy", 40, sample=True, seed=3)
    assert a != picked_uids(pool, "entropy", 40, sample=True, seed=4)
    assert set(a) != top and len(set(a)) == 40
    # the sampled subset still leans to uncertain rows
    assert pool.entropy[np.array(a) - 100].mean() > pool.entropy.mean()
    assert set(picked_uids(pool, "entropy", 40, sample=True, temperature=1e-4, seed=3)) == top
    with pytest.raises(SelectKDError, match="--sample-temperature"):
        choose(pool, "entropy", 4, sample=True, temperature=0)


def test_drop_disagreement_removes_confidently_contradicted_labels():
    # row 0: teachers 99% sure of class 1, gold label 0 -> dropped although it is the most uncertain
    teacher = np.array([[[-5.0, 5.0], [5.0, -5.0], [0.1, 0.0], [0.0, 3.0]]])
    labels = np.array([0, 0, 1, 0])
    pool = pool_from_probs([[0.5, 0.5], [0.6, 0.4], [0.7, 0.3], [0.8, 0.2]], labels=labels, teacher_logits=teacher)
    choice = choose(pool, "entropy", 2, drop_disagreement=True, disagreement_threshold=0.99)
    assert pool.uids[choice.indices].tolist() == [101, 102]
    assert choice.dropped == {"teacher_disagrees_with_label": 1}
    # the threshold is a parameter: row 3 (95% for class 1, gold 0) goes at the default 0.9,
    # row 2 (52% for class 0, gold 1) only at 0.5
    assert choose(pool, "entropy", 1, drop_disagreement=True).dropped["teacher_disagrees_with_label"] == 2
    assert choose(pool, "entropy", 1, drop_disagreement=True, disagreement_threshold=0.5).dropped[
        "teacher_disagrees_with_label"] == 3


def test_dedup_keeps_the_first_of_each_near_duplicate_group():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(6, 16))
    emb[5] = emb[0]                                   # exact duplicate of row 0
    emb[4] = emb[3] + 0.001 * rng.normal(size=16)     # near duplicate of row 3
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    # the duplicates are the most uncertain, so top-k would take them first
    p1 = np.array([0.9, 0.8, 0.85, 0.7, 0.5, 0.5])
    pool = pool_from_probs(np.stack([p1, 1 - p1], axis=1), embeddings=emb)
    choice = choose(pool, "entropy", 4, dedup=0.05)
    assert choice.dropped == {"near_duplicates": 2}
    assert sorted(pool.uids[choice.indices].tolist()) == [100, 101, 102, 103]
    with pytest.raises(SelectKDError, match="fewer than the budget"):
        choose(pool, "entropy", 5, dedup=0.05)


def test_dedup_above_the_exact_size_finds_the_planted_near_duplicates():
    from selectkd.selection.dedup import find_near_duplicates

    rng = np.random.default_rng(0)
    n, dims = 6000, 24
    emb = rng.normal(size=(8, dims))[rng.integers(0, 8, n)] + rng.normal(size=(n, dims))  # 8 topics
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    copies = rng.choice(n, 200, replace=False)
    step = rng.normal(size=(100, dims))
    emb[copies[100:]] = emb[copies[:100]] + step / np.linalg.norm(step, axis=1, keepdims=True) * 0.04
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    chunks = lambda: iter(np.array_split(emb.astype(np.float16), 7))  # noqa: E731  (float16 parts, as cached)
    exact = find_near_duplicates(chunks, n, 0.05, exact_rows=n)
    lists = find_near_duplicates(chunks, n, 0.05, exact_rows=n - 1)
    assert exact.search["search"] == "exact" and lists.search["search"] == "lists" and lists.search["lists"] > 1
    # the list search is approximate: a pair split across lists neither row searches is missed (here 1 of 100);
    # what it finds is checked on the full embeddings, so it never drops a row that is no near-duplicate
    assert exact.drop.sum() == 100 and lists.drop.sum() >= 97 and not (lists.drop & ~exact.drop).any()
    assert set(np.flatnonzero(exact.drop)) == {int(max(a, b)) for a, b in zip(copies[:100], copies[100:])}
    with pytest.raises(SelectKDError, match="must be in"):
        find_near_duplicates(chunks, n, 2.5)
    # one list, fewer than the probes: a row searches its own list twice and must not find itself
    small = emb[:40].copy()
    small[30] = small[3]
    one = find_near_duplicates(lambda: iter([small]), 40, 0.05, exact_rows=0)
    assert one.search["lists"] == 1 and np.flatnonzero(one.drop).tolist() == [30]


# -- in-batch priorities (distill's in-batch selection) ---------------------------------------------

# student logits: p = [.5, .5], [.75, .25], [.9, .1]; teachers: [.9, .1] and [.1, .9] on every row
BATCH_STUDENT = np.log([[1.0, 1.0], [3.0, 1.0], [9.0, 1.0]])
BATCH_TEACHERS = np.log([[[9.0, 1.0]] * 3, [[1.0, 9.0]] * 3])


@pytest.mark.parametrize("name, expected", [
    ("entropy", [np.log(2), -(0.75 * np.log(0.75) + 0.25 * np.log(0.25)), -(0.9 * np.log(0.9) + 0.1 * np.log(0.1))]),
    ("margin", [0.0, -0.5, -0.8]),  # the smallest margin first
    ("least_confidence", [0.5, 0.25, 0.1]),
    # KL(teacher || student), mean of the two teachers: row 0 .9 ln(.9/.5) + .1 ln(.1/.5) for both
    ("kl", [0.9 * np.log(1.8) + 0.1 * np.log(0.2),
            (0.9 * np.log(0.9 / 0.75) + 0.1 * np.log(0.4) + 0.1 * np.log(0.1 / 0.75) + 0.9 * np.log(3.6)) / 2,
            (0.0 + 0.1 * np.log(1 / 9) + 0.9 * np.log(9)) / 2]),
])
def test_batch_priority_on_hand_computed_logits(name, expected):
    got = batch_priority(name, BATCH_STUDENT, BATCH_TEACHERS, np.random.default_rng(0))
    assert np.allclose(got, expected, atol=1e-9)


def test_batch_priority_random_and_errors():
    got = batch_priority("random", BATCH_STUDENT, None, np.random.default_rng(5))
    assert np.array_equal(got, np.random.default_rng(5).random(3))
    with pytest.raises(SelectKDError, match="in-batch --criterion must be one of entropy, margin"):
        batch_priority("coverage", BATCH_STUDENT, None, np.random.default_rng(0))
    with pytest.raises(SelectKDError, match="give --teacher"):
        batch_priority("kl", BATCH_STUDENT, None, np.random.default_rng(0))


# -- the saved record --------------------------------------------------------------------------------

PROVENANCE = {"strategy": "entropy", "cache": {"student": "a" * 24, "teachers": []},
              "data": {"data": "d.csv", "split": "train", "text_field": "text", "label_field": "label",
                       "fingerprint": "f"}}


def make_selection(name="s1", uids=(5, 3, 9)) -> Selection:
    n = len(uids)
    return Selection(name, np.array(uids), np.linspace(0.9, 0.1, n), np.arange(n), dict(PROVENANCE))


def test_save_and_load_selection_round_trip(tmp_path):
    path = save_selection(tmp_path, make_selection())
    assert path == tmp_path / "selections" / "s1"
    assert sorted(p.name for p in path.iterdir()) == ["provenance.json", "selection.arrow"]
    back = load_selection(tmp_path, "s1")
    assert back.uids.tolist() == [5, 3, 9] and back.ranks.tolist() == [0, 1, 2]
    digest = file_sha256(path / "selection.arrow")
    assert back.provenance == {**PROVENANCE, "files": {"selection.arrow": digest}}
    assert not [p for p in (tmp_path / "selections").iterdir() if p.name.startswith(".")]  # no temp, no lock
    with pytest.raises(SelectKDError, match="exists.*--overwrite"):
        save_selection(tmp_path, make_selection())
    save_selection(tmp_path, make_selection(uids=(1,)), overwrite=True)
    assert load_selection(tmp_path, "s1").uids.tolist() == [1]
    with pytest.raises(SelectKDError, match="no selection 'nope'.*have: s1"):
        load_selection(tmp_path, "nope")


@pytest.mark.parametrize("name", ["a/b", "..", "../x", "/abs", "a\\b", ".hidden", ""])
def test_selection_names_with_paths_are_refused(tmp_path, name):
    with pytest.raises(SelectKDError, match="plain folder name"):
        save_selection(tmp_path, make_selection(name))
    assert not (tmp_path / "selections").exists() or not list((tmp_path / "selections").iterdir())


def fake_entry(store: Store, kind: str, key: str, inputs: dict, table: pa.Table, extra: dict | None = None,
               teachers: list[str] | None = None, embedding: str | None = None):
    entry = store.entry(kind, key)
    writer = EntryWriter(entry, inputs, {"teachers": teachers or [], "part_rows": len(table),
                                         **({"embedding": embedding} if embedding else {})})
    writer.write_table(part_name(0), table)
    for name, t in (extra or {}).items():
        writer.write_table(name, t)
    writer.finish()
    return entry


def test_teacher_and_student_from_other_data_are_refused(tmp_path):
    store = Store(tmp_path)
    uids = pa.array(np.arange(4, dtype=np.int64))
    teacher = fake_entry(store, "teacher", "t" * 24, {"data": "aaa", "split": "train"},
                         pa.table({"uid": uids, "logits": fixed_list(np.zeros((4, 2), np.float32))}))
    other = fake_entry(store, "teacher", "o" * 24, {"data": "bbb", "split": "train"},
                       pa.table({"uid": uids, "logits": fixed_list(np.zeros((4, 2), np.float32))}))
    dev = fake_entry(store, "teacher", "d" * 24, {"data": "aaa", "split": "dev"},
                     pa.table({"uid": uids, "logits": fixed_list(np.zeros((4, 2), np.float32))}))
    zeros = pa.array(np.zeros(4, np.float32))
    scores = pa.table({"uid": uids, "label": pa.array(np.zeros(4, np.int64)), "entropy": zeros, "margin": zeros,
                       "least_confidence": zeros})
    embedding = fake_entry(store, "embedding", "e" * 24, {"data": "aaa", "split": "train"},
                           pa.table({"uid": uids, "embedding": fixed_list(np.eye(4, dtype=np.float32))}))
    student = fake_entry(store, "student", "s" * 24, {"data": "aaa", "split": "train"},
                         pa.table({"uid": uids}), {"scores.arrow": scores}, teachers=[teacher.key],
                         embedding=embedding.key)
    assert load_pool(student, [teacher], embeddings=True).teacher_logits.shape == (1, 4, 2)
    for bad in (other, dev):
        with pytest.raises(SelectKDError, match="other data or split.*same --data and --split"):
            load_pool(student, [bad])


# -- end to end on the tiny models --------------------------------------------------------------------

@pytest.fixture(scope="module")
def scored(tiny, tmp_path_factory):
    cache = tmp_path_factory.mktemp("select-cache")
    result = selectkd.score(DataSpec(str(tiny["csv"])), ScoreSpec((str(tiny["teacher"]),), str(tiny["student"])),
                            cache_dir=cache, progress=False)
    return {"cache": cache, "teacher_key": result.teachers[0].key, "student_key": result.student.key,
            "embedding_key": result.embedding.key, **tiny}


def run_select(scored, *, teachers=None, student="", name=None, cache_dir=None, overwrite=False, no_compute=False,
               **selecting):
    scoring = ScoreSpec([str(scored["teacher"])] if teachers is None else teachers,
                        str(scored["student"]) if student == "" else student)
    return select(DataSpec(str(scored["csv"])), scoring, SelectSpec(**selecting), name=name,
                  cache_dir=cache_dir or scored["cache"], overwrite=overwrite, no_compute=no_compute, progress=False)


def test_select_end_to_end_records_the_cache_keys(scored):
    sel = run_select(scored, budget=30, clusters=5, name="e2e", seed=1, strategy="coverage")
    assert len(sel) == 30 and len(set(sel.uids.tolist())) == 30
    prov = json.loads((scored["cache"] / "selections" / "e2e" / "provenance.json").read_text())
    assert prov["cache"] == {"student": scored["student_key"], "teachers": [scored["teacher_key"]],
                             "embedding": scored["embedding_key"]}
    assert prov["strategy"] == "coverage" and prov["parameters"]["criterion"] == "entropy"
    assert prov["parameters"]["clusters"] == 5 and prov["seed"] == 1
    assert prov["data"]["split"] == "train" and len(prov["data"]["fingerprint"]) == 24
    assert prov["selectkd_version"] == selectkd.__version__ and prov["created"]
    back = load_selection(scored["cache"], "e2e")
    assert back.uids.tolist() == sel.uids.tolist() and np.allclose(back.scores, sel.scores)

    info = summary(sel)
    assert info["pool_rows"] == 300 and info["subset_rows"] == 30
    assert info["clusters"] == {"total": 5, "covered": 5}
    assert sum(c["subset"] for c in info["classes"]) == 30
    assert [c["label"] for c in info["classes"]] == ["negative", "positive"]
    assert info["score"]["subset"]["max"] <= info["score"]["pool"]["max"]

    with pytest.raises(SelectKDError, match="exists"):
        run_select(scored, budget=30, clusters=5, name="e2e")
    assert len(run_select(scored, budget=0.5, strategy="kl", name="e2e", overwrite=True)) == 150


@pytest.mark.parametrize("strategy,extra", [
    ("entropy", {}), ("margin", {"per_class": True}), ("kl", {}), ("teacher_entropy", {"sample": True}),
    ("ccs", {}), ("confident_uncertain", {}), ("uncertainty_sampling", {}), ("coverage", {"clusters": 4}),
    ("least_confidence", {"drop_disagreement": True, "disagreement_threshold": 0.6}), ("entropy", {"dedup": 0.2}),
])
def test_the_cache_read_in_parts_picks_what_the_whole_pool_picks(scored, strategy, extra):
    from selectkd.selection.choose import choose_parts
    from selectkd.selection.pool import CacheParts

    store = Store(scored["cache"])
    student, teacher = store.entry("student", scored["student_key"]), store.entry("teacher", scored["teacher_key"])
    embeddings, dedup = strategy == "coverage", "dedup" in extra
    whole = choose(load_pool(student, [teacher], embeddings=embeddings or dedup), strategy, 0.2, seed=3, **extra)
    parts = CacheParts(student, [teacher], embeddings=embeddings, part_rows=7, dedup=dedup)  # 300 rows: 43 parts
    streamed = choose_parts(parts, strategy, 0.2, seed=3, **extra)
    assert streamed.indices.tolist() == whole.indices.tolist()
    assert streamed.uids is None or streamed.uids.tolist() == load_pool(student, []).uids.tolist()
    assert np.array_equal(streamed.eligible, whole.eligible) and streamed.dropped == whole.dropped
    assert not dedup or 0 < whole.dropped["near_duplicates"] < 240  # some rows, not all: a real test of it


@pytest.mark.parametrize("strata_count", [3, 40])
def test_top_per_stratum_matches_a_stable_sort_with_ties(strata_count):
    from selectkd.selection.choose import _top_per_stratum

    rng = np.random.default_rng(strata_count)
    priority = rng.integers(0, 5, 2000).astype(np.float32)  # many ties: the earlier row must win each
    strata = rng.integers(0, strata_count, 2000).astype(np.int32)
    eligible = rng.random(2000) > 0.2
    quotas = np.minimum(rng.integers(0, 30, strata_count), np.bincount(strata[eligible], minlength=strata_count))
    order = np.argsort(-priority, kind="stable")
    want = sorted(int(i) for s in range(strata_count)
                  for i in [j for j in order if strata[j] == s and eligible[j]][:quotas[s]])
    assert _top_per_stratum(priority, strata, eligible, quotas).tolist() == want


def test_summary_counts_rows_without_a_gold_label_apart():
    from selectkd.selection.saved import PoolStats

    labels = np.array([0, 1, -1, 1, -1, 0])
    pool = Pool(uids=np.arange(6), labels=labels, entropy=np.arange(6, dtype=np.float32),
                margin=np.zeros(6), least_confidence=np.zeros(6))
    choice = choose(pool, "entropy", 3)  # rows 5, 4, 3
    stats = PoolStats(None, labels, choice.ranking.score, choice.eligible, label_names=["neg", "pos"],
                      positions=choice.indices)
    sel = Selection("s", choice.indices, choice.ranking.score[choice.indices], np.arange(3), {}, stats)
    rows = {c["label"]: (c["pool"], c["subset"]) for c in summary(sel)["classes"]}
    assert rows == {"neg": (2, 1), "pos": (2, 1), "(no label)": (2, 1)}


def test_the_part_reader_crosses_batches_and_files_in_row_order(tmp_path):
    from selectkd.selection.pool import _Cursor

    paths, at = [], 0
    for i, sizes in enumerate([[5, 3], [4], [1, 7]]):  # files of uneven record batches
        batches = []
        for size in sizes:
            rows = np.arange(at, at + size)
            batches.append(pa.record_batch({"uid": pa.array(rows), "logits": fixed_list(np.stack([rows, -rows], 1))}))
            at += size
        paths.append(tmp_path / f"f{i}.arrow")
        with pa.OSFile(str(paths[-1]), "wb") as sink, pa.ipc.new_file(sink, batches[0].schema) as writer:
            for b in batches:
                writer.write_batch(b)
    cursor = _Cursor(paths, ["uid", "logits"])
    got = [cursor.take(6) for _ in range(3)] + [cursor.take(2)]
    assert np.concatenate([g["uid"] for g in got]).tolist() == list(range(20))
    assert np.concatenate([g["logits"] for g in got])[:, 1].tolist() == [-i for i in range(20)]
    with pytest.raises(SelectKDError, match="fewer rows"):
        cursor.take(1)


def test_entries_in_another_row_order_are_joined_whole_by_uid(tmp_path):
    from selectkd.selection.choose import choose_parts
    from selectkd.selection.pool import CacheParts, Misaligned
    from selectkd.selection.run import choose_from_cache

    store = Store(tmp_path)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(40, 3)).astype(np.float32)
    order = rng.permutation(40)  # the teacher's parts hold the rows shuffled
    teacher = fake_entry(store, "teacher", "t" * 24, {"data": "aaa", "split": "train"},
                         pa.table({"uid": pa.array(order.astype(np.int64)), "logits": fixed_list(logits[order])}))
    uids = pa.array(np.arange(40, dtype=np.int64))
    u = rng.random(40).astype(np.float32)
    scores = pa.table({"uid": uids, "label": pa.array(rng.integers(0, 3, 40)), "entropy": u, "margin": u,
                       "least_confidence": u})
    student = fake_entry(store, "student", "s" * 24, {"data": "aaa", "split": "train"}, pa.table({"uid": uids}),
                         {"scores.arrow": scores}, teachers=[teacher.key])
    with pytest.raises(Misaligned):
        choose_parts(CacheParts(student, [teacher], part_rows=8), "teacher_entropy", 5)
    got = choose_from_cache(student, [teacher], SelectSpec(strategy="teacher_entropy", budget=5))
    want = choose(load_pool(student, [teacher]), "teacher_entropy", 5)
    assert got.indices.tolist() == want.indices.tolist()


def test_select_no_compute_finds_the_same_keys_or_says_to_score(scored, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("no model may run with no_compute")

    for module, names in (("teacher", ["load_classifier"]), ("student", ["load_classifier", "load_encoder"])):
        for name in names:
            monkeypatch.setattr(importlib.import_module(f"selectkd.scoring.{module}"), name, boom)
    sel = run_select(scored, strategy="teacher_entropy", budget=10, no_compute=True, name="nc", per_class=True)
    assert sel.provenance["cache"]["student"] == scored["student_key"]
    empty = tmp_path / "empty"
    with pytest.raises(SelectKDError, match="selectkd score"):
        run_select(scored, budget=10, no_compute=True, cache_dir=empty)
    assert not (empty / "selections").exists()


def test_select_refuses_bad_arguments_before_any_work(scored, tmp_path):
    cache = tmp_path / "untouched"
    for kw, message in [
        ({"strategy": "nope"}, "unknown strategy"),
        ({"budget": 0}, "must be > 0"),
        ({"budget": 2.5}, "more than 1 as a fraction"),
        ({"name": "../escape"}, "plain folder name"),
        ({"strategy": "kl", "teachers": []}, "needs teacher logits"),
        ({"drop_disagreement": True, "teachers": []}, "--drop-disagreement"),
        ({"student": None}, "--student"),
        ({"criterion": "coverage", "strategy": "coverage"}, "unknown criterion"),
    ]:
        with pytest.raises(SelectKDError, match=message):
            run_select(scored, cache_dir=cache, **kw)
    assert not cache.exists()
    with pytest.raises(SelectKDError, match="more than the pool's 300"):
        run_select(scored, budget=301)
    with pytest.raises(SelectKDError, match="--clusters 400"):
        run_select(scored, clusters=400, strategy="coverage")


def test_plot_histogram_writes_a_png(scored, tmp_path):
    pytest.importorskip("matplotlib")
    sel = run_select(scored, budget=0.2, strategy="margin", name="plotted", sample=True)
    path = plot_histogram(sel, tmp_path / "h.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = path.read_bytes()
    plot_histogram(sel, path, bins=7)  # a PNG is replaced by the new one
    assert path.read_bytes() != first and sorted(p.name for p in tmp_path.iterdir()) == ["h.png"]
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    with pytest.raises(SelectKDError, match="notes.png is a file selectkd did not make; choose another --plot"):
        plot_histogram(sel, notes)
    assert notes.read_text() == "not a picture"


def test_cli_select_list_and_summary(scored, tmp_path):
    import typer
    from typer.testing import CliRunner

    from selectkd.cli.select_cmds import register

    app = typer.Typer()
    register(app)
    runner = CliRunner()
    listed = runner.invoke(app, ["select", "--list"])
    assert listed.exit_code == 0
    assert [line.split()[0] for line in listed.stdout.strip().splitlines()] == list(STRATEGIES)
    config = tmp_path / "sel.toml"
    config.write_text(f'data = "{scored["csv"]}"\nteacher = ["{scored["teacher"]}"]\nbudget = "40"\nclusters = 4\nstrategy = "coverage"\n')
    res = runner.invoke(app, ["select", "--config", str(config), "--student", str(scored["student"]),
                              "--name", "cli", "--cache-dir", str(scored["cache"]), "--no-compute",
                              "--plot", str(tmp_path / "p.png")])
    assert res.exit_code == 0, res.output
    assert "clusters covered" in res.stdout and "saved selection 'cli' (40 rows)" in res.stdout
    assert (tmp_path / "p.png").exists()
    assert load_selection(scored["cache"], "cli").provenance["parameters"]["clusters"] == 4


def test_cli_select_sample_temperature_and_its_old_name(scored):
    import typer
    from typer.testing import CliRunner

    from selectkd.cli.select_cmds import register
    from selectkd.errors import SelectKDWarning

    app = typer.Typer()
    register(app)
    base = ["select", "--data", str(scored["csv"]), "--teacher", str(scored["teacher"]), "--student",
            str(scored["student"]), "--cache-dir", str(scored["cache"]), "--no-compute", "--budget", "20", "--sample",
            "--overwrite", "--no-progress"]
    res = CliRunner().invoke(app, [*base, "--name", "t-new", "--sample-temperature", "0.5"])
    assert res.exit_code == 0, res.output
    assert load_selection(scored["cache"], "t-new").provenance["parameters"]["temperature"] == 0.5
    with pytest.warns(SelectKDWarning, match="--sample-temperature"):
        res = CliRunner().invoke(app, [*base, "--name", "t-old", "--temperature", "0.5"])
    assert res.exit_code == 0, res.output
    assert load_selection(scored["cache"], "t-old").uids.tolist() == load_selection(scored["cache"], "t-new").uids.tolist()
    assert "--temperature" not in CliRunner().invoke(app, ["select", "--help"]).output.replace("--sample-temperature", "")
