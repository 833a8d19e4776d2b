"""The retry budget and the outlier detector as pure logic, on an injected clock."""

from __future__ import annotations

import pytest

from drills.client import EjectionPolicy, Fallback, FallbackError, RetryBudgetPolicy
from drills.client.breaker import OutlierDetector
from drills.client.budget import RetryBudget


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_budget_follows_grpc_throttling():
    # gRPC's own example: max 4 tokens (threshold 2), 1.6 per success
    b = RetryBudget(RetryBudgetPolicy(max_tokens=4, token_ratio=1.6))
    b.record_failure()  # 3
    assert b.allows_extra_attempt()
    b.record_success()  # 4, not 4.6
    assert b.tokens == 4
    b.record_failure()
    b.record_failure()  # 2: at the threshold, no retries
    assert not b.allows_extra_attempt()
    b.record_success()  # 3.6
    assert b.allows_extra_attempt()
    for _ in range(10):
        b.record_failure()
    assert b.tokens == 0


def test_a_total_outage_spends_at_most_half_the_bucket_on_extra_attempts():
    b = RetryBudget(RetryBudgetPolicy(max_tokens=10, token_ratio=0.1))
    extra = 0
    for _ in range(1000):  # every request: the first attempt fails, then retries while the budget allows
        b.record_failure()
        for _ in range(2):  # two retries at most per request, so a broken budget ends the loop too
            if not b.allows_extra_attempt():
                break
            extra += 1
            b.record_failure()
    assert extra == 3  # 10 -> 9, retries at 9 and 8; 7 -> 6, a retry at 6; 5 is the threshold


def detector(n: int = 3, **kw) -> tuple[OutlierDetector, Clock]:
    clock = Clock()
    policy = EjectionPolicy(**{"consecutive_failures": 2, "base_ejection_s": 10, **kw})
    return OutlierDetector(["a", "b", "c"][:n], policy, clock), clock


def test_consecutive_failures_eject_and_a_success_resets_the_count():
    d, _ = detector()
    assert not d.record_failure("a")
    d.record_success("a")
    assert not d.record_failure("a")
    assert d.record_failure("a")
    assert d.ejected() == ["a"] and d.ejections == 1
    assert d.order(["a", "b", "c"]) == ["b", "c", "a"]
    assert d.order(["c", "a", "b"]) == ["c", "b", "a"]


def test_ejection_time_grows_with_each_ejection_and_is_capped():
    d, clock = detector(max_ejection_s=25)
    expected = [10, 20, 25, 25]  # base x times ejected, capped at max_ejection_s
    for span in expected:
        d.record_failure("a")
        assert d.record_failure("a")
        clock.now += span - 1
        assert d.ejected() == ["a"]
        clock.now += 1
        assert d.ejected() == []


def test_healthy_time_earns_the_multiplier_back():
    d, clock = detector()
    for _ in range(2):  # ejected twice: the next would be 30 s
        d.record_failure("a"), d.record_failure("a")
        clock.now += 100
    # 100 s healthy since the second ejection ended at +20: 8 base periods, the multiplier is back to 0 -> 1
    d.record_failure("a"), d.record_failure("a")
    clock.now += 10
    assert d.ejected() == []


def test_max_ejection_percent_and_one_region_always_kept():
    d, _ = detector(max_ejection_percent=50)  # 3 regions: 1 may be ejected
    for r in "abc":
        d.record_failure(r), d.record_failure(r)
    assert d.ejected() == ["a"] and d.ejections == 1
    d, _ = detector(max_ejection_percent=100)  # all: still one kept
    for r in "abc":
        d.record_failure(r), d.record_failure(r)
    assert d.ejected() == ["a", "b"]
    d, _ = detector(n=1, max_ejection_percent=100)
    d.record_failure("a"), d.record_failure("a")
    assert d.ejected() == []
    assert EjectionPolicy(max_ejection_percent=10).max_ejected(3) == 0


def test_an_ejected_region_is_not_ejected_again_by_its_failures_as_last_resort():
    d, clock = detector()
    d.record_failure("a"), d.record_failure("a")
    assert not d.record_failure("a") and not d.record_failure("a")
    clock.now += 10
    assert d.ejected() == [] and d.ejections == 1


def test_fallback_ranks_by_order_unknown_last_stable():
    fb = Fallback("ranker", "v1", ("x", "y", 3), "popularity")
    assert fb.rank(["u", 3, "v", "x"]) == ["x", 3, "u", "v"]
    assert Fallback("ranker", "v1", (), "empty").rank([2, 1]) == [2, 1]
    with pytest.raises(FallbackError, match="appears twice"):
        Fallback("ranker", "v1", (1, 2, 1), "dup")
