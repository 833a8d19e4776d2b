"""The impression/click log: JSONL round trip and per-arm aggregation by metrics.py's definitions."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest

from drills.experiment.events import Click, EventWriter, Impression, aggregate, read_events
from drills.experiment.metrics import ndcg10

TS = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
ITEMS = tuple(f"item-{i}" for i in range(20))
VERSION = {"control": "2026.11.0", "candidate": "2026.11.1", "holdout": "2026.11.0"}


def imp(request: str, user: str, arm: str, experiment: str = "ranker-ab") -> Impression:
    return Impression(
        ts=TS,
        request_id=request,
        user_id=user,
        experiment=experiment,
        arm=arm,
        region="us-east-1",
        model_version=VERSION[arm],
        items=ITEMS,
    )


def click(request: str, user: str, arm: str, position: int) -> Click:
    return Click(
        ts=TS,
        request_id=request,
        user_id=user,
        experiment="ranker-ab",
        arm=arm,
        region="eu-west-1",  # a later request of the same user may land in another region
        model_version=VERSION[arm],
        item_id=ITEMS[position - 1],
        position=position,
    )


EVENTS: list[Impression | Click] = [
    imp("r1", "u1", "control"),
    click("r1", "u1", "control", 1),
    imp("r2", "u1", "control"),  # no click
    imp("r3", "u2", "control"),
    click("r3", "u2", "control", 3),
    click("r3", "u2", "control", 1),
    click("r3", "u2", "control", 3),  # delivered twice
    imp("r3", "u2", "control"),  # delivered twice
    imp("r4", "u3", "candidate"),
    click("r4", "u3", "candidate", 2),
    imp("r6", "u3", "candidate"),
    click("r6", "u3", "candidate", 12),  # below the top 10: a click, NDCG 0
    click("r9", "u3", "candidate", 1),  # no impression in the log: not attributable
    imp("r5", "u4", "holdout"),
    imp("x1", "u5", "control", experiment="other"),
]


def test_ndcg10_definition():
    assert ndcg10([]) is None
    assert ndcg10([1]) == 1.0
    assert ndcg10([2]) == pytest.approx(1 / math.log2(3))
    assert ndcg10([3, 1, 3]) == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    assert ndcg10([12]) == 0.0
    assert ndcg10([1, 2]) == 1.0


def test_round_trip_appends_whole_lines(tmp_path):
    log = tmp_path / "events" / "ab.jsonl"
    with EventWriter(log) as w:
        for e in EVENTS[:5]:
            w.append(e)
        # Flushed per event: a reader sees every line written so far while the writer is open.
        assert len(log.read_text().splitlines()) == 5
    with EventWriter(log) as w:  # reopening appends
        for e in EVENTS[5:]:
            w.append(e)
    assert list(read_events(log)) == EVENTS
    first, second = (json.loads(line) for line in log.read_text().splitlines()[:2])
    assert first == {
        "type": "impression",
        "ts": "2026-11-03T12:00:00Z",
        "request_id": "r1",
        "user_id": "u1",
        "experiment": "ranker-ab",
        "arm": "control",
        "region": "us-east-1",
        "model_version": "2026.11.0",
        "items": list(ITEMS),
    }
    assert (second["type"], second["item_id"], second["position"]) == ("click", "item-0", 1)


def test_a_bad_line_is_refused(tmp_path):
    log = tmp_path / "ab.jsonl"
    log.write_text(EVENTS[1].model_dump_json().replace('"position":1', '"position":"1"') + "\n")
    with pytest.raises(ValueError, match="position"):
        list(read_events(log))


def test_aggregate_per_arm(tmp_path):
    log = tmp_path / "ab.jsonl"
    with EventWriter(log) as w:
        for e in EVENTS:
            w.append(e)
    totals = aggregate(read_events(log), "ranker-ab")
    assert set(totals) == {"control", "candidate", "holdout"}

    control = totals["control"].report()
    r3 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert control == pytest.approx({"users": 2, "impressions": 3, "clicks": 3, "ctr": 2 / 3, "ndcg10": (1.0 + r3) / 2})
    candidate = totals["candidate"].report()
    assert candidate == pytest.approx(
        {"users": 1, "impressions": 2, "clicks": 2, "ctr": 1.0, "ndcg10": (1 / math.log2(3) + 0.0) / 2}
    )
    holdout = totals["holdout"].report()
    assert (holdout["users"], holdout["impressions"], holdout["clicks"]) == (1, 1, 0)
    assert math.isnan(holdout["ndcg10"])
