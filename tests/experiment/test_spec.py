"""The declared experiment: strict validation naming key, value and rule, and the release/experiment interlocks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from infra.experiments import (
    ExperimentConfigError,
    arm_versions_locked,
    expected_split,
    parse_experiments,
    running,
)
from tests.experiment.support import END, START, arms, declared, experiment


def test_defaults():
    e = experiment()
    assert e.salt == "ranker-ab"  # the salt defaults to the id
    assert (e.alpha, e.power, e.holdout, e.primary_metric, e.guardrails) == (0.05, 0.8, 0, "ctr", ())
    assert e.control.name == "control" and [a.name for a in e.candidates] == ["candidate"]
    assert e.start == datetime(2026, 11, 2, tzinfo=UTC)
    assert experiment(salt="rerun-2").salt == "rerun-2"


def test_expected_split_carves_the_holdout_first():
    assert expected_split(experiment(holdout=10, arms=arms(60, 40))) == pytest.approx(
        {"holdout": 0.1, "control": 0.54, "candidate": 0.36}
    )


BAD: dict[str, tuple[dict[str, Any], str, Any, str]] = {
    "weights": (
        {"arms": arms(50, 40)},
        "experiments[0].arms",
        arms(50, 40),
        "rule: arm weights sum to 100 (weights [50, 40] sum to 90)",
    ),
    "duplicate arm": (
        {"arms": [*arms(50, 25), {"name": "candidate", "version": "2026.11.2", "weight": 25}]},
        "experiments[0].arms",
        [*arms(50, 25), {"name": "candidate", "version": "2026.11.2", "weight": 25}],
        "rule: arm names are unique (['candidate'] repeated)",
    ),
    "no control": (
        {"arms": [{**a, "control": False} for a in arms(50, 50)]},
        "experiments[0].arms",
        [{**a, "control": False} for a in arms(50, 50)],
        "rule: exactly one arm has control: true (got 0: [])",
    ),
    "two controls": (
        {"arms": [{**a, "control": True} for a in arms(50, 50)]},
        "experiments[0].arms",
        [{**a, "control": True} for a in arms(50, 50)],
        "rule: exactly one arm has control: true (got 2: ['control', 'candidate'])",
    ),
    "end before start": (
        {"end": "2026-11-01T00:00:00Z"},
        "experiments[0].end",
        "2026-11-01T00:00:00Z",
        "rule: end after start (2026-11-02T00:00:00+00:00)",
    ),
    "end equals start": ({"end": START}, "experiments[0].end", START, "rule: end after start"),
    "naive time": (
        {"start": "2026-11-02T00:00:00"},
        "experiments[0].start",
        "2026-11-02T00:00:00",
        "rule: a UTC timestamp",
    ),
    "not a time": ({"end": "next tuesday"}, "experiments[0].end", "next tuesday", "rule: an ISO 8601 UTC timestamp"),
    "alpha too big": ({"alpha": 0.5}, "experiments[0].alpha", 0.5, "rule: 0 < alpha < 0.5"),
    "alpha zero": ({"alpha": 0.0}, "experiments[0].alpha", 0.0, "rule: 0 < alpha < 0.5"),
    "alpha as text": ({"alpha": "0.05"}, "experiments[0].alpha", "0.05", "rule: Input should be a valid number"),
    "weight as text": (
        {"arms": [{**arms(50, 50)[0], "weight": "50"}, arms(50, 50)[1]]},
        "experiments[0].arms[0].weight",
        "50",
        "rule: Input should be a valid integer",
    ),
    "bad version": (
        {"arms": [arms(50, 50)[0], {**arms(50, 50)[1], "version": "v 2"}]},
        "experiments[0].arms[1].version",
        "v 2",
        "rule: String should match pattern",
    ),
    "arm named holdout": (
        {"arms": [arms(50, 50)[0], {**arms(50, 50)[1], "name": "holdout"}]},
        "experiments[0].arms[1].name",
        "holdout",
        "rule: 'holdout' labels the holdout users",
    ),
    "bad id": ({"id": "Ranker AB"}, "experiments[0].id", "Ranker AB", "rule: String should match pattern"),
    "unknown metric": (
        {"primary_metric": "auc"},
        "experiments[0].primary_metric",
        "auc",
        "rule: Input should be 'ctr' or 'ndcg10'",
    ),
    "guardrail drop": (
        {"guardrails": [{"metric": "ndcg10", "max_relative_drop": 1.5}]},
        "experiments[0].guardrails[0].max_relative_drop",
        1.5,
        "rule: Input should be less than 1",
    ),
    "typo": ({"hold_out": 5}, "experiments[0].hold_out", 5, "rule: unknown key (a typo?)"),
    "holdout too big": (
        {"holdout": 60},
        "experiments[0].holdout",
        60,
        "rule: Input should be less than or equal to 50",
    ),
    "mde": ({"minimum_detectable_effect": 0}, "experiments[0].minimum_detectable_effect", 0, "rule: 0 < minimum"),
}


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_refusals_name_key_value_and_rule(case):
    over, key, value, rule = case
    with pytest.raises(ExperimentConfigError) as e:
        parse_experiments([declared(**over)])
    assert (e.value.key, e.value.value) == (key, value)
    assert e.value.rule.startswith(rule), e.value.rule
    assert str(e.value).startswith(f"{key} = {value!r}: rule: ")


def test_missing_key():
    d = declared()
    del d["arms"]
    with pytest.raises(ExperimentConfigError, match=r"^experiments\[0\]\.arms = .*: rule: required key$"):
        parse_experiments([d])


def test_ids_unique_and_windows_apart():
    later = {"start": END, "end": "2026-11-30T00:00:00Z"}
    assert len(parse_experiments([declared(), declared(id="second", **later)])) == 2  # back to back is fine
    with pytest.raises(ExperimentConfigError, match=r"experiments\[1\]\.id = 'ranker-ab': rule: .* unique"):
        parse_experiments([declared(), declared(**later)])
    with pytest.raises(ExperimentConfigError) as e:
        parse_experiments([declared(), declared(id="second", start="2026-11-10T00:00:00Z")])
    assert e.value.key == "experiments[1].start"
    assert "one experiment at a time (window overlaps ranker-ab's" in e.value.rule
    with pytest.raises(ExperimentConfigError, match="rule: a list of experiments"):
        parse_experiments(declared())  # type: ignore[arg-type]  # the stack key holds a mapping, not a list


def test_running_and_locked_versions():
    first = declared(arms=[{**a, "version": v} for a, v in zip(arms(50, 50), ["2026.11.0", "2026.11.1"], strict=True)])
    second = declared(id="second", start=END, end="2026-11-30T00:00:00Z", arms=arms(50, 50))
    experiments = parse_experiments([first, second])

    def at(day: int) -> datetime:
        return datetime(2026, 11, day, tzinfo=UTC)

    assert running(experiments, at(1)) == ()
    assert [e.id for e in running(experiments, at(2))] == ["ranker-ab"]  # start is inclusive
    assert [e.id for e in running(experiments, at(16))] == ["second"]  # end is exclusive
    assert running(experiments, at(30)) == ()
    assert arm_versions_locked(experiments, at(1)) == {}
    assert arm_versions_locked(experiments, at(9)) == {"2026.11.0": "ranker-ab", "2026.11.1": "ranker-ab"}
    assert arm_versions_locked(experiments, at(20)) == {"2026.11.0": "second", "2026.11.1": "second"}
