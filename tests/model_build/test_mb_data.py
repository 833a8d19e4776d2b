"""The data generator: deterministic per seed, random access by row, a signal a model can learn."""

from __future__ import annotations

import numpy as np

from model_build import data
from model_build.train import auc


def test_same_seed_same_rows_different_seed_different_rows():
    a = data.make_split(7, "train", 300)
    b = data.make_split(7, "train", 300)
    c = data.make_split(8, "train", 300)
    for f in ("sparse_ids", "dense", "labels", "logit", "request"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    assert not np.array_equal(a.sparse_ids, c.sparse_ids)
    assert not np.array_equal(a.labels, c.labels)


def test_splits_are_independent_streams_and_prefix_stable():
    # Growing the training set never moves the golden set, and a longer split starts with the shorter one.
    small, big = data.make_split(7, "train", 100), data.make_split(7, "train", 600)
    assert np.array_equal(small.sparse_ids, big.sparse_ids[: len(small)])
    assert not np.array_equal(data.make_split(7, "validation", 100).sparse_ids, small.sparse_ids)


def test_golden_batch_pages_through_the_golden_split():
    whole = data.rows(7, "golden", 0, 20000)
    page = data.golden_batch(7, 300, start=9000)  # crosses a chunk boundary (8192 rows per chunk)
    assert np.array_equal(page["sparse_ids"], whole.sparse_ids[9000:9300])
    assert np.array_equal(page["dense"], whole.dense[9000:9300])
    assert page["sparse_ids"].dtype == np.int32 and page["dense"].dtype == np.float32
    assert page["sparse_ids"].shape == (300, len(data.FEATURES["sparse"]))
    assert page["dense"].shape == (300, len(data.FEATURES["dense"]))
    assert page["sparse_ids"].flags["C_CONTIGUOUS"]


def test_ids_within_vocabulary_and_features_finite():
    s = data.make_split(3, "train", 512)
    cards = np.array(data.FEATURES["cardinalities"])
    assert (s.sparse_ids >= 0).all() and (s.sparse_ids < cards).all()
    assert np.isfinite(s.dense).all()
    assert set(np.unique(s.labels)) <= {0.0, 1.0}
    # requests are contiguous blocks of CANDIDATES rows sharing user, query, device and hour
    blocks = s.sparse_ids.reshape(-1, data.CANDIDATES, len(data.SPARSE))
    for col in (0, 4, 5, 6):
        assert (blocks[:, :, col] == blocks[:, :1, col]).all()


def test_planted_signal_is_there_and_learnable_features_carry_it():
    s = data.make_split(data.DEFAULT_SEED, "validation", 500)
    assert 0.15 < s.labels.mean() < 0.6
    assert auc(s.labels, s.logit) > 0.75  # the oracle: the signal is strong enough to learn
    w = data.world(data.DEFAULT_SEED)
    match = w.item_cat[s.sparse_ids[:, 1]] == w.query_cats[s.sparse_ids[:, 4], 0]
    assert s.labels[match].mean() > s.labels[~match].mean() + 0.2  # query x category
    assert auc(s.labels, s.dense[:, 4]) > 0.6  # the noisy text-match feature is informative
