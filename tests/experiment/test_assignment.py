"""Assignment: a pure function of (experiment, user id), so every region puts a user in the same arm."""

from __future__ import annotations

import inspect
from collections import Counter

import pytest

from drills.experiment.assignment import BUCKETS, arm_for_bucket, assign, bucket
from drills.experiment.stats import srm_check
from infra.experiments import expected_split
from tests.experiment.support import arms, experiment

USERS = [f"user-{i}" for i in range(100_000)]


def test_the_hash_is_pinned():
    # sha256("ranker-ab:user-42"), first 8 bytes big-endian, mod 10000: any client library must reproduce it.
    assert bucket("ranker-ab", "user-42") == 4535
    assert bucket("ranker-ab", "user-43") == 6909
    assert bucket("other", "user-42") == 3811


def test_no_region_or_clock_goes_in():
    assert list(inspect.signature(assign).parameters) == ["experiment", "user_id"]
    assert list(inspect.signature(bucket).parameters) == ["salt", "user_id"]
    e = experiment()
    assert [assign(e, u) for u in USERS[:1000]] == [assign(experiment(), u) for u in USERS[:1000]]


def test_split_follows_the_weights_with_the_holdout_carved_first():
    e = experiment(holdout=10, arms=arms(50, 30, 20))
    counts = Counter(assign(e, u) for u in USERS)
    want = expected_split(e)
    assert want == pytest.approx({"holdout": 0.1, "control": 0.45, "candidate": 0.27, "candidate-2": 0.18})
    for cell, fraction in want.items():
        assert counts[cell] / len(USERS) == pytest.approx(fraction, abs=0.006), cell
    assert srm_check(counts, want).ok


def test_bucket_bounds_are_exact():
    e = experiment(holdout=10, arms=arms(50, 30, 20))
    cells = Counter(arm_for_bucket(e, b) for b in range(BUCKETS))
    assert cells == {"holdout": 1000, "control": 4500, "candidate": 2700, "candidate-2": 1800}
    with pytest.raises(ValueError, match="outside"):
        arm_for_bucket(e, BUCKETS)


def test_a_new_salt_reshuffles():
    before, after = experiment(), experiment(salt="ranker-ab-rerun")
    same = sum(assign(before, u) == assign(after, u) for u in USERS[:20_000]) / 20_000
    assert same == pytest.approx(0.5, abs=0.02)  # independent 50/50 draws agree half the time
