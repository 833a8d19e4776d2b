"""`python -m drills experiment plan|report`: the declared experiment as planned (split with the holdout, users per
arm a fixed-horizon test needs), and the verdict from an impression/click log written the way the event stream
writes it: a real lift ships the candidate, a broken split stops on the sample-ratio check, an unknown id exits 2."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import pytest

from drills.cli import main
from drills.experiment.assignment import assign
from drills.experiment.events import Click, EventWriter, Impression
from drills.experiment.stats import sample_size_per_arm
from infra.config import load_fleet
from tests.experiment.test_stack_config import _experiment, _stacks


@pytest.fixture
def stacks(tmp_path):
    return _stacks(tmp_path, [_experiment()])


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_plan_shows_the_split_with_its_holdout_and_the_users_per_arm_needed(stacks, capsys):
    rc, out, _ = _run(capsys, "experiment", "plan", "--env", "prod", "--stacks-dir", str(stacks), "--json")
    assert rc == 0
    (e,) = json.loads(out)
    assert e["id"] == "ranker-more-signal" and e["running"] is False
    assert e["split"] == {"holdout": 0.05, "control": 0.475, "more-signal": 0.475}
    assert e["users_per_arm"] == sample_size_per_arm(0.05, 0.05, 0.05, 0.8) > 10_000
    rc, out, _ = _run(capsys, "experiment", "plan", "--env", "prod", "--stacks-dir", str(stacks))
    assert rc == 0 and "users per arm" in out and "47.5%" in out


def _log(path, experiment, users: int, ctr: dict[str, float], arm_of=None, seed: int = 5) -> None:
    """One impression per user of 10 items; a click at position 1 with the cell's probability."""
    rng = random.Random(seed)
    now = datetime(2026, 12, 8, tzinfo=UTC)
    with EventWriter(path) as w:
        for u in range(users):
            uid = f"u{u}"
            arm = arm_of(uid) if arm_of else assign(experiment, uid)
            base = {"ts": now, "request_id": f"r{u}", "user_id": uid, "experiment": experiment.id, "arm": arm}
            base |= {"region": "us-east-1", "model_version": "v"}
            items = tuple(f"i{k}" for k in range(10))
            w.append(Impression(**base, items=items))
            if rng.random() < ctr.get(arm, ctr["control"]):
                w.append(Click(**base, item_id=items[0], position=1))


def test_report_ships_a_candidate_with_a_real_lift_and_names_every_arms_figures(stacks, tmp_path, capsys):
    (e,) = load_fleet("prod", stacks).glob.experiments
    log = tmp_path / "events.jsonl"
    _log(log, e, 6000, {"control": 0.05, "more-signal": 0.10})
    argv = ["experiment", "report", "--env", "prod", "--stacks-dir", str(stacks), "--id", e.id, "--events", str(log)]
    rc, out, _ = _run(capsys, *argv, "--json")
    assert rc == 0
    doc = json.loads(out)
    assert set(doc["arms"]) == {"holdout", "control", "more-signal"}
    for a in doc["arms"].values():
        assert set(a) == {"users", "impressions", "clicks", "ctr", "ndcg10"} and a["users"] == a["impressions"]
    assert doc["arms"]["more-signal"]["ctr"] > doc["arms"]["control"]["ctr"]
    assert doc["srm_ok"] is True and doc["decision"] == "ship more-signal" and doc["final"] is True
    rc, out, _ = _run(capsys, *argv)
    assert rc == 0 and "decision: ship more-signal" in out


def test_report_stops_on_a_broken_split(stacks, tmp_path, capsys):
    (e,) = load_fleet("prod", stacks).glob.experiments
    log = tmp_path / "events.jsonl"
    # A router that sends 3 in 4 of the candidate's users to control: the split is broken, whatever the metrics say.
    _log(log, e, 4000, {"control": 0.05}, arm_of=lambda u: "control" if int(u[1:]) % 4 else assign(e, u))
    argv = ["experiment", "report", "--env", "prod", "--stacks-dir", str(stacks), "--id", e.id, "--events", str(log)]
    rc, out, _ = _run(capsys, *argv, "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["srm_ok"] is False and doc["decision"] == "stop: sample ratio mismatch"


def test_an_unknown_experiment_or_log_exits_2_naming_it(stacks, tmp_path, capsys):
    rc, _, err = _run(capsys, "experiment", "plan", "--env", "prod", "--stacks-dir", str(stacks), "--id", "nope")
    assert rc == 2 and "no experiment 'nope'" in err and "ranker-more-signal" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "impression"}\n')
    rc, _, err = _run(
        capsys,
        "experiment",
        "report",
        "--env",
        "prod",
        "--stacks-dir",
        str(stacks),
        "--id",
        "ranker-more-signal",
        "--events",
        str(bad),
    )
    assert rc == 2 and "cannot read the events log" in err
