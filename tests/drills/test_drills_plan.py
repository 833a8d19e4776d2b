"""Pure planning: weights per step, N+1 capacity per step, pre-scale targets, and the plan-time guardrails."""

from __future__ import annotations

import json

import pytest
import yaml

from drills.errors import GuardrailError
from drills.manifest import find_manifest, served_facts
from drills.planning import shift_schedule
from drills.scenarios import SCENARIOS, build_plan
from infra.invariants import ManifestFacts
from model_build.manifest import ManifestError, write_manifest
from tests import manifests as M
from tests.drills.drills_support import copy_stacks


def weights_of(plan, prefix):
    return [s.weights for s in plan.steps if s.name.startswith(prefix)]


def test_evacuate_prod_shifts_stepwise_with_survivors_renormalised():
    plan = build_plan("evacuate-region", "prod", "us-east-1")
    assert plan.pre_weights == {"us-east-1": 40, "us-west-2": 30, "eu-west-1": 30}
    assert weights_of(plan, "shift-") == [
        {"us-east-1": 30, "us-west-2": 35, "eu-west-1": 35},
        {"us-east-1": 20, "us-west-2": 40, "eu-west-1": 40},
        {"us-east-1": 10, "us-west-2": 45, "eu-west-1": 45},
        {"us-east-1": 0, "us-west-2": 50, "eu-west-1": 50},
    ]
    # restore walks back the same way and ends exactly at the pre-drill weights
    assert weights_of(plan, "restore-")[-1] == plan.pre_weights
    assert [s.name for s in plan.steps][:3] == ["precheck", "prescale", "wait-capacity"]
    assert plan.steps[-1].name == "verify"
    shift = next(s for s in plan.steps if s.name == "shift-1")
    assert shift.params["changes"] == {
        "prod-global": {
            "routing.regions.eu-west-1.weight": 35,
            "routing.regions.us-east-1.weight": 30,
            "routing.regions.us-west-2.weight": 35,
        }
    }
    assert {c.kind for c in shift.checks} == {"weights_applied", "healthy", "slo"}
    assert plan.touches == {
        "prod-global": [f"routing.regions.{r}.weight" for r in ("eu-west-1", "us-east-1", "us-west-2")]
    }
    assert {c.kind for c in plan.abort_conditions} == {"slo", "healthy"}


def test_capacity_rows_follow_the_n_plus_one_math():
    plan = build_plan("evacuate-region", "prod", "us-east-1")
    last = next(s for s in plan.steps if s.name == "shift-4")
    rows = {r.region: r for r in last.capacity}
    # 50% of 150k QPS = 75k. us-west-2: A100 at 7000 QPS/GPU -> 11 GPUs; 1 p4d (8 GPUs) desired, 3 max (24).
    assert rows["us-west-2"].qps == 75000 and rows["us-west-2"].gpus_required == 11
    assert rows["us-west-2"].gpus_desired == 8 and rows["us-west-2"].gpus_max == 24 and rows["us-west-2"].ok
    assert rows["us-west-2"].prescale == {"a100": 2}  # 2 x 8 x 7000 = 112k >= 75k
    # eu-west-1: L40S 4 GPUs x 4000 = 16k per instance, A10G 4 x 2500 = 10k; desired 2 + 1 = 42k -> L40S up to 5 = 90k
    assert rows["eu-west-1"].prescale == {"l40s": 5}
    assert rows["us-east-1"].share == 0 and not rows["us-east-1"].gains_share
    prescale = next(s for s in plan.steps if s.name == "prescale")
    assert prescale.params["targets"] == {"eu-west-1": {"l40s": 5}, "us-west-2": {"a100": 2}}


def test_shift_schedule_properties():
    w = {"a": 40, "b": 30, "c": 30}
    for steps in range(1, 9):
        sched = shift_schedule(w, "a", steps)
        assert sched[-1]["a"] == 0
        assert all(sum(x.values()) == 100 for x in sched)  # total kept: weights stay percentages
        assert [x["a"] for x in sched] == sorted((x["a"] for x in sched), reverse=True)
    # survivors near Route 53's 255 keep their weights; only the region is lowered
    big = shift_schedule({"a": 200, "b": 200}, "a", 2)
    assert big == [{"a": 100, "b": 200}, {"a": 0, "b": 200}]
    # tiny weights in many steps: no repeated no-op steps
    assert shift_schedule({"a": 2, "b": 1}, "a", 8) == [{"a": 1, "b": 2}, {"a": 0, "b": 3}]


def test_evacuating_the_only_weighted_region_is_refused(tmp_path):
    stacks = copy_stacks(
        tmp_path / "s",
        {
            "prod-global": {
                "routing": {
                    "mode": "weighted",
                    "regions": {"us-east-1": {"weight": 100}, "us-west-2": {"weight": 0}, "eu-west-1": {"weight": 0}},
                }
            }
        },
    )
    with pytest.raises(GuardrailError) as e:
        build_plan("evacuate-region", "prod", "us-east-1", stacks_dir=stacks)
    assert e.value.code == "last-weighted-region"
    assert "only region of prod with weight > 0" in str(e.value) and "Nothing was changed" in str(e.value)


def test_shifting_onto_missing_capacity_is_refused(tmp_path):
    doc = yaml.safe_load((copy_stacks(tmp_path / "s0") / "Pulumi.prod-euw1.yaml").read_text())
    pools = doc["config"]["reco-dr:gpu_pools"]
    for p in pools:
        p["max"] = p["desired"] = max(p["min"], 1)
        p.pop("capacity", None)  # nothing reserved: only the running nodes are guaranteed
    stacks = copy_stacks(tmp_path / "s", {"prod-euw1": {"gpu_pools": pools}})
    with pytest.raises(GuardrailError) as e:
        build_plan("evacuate-region", "prod", "us-east-1", stacks_dir=stacks)
    assert e.value.code == "capacity" and "eu-west-1" in str(e.value) and "GPUs" in str(e.value)
    # the loss of us-east-1 (region-outage) is refused for the same reason
    with pytest.raises(GuardrailError, match="capacity"):
        build_plan("region-outage", "prod", "us-east-1", stacks_dir=stacks)


def test_engines_must_cover_the_survivors_compute_capabilities(tmp_path):
    manifest = write_manifest(tmp_path, M.manifest(built=["9.0", "8.9", "8.0"]))
    with pytest.raises(GuardrailError) as e:  # eu-west-1 also runs A10G (8.6)
        build_plan("evacuate-region", "prod", "us-east-1", manifest=str(manifest))
    assert e.value.code == "engines" and "8.6" in str(e.value) and "eu-west-1" in str(e.value)
    # an explicit ONNX fallback for 8.6 counts as covered
    doc = yaml.safe_load((copy_stacks(tmp_path / "s0") / "Pulumi.prod-euw1.yaml").read_text())
    model = {**doc["config"]["reco-dr:model"], "onnx_fallback_for": ["8.6"]}
    stacks = copy_stacks(tmp_path / "s", {"prod-euw1": {"model": model}})
    plan = build_plan("evacuate-region", "prod", "us-east-1", manifest=str(manifest), stacks_dir=stacks)
    assert all(r.engines.status == "ok" for s in plan.steps for r in s.capacity)
    # so does the manifest's own ONNX fallback for it
    (tmp_path / "fallback").mkdir()
    fallback = write_manifest(tmp_path / "fallback", M.manifest(built=["9.0", "8.9", "8.0"], onnx_fallback=["8.6"]))
    plan = build_plan("evacuate-region", "prod", "us-east-1", manifest=str(fallback))
    assert all(r.engines.status == "ok" for s in plan.steps for r in s.capacity)
    # no manifest at all: unverified offline (warned), verified at precheck from the buckets
    plan = build_plan("evacuate-region", "prod", "us-east-1", root=tmp_path)
    assert {r.engines.status for s in plan.steps for r in s.capacity} == {"unverified"}
    assert any("manifest" in w for w in plan.warnings)


def test_the_manifest_is_read_through_model_builds_schema(tmp_path, monkeypatch):
    monkeypatch.delenv("DRILLS_MANIFEST", raising=False)
    assert find_manifest(None, "2026.11.0", tmp_path) is None  # none given, none under artifacts/ or build/
    m = M.manifest(built=["9.0", "8.9"], not_built=["8.6"], onnx_fallback=["8.0"], qps_per_gpu={"9.0": 15000})
    (tmp_path / "m.json").write_text(m.model_dump_json())
    f = find_manifest(str(tmp_path / "m.json"), None, tmp_path)
    assert f is not None and f.source == str(tmp_path / "m.json") and f.model_version == "2026.11.0"
    # a listed engine that is not built (a machine without a TensorRT builder) is planned, not built
    assert f.built == {"9.0", "8.9"} and f.engine_ccs == {"9.0", "8.9", "8.6"}
    assert f.available == {"9.0": "built", "8.9": "built", "8.6": "planned", "8.0": "onnx-fallback"}
    assert f.qps_per_gpu == {"9.0": 15000.0}
    # $DRILLS_MANIFEST when no --manifest; a directory stands for the manifest.json in it
    write_manifest(tmp_path, m)
    monkeypatch.setenv("DRILLS_MANIFEST", str(tmp_path))
    assert find_manifest(None, None, tmp_path) == ManifestFacts.of(m, str(tmp_path / "manifest.json"))
    # a region's served manifest (an adapter's parsed JSON) is read the same way, named after the region
    served = served_facts("us-west-2", M.as_json(m))
    assert served is not None and served.source == "the manifest in us-west-2's bucket" and served.built == f.built
    assert served_facts("us-west-2", None) is None


def test_a_malformed_manifest_is_refused_naming_the_file_and_its_first_problem(tmp_path, monkeypatch):
    monkeypatch.delenv("DRILLS_MANIFEST", raising=False)
    # the layouts the drills once guessed at (list-shaped engines, TensorRT under `tensorrt`) are not manifests
    doc = M.as_json(M.manifest(built=["9.0"])) | {"engines": [{"compute_capability": "sm_90", "file": "x"}]}
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(GuardrailError) as e:
        build_plan("evacuate-region", "prod", "us-east-1", manifest=str(bad))
    assert e.value.code == "manifest"
    assert f"{bad} does not match model_build's manifest schema: engines: Input should be an object" in str(e.value)
    bad.write_text("{")
    with pytest.raises(GuardrailError, match=rf"{bad} is not valid JSON"):
        build_plan("evacuate-region", "prod", "us-east-1", manifest=str(bad))
    # found under build/ (it names the fleet's version) rather than given: refused the same way, not skipped
    (tmp_path / "build" / "model").mkdir(parents=True)
    (tmp_path / "build" / "model" / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(GuardrailError, match=r"build/model/manifest.json does not match"):
        build_plan("evacuate-region", "prod", "us-east-1", root=tmp_path)
    # and a region's served manifest that does not validate names the region and the first problem
    with pytest.raises(ManifestError, match=r"^the manifest in eu-west-1's bucket does not match .*: engines: "):
        served_facts("eu-west-1", doc)


def test_a_manifest_built_without_a_gpu_leaves_engines_to_the_precheck(tmp_path):
    # model_build's shape on a machine without TensorRT: every engine listed with status "not-built"
    ccs = ["8.0", "8.6", "8.9", "9.0"]
    # its build plan lists the engines to build, with files: not evidence that they were built
    build_plan_doc = {
        "engines": [{"compute_capability": cc, "file": f"model.sm{cc.replace('.', '')}.plan"} for cc in ccs]
    }
    (tmp_path / "build" / "model").mkdir(parents=True)
    write_manifest(
        tmp_path / "build" / "model", M.manifest(not_built=ccs).model_copy(update={"build_plan": build_plan_doc})
    )
    plan = build_plan("evacuate-region", "prod", "us-east-1", root=tmp_path)  # found by the artifacts/ build/ search
    assert plan.manifest_source is not None and plan.manifest_source.endswith("build/model/manifest.json")
    assert {r.engines.status for s in plan.steps for r in s.capacity} == {"unverified"}
    assert any("not built" in w for w in plan.warnings)
    # a compute capability without even a planned engine is refused
    write_manifest(tmp_path / "build" / "model", M.manifest(not_built=[cc for cc in ccs if cc != "8.6"]))
    with pytest.raises(GuardrailError, match=r"8.6"):
        build_plan("evacuate-region", "prod", "us-east-1", root=tmp_path)


def test_manifest_benchmark_figures_change_the_capacity_math(tmp_path):
    manifest = tmp_path / "m.json"
    # half the configured A100 figure
    manifest.write_text(M.manifest(built=["9.0", "8.9", "8.6", "8.0"], qps_per_gpu={"8.0": 3500}).model_dump_json())
    # At half the throughput us-west-2 needs 22 A100s: reserve all 3 nodes so the guardrail (guaranteed GPUs) passes.
    doc = yaml.safe_load((copy_stacks(tmp_path / "s0") / "Pulumi.prod-usw2.yaml").read_text())
    pools = doc["config"]["reco-dr:gpu_pools"]
    pools[0]["capacity"]["instances"] = 3
    stacks = copy_stacks(tmp_path / "s", {"prod-usw2": {"gpu_pools": pools}})
    plan = build_plan("evacuate-region", "prod", "us-east-1", manifest=str(manifest), stacks_dir=stacks)
    row = next(r for r in next(s for s in plan.steps if s.name == "shift-4").capacity if r.region == "us-west-2")
    assert row.gpus_required == 22 and row.prescale == {"a100": 3}


@pytest.mark.parametrize(
    "args, code",
    [
        (("evacuate-region", "qa", "us-east-1"), "unknown-env"),
        (("evacuate-region", "prod", "ap-south-1"), "unknown-region"),
        (("evacuate-region", "prod", None), "region-required"),
        (("stack-flip", "prod", None), "mode"),
        (("evacuate-region", "staging", "us-east-1"), "mode"),
        (("stack-flip", "staging", "us-east-1"), "already-primary"),
        (("no-such-drill", "prod", None), "unknown-scenario"),
    ],
)
def test_plan_refusals(args, code):
    with pytest.raises(GuardrailError) as e:
        build_plan(*args)
    assert e.value.code == code


def test_scenarios_registered_and_other_scenarios_plan():
    assert {"evacuate-region", "region-outage", "total-outage", "artifact-replication", "stack-flip"} <= set(SCENARIOS)
    outage = build_plan("region-outage", "prod", "us-west-2")
    assert [s.action for s in outage.steps] == [
        "precheck",
        "inject_fault",
        "observe_failover",
        "hold",
        "measure_startup",
        "clear_fault",
        "observe_recovery",
        "verify_restored",
    ]
    assert (
        outage.steps[4].params == {"regions": ["eu-west-1", "us-east-1"], "timeout": 425}
        and not outage.steps[4].mutates
    )
    assert outage.touches == {} and outage.steps[1].params == {"region": "us-west-2", "fault": "triton-down"}
    assert {c.kind for c in outage.abort_conditions} == {"deadline", "slo", "healthy"}
    flip = build_plan("stack-flip", "staging")
    f = next(s for s in flip.steps if s.name == "flip")
    assert f.params["changes"] == {
        "staging-global": {
            "routing.regions.us-east-1.failover": "SECONDARY",
            "routing.regions.us-west-2.failover": "PRIMARY",
        }
    }
    back = next(s for s in flip.steps if s.name == "flip-back")
    assert back.roles == flip.pre_roles
    rep = build_plan("artifact-replication", "prod")
    assert rep.steps[1].params["sources"] == ["eu-west-1", "us-east-1", "us-west-2"]
    assert build_plan("artifact-replication", "prod", "us-west-2").steps[1].params["sources"] == ["us-west-2"]
    assert rep.predicted == {"detection": 30.0, "dns_change": 10.0, "ttl": 60.0, "total": 100.0}


def test_plan_file_roles_parameters_and_validation(tmp_path):
    f = tmp_path / "drill.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "title": "Q4 evacuation",
                "scenario": "evacuate-region",
                "env": "prod",
                "region": "us-east-1",
                "window": {"start": "2026-12-01T14:00:00Z", "end": "2026-12-01T16:00:00Z"},
                "roles": {"lead": "ana", "operator": "bo", "observer": "cy"},
                "communication": {"channel": "#ranker-dr", "notify": ["sre-oncall"], "cadence_minutes": 15},
                "parameters": {"steps": 2, "hold_seconds": 120},
            }
        )
    )
    plan = build_plan("evacuate-region", "prod", None, plan_file=f)
    assert plan.region == "us-east-1" and plan.roles["lead"] == "ana" and plan.title == "Q4 evacuation"
    assert len(weights_of(plan, "shift-")) == 2 and plan.parameters["hold_seconds"] == 120
    assert any("#ranker-dr" in c for c in plan.communication) and plan.window is not None
    assert plan.window["start"].startswith("2026-12-01T14:00")
    assert not any("roles" in w for w in plan.warnings)
    # CLI overrides beat the file
    assert (
        len(weights_of(build_plan("evacuate-region", "prod", None, plan_file=f, overrides={"steps": 3}), "shift-")) == 3
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"parameters": {"stepz": 2}}))
    with pytest.raises(GuardrailError, match="stepz"):
        build_plan("evacuate-region", "prod", "us-east-1", plan_file=bad)
    with pytest.raises(GuardrailError, match="region"):
        build_plan("evacuate-region", "prod", "us-west-2", plan_file=f)


def test_an_outage_warns_where_a_survivor_runs_less_than_its_share_after_the_loss():
    """prod's survivors run less than they must carry once us-east-1 is lost: the plan says so, naming each one and
    what follows (shedding, then its 5xx alarm taking it out); staging's survivor runs enough and gets no warning."""
    warned = [w for w in build_plan("region-outage", "prod", "us-east-1").warnings if "at desired size" in w]
    assert len(warned) == 1
    assert "eu-west-1 runs 42,000 QPS at desired size for 75,000" in warned[0] and "5xx alarm" in warned[0]
    assert not [w for w in build_plan("region-outage", "staging", "us-east-1").warnings if "at desired size" in w]
