"""The decision under continuous monitoring, on simulated users (no servers): A/A false wins within alpha, real
effects found with the right sign, guardrails stop early, broken splits are flagged."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest

from drills.experiment.decision import decide
from drills.experiment.metrics import ArmTotals
from drills.experiment.simulate import ArmTruth, simulate, true_ndcg10
from tests.experiment.support import arms, experiment

BASE = ArmTruth(ctr=0.10, click_decay=0.3)
GUARDED = {"minimum_detectable_effect": 0.1, "guardrails": [{"metric": "ndcg10", "max_relative_drop": 0.05}]}


def test_aa_false_wins_stay_within_alpha():
    e = experiment(**GUARDED)
    rng = np.random.default_rng(20261102)
    runs = [simulate(e, {"control": BASE, "candidate": BASE}, 40_000, 1_000, rng) for _ in range(200)]
    verdicts = Counter(r.decision.verdict for r in runs)
    false_wins = sum(v.startswith("ship") for v in verdicts.elements()) / 200
    # Binomial tolerance on 200 runs: alpha + 3 standard errors. This seed: no win, 2 guardrail stops in 200;
    # 2000 runs (seed 99) gave 9 wins (0.45%): mSPRT is conservative at a finite horizon.
    assert false_wins <= e.alpha + 3 * math.sqrt(e.alpha * (1 - e.alpha) / 200), verdicts
    assert verdicts["keep control"] >= 180, verdicts  # most run to the end and keep control
    assert all(len(r.looks) <= 40 for r in runs)


def test_a_real_effect_is_found_with_the_right_sign():
    e = experiment(arms=arms(34, 33, 33), **GUARDED)
    truths = {"control": BASE, "candidate": BASE, "candidate-2": ArmTruth(ctr=0.11, click_decay=0.3)}
    r = simulate(e, truths, 150_000, 1_000, np.random.default_rng(7))
    assert r.decision.verdict == "ship candidate-2", r.decision.reasons
    assert r.stopped_early
    winner = next(c for c in r.decision.comparisons if c.arm == "candidate-2" and c.metric == "ctr")
    assert winner.lift.value > 0 and winner.sequential.lo > 0
    assert "ctr on candidate-2" in r.decision.reasons[0]


def test_a_worse_candidate_keeps_control_early():
    e = experiment(minimum_detectable_effect=0.1)
    r = simulate(e, {"control": BASE, "candidate": ArmTruth(ctr=0.09)}, 150_000, 1_000, np.random.default_rng(8))
    assert (r.decision.verdict, r.stopped_early) == ("keep control", True)
    assert r.decision.comparisons[0].lift.value < 0


def test_a_guardrail_breach_stops_before_the_end():
    e = experiment(**GUARDED)
    # Same CTR, clicks far down the ranking: NDCG@10 about 25% lower (a model trained on bad labels).
    bad = ArmTruth(ctr=0.10, click_decay=0.05)
    assert true_ndcg10(bad) < 0.8 * true_ndcg10(BASE)
    r = simulate(e, {"control": BASE, "candidate": bad}, 100_000, 1_000, np.random.default_rng(9))
    assert r.decision.verdict == "stop: guardrail ndcg10 on candidate", r.decision.reasons
    assert r.stopped_early and r.users < 20_000
    assert "beyond the tolerated drop of 5.0%" in r.decision.reasons[0]


def test_a_broken_split_is_flagged_and_a_correct_one_is_not():
    e = experiment(minimum_detectable_effect=0.1)
    truths = {"control": BASE, "candidate": BASE}
    broken = simulate(e, truths, 40_000, 1_000, np.random.default_rng(10), {"control": 0.55, "candidate": 0.45})
    assert broken.decision.verdict == "stop: sample ratio mismatch"
    assert not broken.decision.srm.ok and broken.users <= 10_000
    fine = simulate(e, truths, 40_000, 40_000, np.random.default_rng(11))  # one look at the end
    assert fine.decision.srm.ok and fine.decision.verdict == "keep control"


def test_holdout_users_are_counted_but_not_compared():
    e = experiment(holdout=10, minimum_detectable_effect=0.1)
    r = simulate(e, {"control": BASE, "candidate": BASE}, 20_000, 20_000, np.random.default_rng(12))
    assert r.decision.srm.ok
    assert r.totals["holdout"].users == pytest.approx(2_000, rel=0.1)
    assert {c.arm for c in r.decision.comparisons} == {"candidate"}


def test_the_sequential_p_value_never_increases_across_looks():
    e = experiment(**GUARDED)
    small = ArmTruth(ctr=0.104, click_decay=0.3)  # too small to conclude: many looks
    r = simulate(e, {"control": BASE, "candidate": small}, 60_000, 500, np.random.default_rng(13))
    assert len(r.looks) > 50
    for key in r.looks[-1].sequential:
        states = [look.sequential[key] for look in r.looks]
        p = [s.p_value for s in states]
        assert p == sorted(p, reverse=True), key
        assert all(a.lo <= b.lo and a.hi >= b.hi for a, b in itertools.pairwise(states)), key
        assert p[-1] < 1.0  # it did move


def test_decide_before_and_at_the_end():
    e = experiment()
    same = ArmTotals(users=1000, impressions=1000, clicks=100, clicked_impressions=100, ndcg10_sum=60, ndcg10_sumsq=40)
    totals = {"control": same, "candidate": same}
    during = decide(e, totals, datetime(2026, 11, 5, tzinfo=UTC))
    assert (during.verdict, during.final) == ("no difference yet", False)
    assert during.reasons[0].startswith("ctr on candidate: 0.1000 vs control 0.1000, lift +0.00%")
    after = decide(e, totals, e.end, during.sequential)
    assert (after.verdict, after.final) == ("keep control", True)
    assert after.reasons[0] == "the window ended without a winner"
