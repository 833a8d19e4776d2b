"""Experiments declared in the global stack (`reco-dr:experiments`): validated when the stack loads, each refusal
naming the stack, the key, the value and the rule; every arm's version pinned in every region, so a failover never
changes which ranker a user gets."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from infra.config import ConfigError, load_fleet
from tests.experiment.support import pinned_stacks

CANDIDATE = "2026.12.0"


def _experiment(**over):
    return {
        "id": "ranker-more-signal",
        "arms": [
            {"name": "control", "version": "2026.11.0", "weight": 50, "control": True},
            {"name": "more-signal", "version": CANDIDATE, "weight": 50},
        ],
        "holdout": 5,
        "start": "2026-12-07T00:00:00Z",
        "end": "2026-12-21T00:00:00Z",
        "guardrails": [{"metric": "ctr", "max_relative_drop": 0.05}],
        **over,
    }


def _stacks(tmp_path: Path, experiments, unpinned: str | None = None) -> Path:
    """stacks/ with `experiments` in prod-global and the candidate pinned in every prod regional stack but
    `unpinned`."""
    d = pinned_stacks(tmp_path, [CANDIDATE], unpinned)
    g = d / "Pulumi.prod-global.yaml"
    doc = yaml.safe_load(g.read_text())
    doc["config"]["reco-dr:experiments"] = experiments
    g.write_text(yaml.safe_dump(doc, sort_keys=False))
    return d


def test_a_declared_experiment_loads_with_its_defaults(tmp_path):
    fleet = load_fleet("prod", _stacks(tmp_path, [_experiment()]))
    (e,) = fleet.glob.experiments
    assert e.salt == e.id and e.control.name == "control" and [a.name for a in e.candidates] == ["more-signal"]
    assert e.primary_metric == "ctr" and e.alpha == 0.05
    assert load_fleet("prod").glob.experiments == ()  # the shipped stacks declare none


@pytest.mark.parametrize(
    ("over", "key", "rule"),
    [
        ({"holdout": 60}, "experiments[0].holdout", "less than or equal to 50"),
        ({"end": "2026-12-01T00:00:00Z"}, "experiments[0].end", "end after start"),
        (
            {"arms": [{"name": "control", "version": "2026.11.0", "weight": 100, "control": True}]},
            "experiments[0].arms",
            "at least two arms",
        ),
        ({"colour": "blue"}, "experiments[0].colour", "unknown key"),
    ],
)
def test_a_broken_experiment_is_refused_naming_key_value_and_rule(tmp_path, over, key, rule):
    with pytest.raises(ConfigError) as e:
        load_fleet("prod", _stacks(tmp_path, [_experiment(**over)]))
    msg = str(e.value)
    assert f"reco-dr:{key}" in msg and rule in msg and "prod-global" in msg, msg


def test_overlapping_experiments_are_refused(tmp_path):
    two = [_experiment(), _experiment(id="second", start="2026-12-10T00:00:00Z", end="2026-12-30T00:00:00Z")]
    with pytest.raises(ConfigError, match=r"experiments\[1\]\.start.*one experiment at a time"):
        load_fleet("prod", _stacks(tmp_path, two))


def test_an_arm_version_some_region_does_not_pin_is_refused_naming_the_stack(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_fleet(
            "prod", _stacks(tmp_path, [_experiment()], unpinned="prod-use1")
        )  # prod-use1 lacks the candidate's pin
    msg = str(e.value)
    assert "experiments[0].arms[1].version" in msg and CANDIDATE in msg and "not pinned in prod-use1" in msg, msg


def _window(days_from_now: float, days: float = 7) -> dict:
    from datetime import UTC, datetime, timedelta

    start = datetime.now(UTC) + timedelta(days=days_from_now)
    return {"start": start.isoformat(), "end": (start + timedelta(days=days)).isoformat()}


def test_a_release_does_not_replace_an_arms_version_mid_experiment(tmp_path):
    """prod serves 2026.11.0, the control arm of a running experiment: releasing another version would change that
    arm for its users, so the release is refused naming the experiment; once the experiment has ended it plans."""
    from drills.errors import GuardrailError
    from drills.release.planning import ReleaseOptions, build_release_plan, release_context

    def plan(stacks):
        ctx = release_context("prod", None, stacks_dir=stacks, candidate=CANDIDATE)
        return build_release_plan(ctx, ReleaseOptions(candidate=CANDIDATE))

    running = _stacks(tmp_path / "a", [_experiment(**_window(-1))])
    with pytest.raises(GuardrailError) as e:
        plan(running)
    assert e.value.code == "experiment-running"
    assert "2026.11.0 is an arm of experiment ranker-more-signal" in str(e.value) and "Nothing was changed" in str(
        e.value
    )
    ended = _stacks(tmp_path / "b", [_experiment(**_window(-10))])
    assert plan(ended).scenario == "release"


def test_a_drill_records_the_experiments_it_ran_through(tmp_path):
    from drills.scenarios import build_plan

    stacks = _stacks(tmp_path, [_experiment(**_window(-1))])
    p = build_plan("region-outage", "prod", "us-east-1", stacks_dir=stacks)
    assert p.experiments == ["ranker-more-signal"]
    later = _stacks(tmp_path / "later", [_experiment(**_window(3))])
    assert build_plan("region-outage", "prod", "us-east-1", stacks_dir=later).experiments == []
