"""Metrics and training: AUC is right, a real model learns, a bad-labels model does not."""

from __future__ import annotations

import itertools

import numpy as np

from model_build.build import BuildResult
from model_build.train import auc, ndcg_at_k


def test_auc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    s = rng.integers(0, 6, 60).astype(float)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0) for p, n in itertools.product(pos, neg)]
    assert abs(auc(y, s) - np.mean(pairs)) < 1e-12
    assert auc(np.array([0, 1]), np.array([0.1, 0.9])) == 1.0


def test_ndcg_perfect_and_reversed():
    labels = np.array([1, 0, 0, 1, 0, 0], dtype=float)
    req = np.array([0, 0, 0, 1, 1, 1])
    assert ndcg_at_k(labels, np.array([3, 2, 1, 3, 2, 1.0]), req) == 1.0
    assert ndcg_at_k(labels, np.array([1, 2, 3, 1, 2, 3.0]), req) < 0.6


def test_the_tiny_session_model_learned_something(built: BuildResult):
    m = built.manifest.metrics
    assert m.validation_auc > 0.6, m
    assert m.oracle_auc > m.validation_auc
