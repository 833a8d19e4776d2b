"""A rollback that fails part-way: restore() puts back every part it can and reports every part it cannot, the
environment's lock stays held, every later drill is refused with the drill, what was not restored and the command
that resolves it, until a rollback retry succeeds or an operator runs `drills resolve`."""

from __future__ import annotations

import pytest

from drills.cli import build_parser, main
from drills.engine import resolve_drill, rollback_drill, start_drill
from drills.errors import GuardrailError
from drills.journal import Journal, load, summarise
from drills.lock import Lock, lock_status
from drills.scenarios import build_plan
from tests.drills.drills_support import FAST

PRE_WEIGHTS = {"us-east-1": 40, "us-west-2": 30, "eu-west-1": 30}


def plan_for(w, **extra):
    return build_plan("evacuate-region", w.env, "us-east-1", stacks_dir=w.stacks, overrides={**FAST, **extra})


def live_weights(w):
    return {r: s.weight for r, s in w.backend.route53.records().items()}


def node_groups(w, region):
    return {g.pool: (g.min, g.desired) for g in w.backend.capacity.node_groups(region)}


def events(entries, type_):
    return [e for e in entries if e["type"] == type_]


def failing_drill(w):
    """An evacuation that aborts after its second shift (a survivor fails its inferences) and whose rollback
    cannot reach the EKS API. Returns (outcome, the pre-drill node groups, the switch that mends the EKS API)."""
    servers = w.backend.extras["servers"]
    capacity = w.backend.capacity
    real_up, real_scaling = w.backend.stacks.up, capacity.set_scaling
    broken = {"eks": False, "ups": 0}

    def up(stack, message):
        res = real_up(stack, message)
        broken["ups"] += 1
        if broken["ups"] == 2:
            servers["eu-west-1"].fail_infer = True
            broken["eks"] = True
        return res

    def set_scaling(region, pool, *, min=None, desired=None):
        if broken["eks"]:
            raise RuntimeError(f"EKS API throttled for {region}/{pool}")
        return real_scaling(region, pool, min=min, desired=desired)

    w.backend.stacks.up = up
    capacity.set_scaling = set_scaling
    pre = {r: node_groups(w, r) for r in ("us-west-2", "eu-west-1")}
    out = start_drill(plan_for(w, steps=4), w.state, backend=w.backend, clock=w.clock)
    servers["eu-west-1"].fail_infer = False

    def mend() -> None:
        broken["eks"] = False

    return out, pre, mend


def test_restore_puts_back_what_it_can_and_reports_every_part_that_failed(world):
    w = world("prod")
    out, pre_groups, _ = failing_drill(w)
    assert out.status == "rollback-failed" and out.exit_code == 4
    entries = load(w.state, out.drill_id)
    done = events(entries, "rollback_done")[0]
    assert done["verified"] is False
    # Traffic went back although capacity could not: the config undo ran, and its stack was applied.
    assert live_weights(w) == PRE_WEIGHTS
    assert any("prod-global" in x for x in done["restored"])
    # Every pre-scaled node group is reported, each on its own (not only the first that failed)
    scaled = {(e["region"], e["pool"]) for e in events(entries, "pools_scaling")}
    assert len(scaled) >= 2
    assert sorted(done["failed"]) == sorted(
        f"restore_pools: node group {r}/{p}: RuntimeError: EKS API throttled for {r}/{p}" for r, p in scaled
    )
    assert all(any(f"{r}/{p} node group" in m for m in done["mismatches"]) for r, p in scaled)
    assert {r: node_groups(w, r) for r in pre_groups} != pre_groups  # still pre-scaled: nothing hid the failure
    assert summarise(entries)["status"] == "rollback-failed"


def test_a_failed_rollback_keeps_the_lock_until_resolved_by_an_operator(world, capsys):
    w = world("prod")
    out, pre_groups, mend = failing_drill(w)
    drill = out.drill_id
    assert out.status == "rollback-failed"
    assert f"python -m drills resolve {drill} --confirm prod --reason" in (out.reason or "")

    held = lock_status(w.state, "prod")
    assert held is not None and held["drill_id"] == drill and held["state"] == "rollback-failed"
    assert held["alive"] is False and any("EKS API throttled" in f for f in held["failures"])

    # Every later drill (or release: the same engine and lock) is refused before it changes or journals anything.
    journals = set((w.state / "drills").iterdir())
    with pytest.raises(GuardrailError) as e:
        start_drill(plan_for(w), w.state, backend=w.backend, clock=w.clock)
    msg = str(e.value)
    assert e.value.code == "rollback-failed"
    assert f"drill {drill} could not roll prod back" in msg
    assert "undo failed: restore_pools: node group" in msg and "EKS API throttled" in msg
    assert f"python -m drills rollback {drill} --state-dir {w.state.resolve()}" in msg
    assert f"python -m drills resolve {drill} --confirm prod --reason" in msg
    assert set((w.state / "drills").iterdir()) == journals
    with pytest.raises(GuardrailError) as e:
        Lock.acquire(w.state, "prod", "prod-release-2026")
    assert e.value.code == "rollback-failed"

    # A retry that fails again keeps it too.
    again = rollback_drill(drill, w.state, backend=w.backend, clock=w.clock)
    assert again.status == "rollback-failed"
    assert lock_status(w.state, "prod")["state"] == "rollback-failed"  # type: ignore[index]  # left again

    # resolve: refused with the wrong environment, refused without a reason
    with pytest.raises(GuardrailError) as e:
        resolve_drill(drill, w.state, confirm="staging", reason="fixed")
    assert e.value.code == "confirm"
    with pytest.raises(GuardrailError) as e:
        resolve_drill(drill, w.state, confirm="prod", reason="  ")
    assert e.value.code == "usage"

    # The operator puts the node groups back by hand, then records it.
    mend()
    for r, pools in pre_groups.items():
        for pool, (lo, desired) in pools.items():
            w.backend.capacity.set_scaling(r, pool, min=lo, desired=desired)
    rc = main(
        [
            "resolve",
            drill,
            "--confirm",
            "prod",
            "--reason",
            "node groups set back to 2/2 in the console, checked with describe-nodegroup",
            "--operator",
            "alice",
            "--state-dir",
            str(w.state),
        ]
    )
    assert rc == 0, capsys.readouterr()
    entries = load(w.state, drill)
    resolved = events(entries, "resolved")[0]
    assert resolved["operator"] == "alice" and "describe-nodegroup" in resolved["reason"]
    assert any("EKS API throttled" in x for x in resolved["left"])  # what the operator signed off on
    assert entries[-1]["type"] == "finished" and entries[-1]["status"] == "resolved"
    assert lock_status(w.state, "prod") is None
    assert (w.state / "drills" / drill / f"{drill}.report.md").exists()

    # Resolved is final: resolving again is refused; the environment is free for the next drill.
    with pytest.raises(GuardrailError) as e:
        resolve_drill(drill, w.state, confirm="prod", reason="again")
    assert e.value.code == "resolve" and "resolved, not rollback-failed" in str(e.value)
    Lock.acquire(w.state, "prod", "prod-next").release()


def test_a_successful_rollback_retry_releases_the_lock(world):
    w = world("prod")
    out, pre_groups, mend = failing_drill(w)
    assert out.status == "rollback-failed"
    mend()
    again = rollback_drill(out.drill_id, w.state, backend=w.backend, clock=w.clock)
    assert again.status == "rolled-back", again.reason
    assert {r: node_groups(w, r) for r in pre_groups} == pre_groups and live_weights(w) == PRE_WEIGHTS
    assert lock_status(w.state, "prod") is None
    Lock.acquire(w.state, "prod", "prod-next").release()


def test_resolve_refuses_a_drill_that_did_not_fail_its_rollback(tmp_path, clock):
    j = Journal.create(tmp_path, "d-crashed", clock)
    j.write("start", drill_id="d-crashed", plan={"env": "prod", "scenario": "evacuate-region", "region": "us-east-1"})
    j.close()
    with pytest.raises(GuardrailError) as e:
        resolve_drill("d-crashed", tmp_path, confirm="prod", reason="looked fine")
    assert e.value.code == "resolve" and "drills rollback d-crashed" in str(e.value)
    assert summarise(load(tmp_path, "d-crashed"))["status"] == "incomplete"  # nothing journaled
    assert lock_status(tmp_path, "prod") is None


def test_resolve_has_help(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["resolve", "--help"])
    text = capsys.readouterr().out
    for part in ("drill_id", "--confirm ENV", "--reason REASON", "--operator OPERATOR", "rollback failed"):
        assert part in text, part
