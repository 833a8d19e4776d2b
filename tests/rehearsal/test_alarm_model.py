"""CloudWatch alarm evaluation as the rehearsal models it (drills/rehearsal/cloudwatch.py): the declared metrics'
datapoints (5xx ratio, mean TargetResponseTime), M of N, treat_missing_data, the INSUFFICIENT_DATA start, and the
load-balancer model's request log as its input. Pure: no processes, no clock."""

from __future__ import annotations

import random

import pytest

from drills.rehearsal.cloudwatch import (
    ALARM,
    INSUFFICIENT_DATA,
    OK,
    AlarmEvaluator,
    AlarmSpec,
    AlbRequest,
    datapoint,
    requests_from_log,
)
from infra.health import ERRORS, LATENCY, LATENCY_STATISTIC


def spec(kind: str = ERRORS, m: int = 1, n: int = 2, missing: str = "notBreaching", threshold: float = 0.05):
    return AlarmSpec("a", "us-east-1", kind, 60.0, n, m, threshold, missing)


def minute(k: int, n: int = 100, errors: int = 0, latency_ms: float = 5.0) -> list[AlbRequest]:
    """`n` requests spread over minute `k`, the first `errors` of them 5xx."""
    return [AlbRequest(60 * k + 60 * i / n, 503 if i < errors else 200, latency_ms) for i in range(n)]


def run(s: AlarmSpec, minutes: list[list[AlbRequest]]) -> AlarmEvaluator:
    ev = AlarmEvaluator(s, origin=0.0)
    for k, reqs in enumerate(minutes):
        ev.add(reqs)
        ev.advance(60.0 * (k + 1))
    return ev


def test_datapoints_follow_the_declared_metric_math_and_statistic():
    assert LATENCY_STATISTIC == "Average"  # what the latency datapoint below computes
    assert datapoint(spec(), minute(0, 100, errors=7)) == pytest.approx(0.07)
    assert datapoint(spec(), []) is None  # no RequestCount, no ratio
    # The load balancer's own answers count in the ratio's denominator and numerator alike.
    edge = [AlbRequest(0, 404), AlbRequest(1, 502), AlbRequest(2, 200, 3.0), AlbRequest(3, 504)]
    assert datapoint(spec(), edge) == pytest.approx(0.5)
    reqs = [AlbRequest(i, 200, float(i)) for i in range(1, 101)] + [AlbRequest(0, 502, None)]
    # The mean of the targets' answers only (the 502 has no target time), in seconds.
    assert datapoint(spec(LATENCY, threshold=0.25), reqs) == pytest.approx(0.0505)
    assert datapoint(spec(LATENCY, threshold=0.25), [AlbRequest(0, 504, None)]) is None  # no target answered


def test_the_mean_follows_a_region_wide_slowdown_not_a_thin_tail():
    latency = spec(LATENCY, m=1, n=1, threshold=0.1)
    # 2 % of requests at 1 s lift a p99 to 1 s but the mean only to ~25 ms: no alarm.
    tail = [AlbRequest(i * 0.6, 200, 1000.0 if i % 50 == 0 else 5.0) for i in range(100)]
    assert datapoint(latency, tail) == pytest.approx((2 * 1000 + 98 * 5) / 100 / 1000)
    assert run(latency, [tail]).state == OK
    # Every request 150 ms slower (an injected latency): the mean crosses the threshold.
    assert run(latency, [minute(0, latency_ms=5.0), minute(1, latency_ms=155.0)]).state == ALARM


def test_starts_insufficient_then_ok_on_normal_traffic():
    ev = AlarmEvaluator(spec(), origin=0.0)
    assert ev.state == INSUFFICIENT_DATA
    ev.add(minute(0))
    assert ev.advance(59.9) == INSUFFICIENT_DATA  # the period has not closed
    assert ev.advance(60.0) == OK


def test_m_of_n_alarms_on_the_first_bad_minute_and_clears_after_n_clean_ones():
    ev = run(spec(m=1, n=2), [minute(0), minute(1, errors=30), minute(2), minute(3)])
    assert [(t.t, t.state) for t in ev.transitions] == [(60.0, OK), (120.0, ALARM), (240.0, OK)]


def test_two_of_three_needs_two_bad_minutes():
    s = spec(m=2, n=3)
    assert run(s, [minute(0), minute(1, errors=30), minute(2), minute(3)]).state == OK
    ev = run(s, [minute(0), minute(1, errors=30), minute(2), minute(3, errors=30)])
    assert ev.transitions[-1].state == ALARM and ev.transitions[-1].t == 240.0


def test_hysteresis_holds_an_intermittent_fault_in_alarm():
    bad_every_other = [minute(k, errors=30 if k % 2 else 0) for k in range(1, 12)]
    ev = run(spec(m=1, n=2), [minute(0), *bad_every_other])
    assert [t.state for t in ev.transitions] == [OK, ALARM]  # no flapping back to OK between bad minutes


def test_normal_jitter_never_alarms():
    rng = random.Random(7)
    minutes = [
        [
            AlbRequest(60 * k + i * 0.6, 503 if rng.random() < 0.002 else 200, rng.lognormvariate(1.5, 0.5))
            for i in range(100)
        ]
        for k in range(60)
    ]
    for s in (spec(), spec(LATENCY, threshold=0.25)):
        assert [t.state for t in run(s, minutes).transitions] == [OK]


@pytest.mark.parametrize(
    "missing, expected", [("notBreaching", OK), ("breaching", ALARM), ("missing", INSUFFICIENT_DATA), ("ignore", ALARM)]
)
def test_treat_missing_data(missing, expected):
    # One bad minute, then silence (a blackholed or drained region without requests).
    ev = run(spec(m=1, n=2, missing=missing), [minute(0, errors=30), [], [], []])
    assert ev.state == expected


def test_late_requests_of_a_closed_period_do_not_count():
    ev = AlarmEvaluator(spec(), origin=0.0)
    ev.add(minute(0))
    ev.advance(60.0)
    ev.add(minute(0, errors=100))
    assert ev.advance(120.0) == OK


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "p99"},
        {"datapoints_to_alarm": 3, "evaluation_periods": 2},
        {"datapoints_to_alarm": 0},
        {"treat_missing_data": "skip"},
    ],
)
def test_a_spec_that_is_no_alarm_is_refused(bad):
    fields = {
        "name": "a",
        "region": "r",
        "kind": ERRORS,
        "period_s": 60.0,
        "evaluation_periods": 2,
        "datapoints_to_alarm": 1,
        "threshold": 0.05,
        **bad,
    }
    with pytest.raises(ValueError, match="alarm a"):
        AlarmSpec(**fields)


def test_the_load_balancer_models_log_feeds_the_evaluator():
    # AlbProcess.requests entries: [wall time, region, status, target ms or None, path]; wall 1000 s is drill 0.
    entries = [
        [1000.0, "us-east-1", 200, 4.0, "/v2/models/ranker_py/infer"],
        [1006.0, "us-east-1", 504, None, "/v2/models/ranker_py/infer"],
        [1012.0, "us-east-1", 404, None, "/metrics"],
        [1013.0, "us-west-2", 502, None, "/deep-health"],
    ]
    reqs = requests_from_log(entries, lambda wall: (wall - 1000.0) * 10)  # scale 0.1: one wall second is ten drill
    assert reqs == [
        AlbRequest(0.0, 200, 4.0, "us-east-1", "/v2/models/ranker_py/infer"),
        AlbRequest(60.0, 504, None, "us-east-1", "/v2/models/ranker_py/infer"),
        AlbRequest(120.0, 404, None, "us-east-1", "/metrics"),
        AlbRequest(130.0, 502, None, "us-west-2", "/deep-health"),
    ]
    ev = AlarmEvaluator(spec(m=1, n=1), origin=0.0)
    ev.add(r for r in reqs if r.region == ev.spec.region)
    ev.advance(180.0)
    assert ev.datapoints == [0.0, 1.0, 0.0]
    assert [(t.t, t.state) for t in ev.transitions] == [(60.0, OK), (120.0, ALARM), (180.0, OK)]
