"""Both teacher signal sources, cached and live, give the same numbers for the same rows."""

import numpy as np
import pytest
import torch

from selectkd.cache.store import Store
from selectkd.data.rows import DataSpec
from selectkd.distillation.signals import Alignment, CachedSignal, LiveSignal, _score
from selectkd.errors import CacheError
from selectkd.models import load_classifier, load_tokenizer, resolve
from selectkd.scoring.tokens import tokenize
from selectkd.specs import ScoreSpec


@pytest.fixture(scope="module")
def sources(tiny, tmp_path_factory):
    cache = tmp_path_factory.mktemp("signals-cache")
    scored = _score(DataSpec(str(tiny["csv"])), ScoreSpec(teachers=(str(tiny["teacher"]),), cls_states=True),
                    str(cache), progress=False)
    rows = scored.rows
    cached = CachedSignal(Store(cache).entry("teacher", scored.teachers[0].key), str(tiny["teacher"]), rows.uids)
    ref = resolve(str(tiny["teacher"]), Store(cache).root)
    tok, _ = load_tokenizer(ref)
    model, _ = load_classifier(ref, rows.num_labels)
    ids = tokenize(tok, list(rows.dataset["text"]), None, 128)
    return {"rows": rows, "cache": cache, "cached": cached, "live": LiveSignal(model, tok.pad_token_id, ids, "cpu"),
            "live_cached": LiveSignal(model, tok.pad_token_id, ids, "cpu", cached)}


ROWS = np.array([0, 7, 3, 120, 299])


def test_cached_and_live_logits_agree(sources):
    cached, live = sources["cached"], sources["live"]
    assert cached.logits(ROWS).shape == (5, 2)
    np.testing.assert_allclose(live.logits(ROWS), cached.logits(ROWS), atol=1e-4)
    assert np.array_equal(sources["live_cached"].logits(ROWS), cached.logits(ROWS))  # KD reads the cache


def test_cached_and_live_cls_states_agree(sources):
    cached, live = sources["cached"], sources["live"]
    assert (cached.num_layers, cached.hidden_size) == (live.num_layers, live.hidden_size) == (2, 32)
    layers = [0, 1, 2]
    a, b = cached.cls_states(ROWS, layers), live.cls_states(ROWS, layers)
    assert a.shape == b.shape == (5, 3, 32) and a.dtype == b.dtype == torch.float32
    torch.testing.assert_close(b, a, atol=1e-2, rtol=1e-2)  # the cache keeps float16


def test_what_each_source_can_do(sources):
    cached, live = sources["cached"], sources["live_cached"]
    assert (cached.token_level, cached.forwards_per_row) == (False, 0)
    assert (live.token_level, live.forwards_per_row) == (True, 1)
    assert cached.key == live.key and cached.num_parameters == live.num_parameters > 0
    targets = live.alignment_targets(ROWS, [0, 2], "cpu")
    assert targets.shape[:2] == (5, 2) and targets.dim() == 4  # every token of each row


def test_alignment_pairs_cls_or_token_states(sources):
    from transformers import BertConfig

    student = BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    hidden = tuple(torch.randn(5, 6, 16) for _ in range(2))
    mask = torch.ones(5, 6, dtype=torch.long)
    s, t, m = Alignment(sources["cached"], student, "cpu").pair(hidden, mask, ROWS)
    assert s.shape == t.shape == (5, 2, 32) and m is None  # [CLS] of embeddings and layer 2, projected to 32
    live = Alignment(sources["live_cached"], student, "cpu")
    assert live.layers == [0, 2] and live.proj is not None
    ids = sources["live"].ids
    width = max(len(ids[i]) for i in ROWS)
    hidden = tuple(torch.randn(5, width, 16) for _ in range(2))
    s, t, m = live.pair(hidden, torch.ones(5, width, dtype=torch.long), ROWS)
    assert s.shape == t.shape == (5, 2, width, 32) and m is not None


def test_a_cache_of_other_rows_is_refused(sources):
    cached = sources["cached"]
    entry = Store(sources["cache"]).entry("teacher", cached.key)
    with pytest.raises(CacheError, match="other rows"):
        CachedSignal(entry, cached.name, sources["rows"].uids[::-1].copy())
