"""RankerClient against local servers that fail on purpose: retry, deadline, hedging, retry budget, ejection,
degraded answers, construction errors."""

from __future__ import annotations

import hashlib
import json
import threading
import time

import pytest

from drills.client import (
    ClientConfigError,
    EjectionPolicy,
    Fallback,
    FallbackError,
    RankerClient,
    RankRequest,
    RetryBudgetPolicy,
    load_fallback,
)
from tests.client.regions import refused_url

FALLBACK = Fallback("ranker", "v7", (30, 10, 20), "popularity")


def request(scores: dict[int, float]) -> RankRequest:
    """Candidates with the scores the fake "ok" region will give them (it echoes the first input)."""
    data = list(scores.values())
    tensor = {"name": "s", "shape": [len(data), 1], "datatype": "FP32", "data": data}
    return RankRequest.from_inputs(list(scores), [tensor])


REQ = request({10: 0.2, 20: 0.9, 30: 0.5})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(endpoints: dict[str, str], **kw) -> RankerClient:
    kw.setdefault("fallback", FALLBACK)
    return RankerClient(endpoints, "ranker", **kw)


def test_a_healthy_region_ranks_by_score(region):
    a = region("ok")
    with client({"a": a.url, "b": refused_url()}) as c:
        r = c.rank(REQ)
        r2 = c.rank(REQ)
    assert (r.ranking, r.scores, r.region) == ([20, 30, 10], [0.2, 0.9, 0.5], "a")
    assert (r.attempts, r.degraded, r.hedged) == (1, False, False)
    assert r.errors == [] and r2.region == "a" and not r.failed
    assert a.paths == ["/v2/models/ranker/infer"] * 2
    s = c.stats()
    assert (s["requests"], s["attempts"], s["retries"], s["amplification"]) == (2, 2, 0, 1.0)


@pytest.mark.parametrize(
    ("mode", "kind"),
    [("503", "status"), ("reset", "reset"), ("hang", "timeout"), ("refused", "connect"), ("garbage", "bad_response")],
)
def test_a_failed_attempt_is_retried_once_on_another_region(region, mode, kind):
    bad = refused_url() if mode == "refused" else region(mode).url
    good = region("ok")
    with client({"a": bad, "b": good.url}, attempt_timeout_ms=100, deadline_ms=250) as c:
        r = c.rank(REQ)
    assert (r.region, r.attempts, r.degraded, r.ranking) == ("b", 2, False, [20, 30, 10])
    assert [(e.region, e.kind) for e in r.errors] == [("a", kind)]
    assert c.stats()["retries"] == 1 and good.hits == 1
    if mode == "hang":
        assert 90 <= r.errors[0].latency_ms < 200


def test_prefer_picks_the_primary(region):
    a, b = region("ok"), region("ok")
    with client({"a": a.url, "b": b.url}) as c:
        assert c.rank(REQ, prefer="b").region == "b"
        assert c.rank(REQ).region == "a"
    assert (a.hits, b.hits) == (1, 1)


def test_a_4xx_is_the_request_s_fault_no_retry_no_ejection(region):
    a, b = region("400"), region("ok")
    with client({"a": a.url, "b": b.url}, ejection=EjectionPolicy(consecutive_failures=1)) as c:
        r = c.rank(REQ)
        assert c.breaker.ejected() == []
    assert (r.attempts, r.degraded, r.errors[0].status, b.hits) == (1, True, 400, 0)


def test_a_kept_alive_connection_the_server_dropped_is_reopened_not_failed(region):
    a = region("close-idle")
    with client({"a": a.url, "b": refused_url()}) as c:
        rs = [c.rank(REQ) for _ in range(3)]
    assert [(r.region, r.attempts, r.errors) for r in rs] == [("a", 1, [])] * 3


def test_the_retry_gets_only_what_is_left_of_the_deadline(region):
    hang, slow = region("hang"), region("ok", delay_ms=150)
    with client({"a": hang.url, "b": slow.url}, attempt_timeout_ms=100, deadline_ms=160) as c:
        r = c.rank(REQ)
    assert (r.attempts, r.degraded, [e.kind for e in r.errors]) == (2, True, ["timeout", "timeout"])
    assert r.ranking == [30, 10, 20]
    assert r.latency_ms < 160 + 30  # the retry's timeout was the 60 ms left, not another 100
    assert r.errors[1].latency_ms < 80


def test_no_retry_when_the_deadline_is_spent(region):
    hang, ok = region("hang"), region("ok")
    with client({"a": hang.url, "b": ok.url}, attempt_timeout_ms=100, deadline_ms=100) as c:
        r = c.rank(REQ)
        assert c.rank(REQ, deadline_ms=1).attempts == 0  # a propagated deadline already spent: no attempt
    assert (r.attempts, r.degraded, ok.hits) == (1, True, 0)
    assert r.latency_ms < 100 + 30


def test_hedging_sends_a_second_attempt_after_the_delay_and_takes_the_faster(region):
    slow, fast = region("ok", delay_ms=400), region("ok")
    with client({"a": slow.url, "b": fast.url}, hedging_delay_ms=50, attempt_timeout_ms=450, deadline_ms=500) as c:
        t0 = time.monotonic()
        r = c.rank(REQ)
    assert (r.region, r.hedged, r.attempts, r.degraded, r.ranking) == ("b", True, 2, False, [20, 30, 10])
    assert fast.arrivals[0] - t0 >= 0.050  # not before the delay
    assert 50 <= r.latency_ms < 250  # did not wait for the slow region
    assert c.stats()["hedges"] == 1


def test_no_hedge_when_the_primary_answers_within_the_delay(region):
    a, b = region("ok"), region("ok")
    with client({"a": a.url, "b": b.url}, hedging_delay_ms=80) as c:
        rs = [c.rank(REQ) for _ in range(3)]
    assert [(r.region, r.hedged, r.attempts) for r in rs] == [("a", False, 1)] * 3
    assert b.hits == 0


def test_with_hedging_a_fast_failure_is_retried_at_once(region):
    b = region("ok")
    with client({"a": refused_url(), "b": b.url}, hedging_delay_ms=200) as c:
        r = c.rank(REQ)
    assert (r.region, r.hedged, r.attempts) == ("b", False, 2)
    assert r.latency_ms < 150  # did not wait for the hedging delay
    assert c.stats()["retries"] == 1


def test_the_retry_budget_stops_amplification_in_a_total_outage():
    urls = {r: refused_url() for r in "abc"}
    with client(urls, max_attempts=3, retry_budget=RetryBudgetPolicy(max_tokens=10, token_ratio=0.1)) as c:
        rs = [c.rank(REQ) for _ in range(50)]
    s = c.stats()
    assert all(r.degraded and r.ranking == [30, 10, 20] for r in rs)
    assert s["attempts"] - s["requests"] <= 10 / 2  # the extra attempts a full bucket allows, then none
    assert s["throttled"] > 0 and s["amplification"] <= 1.1
    with client(urls, max_attempts=3, retry_budget=RetryBudgetPolicy(max_tokens=1e9)) as unlimited:
        for _ in range(50):
            unlimited.rank(REQ)
    assert unlimited.stats()["amplification"] == 3.0  # what the budget prevented


def test_consecutive_failures_eject_a_region_until_its_time_is_up(region):
    bad, good = region("503"), region("ok")
    clock = Clock()
    policy = EjectionPolicy(consecutive_failures=3, base_ejection_s=10, max_ejection_percent=50)
    with client({"a": bad.url, "b": good.url}, ejection=policy, clock=clock, retry_budget=RetryBudgetPolicy(1e6)) as c:
        assert [c.rank(REQ).attempts for _ in range(3)] == [2, 2, 2]
        assert c.breaker.ejected() == ["a"] and c.stats()["ejections"] == 1
        r = c.rank(REQ)
        assert (r.region, r.attempts, bad.hits) == ("b", 1, 3)  # skipped as primary
        clock.now += 10
        assert c.rank(REQ).attempts == 2 and bad.hits == 4  # eligible again
        c.rank(REQ), c.rank(REQ)
        assert c.breaker.ejected() == ["a"]  # second ejection: 2 x 10 s
        clock.now += 10
        assert c.rank(REQ).attempts == 1
        clock.now += 10
        assert c.rank(REQ).attempts == 2
    assert c.stats()["ejections"] == 2


def test_never_more_than_max_ejection_percent_of_regions_are_ejected(region):
    a, b, ok = region("503"), region("503"), region("ok")
    policy = EjectionPolicy(consecutive_failures=1, max_ejection_percent=50)
    with client({"a": a.url, "b": b.url, "c": ok.url}, ejection=policy) as c:
        c.rank(REQ)
        c.rank(REQ, prefer="b")
        c.rank(REQ, prefer="b")
        assert c.breaker.ejected() == ["a"]
        assert c.rank(REQ).errors[0].region == "b"  # b kept: still tried first
    assert c.stats()["ejections"] == 1


def test_every_attempt_failed_gives_the_fallback_order(region):
    a, b = region("503"), region("503")
    with client({"a": a.url, "b": b.url}) as c:
        r = c.rank(RankRequest.from_inputs([20, 99, 10, 30, 98], [{"name": "s", "shape": [5], "data": [0] * 5}]))
    assert (r.ranking, r.scores, r.region, r.degraded, r.failed) == ([30, 10, 20, 99, 98], None, None, True, False)
    assert [(e.region, e.status) for e in r.errors] == [("a", 503), ("b", 503)]
    assert c.stats()["degraded"] == 1


def test_without_a_fallback_a_failed_ranking_says_so(region):
    with RankerClient({"a": region("503").url}, "ranker") as c:
        r = c.rank(REQ)
    assert (r.failed, r.ranking, r.degraded) == (True, None, True)
    assert (c.stats()["failed"], c.stats()["degraded"]) == (1, 0)


def test_fallback_file_loads_and_a_changed_file_is_refused(tmp_path):
    doc = {"model": {"name": "ranker", "version": "v7"}, "order": [3, 1, 2], "source": "popularity"}
    path = tmp_path / "fallback.json"
    path.write_text(json.dumps(doc))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    fb = load_fallback(path, digest)
    assert (fb.model_name, fb.model_version, fb.order, fb.rank([2, 4, 3])) == ("ranker", "v7", (3, 1, 2), [3, 2, 4])
    path.write_text(json.dumps({**doc, "order": [1, 2, 3]}))
    with pytest.raises(FallbackError) as e:
        load_fallback(path, digest)
    assert str(path) in str(e.value) and digest in str(e.value)
    assert hashlib.sha256(path.read_bytes()).hexdigest() in str(e.value)


def test_many_threads_share_one_client(region):
    ok = region("ok")
    with client({"a": refused_url(), "b": ok.url}, retry_budget=RetryBudgetPolicy(1e6)) as c:
        out: list[str | None] = []

        def work() -> None:
            out.extend(c.rank(REQ).region for _ in range(20))

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    s = c.stats()
    assert out == ["b"] * 160 and s["requests"] == 160
    assert s["ejections"] == 1 and s["attempts"] == 160 + s["retries"]


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"endpoints": {}}, "endpoints"),
        ({"deadline_ms": 50, "attempt_timeout_ms": 100}, "deadline_ms"),
        ({"deadline_ms": 0}, "deadline_ms"),
        ({"attempt_timeout_ms": -1}, "attempt_timeout_ms"),
        ({"hedging_delay_ms": 250}, "hedging_delay_ms"),
        ({"hedging_delay_ms": 0}, "hedging_delay_ms"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"model": ""}, "model"),
        ({"endpoints": {"a": "127.0.0.1:8001"}}, "endpoints['a']"),
        ({"endpoints": {"a": "ftp://host"}}, "endpoints['a']"),
        ({"endpoints": {"a": "http://host:99999"}}, "endpoints['a']"),
        ({"endpoints": {"a": "http://:80"}}, "endpoints['a']"),
        ({"endpoints": {"a": "http://host/?q=1"}}, "endpoints['a']"),
        ({"fallback": Fallback("other", "v1", (), "x")}, "fallback"),
    ],
)
def test_bad_construction_names_key_value_and_rule(kwargs, key):
    args = {"endpoints": {"a": "http://127.0.0.1:8001"}, "model": "ranker", **kwargs}
    with pytest.raises(ClientConfigError) as e:
        RankerClient(args.pop("endpoints"), args.pop("model"), **args)
    assert e.value.key == key and str(e.value).startswith(f"{key}=") and e.value.rule


@pytest.mark.parametrize(
    ("make", "key"),
    [
        (lambda: RetryBudgetPolicy(max_tokens=0), "retry_budget.max_tokens"),
        (lambda: RetryBudgetPolicy(token_ratio=-1), "retry_budget.token_ratio"),
        (lambda: EjectionPolicy(consecutive_failures=0), "ejection.consecutive_failures"),
        (lambda: EjectionPolicy(base_ejection_s=0), "ejection.base_ejection_s"),
        (lambda: EjectionPolicy(max_ejection_percent=0), "ejection.max_ejection_percent"),
    ],
)
def test_bad_policies_are_refused(make, key):
    with pytest.raises(ClientConfigError) as e:
        make()
    assert e.value.key == key


def test_an_unknown_preferred_region_is_refused():
    with RankerClient({"a": "http://127.0.0.1:8001"}, "ranker") as c, pytest.raises(ClientConfigError) as e:
        c.rank(REQ, prefer="us-east-9")
    assert e.value.key == "prefer" and "us-east-9" in str(e.value)


def test_hedged_requests_end_at_the_deadline_even_when_every_region_hangs(region):
    a, b = region("hang"), region("hang")
    with client({"a": a.url, "b": b.url}, hedging_delay_ms=40, attempt_timeout_ms=150, deadline_ms=150) as c:
        t0 = time.monotonic()
        r = c.rank(REQ)
    assert (r.degraded, r.hedged, r.attempts, r.ranking) == (True, True, 2, [30, 10, 20])
    assert 150 <= r.latency_ms < 150 + 40
    assert b.arrivals[0] - t0 >= 0.040 and a.hits == 1
