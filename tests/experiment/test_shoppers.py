"""The A/B rehearsal's shoppers: the planted truth, the position-based click model, the logged events, and the checks
its report makes of a log (arm stickiness, routing)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from drills.experiment.assignment import assign
from drills.experiment.events import Click, EventWriter, Impression, aggregate, read_events
from drills.experiment.shoppers import EXAMINATION, Catalogue, Shoppers, draw_clicks, served_top
from drills.rehearsal.ab_report import arm_stickiness, routing
from infra.experiments import Experiment
from model_build import data

EXPERIMENT = Experiment.model_validate(
    {
        "id": "ab",
        "arms": [
            {"name": "control", "version": "v1", "weight": 50, "control": True},
            {"name": "candidate", "version": "v2", "weight": 50},
        ],
        "holdout": 10,
        "start": "2026-12-01T00:00:00Z",
        "end": "2026-12-02T00:00:00Z",
    }
)
TS = datetime(2026, 12, 1, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.golden(data.DEFAULT_SEED, 512)


def test_the_catalogue_is_the_golden_split_with_its_planted_truth(catalogue):
    split = data.make_split(data.DEFAULT_SEED, "golden", 512)
    assert len(catalogue) == 512 and len(set(catalogue.users)) > 200
    np.testing.assert_allclose(catalogue.truth[3], 1 / (1 + np.exp(-split.logit[96:128].astype(float))))
    assert catalogue.batches[3]["sparse_ids"].shape == (data.CANDIDATES, len(data.SPARSE))


def test_a_ranking_by_the_planted_truth_draws_more_clicks_higher_than_its_reverse(catalogue):
    """The click model rewards what a better ranker does: the truth's order beats the reverse on CTR and NDCG@10."""
    rng = np.random.default_rng(1)
    shown: dict[str, list[list[int]]] = {"truth": [], "reverse": []}
    for p in catalogue.truth:
        shown["truth"].append(draw_clicks(p[served_top(p)], rng))
        shown["reverse"].append(draw_clicks(p[served_top(-p)], rng))
    ctr = {k: np.mean([bool(c) for c in v]) for k, v in shown.items()}
    top = {k: np.mean([1 in c for c in v]) for k, v in shown.items()}
    assert ctr["truth"] > ctr["reverse"] + 0.05 and top["truth"] > 2 * top["reverse"]
    # Examination falls with the position: nothing below 10 is ever clicked.
    assert EXAMINATION[0] == 1 and EXAMINATION[-1] == pytest.approx(0.1)
    assert all(1 <= c <= 10 for v in shown.values() for cs in v for c in cs)


def test_a_served_ranking_is_logged_as_an_impression_and_its_clicks(catalogue, tmp_path: Path):
    log = tmp_path / "events.jsonl"
    with EventWriter(log) as w:
        shoppers = Shoppers(EXPERIMENT, catalogue, w, seed=5)
        scores = list(catalogue.truth[0])  # a region that ranks by the truth
        clicked = shoppers.observe(0, "r0", "candidate", "us-east-1", scores, TS)
        again = shoppers.observe(0, "r0", "candidate", "us-east-1", scores, TS)  # an at-least-once duplicate
    assert clicked == again  # the same ranking draws the same clicks
    events = list(read_events(log))
    imp = events[0]
    assert isinstance(imp, Impression) and imp.model_version == "v2" and imp.user_id == catalogue.users[0]
    best = int(np.argmax(catalogue.truth[0]))
    assert imp.items[0] == str(catalogue.items[0][best]) and len(imp.items) == 10
    clicks = [e for e in events if isinstance(e, Click)]
    assert [c.position for c in clicks[: len(clicked)]] == clicked
    assert all(c.item_id == imp.items[c.position - 1] for c in clicks)
    t = aggregate(events, "ab")["candidate"]
    assert t.impressions == 1 and t.clicks == len(clicked)


def _log(tmp_path: Path, catalogue: Catalogue, arm_of=None, regions=("us-east-1", "eu-west-1")) -> Path:
    log = tmp_path / "events.jsonl"
    with EventWriter(log) as w:
        s = Shoppers(EXPERIMENT, catalogue, w, seed=5)
        for i in range(200):
            user = catalogue.users[i]
            arm = arm_of(i) if arm_of else assign(EXPERIMENT, user)
            s.observe(i, f"r{i}", arm, regions[i % len(regions)], list(catalogue.truth[i]), TS)
    return log


def test_stickiness_holds_for_hashed_arms_and_catches_a_user_moved(catalogue, tmp_path: Path):
    ok = arm_stickiness(list(read_events(_log(tmp_path, catalogue))), EXPERIMENT, "us-east-1")
    assert ok["users_whose_arm_changed"] == 0 and ok["impressions_not_in_the_users_hashed_arm"] == 0
    assert ok["users_served_by_the_drilled_region_and_another"] > 0

    def by_region(i: int) -> str:  # a router that assigns by region, not by the user's hash
        return "candidate" if i % 2 else "control"

    bad = arm_stickiness(list(read_events(_log(tmp_path / "b", catalogue, by_region))), EXPERIMENT, "us-east-1")
    assert bad["users_whose_arm_changed"] > 0 and bad["impressions_not_in_the_users_hashed_arm"] > 0


def test_routing_fails_when_the_candidates_version_served_none_of_its_arm(catalogue, tmp_path: Path):
    log = list(read_events(_log(tmp_path, catalogue)))
    per: dict[str, int] = {}
    for e in log:
        if isinstance(e, Impression):
            per[e.model_version] = per.get(e.model_version, 0) + 1

    def counts(served: dict[str, int]) -> list[dict]:
        return [{"second": 100, "version": v, "pinned": False, "requests": n} for v, n in served.items()]

    assert routing(log, EXPERIMENT, counts(per), [100.0, 101.0])["ok"]
    # The header ignored: every request answered by control's version.
    assert not routing(log, EXPERIMENT, counts({"v1": sum(per.values())}), [100.0, 101.0])["ok"]
    # Everyone routed to the candidate.
    assert not routing(log, EXPERIMENT, counts({"v1": per["v1"], "v2": sum(per.values()) * 2}), [100.0, 101.0])["ok"]
