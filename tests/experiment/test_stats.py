"""The statistics against closed forms and published values."""

from __future__ import annotations

import math

import pytest

from drills.experiment.metrics import ArmTotals
from drills.experiment.stats import (
    Estimate,
    Sequential,
    arm_estimate,
    chi2_sf,
    msprt_update,
    relative_lift,
    sample_size_per_arm,
    srm_check,
    wilson,
)


@pytest.mark.parametrize(
    ("x", "df", "p"),
    [
        # Critical values from any chi-square table.
        (3.841458820694124, 1, 0.05),
        (10.827566170662733, 1, 0.001),
        (5.991464547107979, 2, 0.05),
        (7.814727903251178, 3, 0.05),
        (18.307038053275146, 10, 0.05),
        (0.0, 3, 1.0),
    ],
)
def test_chi2_sf_table_values(x, df, p):
    assert chi2_sf(x, df) == pytest.approx(p, rel=1e-9)


@pytest.mark.parametrize("x", [0.01, 0.5, 1, 2.5, 7, 30, 120])
def test_chi2_sf_closed_forms(x):
    # df 1: erfc(sqrt(x/2)); df 2: exp(-x/2); df 4: exp(-x/2) (1 + x/2). Both branches (series, fraction) run.
    assert chi2_sf(x, 1) == pytest.approx(math.erfc(math.sqrt(x / 2)), rel=1e-10)
    assert chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-10)
    assert chi2_sf(x, 4) == pytest.approx(math.exp(-x / 2) * (1 + x / 2), rel=1e-10)


def test_wilson_published_value():
    # Newcombe (1998), Statistics in Medicine 17:857, Table I: 81/263 -> Wilson 95% interval 0.2553 to 0.3662.
    lo, hi = wilson(81, 263)
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)
    assert wilson(0, 10)[0] == pytest.approx(0.0, abs=1e-12)  # stays inside [0, 1] where Wald does not


def test_arm_estimates():
    t = ArmTotals(users=1000, impressions=1000, clicked_impressions=100, ndcg10_sum=60.0, ndcg10_sumsq=40.0)
    ctr = arm_estimate(t, "ctr")
    assert (ctr.value, ctr.n, ctr.variance) == (0.1, 1000, pytest.approx(0.1 * 0.9 / 1000))
    assert (ctr.lo, ctr.hi) == wilson(100, 1000)
    nd = arm_estimate(t, "ndcg10")
    var = (40.0 - 100 * 0.6**2) / 99 / 100  # sample variance of the 100 values, over n
    assert (nd.value, nd.variance, nd.n) == (pytest.approx(0.6), pytest.approx(var), 100)
    assert nd.hi - nd.value == pytest.approx(1.959964 * math.sqrt(var), rel=1e-6)
    assert math.isnan(arm_estimate(ArmTotals(), "ctr").value)


def test_relative_lift_delta_method():
    control = Estimate(0.10, 0, 0, 0.1 * 0.9 / 10_000, 10_000)
    candidate = Estimate(0.11, 0, 0, 0.11 * 0.89 / 10_000, 10_000)
    lift = relative_lift(control, candidate)
    var = 1.1**2 * (candidate.variance / 0.11**2 + control.variance / 0.10**2)
    assert lift.value == pytest.approx(0.10)
    assert lift.variance == pytest.approx(var)
    assert (lift.lo, lift.hi) == pytest.approx((0.10 - 1.959964 * math.sqrt(var), 0.10 + 1.959964 * math.sqrt(var)))
    assert math.isnan(relative_lift(Estimate(0.0, 0, 0, 0, 10), candidate).value)


def test_srm():
    split = {"control": 0.5, "candidate": 0.5}
    broken = srm_check({"control": 55_000, "candidate": 45_000}, split)
    assert broken.chi2 == pytest.approx(1000.0) and not broken.ok
    assert srm_check({"control": 50_210, "candidate": 49_790}, split).ok  # chi-square 1.76, p 0.18
    # The holdout is a cell: too few holdout users is a mismatch too.
    held = {"holdout": 0.1, "control": 0.45, "candidate": 0.45}
    assert srm_check({"holdout": 10_000, "control": 45_000, "candidate": 45_000}, held).ok
    assert not srm_check({"holdout": 9_000, "control": 45_500, "candidate": 45_500}, held).ok
    assert srm_check({}, split).ok


def test_msprt_matches_johari_equal_sample_form():
    # Johari et al. (2017), two-sample normal mSPRT with n per arm and variance sigma^2 per observation:
    # Lambda_n = sqrt(2 s2 / (2 s2 + n tau2)) exp(n^2 tau2 d^2 / (4 s2 (2 s2 + n tau2)))
    s2, tau2, n, d, alpha = 0.09, 1e-4, 20_000, 0.006, 0.05
    want = math.sqrt(2 * s2 / (2 * s2 + n * tau2)) * math.exp(n * n * tau2 * d * d / (4 * s2 * (2 * s2 + n * tau2)))
    state = msprt_update(Sequential(), d, 2 * s2 / n, tau2, alpha)
    assert state.p_value == pytest.approx(1 / want)
    assert state.looks == 1


def test_msprt_interval_agrees_with_the_p_value():
    v, tau2, alpha = 1e-5, 1e-4, 0.05
    for d in (0.0, 0.005, 0.01, 0.0125, 0.02, -0.02):
        s = msprt_update(Sequential(), d, v, tau2, alpha)
        excludes_zero = s.lo > 0 or s.hi < 0
        assert excludes_zero == (s.p_value <= alpha), d
        assert s.lo <= d <= s.hi
    assert msprt_update(Sequential(), 0.0, v, tau2, alpha).p_value == 1.0
    # A look that cannot be judged (no variance yet) keeps the state.
    assert msprt_update(Sequential(0.3, -1, 1, 2), 0.1, 0.0, tau2, alpha) == Sequential(0.3, -1, 1, 3)


def test_msprt_never_goes_back_up():
    s = msprt_update(Sequential(), 0.02, 1e-5, 1e-4, 0.05)
    t = msprt_update(s, 0.0, 0.5e-5, 1e-4, 0.05)
    assert t.p_value == s.p_value and t.lo >= s.lo and t.hi <= s.hi


def test_sample_size_textbook_value():
    # Two-proportion z-test, two-sided, pooled variance under H0 (Fleiss, Levin & Paik, Statistical Methods for
    # Rates and Proportions, 3rd ed., ch. 4, without continuity correction):
    #   p1 = 0.10, p2 = 0.11, pbar = 0.105, z_.975 = 1.959964, z_.80 = 0.841621
    #   n = (1.959964 sqrt(2 * .105 * .895) + 0.841621 sqrt(.1 * .9 + .11 * .89))^2 / .01^2
    #     = (0.849707 + 0.364821)^2 / 1e-4 = 14750.8  ->  14,751 users per arm
    by_hand = (1.959964 * math.sqrt(2 * 0.105 * 0.895) + 0.841621 * math.sqrt(0.09 + 0.11 * 0.89)) ** 2 / 0.01**2
    assert by_hand == pytest.approx(14_750.8, abs=0.1)
    assert sample_size_per_arm(0.10, 0.10, alpha=0.05, power=0.8) == 14_751
    assert sample_size_per_arm(0.10, 0.10, alpha=0.05, power=0.9) > 14_751
    assert sample_size_per_arm(0.10, 0.20) < 14_751 / 3.5  # four times fewer for twice the effect, roughly
    with pytest.raises(ValueError):
        sample_size_per_arm(0.6, 1.0)
