"""The policy pack's validators, called directly from the main venv (infra/policy/validators.py)."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import yaml

from infra import mocks as m
from infra.config import STACKS_DIR
from infra.policy import validators as v
from tests.manifests import as_json
from tests.manifests import manifest as make_manifest

UNKNOWN = v.UNKNOWN


@pytest.fixture(autouse=True)
def _no_ambient_manifest(monkeypatch, tmp_path):
    monkeypatch.setenv("RECO_DR_MANIFEST", str(tmp_path / "absent-manifest.json"))


def resources(stack: str) -> list[v.Res]:
    return [v.Res(r.type, r.name, r.inputs, r.urn, r.property_dependencies) for r in m.run_program(stack).resources]


def all_violations(res: list[v.Res], stack: str) -> list[str]:
    out = [msg for r in res for msg in v.validate_resource(r.type, r.name, r.props)]
    out += v.record_set_violations(res) + v.region_health_violations(res)
    out += v.bucket_violations(res) + v.replication_mesh_violations(res)
    return out + v.capacity_violations(stack) + v.model_violations(stack)


@pytest.fixture(scope="module")
def global_res() -> list[v.Res]:
    return resources("prod-global")


@pytest.fixture(scope="module")
def regional_res() -> list[v.Res]:
    return resources("prod-use1")


def replace(res: list[v.Res], type_: str, name: str | None, props_fn) -> list[v.Res]:
    out = []
    for r in res:
        if r.type == type_ and (name is None or r.name == name):
            props = copy.deepcopy(dict(r.props))
            props_fn(props)
            r = v.Res(r.type, r.name, props, r.urn, r.property_dependencies)
        out.append(r)
    return out


def routed(res: list[v.Res]) -> list[v.Res]:
    """The weighted/failover records of the shared name; the plain per-region records (simple routing, no set
    identifier) are not routed and need no health check."""
    return [r for r in res if r.type == v.RECORD and "setIdentifier" in r.props]


# ---------------------------------------------------------------- the declared stacks comply
@pytest.mark.parametrize("stack", ["prod-global", "prod-use1", "staging-global", "staging-usw2"])
def test_declared_stacks_have_no_violations(stack):
    assert all_violations(resources(stack), stack) == []


# ---------------------------------------------------------------- Route 53
def test_weighted_record_without_health_check(global_res):
    rec = routed(global_res)[0]
    props = {k: x for k, x in rec.props.items() if k != "healthCheckId"}
    assert any("no health_check_id" in msg and rec.name in msg for msg in v.record_violations(rec.name, props))
    # During preview a new health check's id is unknown, not absent.
    assert v.record_violations(rec.name, {**props, "healthCheckId": UNKNOWN}) == []


def test_alias_without_target_health_and_record_without_set_identifier(global_res):
    rec = routed(global_res)[0]
    props = copy.deepcopy(dict(rec.props))
    props["aliases"][0]["evaluateTargetHealth"] = False
    del props["setIdentifier"]
    msgs = v.record_violations(rec.name, props)
    assert any("evaluate target health" in x for x in msgs) and any("set_identifier" in x for x in msgs)


def test_all_zero_weights_in_a_record_set(global_res):
    bad = global_res
    for rec in routed(global_res):
        bad = replace(bad, v.RECORD, rec.name, lambda p: p.update(weightedRoutingPolicies=[{"weight": 0}]))
    (msg,) = v.record_set_violations(bad)
    assert "every weight 0" in msg and "ranker.shop.example.com" in msg
    # A single record at weight 0 (a standby) is fine on its own.
    assert all(v.validate_resource(r.type, r.name, r.props) == [] for r in bad if r.type == v.RECORD)


def test_two_primaries_in_a_failover_record_set():
    res = resources("staging-global")
    bad = res
    for rec in routed(res):
        bad = replace(bad, v.RECORD, rec.name, lambda p: p.update(failoverRoutingPolicies=[{"type": "PRIMARY"}]))
    (msg,) = v.record_set_violations(bad)
    assert "exactly one PRIMARY" in msg


def test_plain_per_region_records_need_no_health_check_but_a_routed_one_does(global_res):
    plain = [r for r in global_res if r.type == v.RECORD and "setIdentifier" not in r.props]
    assert len(plain) == len(routed(global_res)) == 3
    assert all(v.validate_resource(r.type, r.name, r.props) == [] for r in plain)  # simple routing: nothing to gate
    # The same record given a weight is routed, and then needs what every routed record needs.
    weighted = {**plain[0].props, "weightedRoutingPolicies": [{"weight": 1}]}
    msgs = v.record_violations(plain[0].name, weighted)
    assert any("no health_check_id" in x for x in msgs) and any("set_identifier" in x for x in msgs)


def test_health_check_must_be_https_with_path_and_latency(global_res):
    hc = next(r for r in global_res if r.type == v.HEALTH_CHECK)
    assert v.health_check_violations(hc.name, hc.props) == []
    bad = {**hc.props, "type": "HTTP", "measureLatency": False}
    bad.pop("resourcePath")
    assert len(v.health_check_violations(hc.name, bad)) == 3


def _check(res: list[v.Res], kind: str) -> v.Res:
    return next(r for r in res if r.type == v.HEALTH_CHECK and r.props["tags"]["check"] == kind)


def test_every_kind_of_health_check_is_judged_by_its_own_rules(global_res):
    """A calculated check needs every child; a metric check names its alarm and reads missing data as healthy; a
    string-matching one names its string. None of them is held to the endpoint rules it cannot meet."""
    calc, metric, deep = (_check(global_res, k) for k in ("calculated", "5xx", "deep"))
    assert all(v.health_check_violations(c.name, c.props) == [] for c in (calc, metric, deep))
    (msg,) = v.health_check_violations(calc.name, {**calc.props, "childHealthThreshold": 3})
    assert "needs 3 of its 4 children" in msg
    assert v.health_check_violations(calc.name, {**calc.props, "childHealthchecks": []}) == [
        f"calculated health check {calc.name} has no child checks: it would always be healthy"
    ]
    assert v.health_check_violations(calc.name, {**calc.props, "childHealthchecks": UNKNOWN}) == []  # preview
    (msg,) = v.health_check_violations(metric.name, {**metric.props, "insufficientDataHealthStatus": "Unhealthy"})
    assert "a CloudWatch outage would move traffic" in msg
    bad = {k: x for k, x in metric.props.items() if k != "cloudwatchAlarmName"}
    assert v.health_check_violations(metric.name, bad) == [
        f"metric health check {metric.name} has no cloudwatchAlarmName"
    ]
    bad = {k: x for k, x in deep.props.items() if k != "searchString"}
    assert v.health_check_violations(deep.name, bad) == [
        f"health check {deep.name} is HTTPS_STR_MATCH without a search string"
    ]


def test_a_record_on_a_child_check_is_a_region_health_violation(global_res):
    rec = routed(global_res)[0]
    region = rec.props["setIdentifier"]
    shallow = next(
        r
        for r in global_res
        if r.type == v.HEALTH_CHECK and (r.props["tags"]["region"], r.props["tags"]["check"]) == (region, "shallow")
    )
    moved = [
        v.Res(r.type, r.name, r.props, r.urn, {**r.property_dependencies, "healthCheckId": [shallow.urn]})
        if r is rec
        else r
        for r in global_res
    ]
    (msg,) = v.region_health_violations(moved)
    assert f"record {rec.name} does not carry the CALCULATED check of its region {region}" in msg


# ---------------------------------------------------------------- replication
def test_replication_rule_without_rtc_or_delete_markers(global_res):
    cfg = next(r for r in global_res if r.type == v.REPLICATION)
    props = copy.deepcopy(dict(cfg.props))
    rule = props["rules"][0]
    rule["deleteMarkerReplication"] = {"status": "Enabled"}
    rule["destination"]["replicationTime"] = {"status": "Disabled", "time": {"minutes": 15}}
    del rule["destination"]["metrics"]
    del rule["sourceSelectionCriteria"]
    del rule["destination"]["encryptionConfiguration"]
    props["rules"][1]["priority"] = rule["priority"]
    msgs = v.replication_config_violations(cfg.name, props)
    for text in (
        "replicates delete markers",
        "Replication Time Control",
        "metrics",
        "SSE-KMS",
        "replica KMS key",
        "distinct priority",
    ):
        assert any(text in x for x in msgs), (text, msgs)
    assert all(rule["id"] in x for x in msgs if "priority" not in x)


def test_replication_v1_rule_without_filter(global_res):
    cfg = next(r for r in global_res if r.type == v.REPLICATION)
    props = copy.deepcopy(dict(cfg.props))
    del props["rules"][0]["filter"]
    assert any("no filter" in x for x in v.replication_config_violations(cfg.name, props))


def test_replication_mesh_missing_destination_and_duplicate_config(global_res):
    src = next(r for r in global_res if r.type == v.REPLICATION)
    bad = replace(global_res, v.REPLICATION, src.name, lambda p: p.update(rules=p["rules"][:1]))
    (msg,) = v.replication_mesh_violations(bad)
    assert src.name in msg and "does not replicate to" in msg
    dup = [*global_res, v.Res(v.REPLICATION, "second", dict(src.props), "urn:x")]
    assert any("more than one replication configuration" in x for x in v.replication_mesh_violations(dup))


# ---------------------------------------------------------------- buckets
def test_bucket_without_versioning_encryption_or_public_access_block(regional_res):
    no_vers = [r for r in regional_res if r.type != v.VERSIONING]
    assert any("not versioned" in x for x in v.bucket_violations(no_vers))
    aes = replace(
        regional_res,
        v.SSE,
        None,
        lambda p: p["rules"][0]["applyServerSideEncryptionByDefault"].update(sseAlgorithm="AES256"),
    )
    assert any("SSE-KMS" in x and "AES256" in x for x in v.bucket_violations(aes))
    open_ = replace(regional_res, v.PUBLIC_ACCESS_BLOCK, None, lambda p: p.update(restrictPublicBuckets=False))
    assert any("public access block" in x for x in v.bucket_violations(open_))


def test_bucket_controls_matched_by_property_dependency_during_preview():
    bucket = v.Res(v.BUCKET, "artifacts", {"bucket": UNKNOWN}, "urn:b")
    deps = {"bucket": ["urn:b"]}
    vers = v.Res(
        v.VERSIONING, "vers", {"bucket": UNKNOWN, "versioningConfiguration": {"status": "Enabled"}}, "urn:v", deps
    )
    sse = v.Res(
        v.SSE,
        "sse",
        {"bucket": UNKNOWN, "rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms"}}]},
        "urn:s",
        deps,
    )
    pab = v.Res(
        v.PUBLIC_ACCESS_BLOCK, "pab", {"bucket": UNKNOWN, **dict.fromkeys(v.PUBLIC_ACCESS_FLAGS, True)}, "urn:p", deps
    )
    assert v.bucket_violations([bucket, vers, sse, pab]) == []
    assert len(v.bucket_violations([bucket])) == 3


# ---------------------------------------------------------------- GPU node groups
def test_gpu_node_group_needs_the_nvidia_taint(regional_res):
    ng = next(r for r in regional_res if r.type == v.NODE_GROUP and v.is_gpu_node_group(r.props))
    assert v.gpu_node_group_violations(ng.name, ng.props) == []
    (msg,) = v.gpu_node_group_violations(
        ng.name, {**ng.props, "taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "PREFER_NO_SCHEDULE"}]}
    )
    assert ng.name in msg and "nvidia.com/gpu=true:NoSchedule" in msg
    cpu = next(r for r in regional_res if r.type == v.NODE_GROUP and not v.is_gpu_node_group(r.props))
    assert v.gpu_node_group_violations(cpu.name, cpu.props) == []


# ---------------------------------------------------------------- fleet: N+1, engines
def _stacks(tmp_path, stack, key, value):
    d = tmp_path / "stacks"
    d.mkdir()
    for p in STACKS_DIR.glob("Pulumi.*.yaml"):
        shutil.copy(p, d / p.name)
    path = d / f"Pulumi.{stack}.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["config"][f"reco-dr:{key}"] = value
    path.write_text(yaml.safe_dump(doc))
    return d


def test_capacity_violation_for_a_fleet_that_fails_n_plus_one(tmp_path):
    d = _stacks(
        tmp_path,
        "prod-euw1",
        "gpu_pools",
        [{"name": "a10g", "instance_type": "g5.12xlarge", "min": 1, "desired": 1, "max": 2}],
    )
    msgs = v.capacity_violations("prod-global", d)
    assert any("with us-east-1 lost, eu-west-1" in x and "short by 26 GPUs" in x for x in msgs)
    # Every stack of the environment is held to it, regional ones included.
    assert v.capacity_violations("prod-use1", d) == msgs


def test_model_violations_only_once_a_manifest_exists():
    assert v.model_violations("prod-global") == []  # no manifest yet: a warning, not a violation
    manifest = as_json(make_manifest(built=["9.0", "8.9", "8.0", "8.6"], tensorrt_version="10.7.0"))
    msgs = v.model_violations("prod-global", manifest=manifest)
    assert len(msgs) == 3 and all("TensorRT 10.8.0" in x and "10.7.0" in x for x in msgs)


def test_a_manifest_that_does_not_validate_is_a_model_violation(tmp_path, monkeypatch):
    bad = tmp_path / "manifest.json"
    bad.write_text(json.dumps(as_json(make_manifest(built=["9.0"])) | {"tensorrt_version": None}))
    monkeypatch.setenv("RECO_DR_MANIFEST", str(bad))  # where the pack finds it at preview time
    assert v.model_violations("prod-global") == [
        f"{bad} does not match model_build's manifest schema: tensorrt_version: Input should be a valid string"
    ]
    # capacity keeps to the configured figures: the manifest problem is reported once, by the model policy
    assert v.capacity_violations("prod-global") == []


def test_stack_from_urn():
    assert (
        v.stack_from_urn("urn:pulumi:prod-global::reco-dr::aws:route53/record:Record::dns-us-east-1") == "prod-global"
    )
    assert v.stack_from_urn("not-a-urn") is None
