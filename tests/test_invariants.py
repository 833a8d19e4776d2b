"""Resilience invariants: each with a passing and a failing fleet (infra/invariants.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra import invariants as inv
from infra.config import (
    ROOT,
    STACKS_DIR,
    ConfigError,
    RegionConfig,
    RegionRoute,
    Routing,
    load_fleet,
    load_stack,
    read_stack_file,
)
from model_build.manifest import Manifest, ManifestError, write_manifest
from tests import manifests as M

TRT_25_01 = "10.8.0"  # catalog: Triton 25.01 ships TensorRT 10.8.0


@pytest.fixture(autouse=True)
def _no_ambient_manifest(monkeypatch, tmp_path):
    # A model built on this machine (build/model/manifest.json) must not change what these tests see.
    monkeypatch.setenv(inv.MANIFEST_ENV, str(tmp_path / "absent-manifest.json"))


def stacks(tmp_path: Path, edits: dict[str, dict] | None = None) -> Path:
    """A copy of stacks/ with `{stack: {key: value}}` overriding reco-dr:<key>."""
    d = tmp_path / "stacks"
    d.mkdir(exist_ok=True)
    for p in STACKS_DIR.glob("Pulumi.*.yaml"):
        shutil.copy(p, d / p.name)
    for stack, kv in (edits or {}).items():
        path = d / f"Pulumi.{stack}.yaml"
        doc = yaml.safe_load(path.read_text())
        for k, val in kv.items():
            doc["config"][f"reco-dr:{k}"] = val
        path.write_text(yaml.safe_dump(doc))
    return d


def pools(stack: str) -> list[dict]:
    cfg = load_stack(stack)
    assert isinstance(cfg, RegionConfig), f"{stack} is not a regional stack"
    return [p.model_dump() for p in cfg.gpu_pools]


def manifest(ccs, trt=TRT_25_01, qps=None) -> Manifest:
    """Engines built for `ccs` with TensorRT `trt`, benchmarked at `qps` {cc: QPS per GPU}."""
    return M.manifest(built=ccs, tensorrt_version=trt, qps_per_gpu=qps)


def ids(findings, severity=None):
    return {f.id for f in findings if severity is None or f.severity == severity}


# ---------------------------------------------------------------- routing
def test_weighted_region_passes_for_prod():
    fleet = load_fleet("prod")
    assert inv.routing_findings("prod-global", fleet.glob) == []


def test_all_zero_weights_is_an_error_and_refused():
    glob = load_fleet("prod").glob
    zero = Routing.model_construct(mode="weighted", regions={r: RegionRoute(weight=0) for r in glob.routing.regions})
    bad = glob.model_copy(update={"routing": zero})  # bypasses config validation on purpose
    found = inv.routing_findings("prod-global", bad)
    assert [f.id for f in found] == ["routing.weighted-region"]
    assert "prod-global" in found[0].message and "weight 0" in found[0].message
    with pytest.raises(ConfigError, match=r"stack prod-global: reco-dr:routing .*every region has weight 0"):
        inv.refuse_global("prod-global", bad)


def test_all_zero_weights_refused_at_config_load(tmp_path):
    d = stacks(
        tmp_path,
        {
            "prod-global": {
                "routing": {
                    "mode": "weighted",
                    "regions": {"us-east-1": {"weight": 0}, "us-west-2": {"weight": 0}, "eu-west-1": {"weight": 0}},
                }
            }
        },
    )
    with pytest.raises(ConfigError, match=r"prod-global.*routing.*at least one region must have a weight > 0"):
        load_stack("prod-global", d)


def test_failover_exactly_one_primary():
    glob = load_fleet("staging").glob
    assert inv.routing_findings("staging-global", glob) == []
    two = Routing.model_construct(
        mode="failover",
        regions={"us-east-1": RegionRoute(failover="PRIMARY"), "us-west-2": RegionRoute(failover="PRIMARY")},
    )
    found = inv.routing_findings("staging-global", glob.model_copy(update={"routing": two}))
    assert ids(found) == {"routing.one-primary"}
    assert "['us-east-1', 'us-west-2']" in found[0].message
    with pytest.raises(ConfigError, match="exactly one PRIMARY"):
        inv.refuse_global("staging-global", glob.model_copy(update={"routing": two}))


def test_two_primaries_refused_at_config_load(tmp_path):
    d = stacks(
        tmp_path,
        {
            "staging-global": {
                "routing": {
                    "mode": "failover",
                    "regions": {"us-east-1": {"failover": "PRIMARY"}, "us-west-2": {"failover": "PRIMARY"}},
                }
            }
        },
    )
    with pytest.raises(ConfigError, match=r"staging-global.*exactly one PRIMARY"):
        load_stack("staging-global", d)


def test_single_region_global_stack_is_refused():
    glob = load_fleet("prod").glob
    one = Routing.model_construct(mode="weighted", regions={"us-east-1": RegionRoute(weight=100)})
    bad = glob.model_copy(update={"routing": one})
    assert ids(inv.routing_findings("prod-global", bad), "error") == {"routing.two-regions"}
    with pytest.raises(ConfigError, match="at least two regions"):
        inv.refuse_global("prod-global", bad)


def test_control_region_other_than_us_east_1_is_a_warning():
    glob = load_fleet("prod").glob.model_copy(update={"control_region": "eu-west-1"})
    found = inv.routing_findings("prod-global", glob)
    assert [(f.id, f.severity) for f in found] == [("alarms.metrics-region", "warning")]


# ---------------------------------------------------------------- health check on every record
def _record(name, weight=None, failover=None, hc="hc-1", zone="Z1"):
    props = {
        "zoneId": zone,
        "name": "ranker.example.com",
        "type": "A",
        "setIdentifier": name,
        "aliases": [{"name": "lb", "zoneId": "Z2", "evaluateTargetHealth": True}],
    }
    if hc:
        props["healthCheckId"] = hc
    if weight is not None:
        props["weightedRoutingPolicies"] = [{"weight": weight}]
    if failover:
        props["failoverRoutingPolicies"] = [{"type": failover}]
    return {"type": inv.RECORD_TYPE, "name": name, "props": props}


def test_records_with_health_checks_pass():
    assert inv.record_findings([_record("a", 40), _record("b", 0)]) == []
    assert inv.record_findings([_record("a", failover="PRIMARY"), _record("b", failover="SECONDARY")]) == []


def test_weighted_record_without_health_check_fails():
    found = inv.record_findings([_record("a", 40), _record("b", 60, hc=None)])
    assert [(f.id, "b" in f.message) for f in found] == [("routing.health-check", True)]


def test_record_sets_all_zero_and_two_primaries_fail():
    assert ids(inv.record_findings([_record("a", 0), _record("b", 0)])) == {"routing.weighted-region"}
    assert ids(inv.record_findings([_record("a", failover="PRIMARY"), _record("b", failover="PRIMARY")])) == {
        "routing.one-primary"
    }
    # One record on its own is not a set: a standby at weight 0 is fine.
    assert inv.record_findings([_record("b", 0)], sets=False) == []


# ---------------------------------------------------------------- N+1
def test_n_plus_one_passes_for_prod_and_staging():
    assert inv.capacity_findings(load_fleet("prod")) == []
    assert inv.capacity_findings(load_fleet("staging")) == []


def test_n_plus_one_fails_naming_lost_region_survivor_and_shortfall(tmp_path):
    # eu-west-1 down to one small pool: losing us-east-1 leaves it 50% of 150k QPS on far too few GPUs.
    small = [{"name": "a10g", "instance_type": "g5.12xlarge", "min": 1, "desired": 1, "max": 2}]
    fleet = load_fleet("prod", stacks(tmp_path, {"prod-euw1": {"gpu_pools": small}}))
    found = inv.capacity_findings(fleet)
    assert found and ids(found) == {"capacity.n-plus-one"}
    lost_use1 = [f for f in found if "with us-east-1 lost" in f.message]
    assert len(lost_use1) == 1 and lost_use1[0].region == "eu-west-1" and lost_use1[0].stack == "prod-euw1"
    # 75,000 QPS at 2,500 QPS per A10G = 30 GPUs; N+1 counts guaranteed GPUs: 1 running node x 4, none reserved,
    # short by 26; even the pool's max (2 x 4 = 8) would be short.
    msg = lost_use1[0].message
    assert "needs 30 GPUs" in msg and "has 4 guaranteed (running 4, reserved 0)" in msg
    assert "short by 26 GPUs" in msg and "reach 8 at max, short even then" in msg


def test_n_plus_one_uses_benchmarked_throughput_from_manifest():
    fleet = load_fleet("staging")
    facts = inv.read_manifest(manifest(["8.9", "8.6"], qps={"8.6": 100.0, "8.9": 100.0}))
    found = inv.capacity_findings(fleet, facts)
    # 2,000 QPS at 100 QPS/GPU = 20 GPUs; each staging region guarantees 1 (one running node, nothing reserved).
    assert found and all("short by 19 GPUs" in f.message for f in found)


# ---------------------------------------------------------------- engines
def test_engines_present_for_every_compute_capability():
    fleet = load_fleet("prod")
    assert inv.engine_findings(fleet, inv.read_manifest(manifest(fleet.compute_capabilities))) == []


def test_missing_engine_fails_naming_region_and_cc():
    fleet = load_fleet("prod")
    found = inv.engine_findings(fleet, inv.read_manifest(manifest(["9.0", "8.9", "8.0"])))
    assert [(f.id, f.region) for f in found] == [("model.engines", "eu-west-1")]
    assert "8.6" in found[0].message and "prod-euw1" in found[0].message and "a10g" in found[0].message


def test_explicit_onnx_fallback_satisfies_a_missing_engine(tmp_path):
    model = {**read_stack_file("prod-euw1")["model"], "onnx_fallback_for": ["8.6"]}
    d = stacks(tmp_path, {"prod-euw1": {"model": model}})
    fleet = load_fleet("prod", d)
    assert inv.engine_findings(fleet, inv.read_manifest(manifest(["9.0", "8.9", "8.0"]))) == []


def test_no_manifest_yet_is_a_warning_not_a_failure():
    fleet = load_fleet("prod")
    found = [*inv.engine_findings(fleet, None), *inv.tensorrt_findings(fleet, None)]
    assert found and {f.severity for f in found} == {"warning"} and all("no manifest yet" in f.message for f in found)


def test_manifest_read_from_path_with_a_four_part_tensorrt_version(tmp_path):
    write_manifest(tmp_path, M.manifest(built=["8.9", "8.6"], tensorrt_version="10.8.0.43"))
    facts = inv.read_manifest(tmp_path / "manifest.json")
    assert facts is not None and facts.source == str(tmp_path / "manifest.json")
    assert facts.engine_ccs == {"8.9", "8.6"} and facts.tensorrt_version == "10.8.0.43"
    assert inv.engine_findings(load_fleet("staging"), facts) == []
    assert [f for f in inv.tensorrt_findings(load_fleet("staging"), facts) if f.severity == "error"] == []


def test_a_manifest_off_the_schema_is_refused_naming_it_and_its_first_problem(tmp_path):
    # List-shaped engines and a TensorRT version under `versions`: not model_build's manifest, so not read at all.
    doc = M.as_json(M.manifest(built=["8.9", "8.6"])) | {
        "engines": [{"compute_capability": "8.9"}, {"cc": "8.6"}],
        "versions": {"tensorrt": "10.8.0.43"},
    }
    p = tmp_path / "manifest.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(ManifestError) as e:
        inv.read_manifest(p)
    assert (
        str(e.value)
        == f"{p} does not match model_build's manifest schema: engines: Input should be an object (and 1 more)"
    )
    with pytest.raises(ManifestError) as e:
        inv.read_manifest(doc)  # the parsed dict: the same check
    assert str(e.value).startswith("manifest does not match model_build's manifest schema: engines: ")
    p.write_text("{not json")
    with pytest.raises(ManifestError, match=rf"^{p} is not valid JSON"):
        inv.read_manifest(p)
    with pytest.raises(ManifestError, match=r"absent\.json: cannot read the manifest"):
        inv.read_manifest(tmp_path / "absent.json")
    # The plan tool reports it as one error (capacity judged on the configured figures), and so does its CLI.
    p.write_text(json.dumps(doc))
    found = inv.fleet_findings("staging", manifest=p)
    assert inv.errors(found) == [f for f in found if f.id == "model.manifest"] and len(inv.errors(found)) == 1
    assert str(p) in found[-1].message and "engines: Input should be an object" in found[-1].message
    assert not any(f.id.startswith("model.") and f.id != "model.manifest" for f in found)


def test_the_manifests_own_onnx_fallback_covers_a_compute_capability():
    fleet = load_fleet("prod")
    facts = inv.read_manifest(M.manifest(built=["9.0", "8.9", "8.0"], onnx_fallback=["8.6"]))
    assert facts is not None and facts.available["8.6"] == "onnx-fallback"
    assert inv.engine_findings(fleet, facts) == []


def test_importing_the_invariants_loads_no_model_runtime():
    """infra.invariants runs in the policy pack's venv (pydantic, no onnx, protobuf 5): the manifest schema it reads
    must come without onnx, torch or protobuf."""
    code = (
        "import sys, infra.invariants\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('onnx', 'torch', 'onnxruntime', 'tensorrt')\n"
        "             or m.startswith('google.protobuf')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# ---------------------------------------------------------------- TensorRT
def test_triton_tensorrt_matches_engines():
    fleet = load_fleet("prod")
    assert inv.tensorrt_findings(fleet, inv.read_manifest(manifest(fleet.compute_capabilities))) == []


def test_triton_tensorrt_mismatch_fails_naming_region():
    fleet = load_fleet("staging")
    found = inv.tensorrt_findings(fleet, inv.read_manifest(manifest(fleet.compute_capabilities, trt="10.7.0")))
    assert {f.region for f in found} == {"us-east-1", "us-west-2"} and ids(found, "error") == {"model.tensorrt"}
    assert "10.8.0" in found[0].message and "10.7.0" in found[0].message


def test_mixed_tensorrt_across_regions_fails_even_without_manifest(tmp_path):
    triton = {"image": "nvcr.io/nvidia/tritonserver:24.12-py3", "min_replicas": 1, "max_replicas": 16}
    fleet = load_fleet("staging", stacks(tmp_path, {"staging-usw2": {"triton": triton}}))
    found = inv.tensorrt_findings(fleet, None)
    errs = [f for f in found if f.severity == "error"]
    assert len(errs) == 1 and "10.7.0" in errs[0].message and "10.8.0" in errs[0].message


# ---------------------------------------------------------------- fleet_findings (the plan tool's entry point)
def test_fleet_findings_prod_has_no_errors():
    found = inv.fleet_findings("prod")
    assert inv.errors(found) == [] and all(isinstance(f, inv.Finding) for f in found)


def test_fleet_findings_with_manifest_dict_and_failing_fleet(tmp_path):
    small = [{"name": "a10g", "instance_type": "g5.12xlarge", "min": 1, "desired": 1, "max": 2}]
    d = stacks(tmp_path, {"prod-euw1": {"gpu_pools": small}})
    found = inv.fleet_findings("prod", stacks_dir=d, manifest=M.as_json(manifest(["9.0", "8.9", "8.0"])))
    assert ids(found, "error") == {"capacity.n-plus-one", "model.engines"}
    assert all(f.to_dict()["message"] for f in found)


def test_fleet_findings_turns_a_config_error_into_a_finding(tmp_path):
    d = stacks(
        tmp_path,
        {
            "prod-global": {
                "routing": {
                    "mode": "weighted",
                    "regions": {"us-east-1": {"weight": 0}, "us-west-2": {"weight": 0}, "eu-west-1": {"weight": 0}},
                }
            }
        },
    )
    found = inv.fleet_findings("prod", stacks_dir=d)
    assert [(f.id, f.stack) for f in found] == [("config.invalid", "prod-global")]


def test_cli_exit_status(tmp_path, capsys):
    assert inv.main(["prod"]) == 0
    capsys.readouterr()
    small = [{"name": "a10g", "instance_type": "g5.12xlarge", "min": 1, "desired": 1, "max": 2}]
    d = stacks(tmp_path, {"prod-euw1": {"gpu_pools": small}})
    assert inv.main(["prod", "--stacks-dir", str(d), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert {f["id"] for f in out if f["severity"] == "error"} == {"capacity.n-plus-one"}


# ---------------------------------------------------------------- model_build's manifest layout
def test_model_build_manifest_engines_serves_and_status(tmp_path):
    (tmp_path / "repo").mkdir()
    write_manifest(tmp_path / "repo", M.manifest(built=["8.9"], not_built=["8.6"], qps_per_gpu={"8.9": 4100.0}))
    facts = inv.read_manifest(tmp_path / "repo")  # a repository directory works as well as the file
    assert facts is not None
    assert facts.engine_status == {"8.9": "built", "8.6": "not-built"} and facts.qps_per_gpu == {"8.9": 4100.0}
    assert facts.built == {"8.9"} and facts.available == {"8.9": "built", "8.6": "planned"}
    found = inv.engine_findings(load_fleet("staging"), facts)
    # A planned engine is built by a Job on the region's own GPU pool after the stack exists: a warning.
    assert [(f.id, f.severity, f.region) for f in found] == [("model.engine-not-built", "warning", "us-west-2")]


def test_model_build_manifest_per_engine_tensorrt_mismatch():
    doc = M.as_json(M.manifest(built=["8.9", "8.6"], engine_tensorrt={"8.9": "10.7.0"}))
    found = inv.tensorrt_findings(load_fleet("staging"), inv.read_manifest(doc))
    assert [(f.severity, f.region) for f in found] == [("error", "us-east-1")]
    assert "compute capability 8.9" in found[0].message and "10.7.0" in found[0].message
