"""total-outage: every region down at once, then back. The plan (steps, faults in every region, no DNS-exclusion
assertion, deadline-only aborts), its opt-in guardrail and hold validation, the CLI, and the engine end to end
against moto and fake Tritons on a fake clock: completed with every fault cleared, and rolled back with every fault
cleared when it aborts mid-outage or mid-injection."""

from __future__ import annotations

import json

import pytest
import yaml

from drills.cli import main
from drills.engine import start_drill
from drills.errors import GuardrailError
from drills.journal import load
from drills.report import build_report, render_markdown
from drills.scenarios import SCENARIOS, build_plan
from tests.drills.drills_support import FAST

PROD = ["eu-west-1", "us-east-1", "us-west-2"]
ACTIONS = [
    "precheck",
    "inject_fault",
    "observe_outage",
    "hold",
    "clear_fault",
    "observe_recovery",
    "verify_restored",
]


def plan(env="prod", stacks_dir=None, **params):
    kw = {"stacks_dir": stacks_dir} if stacks_dir else {}
    return build_plan("total-outage", env, overrides={"allow_total_outage": env, **params}, **kw)


def events(entries, type_):
    return [e for e in entries if e["type"] == type_]


# ---------------------------------------------------------------- the plan
@pytest.mark.parametrize("env, regions", [("prod", PROD), ("staging", ["us-east-1", "us-west-2"])])
def test_plan_fails_every_region_holds_clears_and_observes_recovery(env, regions):
    p = plan(env)
    assert p.scenario == "total-outage" and p.region is None and p.touches == {}
    assert [s.action for s in p.steps] == ACTIONS
    steps = {s.name: s for s in p.steps}
    # one step injects the fault in every region, one clears it in every region
    assert steps["inject-fault"].params == {"regions": regions, "fault": "triton-down"}
    assert steps["clear-fault"].params == {"regions": regions, "fault": "triton-down"}
    assert steps["inject-fault"].mutates and steps["clear-fault"].mutates
    assert sum(s.mutates for s in p.steps) == 2
    # every region's health check unhealthy after the fault and still at the end of the hold
    for name in ("observe-outage", "hold"):
        assert [(c.kind, c.params) for c in steps[name].checks] == [("unhealthy", {"regions": regions})]
    assert (
        steps["hold"].wait_seconds == 300 and steps["observe-outage"].params["deadline"] == p.objectives.rto_seconds * 2
    )
    # the outage runs in the failover phase: no steady-state SLO judgement until the verification
    assert [s.phase for s in p.steps] == ["steady", *["failover"] * 5, "steady"]
    rec = steps["observe-recovery"]
    assert rec.params == {"regions": regions, "timeout": p.objectives.rto_seconds * 2, "slo_recovery": True}
    assert [c.kind for c in rec.checks] == ["healthy", "slo"] and rec.checks[0].params["regions"] == regions
    # every region restarts at the clearing: the precheck verifies every region's engines
    assert sorted(steps["precheck"].params["engines_for"]) == regions
    # nothing asserts that DNS excludes a region (with every record unhealthy Route 53 answers all of them)
    kinds = {c.kind for s in p.steps for c in s.checks} | {c.kind for c in p.abort_conditions}
    assert "dns_excludes" not in kinds
    # aborts: deadlines only (the outage too long, the recovery too slow), no SLO or health abort during the outage
    assert [(c.kind, c.params["since"], c.params["until"]) for c in p.abort_conditions] == [
        ("deadline", "fault", "fault_cleared"),
        ("deadline", "fault_cleared", "slo_recovered"),
    ]
    assert p.abort_conditions[0].params["seconds"] == p.objectives.rto_seconds * 2 + 300 + 30
    # rollback clears the fault in every region
    assert all(r in p.rollback[0] for r in regions) and "clear the fault in every region" in p.rollback[0]
    assert any("game day" in n and "fallback" in n for n in p.notes)
    assert "game day" in SCENARIOS["total-outage"].summary


def test_hold_and_fault_parameters_are_used():
    p = plan(hold_seconds=45, fault="hc-invert")
    steps = {s.name: s for s in p.steps}
    assert steps["hold"].wait_seconds == 45 and "45 s" in steps["hold"].description
    assert steps["inject-fault"].params["fault"] == "hc-invert"
    assert any("fails open" in w and "hc-invert" in w for w in p.warnings)


# ---------------------------------------------------------------- guardrails
def test_refused_without_the_opt_in_naming_what_to_pass():
    with pytest.raises(GuardrailError) as e:
        build_plan("total-outage", "prod")
    assert e.value.code == "total-outage-opt-in"
    msg = str(e.value)
    assert "--allow-total-outage prod" in msg and "allow_total_outage: prod" in msg and "Nothing was changed" in msg
    assert all(r in msg for r in PROD) and "game day" in msg


def test_the_opt_in_must_name_this_environment():
    with pytest.raises(GuardrailError) as e:
        build_plan("total-outage", "prod", overrides={"allow_total_outage": "staging"})
    assert e.value.code == "total-outage-opt-in"
    assert "'staging', not 'prod'" in str(e.value) and "--allow-total-outage prod" in str(e.value)


def test_region_is_not_taken():
    with pytest.raises(GuardrailError) as e:
        build_plan("total-outage", "prod", "us-east-1", overrides={"allow_total_outage": "prod"})
    assert e.value.code == "region-not-applicable"


@pytest.mark.parametrize(
    "hold, code, text",
    [
        (
            0,
            "parameters",
            "hold_seconds = 0: rule: total-outage keeps every region down for hold_seconds drill seconds, "
            "so it must be > 0",
        ),
        (0.0, "parameters", "hold_seconds = 0: rule: total-outage keeps"),
        (-5, "parameters", "hold_seconds = -5: rule: Input should be greater than or equal to 0"),
        ("soon", "parameters", "hold_seconds = 'soon': rule: Input should be a valid number"),
    ],
)
def test_bad_hold_values_are_refused_with_key_value_and_rule(hold, code, text):
    with pytest.raises(GuardrailError) as e:
        plan(hold_seconds=hold)
    assert e.value.code == code and text in str(e.value)


def test_bad_hold_in_a_plan_file_is_refused_with_key_value_and_rule(tmp_path):
    f = tmp_path / "outage.yaml"
    f.write_text(yaml.safe_dump({"parameters": {"hold_seconds": -1, "allow_total_outage": "prod"}}))
    with pytest.raises(GuardrailError) as e:
        build_plan("total-outage", "prod", plan_file=f)
    assert e.value.code == "plan-file"
    assert "parameters.hold_seconds = -1: rule: Input should be greater than or equal to 0" in str(e.value)
    # the opt-in from a plan file is accepted like any parameter
    f.write_text(yaml.safe_dump({"parameters": {"hold_seconds": 20, "allow_total_outage": "prod"}}))
    assert build_plan("total-outage", "prod", plan_file=f).parameters["allow_total_outage"] == "prod"


# ---------------------------------------------------------------- the CLI
def test_cli_lists_refuses_and_plans(capsys):
    with pytest.raises(SystemExit):
        main(["plan", "--help"])
    assert "total-outage" in capsys.readouterr().out
    assert main(["plan", "total-outage", "--env", "prod"]) == 3
    assert "--allow-total-outage prod" in capsys.readouterr().err
    assert (
        main(["plan", "total-outage", "--env", "prod", "--allow-total-outage", "prod", "--hold", "30", "--json"]) == 0
    )
    p = json.loads(capsys.readouterr().out)
    assert p["parameters"]["allow_total_outage"] == "prod" and [s["action"] for s in p["steps"]] == ACTIONS
    assert next(s for s in p["steps"] if s["name"] == "hold")["wait_seconds"] == 30


# ---------------------------------------------------------------- the engine
def test_engine_takes_every_region_down_and_brings_every_one_back(world, monkeypatch):
    w = world("prod")
    servers = w.backend.extras["servers"]
    faults = w.backend.faults
    handles, cleared_with = {}, {}
    prepare, clear = faults.prepare, faults.clear

    def tagged_prepare(region, kind):
        handles[region] = {**prepare(region, kind), "region": region}
        return handles[region]

    def recording_clear(region, kind, handle):
        cleared_with[region] = handle
        clear(region, kind, handle)

    monkeypatch.setattr(faults, "prepare", tagged_prepare)
    monkeypatch.setattr(faults, "clear", recording_clear)
    p = build_plan("total-outage", "prod", stacks_dir=w.stacks, overrides={**FAST, "allow_total_outage": "prod"})
    out = start_drill(p, w.state, backend=w.backend, clock=w.clock)
    assert out.status == "completed", out.reason
    entries = load(w.state, out.drill_id)
    # a fault in every region, each journaled before it was injected, each cleared with its own region's handle
    assert sorted(e["region"] for e in events(entries, "fault_prepared")) == PROD
    assert sorted(e["region"] for e in events(entries, "fault_cleared")) == PROD
    assert cleared_with == handles and all(h["region"] == r for r, h in cleared_with.items())
    types = [e["type"] for e in entries]
    assert all(types[i - 1] == "fault_prepared" for i, t in enumerate(types) if t == "fault_injected")
    # nothing changed stacks or Route 53 records
    assert not events(entries, "config_set") and not events(entries, "stack_up")
    # every health check turned unhealthy (Route 53's interval x threshold), DNS kept answering (fails open)
    outage = events(entries, "outage")[0]
    interval, threshold, poll = 10, 3, FAST["poll_seconds"]
    assert set(outage["detected"]) == set(PROD)
    assert all(interval * (threshold - 1) <= t <= interval * threshold + poll for t in outage["detected"].values())
    assert outage["all_down"] == max(outage["detected"].values())
    assert set(outage["dns_answer"]) == set(PROD)
    # what the clients saw during the hold: nothing answered
    hold = next(e for e in events(entries, "step_done") if e["name"] == "hold")
    assert hold["probes"]["n"] > 0 and hold["probes"]["ok"] == 0
    assert all(g["ok"] and g["kind"] == "unhealthy" for g in hold["gates"])
    # recovered: every health check healthy, DNS answering every region, the SLO met again after the clearing
    rec = events(entries, "recovery")[0]
    assert rec["ok"] and set(rec["healthy"]) == set(PROD) and all(v is not None for v in rec["healthy"].values())
    assert rec["dns_answers_every_region"] is not None and rec["slo_recovered"] is not None
    done = {e["name"]: e for e in events(entries, "step_done")}
    assert all(g["ok"] for g in done["observe-recovery"]["gates"])
    assert done["verify"]["result"] == {"verified": True}
    assert all(s.ready for s in servers.values())
    assert all(w.backend.route53.health(r) for r in PROD)
    assert set(w.backend.route53.dns_answer()) == set(PROD)
    report = build_report(entries)
    assert report["status"] == "completed" and report["verdict"] == "PASS", report["findings"]
    t = report["total_outage"]
    assert t["outage"]["detected"] == outage["detected"] and t["probes_while_down"]["ok"] == 0
    assert t["probes_while_down"]["n"] >= hold["probes"]["n"] and t["recovery"]["ok"]
    md = render_markdown(report)
    assert "## Total outage (every region down)" in md and "Route 53 fails open" in md


def test_abort_during_the_outage_rolls_back_clearing_every_fault(world, monkeypatch):
    """One region's health check never turns unhealthy: the outage is not observed in time, the drill aborts and
    the rollback clears the fault in every region."""
    w = world("prod")
    servers = w.backend.extras["servers"]
    r53 = w.backend.route53
    health = r53.health
    monkeypatch.setattr(r53, "health", lambda region: True if region == "us-west-2" else health(region))
    p = build_plan("total-outage", "prod", stacks_dir=w.stacks, overrides={**FAST, "allow_total_outage": "prod"})
    out = start_drill(p, w.state, backend=w.backend, clock=w.clock)
    assert out.status == "aborted" and "still healthy us-west-2" in (out.reason or "")
    entries = load(w.state, out.drill_id)
    assert sorted(e["region"] for e in events(entries, "fault_cleared") if e.get("by") == "rollback") == PROD
    assert events(entries, "rollback_done")[0]["verified"]
    assert all(s.ready for s in servers.values())


def test_a_failed_injection_part_way_still_clears_every_prepared_fault(world, monkeypatch):
    w = world("prod")
    servers = w.backend.extras["servers"]
    faults = w.backend.faults
    inject = faults.inject

    def inject_until_the_last(region, kind, handle):
        if region == PROD[-1]:
            raise RuntimeError(f"{region}: the Kubernetes API refused the scale")
        inject(region, kind, handle)

    monkeypatch.setattr(faults, "inject", inject_until_the_last)
    p = build_plan("total-outage", "prod", stacks_dir=w.stacks, overrides={**FAST, "allow_total_outage": "prod"})
    out = start_drill(p, w.state, backend=w.backend, clock=w.clock)
    assert out.status == "aborted" and "refused the scale" in (out.reason or "")
    entries = load(w.state, out.drill_id)
    assert sorted(e["region"] for e in events(entries, "fault_prepared")) == PROD
    assert sorted(e["region"] for e in events(entries, "fault_cleared")) == PROD
    assert events(entries, "rollback_done")[0]["verified"]
    assert all(s.ready for s in servers.values())


def test_region_outage_keeps_its_single_region_results_on_the_shared_actions(world):
    """inject_fault / clear_fault / observe_recovery now take `regions` too; region-outage's `region` form keeps its
    results, and its clearing uses its own region's handle."""
    w = world("prod")
    p = build_plan("region-outage", "prod", "us-east-1", stacks_dir=w.stacks, overrides=FAST)
    out = start_drill(p, w.state, backend=w.backend, clock=w.clock)
    assert out.status == "completed", out.reason
    done = {e["name"]: e["result"] for e in events(load(w.state, out.drill_id), "step_done")}
    assert set(done["inject-fault"]) == {"t_fault", "handle"}
    assert set(done["clear-fault"]) == {"t_cleared"}
    assert set(done["observe-recovery"]) == {"healthy_after"}
    assert w.backend.extras["servers"]["us-east-1"].ready
