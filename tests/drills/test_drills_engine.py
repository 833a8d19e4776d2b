"""The engine end to end against moto (Route 53, S3, EKS), the file-backed stack adapter, fake Tritons on
127.0.0.1 and a fake clock: every scenario, the run-time guardrails, abort and automatic rollback."""

from __future__ import annotations

import os
import signal

import boto3
import pytest
import yaml

from drills.engine import start_drill
from drills.errors import GuardrailError
from drills.journal import Journal, drill_dir, load
from drills.lock import Lock, lock_status
from drills.report import build_report, render_markdown
from drills.scenarios import build_plan
from tests.drills.drills_support import FAST, manifest_for


def plan_for(w, scenario, region=None, **extra):
    return build_plan(scenario, w.env, region, stacks_dir=w.stacks, overrides={**FAST, **extra})


def live_weights(w):
    return {r: s.weight for r, s in w.backend.route53.records().items()}


def file_weights(w, stack="prod-global"):
    doc = yaml.safe_load((w.stacks / f"Pulumi.{stack}.yaml").read_text())
    return {r: v.get("weight", v.get("failover")) for r, v in doc["config"]["reco-dr:routing"]["regions"].items()}


def node_groups(w, region):
    return {g.pool: (g.min, g.desired) for g in w.backend.capacity.node_groups(region)}


def events(entries, type_):
    return [e for e in entries if e["type"] == type_]


def test_evacuate_region_end_to_end(world):
    w = world("prod")
    pre_files, pre_groups = file_weights(w), {r: node_groups(w, r) for r in ("us-west-2", "eu-west-1")}
    plan = plan_for(w, "evacuate-region", "us-east-1")
    out = start_drill(plan, w.state, backend=w.backend, clock=w.clock)
    assert out.status == "completed", out.reason
    entries = load(w.state, out.drill_id)
    # the pre-drill state is journaled before the first change
    types = [e["type"] for e in entries]
    assert types.index("pre_state") < types.index("config_set")
    assert entries[1]["records"]["us-east-1"]["weight"] == 40
    # Route 53 (moto) carried each step's weights: the gates read them back after every `up`
    applied = [
        g["figures"]["records"]
        for e in events(entries, "step_done")
        for g in e["gates"]
        if g["kind"] == "weights_applied"
    ]
    assert applied == [
        {"us-east-1": 20, "us-west-2": 40, "eu-west-1": 40},
        {"us-east-1": 0, "us-west-2": 50, "eu-west-1": 50},
        {"us-east-1": 20, "us-west-2": 40, "eu-west-1": 40},
        {"us-east-1": 40, "us-west-2": 30, "eu-west-1": 30},
    ]
    # survivors were pre-scaled through EKS (min and desired) before the first shift, and restored after
    scaled = {(e["region"], e["pool"]): e["after"] for e in events(entries, "pools_scaling")}
    assert scaled == {("eu-west-1", "l40s"): {"min": 5, "desired": 5}, ("us-west-2", "a100"): {"min": 2, "desired": 2}}
    assert types.index("pools_scaling") < types.index("config_set")
    assert {r: node_groups(w, r) for r in pre_groups} == pre_groups
    assert live_weights(w) == {"us-east-1": 40, "us-west-2": 30, "eu-west-1": 30} and file_weights(w) == pre_files
    # during the hold nobody was answered by us-east-1
    hold = next(e for e in events(entries, "step_done") if e["name"] == "hold")
    assert "us-east-1" not in hold["probes"]["by_region"] and hold["probes"]["errors"] == 0
    r = build_report(entries)
    assert r["verdict"] == "PASS" and r["status"] == "completed"
    switch = r["rto"][0]
    assert switch["kind"] == "switch" and {p["part"] for p in switch["parts"]} >= {
        "records_in_sync",
        "dns_changed",
        "first_success",
        "drained",
        "slo_recovered",
    }
    assert 0 < switch["total"] <= plan.ttl + FAST["poll_seconds"] * 2


@pytest.mark.parametrize("env", ["prod", "staging"])  # weighted 40/30/30, and failover PRIMARY -> SECONDARY
def test_region_outage_measures_rto_in_parts(world, env):
    w = world(env)
    # An A/B experiment running when the plan was made: the drill's report names it (its users' figures include the
    # drill's span).
    plan = plan_for(w, "region-outage", "us-east-1").model_copy(update={"experiments": ["ranker-more-signal"]})
    servers = w.backend.extras["servers"]
    out = start_drill(plan, w.state, backend=w.backend, clock=w.clock)
    assert out.status == "completed", out.reason
    entries = load(w.state, out.drill_id)
    # the failover was data plane only: no config change, no Route 53 write during the drill
    assert not events(entries, "config_set") and not events(entries, "stack_up")
    rto = events(entries, "rto")[0]
    m = rto["milestones"]
    interval, threshold, poll = 10, 3, FAST["poll_seconds"]
    # Route 53 needs `threshold` failed probes, `interval` apart; the engine sees it at its next poll
    assert interval * (threshold - 1) <= m["detected"] <= interval * threshold + poll
    assert m["dns_changed"] >= m["detected"]
    assert m["drained"] <= m["dns_changed"] + plan.ttl + poll  # every client cache expired within one TTL
    assert m["slo_recovered"] is not None and m["slo_recovered"] >= m["first_success"]
    report = build_report(entries)
    assert report["experiments"] == ["ranker-more-signal"]
    assert "A/B experiments running through it: ranker-more-signal" in render_markdown(report)
    parts = {p["part"]: p for p in report["rto"][0]["parts"]}
    assert list(parts) == ["detected", "dns_changed", "first_success", "drained", "slo_recovered"]
    assert parts["detected"]["predicted"] == 30 and parts["drained"]["predicted"] == plan.ttl
    rto_obj = next(o for o in report["objectives"] if o["objective"].startswith("RTO"))
    assert rto_obj["measured"] == m["slo_recovered"] and rto_obj["verdict"] == "PASS"
    assert report["failover_window"]["errors"] > 0  # clients on us-east-1 saw the outage until they moved
    assert report["verdict"] == "PASS"
    md = render_markdown(report)
    for text in (
        "RTO in its parts",
        "detection (fault -> health check unhealthy)",
        "SLO recovered",
        "| RTO, probe-based (fault",
        "PASS",
    ):
        assert text in md
    # restored: the region serves again
    assert servers["us-east-1"].ready and w.backend.route53.health("us-east-1")
    assert w.backend.route53.dns_answer().get("us-east-1", 0) > 0


def test_region_outage_reads_the_pods_the_survivors_added_and_reports_the_capacity_part(world):
    """The measure-startup step asks the backend for the Triton pods each survivor added since the fault; the report
    gains their parts and the first added pod serving, after the fault. A backend that cannot tell passes, saying so."""
    w = world("prod")
    plan = plan_for(w, "region-outage", "us-east-1")
    asked: list[tuple[str, float]] = []

    def pod_startups(region: str, since: float) -> list[dict]:
        asked.append((region, since))
        if region != "eu-west-1":
            return []
        parts = {"node ready": 150.0, "image pulled": 0.0, "model fetch+verify": 30.0, "Triton load+warm-up": 40.0}
        parts["first good inference"] = 5.0
        return [{"pod": "triton-l40s-x", "node": "ip-10-0-1-7", "created": since + 20, "parts": parts, "total": 225.0}]

    w.backend.pod_startups = pod_startups
    out = start_drill(plan, w.state, backend=w.backend, clock=w.clock)
    assert out.status == "completed", out.reason
    assert sorted(r for r, _ in asked) == ["eu-west-1", "us-west-2"] and len({t for _, t in asked}) == 1  # the fault
    report = build_report(load(w.state, out.drill_id))
    cap = report["capacity"]
    assert cap["pods_added"] == 1 and cap["first_added_pod_serving_s"] == 245.0  # created 20 s after, 225 s to serve
    assert "Triton pods added since the fault" in render_markdown(report)

    w2 = world("prod")  # no pod_startups: measured False, the drill goes on
    out2 = start_drill(plan_for(w2, "region-outage", "us-east-1"), w2.state, backend=w2.backend, clock=w2.clock)
    assert out2.status == "completed", out2.reason
    assert build_report(load(w2.state, out2.drill_id))["capacity"] is None


def test_region_outage_control_plane_variant_inverts_and_restores_the_health_check(world):
    w = world("prod")
    plan = plan_for(w, "region-outage", "us-west-2", fault="hc-invert")
    assert any("control plane" in x for x in plan.warnings)
    out = start_drill(plan, w.state, backend=w.backend, clock=w.clock)
    assert out.status == "completed", out.reason
    hc = w.backend.route53.health_check_id("us-west-2")
    assert (
        w.backend.extras["r53"].get_health_check(HealthCheckId=hc)["HealthCheck"]["HealthCheckConfig"]["Inverted"]
        is False
    )
    assert w.backend.extras["servers"]["us-west-2"].ready  # the data plane was never touched
    assert events(load(w.state, out.drill_id), "fault_prepared")[0]["handle"] == {"inverted": False}


def test_artifact_replication_measures_rpo_and_cleans_up(world):
    w = world("prod", lag=40.0)
    out = start_drill(plan_for(w, "artifact-replication"), w.state, backend=w.backend, clock=w.clock)
    assert out.status == "completed", out.reason
    entries = load(w.state, out.drill_id)
    rpo = events(entries, "rpo")[0]
    assert set(rpo["lags"]) == {"us-east-1", "us-west-2", "eu-west-1"} and not rpo["missing"]
    assert all(40 <= lag <= 40 + FAST["poll_seconds"] for d in rpo["lags"].values() for lag in d.values())
    report = build_report(entries)
    assert next(o for o in report["objectives"] if o["objective"].startswith("RPO"))["verdict"] == "PASS"
    assert report["version_skew"]["skew"] is False and report["version_skew"]["versions"] == ["2026.11.0"]
    for region, o in w.backend.extras["outputs"].items():  # no canary left, not even as a noncurrent version
        vs = boto3.client("s3", region_name=region).list_object_versions(
            Bucket=o["bucket_name"], Prefix="drills/canary/"
        )
        assert not vs.get("Versions") and not vs.get("DeleteMarkers")


def test_artifact_replication_reports_slow_replication_and_version_skew(world):
    from infra.config import load_fleet
    from tests.drills.drills_support import ROOT

    fleet = load_fleet("prod", ROOT / "stacks")
    w = world(
        "prod",
        lag=100.0,
        overrides={"prod-global": {"objectives": {"rto_seconds": 120, "rpo_seconds": 60}}},
        manifests={"eu-west-1": manifest_for(fleet, version="2026.10.0")},
    )
    out = start_drill(
        plan_for(w, "artifact-replication", replication_timeout_seconds=150), w.state, backend=w.backend, clock=w.clock
    )
    assert out.status == "completed"  # the RPO gate does not block: the skew check and cleanup still run
    report = build_report(load(w.state, out.drill_id))
    assert report["verdict"] == "FAIL"
    rpo = next(o for o in report["objectives"] if o["objective"].startswith("RPO"))
    assert rpo["verdict"] == "FAIL" and rpo["measured"] >= 100
    assert report["version_skew"]["skew"] and report["version_skew"]["versions"] == ["2026.10.0", "2026.11.0"]
    text = " ".join(f["finding"] for f in report["findings"])
    assert "version skew" in text and "RPO" in text
    for region, o in w.backend.extras["outputs"].items():
        assert (
            not boto3.client("s3", region_name=region)
            .list_object_versions(Bucket=o["bucket_name"], Prefix="drills/canary/")
            .get("Versions")
        )


def test_stack_flip_swaps_and_restores_roles(world):
    w = world("staging")
    plan = plan_for(w, "stack-flip")
    out = start_drill(plan, w.state, backend=w.backend, clock=w.clock)
    assert out.status == "completed", out.reason
    entries = load(w.state, out.drill_id)
    roles = [
        g["figures"]["records"]
        for e in events(entries, "step_done")
        for g in e["gates"]
        if g["kind"] == "roles_applied"
    ]
    assert roles == [
        {"us-east-1": "SECONDARY", "us-west-2": "PRIMARY"},
        {"us-east-1": "PRIMARY", "us-west-2": "SECONDARY"},
    ]
    flip_probes = next(e for e in events(entries, "step_done") if e["name"] == "hold")["probes"]["by_region"]
    assert set(flip_probes) == {"us-west-2"}  # during the hold everything went to the new primary
    assert file_weights(w, "staging-global") == {"us-east-1": "PRIMARY", "us-west-2": "SECONDARY"}
    report = build_report(entries)
    assert [x["kind"] for x in report["rto"]] == ["switch", "switch"] and report["verdict"] == "PASS"


def test_abort_mid_shift_rolls_back_to_exact_pre_drill_weights(world):
    w = world("prod")
    servers = w.backend.extras["servers"]
    ups = {"n": 0}
    real_up = w.backend.stacks.up

    def up(stack, message):  # after the second weight shift, a survivor starts failing its inferences
        res = real_up(stack, message)
        ups["n"] += 1
        if ups["n"] == 2:
            servers["eu-west-1"].fail_infer = True
        return res

    w.backend.stacks.up = up
    pre_text = (w.stacks / "Pulumi.prod-global.yaml").read_text()
    pre_groups = node_groups(w, "eu-west-1")
    out = start_drill(plan_for(w, "evacuate-region", "us-east-1", steps=4), w.state, backend=w.backend, clock=w.clock)
    assert out.status == "aborted" and "success" in (out.reason or "")
    entries = load(w.state, out.drill_id)
    abort = events(entries, "abort")[0]
    assert abort["step"] in ("shift-2", "shift-3")
    assert events(entries, "rollback_done")[0]["verified"] is True
    assert live_weights(w) == {"us-east-1": 40, "us-west-2": 30, "eu-west-1": 30}
    assert yaml.safe_load((w.stacks / "Pulumi.prod-global.yaml").read_text()) == yaml.safe_load(pre_text)
    assert node_groups(w, "eu-west-1") == pre_groups
    r = build_report(entries)
    assert r["verdict"] == "FAIL" and r["abort"]["step"] == abort["step"] and r["rollback"]["verified"]


@pytest.mark.parametrize("how", ["error", "sigterm"])
def test_error_or_signal_mid_shift_rolls_back(world, how):
    w = world("prod")
    ups = {"n": 0}
    real_up = w.backend.stacks.up

    def up(stack, message):
        ups["n"] += 1
        if ups["n"] == 2:
            if how == "error":
                raise RuntimeError("provider crashed")
            os.kill(os.getpid(), signal.SIGTERM)  # delivered to the engine's handler at the next bytecode
        return real_up(stack, message)

    w.backend.stacks.up = up
    before = signal.getsignal(signal.SIGTERM)
    out = start_drill(plan_for(w, "evacuate-region", "us-east-1"), w.state, backend=w.backend, clock=w.clock)
    assert signal.getsignal(signal.SIGTERM) == before  # the engine's handlers are removed again
    assert out.status == "aborted"
    assert ("provider crashed" if how == "error" else "signal 15") in (out.reason or "")
    assert out.interrupted is (how == "sigterm")  # a runner of several drills stops after a signal, not after an error
    if how == "sigterm":
        # The signal arrived inside `up`: the up finished (journaled) before the rollback began, never cut short.
        entries = load(w.state, out.drill_id)
        types = [e["type"] for e in entries]
        drill_ups = [i for i, e in enumerate(entries) if e["type"] == "stack_up" and not e.get("by")]
        assert len(drill_ups) == 2 and drill_ups[-1] < types.index("rollback_begin")
    # the second shift's config was written before `up` failed: rollback restored it and re-applied
    assert file_weights(w) == {"us-east-1": 40, "us-west-2": 30, "eu-west-1": 30}
    assert live_weights(w) == {"us-east-1": 40, "us-west-2": 30, "eu-west-1": 30}
    assert events(load(w.state, out.drill_id), "rollback_done")[0]["verified"]


def test_second_drill_is_refused_while_one_holds_the_lock(world):
    w = world("prod")
    held = Lock.acquire(w.state, "prod", "prod-other-drill")
    before = (w.stacks / "Pulumi.prod-global.yaml").read_bytes()
    try:
        with pytest.raises(GuardrailError) as e:
            start_drill(plan_for(w, "evacuate-region", "us-east-1"), w.state, backend=w.backend, clock=w.clock)
        assert e.value.code == "lock" and "prod-other-drill" in str(e.value)
    finally:
        held.release()
    assert (w.stacks / "Pulumi.prod-global.yaml").read_bytes() == before
    assert not (w.state / "drills").exists()  # no journal: nothing started
    assert live_weights(w) == {"us-east-1": 40, "us-west-2": 30, "eu-west-1": 30}


def test_precheck_refuses_when_live_config_drifted_from_the_plan(world):
    w = world("prod")
    plan = plan_for(w, "evacuate-region", "us-east-1")
    w.backend.stacks.set_config("prod-global", {"routing.regions.us-west-2.weight": 31})  # someone changed it
    before = (w.stacks / "Pulumi.prod-global.yaml").read_bytes()
    out = start_drill(plan, w.state, backend=w.backend, clock=w.clock)
    assert out.status == "refused" and out.exit_code == 3 and "re-plan" in (out.reason or "")
    assert (w.stacks / "Pulumi.prod-global.yaml").read_bytes() == before
    assert not events(load(w.state, out.drill_id), "config_set")


def test_precheck_refuses_a_survivor_without_engines_in_its_bucket(world):
    from infra.config import load_fleet
    from tests.drills.drills_support import ROOT

    fleet = load_fleet("prod", ROOT / "stacks")
    w = world("prod", manifests={"us-west-2": manifest_for(fleet, ccs=["9.0", "8.9", "8.6"])})  # no 8.0 for its A100s
    out = start_drill(plan_for(w, "evacuate-region", "us-east-1"), w.state, backend=w.backend, clock=w.clock)
    assert out.status == "refused" and "us-west-2" in (out.reason or "") and "8.0" in (out.reason or "")
    entries = load(w.state, out.drill_id)
    assert not events(entries, "config_set") and not events(entries, "pools_scaling")
    assert live_weights(w) == {"us-east-1": 40, "us-west-2": 30, "eu-west-1": 30}


def test_precheck_refuses_a_survivor_whose_manifest_does_not_validate(world):
    from infra.config import load_fleet
    from tests.drills.drills_support import ROOT
    from tests.manifests import as_json

    fleet = load_fleet("prod", ROOT / "stacks")
    # list-shaped engines: once guessed at by a tolerant reader, now not a manifest at all (and not "no engines")
    bad = as_json(manifest_for(fleet)) | {"engines": [{"compute_capability": cc} for cc in fleet.compute_capabilities]}
    w = world("prod", manifests={"us-west-2": bad})
    out = start_drill(plan_for(w, "evacuate-region", "us-east-1"), w.state, backend=w.backend, clock=w.clock)
    assert out.status == "refused"
    assert (
        "us-west-2: the manifest in us-west-2's bucket does not match model_build's manifest schema: engines: "
        "Input should be a valid dictionary" in (out.reason or "")
    )
    assert not events(load(w.state, out.drill_id), "config_set")


def test_manifest_skew_names_a_region_whose_manifest_does_not_validate():
    from types import SimpleNamespace

    from drills.actions import ACTIONS
    from drills.report import _served_version
    from tests.manifests import as_json, manifest

    good = as_json(manifest("2026.11.0", built=["9.0"]))
    docs = {"us-east-1": (good, "a" * 64), "us-west-2": (good | {"engines": []}, "b" * 64), "eu-west-1": (None, None)}
    events_seen: list = []
    run = SimpleNamespace(
        backend=SimpleNamespace(s3=SimpleNamespace(current_manifest=docs.__getitem__)),
        event=lambda type_, **kw: events_seen.append((type_, kw)),
    )
    out = ACTIONS["manifest_skew"](run, SimpleNamespace(params={"regions": list(docs)}))  # type: ignore[arg-type]  # a stub run
    assert out["skew"] and out["versions"] == ["2026.11.0"]
    assert out["regions"]["us-east-1"] == {
        "present": True,
        "version": "2026.11.0",
        "sha256": "a" * 64,
        "engines": ["9.0"],
    }
    usw2 = out["regions"]["us-west-2"]
    assert usw2["present"] and usw2["version"] is None and usw2["engines"] == []
    assert usw2["invalid"].startswith("the manifest in us-west-2's bucket does not match model_build's manifest schema")
    assert _served_version(usw2).startswith("invalid manifest (the manifest in us-west-2's bucket")
    assert out["regions"]["eu-west-1"]["present"] is False and _served_version(out["regions"]["eu-west-1"]) == "absent"
    assert events_seen == [("skew", out)]


def test_resume_continues_after_the_last_completed_step(world, monkeypatch):
    from drills import engine

    w = world("prod")
    plan = plan_for(w, "evacuate-region", "us-east-1")
    real = engine._rollback

    class Crash(BaseException):
        pass

    def crash_instead_of_rollback(run, status, reason):  # a crash: no rollback, the journal stops here
        raise Crash()

    ups = {"n": 0}
    real_up = w.backend.stacks.up

    def up(stack, message):
        ups["n"] += 1
        if ups["n"] == 2:
            raise RuntimeError("host lost")
        return real_up(stack, message)

    w.backend.stacks.up = up
    monkeypatch.setattr(engine, "_rollback", crash_instead_of_rollback)
    with pytest.raises(Crash):
        start_drill(plan, w.state, backend=w.backend, clock=w.clock)
    monkeypatch.setattr(engine, "_rollback", real)
    w.backend.stacks.up = real_up
    drill_id = next((w.state / "drills").iterdir()).name
    # the crashed drill still holds nothing (its process lives: this test); a new drill is refused until resolved
    Lock.acquire(w.state, "prod", drill_id).release()
    out = engine.resume_drill(drill_id, w.state, confirm="prod", backend=w.backend, clock=w.clock)
    assert out.status == "completed", out.reason
    entries = load(w.state, drill_id)
    assert events(entries, "takeover")[0]["from_index"] == [s.name for s in plan.steps].index("shift-2")
    assert live_weights(w) == {"us-east-1": 40, "us-west-2": 30, "eu-west-1": 30}


def test_journal_tolerates_a_torn_last_line(tmp_path, clock):
    j = Journal.create(tmp_path, "d1", clock)
    j.write("start", drill_id="d1", plan={"env": "prod", "scenario": "x", "region": None, "steps": []})
    j.write("step_begin", index=0, name="a", action="hold")
    with open(j.path, "a") as f:
        f.write('{"seq": 2, "type": "step_do')  # killed mid-write
    assert [e["type"] for e in load(tmp_path, "d1")] == ["start", "step_begin"]
    assert (drill_dir(tmp_path, "d1") / "journal.jsonl").exists()


def test_a_drill_refuses_to_start_while_readiness_fails_naming_the_check_and_a_restore_does_not_wait(world):
    """The engine consults the backend's readiness before any journal or change: a failing check is named, the lock
    is free afterwards; a plan without the gate (restore) is not held by it."""
    from drills.readiness.checks import CheckResult

    w = world("prod")
    seen = []

    def readiness() -> list[CheckResult]:
        seen.append(1)
        return [
            CheckResult("capacity", True, "every single-region loss is covered"),
            CheckResult("digest", False, "digests differ: us-east-1 aaa, us-west-2 bbb"),
        ]

    w.backend.readiness = readiness
    plan = plan_for(w, "region-outage", "us-east-1")
    with pytest.raises(GuardrailError) as e:
        start_drill(plan, w.state, backend=w.backend, clock=w.clock)
    assert e.value.code == "not-ready" and "digest: digests differ" in str(e.value) and "capacity" not in str(e.value)
    assert seen and not list((w.state / "drills").glob("*/journal.jsonl"))  # nothing journaled, nothing changed
    assert lock_status(w.state, w.env) is None  # the environment's lock is free again
    restore = build_plan("restore", w.env, "us-east-1", stacks_dir=w.stacks, overrides=FAST)
    assert restore.readiness_gate is False and plan.readiness_gate is True
    w.backend.readiness = lambda: [CheckResult("digest", True, "every region serves manifest abc")]
    assert start_drill(plan_for(w, "artifact-replication"), w.state, backend=w.backend, clock=w.clock).status == (
        "completed"
    )
