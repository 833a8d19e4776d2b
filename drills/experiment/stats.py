"""Statistics of an A/B experiment: intervals, lift, sample-ratio mismatch, an always-valid sequential test and
fixed-horizon sizing. Pure functions of counts and sums; no scipy (chi-square tail via the incomplete gamma).

Public API:
  arm_estimate(totals, metric, alpha) -> Estimate     one arm's metric with a (1 - alpha) interval
  relative_lift(control, candidate, alpha) -> Estimate  candidate / control - 1, delta-method interval
  srm_check(observed_users, expected_split) -> Srm    chi-square goodness of fit; flagged when p < 0.001
  Sequential, msprt_update(state, diff, variance, tau2, alpha)   mSPRT always-valid p-value and interval
  sample_size_per_arm(baseline, relative_mde, alpha, power) -> int   two-proportion z-test
  wilson(k, n, alpha), chi2_sf(x, df), z(p)           the building blocks

Definitions:
  ctr interval     Wilson score interval of clicked impressions out of impressions (Wilson 1927); the variance
                   of the estimate, for lift and the sequential test, is p(1 - p) / n.
  ndcg10 interval  mean of the per-impression NDCG@10 values (clicked impressions) +- z * s / sqrt(n).
  lift             r = m_c / m_0 - 1; Var(r) ~= (m_c / m_0)^2 (Var_c / m_c^2 + Var_0 / m_0^2) (delta method); the
                   interval holds at a fixed horizon, not under peeking: decisions use the sequential test.
  mSPRT            Johari, Koomen, Pekelis, Walsh (2017), "Peeking at A/B tests" / "Always valid inference".
                   With d the observed difference of means, V its variance (sum of the two arms' variances of
                   the mean) and a N(0, tau^2) mixing prior on the true difference theta:
                     Lambda(theta0) = sqrt(V / (V + tau^2)) * exp(tau^2 (d - theta0)^2 / (2 V (V + tau^2)))
                   p_n = min(p_{n-1}, 1 / Lambda(0)) is non-increasing and P(ever p_n <= alpha) <= alpha under
                   H0 at every stopping time; the always-valid interval is the running intersection of
                   {theta0 : Lambda(theta0) < 1 / alpha}, so once it excludes 0 it stays on one side.
                   V is plugged in from the data (normal approximation): valid as the arms grow.
  SRM              Pearson chi-square of the users per cell (holdout included) against the declared split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist

from drills.experiment.metrics import ArmTotals, Metric

SRM_P = 0.001  # the usual SRM threshold: an imbalance this unlikely is a bug, not chance
_EPS = 1e-15
_TINY = 1e-300


def z(p: float) -> float:
    """The standard normal quantile."""
    return NormalDist().inv_cdf(p)


# ---------------------------------------------------------------- chi-square tail
def _lower_series(a: float, x: float) -> float:
    # P(a, x) by its power series; converges fast for x < a + 1.
    term = total = 1.0 / a
    ap = a
    while abs(term) > abs(total) * _EPS:
        ap += 1
        term *= x / ap
        total += term
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _upper_fraction(a: float, x: float) -> float:
    # Q(a, x) by its continued fraction (modified Lentz); converges fast for x >= a + 1.
    b = x + 1 - a
    c = 1 / _TINY
    d = 1 / b
    h = d
    i = 0
    while True:
        i += 1
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = d if abs(d) > _TINY else _TINY
        c = b + an / c
        c = c if abs(c) > _TINY else _TINY
        d = 1 / d
        h *= d * c
        if abs(d * c - 1) < _EPS:
            return h * math.exp(-x + a * math.log(x) - math.lgamma(a))


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for X ~ chi-square(df): the regularized upper incomplete gamma Q(df / 2, x / 2)."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if x <= 0:
        return 1.0
    a, half = df / 2, x / 2
    return 1 - _lower_series(a, half) if half < a + 1 else _upper_fraction(a, half)


# ---------------------------------------------------------------- per-arm estimates
@dataclass(frozen=True)
class Estimate:
    value: float
    lo: float
    hi: float
    variance: float  # of the estimate
    n: int


_NONE = Estimate(math.nan, math.nan, math.nan, math.nan, 0)


def wilson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials."""
    q = z(1 - alpha / 2)
    p = k / n
    denom = 1 + q * q / n
    centre = (p + q * q / (2 * n)) / denom
    half = q / denom * math.sqrt(p * (1 - p) / n + q * q / (4 * n * n))
    return centre - half, centre + half


def arm_estimate(totals: ArmTotals, metric: Metric, alpha: float = 0.05) -> Estimate:
    if metric == "ctr":
        n = totals.impressions
        if n == 0:
            return _NONE
        p = totals.ctr
        lo, hi = wilson(totals.clicked_impressions, n, alpha)
        return Estimate(p, lo, hi, p * (1 - p) / n, n)
    n = totals.clicked_impressions
    if n < 2:
        return _NONE
    mean = totals.ndcg10
    var = max(totals.ndcg10_sumsq - n * mean * mean, 0.0) / (n - 1) / n
    half = z(1 - alpha / 2) * math.sqrt(var)
    return Estimate(mean, mean - half, mean + half, var, n)


def relative_lift(control: Estimate, candidate: Estimate, alpha: float = 0.05) -> Estimate:
    """candidate / control - 1 with a delta-method interval; NaN where control's value is 0 or unknown."""
    if not control.value or math.isnan(control.value) or math.isnan(candidate.value):
        return _NONE
    ratio = candidate.value / control.value
    rel_var_candidate = candidate.variance / candidate.value**2 if candidate.value else 0.0
    var = ratio**2 * (rel_var_candidate + control.variance / control.value**2)
    half = z(1 - alpha / 2) * math.sqrt(var)
    lift = ratio - 1
    return Estimate(lift, lift - half, lift + half, var, min(control.n, candidate.n))


# ---------------------------------------------------------------- sample-ratio mismatch
@dataclass(frozen=True)
class Srm:
    chi2: float
    df: int
    p_value: float
    observed: dict[str, int]
    expected: dict[str, float]  # expected users per cell at the observed total

    @property
    def ok(self) -> bool:
        return self.p_value >= SRM_P


def srm_check(observed_users: Mapping[str, int], expected_split: Mapping[str, float]) -> Srm:
    """Pearson chi-square goodness of fit of users per cell against the declared fractions (which sum to 1)."""
    observed = {cell: observed_users.get(cell, 0) for cell in expected_split}
    total = sum(observed.values())
    expected = {cell: total * f for cell, f in expected_split.items()}
    df = len(expected_split) - 1
    if total == 0:
        return Srm(0.0, df, 1.0, observed, expected)
    chi2 = sum((observed[c] - e) ** 2 / e for c, e in expected.items())
    return Srm(chi2, df, chi2_sf(chi2, df), observed, expected)


# ---------------------------------------------------------------- mSPRT
@dataclass(frozen=True)
class Sequential:
    """State of one always-valid comparison, carried from look to look."""

    p_value: float = 1.0
    lo: float = -math.inf  # always-valid (1 - alpha) interval of the difference candidate - control
    hi: float = math.inf
    looks: int = 0

    @property
    def better(self) -> bool:
        return self.hi >= self.lo > 0

    @property
    def worse(self) -> bool:
        return self.lo <= self.hi < 0


def msprt_update(state: Sequential, diff: float, variance: float, tau2: float, alpha: float) -> Sequential:
    """Fold one look (difference `diff` with variance `variance`) into the always-valid p-value and interval."""
    if not (variance > 0 and tau2 > 0) or math.isnan(diff):
        return Sequential(state.p_value, state.lo, state.hi, state.looks + 1)
    shrink = variance + tau2
    scale = 2 * variance * shrink / tau2
    log_lr = 0.5 * math.log(variance / shrink) + diff * diff / scale
    p = min(state.p_value, math.exp(min(0.0, -log_lr)))
    half = math.sqrt(scale * (math.log(1 / alpha) + 0.5 * math.log(shrink / variance)))
    return Sequential(p, max(state.lo, diff - half), min(state.hi, diff + half), state.looks + 1)


# ---------------------------------------------------------------- planning
def sample_size_per_arm(baseline: float, relative_mde: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Users per arm for a two-sided two-proportion z-test to detect baseline -> baseline * (1 + relative_mde):
    n = (z_{1-alpha/2} sqrt(2 pbar (1 - pbar)) + z_{power} sqrt(p1 (1 - p1) + p2 (1 - p2)))^2 / (p2 - p1)^2
    with pbar = (p1 + p2) / 2 (pooled variance under H0, unpooled under H1; no continuity correction)."""
    p1, p2 = baseline, baseline * (1 + relative_mde)
    if not (0 < p1 < 1 and 0 < p2 < 1) or p1 == p2:
        raise ValueError(f"need 0 < baseline, baseline * (1 + mde) < 1 and mde != 0; got {baseline}, {relative_mde}")
    pbar = (p1 + p2) / 2
    root = z(1 - alpha / 2) * math.sqrt(2 * pbar * (1 - pbar)) + z(power) * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(root * root / (p2 - p1) ** 2)
