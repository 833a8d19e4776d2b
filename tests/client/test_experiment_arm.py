"""The client sets the user's A/B arm: while its experiment runs, every attempt of a call given a user id carries
`X-Reco-Arm: <experiment id>.<cell>` (the first attempt, the retry in another region, the hedge), the same cell for
the same user on every call and in every region; before start, from end on and without a user id, no header."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from drills.client import ClientConfigError, RankerClient, RankRequest
from drills.experiment.assignment import assign
from infra.names import arm_header_value
from tests.client.regions import refused_url
from tests.client.test_client import FALLBACK, REQ
from tests.experiment.support import experiment

EXP = experiment(holdout=10)  # control 50 / candidate 50 of the 90% left; window 2026-11-02 .. 2026-11-16
DURING = EXP.start + timedelta(days=3)


class UtcClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def client(endpoints: dict[str, str], now: datetime = DURING, **kw) -> RankerClient:
    kw.setdefault("fallback", FALLBACK)
    return RankerClient(endpoints, "ranker", experiment=EXP, utc_now=UtcClock(now), **kw)


def header(user: str) -> str:
    return arm_header_value(EXP.id, assign(EXP, user))


@pytest.mark.parametrize("mode", ["503", "reset", "hang"])
def test_the_first_attempt_and_the_retry_in_another_region_carry_the_users_cell(region, mode):
    bad, good = region(mode), region("ok")
    with client({"a": bad.url, "b": good.url}, attempt_timeout_ms=100, deadline_ms=250) as c:
        r = c.rank(REQ, user_id="u-42")
    assert (r.region, r.attempts, r.degraded) == ("b", 2, False)
    assert r.arm == assign(EXP, "u-42") and bad.arms == good.arms == [header("u-42")]
    assert header("u-42") == f"ranker-ab.{r.arm}"


def test_a_hedge_carries_the_users_cell_too(region):
    slow, fast = region("ok", delay_ms=200), region("ok")
    with client({"a": slow.url, "b": fast.url}, hedging_delay_ms=30, attempt_timeout_ms=450, deadline_ms=500) as c:
        r = c.rank(REQ, user_id="u-7")
    assert (r.region, r.hedged, r.arm) == ("b", True, assign(EXP, "u-7"))
    assert slow.arms == fast.arms == [header("u-7")]


def test_a_degraded_answer_keeps_the_users_cell(region):
    with client({"a": refused_url(), "b": region("503").url}) as c:
        r = c.rank(REQ, user_id="u-7")
    assert r.degraded and r.arm == assign(EXP, "u-7")


def test_the_same_user_gets_the_same_cell_on_every_call_and_in_every_region(region):
    regions = {"a": region("ok"), "b": region("ok"), "c": region("ok")}
    users = [f"user-{i}" for i in range(100)]
    seen: dict[str, set[str | None]] = {u: set() for u in users}
    with client({name: r.url for name, r in regions.items()}) as c:
        for _ in range(2):
            for u in users:
                for prefer in regions:
                    resp = c.rank(REQ, prefer=prefer, user_id=u)
                    assert resp.region == prefer and resp.arm == assign(EXP, u)
                    seen[u].add(regions[prefer].arms[-1])
    assert all(cells == {header(u)} for u, cells in seen.items())
    # Each region saw each user's one value; the users fall in every cell (the test is not vacuous).
    assert {str(h).rsplit(".", 1)[1] for (h,) in seen.values()} == {"holdout", "control", "candidate"}
    for r in regions.values():
        assert len(r.arms) == 2 * len(users)


@pytest.mark.parametrize(
    ("now", "sent"),
    [
        (EXP.start - timedelta(seconds=1), False),
        (EXP.start, True),
        (EXP.end - timedelta(seconds=1), True),
        (EXP.end, False),
        (EXP.end + timedelta(days=30), False),
    ],
)
def test_the_header_is_sent_only_within_the_window(region, now, sent):
    a = region("ok")
    with client({"a": a.url}, now=now) as c:
        r = c.rank(REQ, user_id="u-1")
    assert a.arms == [header("u-1") if sent else None]
    assert r.arm == (assign(EXP, "u-1") if sent else None)


def test_the_window_is_judged_at_each_call(region):
    a = region("ok")
    clock = UtcClock(EXP.start - timedelta(minutes=1))
    with RankerClient({"a": a.url}, "ranker", experiment=EXP, utc_now=clock) as c:
        c.rank(REQ, user_id="u-1")
        clock.now = EXP.start
        c.rank(REQ, user_id="u-1")
        clock.now = EXP.end
        c.rank(REQ, user_id="u-1")
    assert a.arms == [None, header("u-1"), None]


def test_the_default_clock_is_the_real_utc_time(region):
    a = region("ok")
    now = datetime.now(UTC)
    running = experiment(start=(now - timedelta(days=1)).isoformat(), end=(now + timedelta(days=1)).isoformat())
    with RankerClient({"a": a.url}, "ranker", experiment=running) as c:
        r = c.rank(REQ, user_id="u-1")
    assert a.arms == [arm_header_value(running.id, assign(running, "u-1"))] and r.arm is not None


def test_no_header_without_a_user_id_or_without_an_experiment(region):
    a = region("ok")
    with client({"a": a.url}) as c:
        r = c.rank(REQ)
    with RankerClient({"a": a.url}, "ranker") as plain:
        r2 = plain.rank(REQ, user_id="u-1")
    assert a.arms == [None, None] and r.arm is None and r2.arm is None


def test_an_arm_set_by_hand_is_sent_as_is_and_a_contradicting_one_refused(region):
    a = region("ok")
    with RankerClient({"a": a.url}, "ranker") as plain:
        plain.rank(RankRequest(REQ.item_ids, REQ.body, arm="other-exp.b"))
    assert a.arms == ["other-exp.b"]
    with client({"a": a.url}) as c:
        c.rank(RankRequest(REQ.item_ids, REQ.body, arm=header("u-1")), user_id="u-1")  # the same value: fine
        with pytest.raises(ClientConfigError, match=r"request\.arm"):
            c.rank(RankRequest(REQ.item_ids, REQ.body, arm="ranker-ab.nope"), user_id="u-1")
        with pytest.raises(ClientConfigError, match="user_id"):
            c.rank(REQ, user_id=42)  # type: ignore[arg-type]  # a bad argument on purpose
    assert a.arms == ["other-exp.b", header("u-1")]


def test_bad_arm_values_and_experiments_are_refused():
    with pytest.raises(ValueError, match="arm"):
        RankRequest(REQ.item_ids, REQ.body, arm="a b\r\nX-Evil: 1")
    declared = {"id": "x"}  # the stack's mapping, not the validated Experiment
    with pytest.raises(ClientConfigError, match="experiment"):
        RankerClient({"a": "http://127.0.0.1:1"}, "ranker", experiment=declared)  # type: ignore[arg-type]  # on purpose
