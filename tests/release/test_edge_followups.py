"""The drills against the closed edge (infra/components/load_balancer.py, infra.names.edge_routes): the ALB's
weights read from its inference rule (the listener's default action is a fixed 404), the canary's AWS resources
counted with or without the header pins, a release refused at plan time where pinned scoring would get 403, the aws
backend's probes on a Triton model the edge forwards, Triton's metrics read through Prometheus."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from drills.release import metrics as M
from drills.release.adapters import PROMETHEUS_FEDERATE, AlbKubeServing, KubernetesTritonMetrics
from drills.release.planning import (
    RELEASE_TOOLING,
    ReleaseOptions,
    build_release_plan,
    canary_deletes,
    pinned_scoring_refusal,
    release_context,
)
from infra.config import ROOT, load_fleet
from infra.names import PIN_PRIORITY, TRACK_GUARD_PRIORITY, canary_resource_count, edge_routes, pin_paths

TOOLING = ["198.51.100.0/28"]


# ---------------------------------------------------------------- 1. weights from the inference rule
def closed_listener(elb: Any, lb: str, tgs: dict[str, str], weights: tuple[int, int], model: str = "ranker") -> str:
    """A listener laid out as TritonLoadBalancer declares it: a fixed 404 by default, one weighted forwarding rule
    per edge route, the track guard and (here, always) the two pins."""
    listener = elb.create_listener(
        LoadBalancerArn=lb,
        Protocol="HTTP",
        Port=443,
        DefaultActions=[
            {
                "Type": "fixed-response",
                "FixedResponseConfig": {"StatusCode": "404", "ContentType": "text/plain", "MessageBody": "Not Found"},
            }
        ],
    )["Listeners"][0]["ListenerArn"]
    forward = {
        "Type": "forward",
        "ForwardConfig": {
            "TargetGroups": [
                {"TargetGroupArn": tgs["stable"], "Weight": weights[0]},
                {"TargetGroupArn": tgs["canary"], "Weight": weights[1]},
            ]
        },
    }
    for route in edge_routes(model).values():
        elb.create_rule(
            ListenerArn=listener,
            Priority=route.priority,
            Conditions=[
                {"Field": "http-request-method", "HttpRequestMethodConfig": {"Values": [route.method]}},
                {"Field": "path-pattern", "PathPatternConfig": {"Values": list(route.paths)}},
            ],
            Actions=[forward],
        )
    for track, prio in PIN_PRIORITY.items():
        elb.create_rule(
            ListenerArn=listener,
            Priority=prio,
            Conditions=[
                {"Field": "http-header", "HttpHeaderConfig": {"HttpHeaderName": "X-Reco-Track", "Values": [track]}},
                {"Field": "source-ip", "SourceIpConfig": {"Values": TOOLING}},
                {"Field": "path-pattern", "PathPatternConfig": {"Values": list(pin_paths(model))}},
            ],
            Actions=[{"Type": "forward", "TargetGroupArn": tgs[track]}],
        )
    elb.create_rule(
        ListenerArn=listener,
        Priority=TRACK_GUARD_PRIORITY,
        Conditions=[{"Field": "http-header", "HttpHeaderConfig": {"HttpHeaderName": "X-Reco-Track", "Values": ["*"]}}],
        Actions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "403", "ContentType": "text/plain"}}],
    )
    return listener


def _lb(elb: Any, ec2: Any, stack: str) -> tuple[str, dict[str, str]]:
    from infra.names import lb_name, target_group_name

    vpc = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.8.{i}.0/24", AvailabilityZone=f"us-west-2{z}")["Subnet"]["SubnetId"]
        for i, z in enumerate("ab")
    ]
    lb = elb.create_load_balancer(Name=lb_name(stack), Subnets=subnets)["LoadBalancers"][0]["LoadBalancerArn"]
    tgs = {
        t: elb.create_target_group(
            Name=target_group_name(stack, t), Protocol="HTTP", Port=8000, VpcId=vpc, TargetType="ip"
        )["TargetGroups"][0]["TargetGroupArn"]
        for t in ("stable", "canary")
    }
    return lb, tgs


def test_weights_are_read_from_the_inference_rule_not_the_404_default(aws):
    import boto3

    ec2, elb = boto3.client("ec2", region_name="us-west-2"), boto3.client("elbv2", region_name="us-west-2")
    lb, tgs = _lb(elb, ec2, "prod-usw2")
    closed_listener(elb, lb, tgs, (75, 25))
    s = AlbKubeServing({"us-west-2": elb}, {}, {"us-west-2": "prod-usw2"}, model="ranker")
    assert s.weights("us-west-2") == {"stable": 75, "canary": 25}


def test_weights_of_a_listener_without_the_edge_rules_name_what_is_missing(aws):
    import boto3

    ec2, elb = boto3.client("ec2", region_name="us-west-2"), boto3.client("elbv2", region_name="us-west-2")
    lb, tgs = _lb(elb, ec2, "weights-missing")
    listener = closed_listener(elb, lb, tgs, (100, 0))
    s = AlbKubeServing({"us-west-2": elb}, {}, {"us-west-2": "weights-missing"}, model="ranker")
    assert s.weights("us-west-2") == {"stable": 100, "canary": 0}
    infer = str(edge_routes("ranker")["infer-tensorrt"].priority)
    rules = elb.describe_rules(ListenerArn=listener)["Rules"]
    elb.delete_rule(RuleArn=next(r["RuleArn"] for r in rules if r["Priority"] == infer))
    with pytest.raises(LookupError, match="no forwarding rule at priority 110"):
        s.weights("us-west-2")


# ---------------------------------------------------------------- 2, 3: pins in the plan
def _stacks(tmp_path: Path, tooling: dict[str, list[str]]) -> Path:
    """A copy of stacks/ with load_balancer.release_tooling_cidrs set per stack."""
    dst = tmp_path / "stacks"
    dst.mkdir()
    for f in (ROOT / "stacks").glob("Pulumi.*.yaml"):
        doc = yaml.safe_load(f.read_text())
        stack = f.name[len("Pulumi.") : -len(".yaml")]
        if stack in tooling:
            doc["config"]["reco-dr:load_balancer"]["release_tooling_cidrs"] = tooling[stack]
        (dst / f.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return dst


def _plan(stacks: Path, **kw: Any) -> Any:
    ctx = release_context("prod", kw.pop("canary_region", None), stacks_dir=stacks, candidate="2026.12.0")
    return build_release_plan(ctx, ReleaseOptions(candidate="2026.12.0", **kw))


def test_canary_deletes_count_the_pins_only_where_the_stack_has_them(tmp_path):
    fleet = load_fleet("prod")
    r = "us-west-2"
    pools = len(fleet.regions[r].gpu_pools)
    assert canary_deletes(fleet, r) == canary_resource_count(pools) + 1  # the target group, no pins
    pinned = load_fleet("prod", _stacks(tmp_path, {fleet.stack_names[r]: TOOLING}))
    assert canary_deletes(pinned, r) == canary_resource_count(pools) + 3


def test_the_plan_names_the_stacks_whose_pins_the_gates_score_through(tmp_path):
    """Planned from stacks without a tooling range (stacks/ ships none): the plan shows the requirement, and the
    release precheck refuses it from the live config (tests/release/test_release_engine.py)."""
    fleet = load_fleet("prod")
    plan = _plan(_stacks(tmp_path, {}))
    assert plan.steps[0].params["release"]["pinned_scoring"] == {
        r: fleet.stack_names[r] for r in plan.steps[0].params["release"]["order"]
    }
    e = pinned_scoring_refusal(list(fleet.stack_names.values()))
    assert e.code == "release-tooling"
    msg = str(e)
    assert RELEASE_TOOLING in msg and "403" in msg and "Nothing was changed" in msg
    assert all(f"Pulumi.{s}.yaml" in msg for s in fleet.stack_names.values())


def test_only_the_regions_a_canary_reaches_need_pins(tmp_path):
    fleet = load_fleet("prod")
    region = "us-west-2"
    one = _stacks(tmp_path, {fleet.stack_names[region]: TOOLING})
    # A bad-release drill canaries one region only: its pins suffice.
    plan = _plan(one, canary_region=region, promote=False, offline_blocking=False, scenario="bad-release")
    assert plan.steps[0].name == "precheck"
    assert plan.steps[0].params["release"]["pinned_scoring"] == {region: fleet.stack_names[region]}
    # A release goes to every region: all of them are named.
    plan = _plan(one, canary_region=region)
    assert set(plan.steps[0].params["release"]["pinned_scoring"].values()) == set(fleet.stack_names.values())
    all_pinned = tmp_path / "all"
    all_pinned.mkdir()
    plan = _plan(_stacks(all_pinned, dict.fromkeys(fleet.stack_names.values(), TOOLING)), canary_region=region)
    promote = next(s for s in plan.steps if s.name == f"promote-{region}")
    assert promote.params["allow_deletes"] == canary_resource_count(len(fleet.regions[region].gpu_pools)) + 3


# ---------------------------------------------------------------- 4. the aws backend's probes
def test_the_aws_backend_probes_a_model_the_edge_forwards(tmp_path):
    from drills.backends import edge_probe_models

    fleet = load_fleet("prod")
    models = edge_probe_models(fleet)
    allowed = {p for r in edge_routes("ranker").values() for p in r.paths}
    for r, m in models.items():
        assert f"/v2/models/{m}/infer" in allowed, (r, m)
        fb = fleet.regions[r].model.onnx_fallback_for
        ccs = fleet.regions[r].compute_capabilities
        assert m == ("ranker_onnx" if all(cc in fb for cc in ccs) else "ranker_trt")
    # A region declaring the fallback for all its GPUs is probed on the ONNX model.
    stack = fleet.stack_names["us-west-2"]
    src = ROOT / "stacks" / f"Pulumi.{stack}.yaml"
    dst = tmp_path / "s"
    dst.mkdir()
    for f in (ROOT / "stacks").glob("Pulumi.*.yaml"):
        (dst / f.name).write_text(f.read_text())
    doc = yaml.safe_load(src.read_text())
    doc["config"]["reco-dr:model"]["onnx_fallback_for"] = fleet.regions["us-west-2"].compute_capabilities
    (dst / src.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    assert edge_probe_models(load_fleet("prod", dst))["us-west-2"] == "ranker_onnx"


def test_the_http_probe_infers_on_each_regions_model():
    from drills.adapters.probes import TritonHttpProbe
    from drills.clock import FakeClock

    seen: list[str] = []

    class Session:
        def post(self, url: str, **kw: Any) -> Any:
            seen.append(url)
            return type("R", (), {"status_code": 200, "json": lambda self: {"outputs": [1]}})()

    p = TritonHttpProbe(
        {"a": "http://a", "b": "http://b"}, "ranker_trt", FakeClock(), body={"inputs": []}, models={"b": "ranker_onnx"}
    )
    p.session = Session()  # type: ignore[assignment]  # a stand-in for requests.Session
    assert p.infer("a").ok and p.infer("b").ok
    assert seen == ["http://a/v2/models/ranker_trt/infer", "http://b/v2/models/ranker_onnx/infer"]


# ---------------------------------------------------------------- 5. metrics through Prometheus
def test_metrics_are_read_through_prometheus_not_the_pod_proxy():
    class Kube:
        def __init__(self) -> None:
            self.texts: list[tuple[str, dict]] = []

        def get(self, path: str, **params: Any) -> dict:
            return {
                "items": [
                    {"metadata": {"name": "triton-a-canary-1"}, "status": {"phase": "Running"}},
                    {"metadata": {"name": "triton-a-canary-2"}, "status": {"phase": "Pending"}},
                ]
            }

        def get_text(self, path: str, **params: Any) -> str:
            self.texts.append((path, params))
            # /federate's answer: Prometheus's target labels and timestamps beside Triton's own.
            text = M.render({"success": 9, "failure": 2}, "ranker_trt")
            return "\n".join(
                line
                if line.startswith("#") or not line
                else line.replace("{", '{namespace="triton",pod="triton-a-canary-1",', 1) + " 1764950400000"
                for line in text.splitlines()
            )

    kube = Kube()
    out = KubernetesTritonMetrics({"r": kube}).scrape("r", "canary")
    assert list(out) == ["triton-a-canary-1"]
    ((path, params),) = kube.texts
    assert path == PROMETHEUS_FEDERATE and ":8002" not in path and "/pods/" not in path
    assert path == "/api/v1/namespaces/monitoring/services/http:prometheus-server:80/proxy/federate"
    assert params == {"match[]": '{namespace="triton",pod="triton-a-canary-1"}'}
    snap = M.snapshot(out["triton-a-canary-1"], "ranker_trt")
    assert (snap.success, snap.failure) == (9, 2)


def test_the_prometheus_service_is_the_one_addons_declares():
    from infra.components.addons import MONITORING_NS, prometheus_adapter_values

    assert PROMETHEUS_FEDERATE.startswith(f"/api/v1/namespaces/{MONITORING_NS}/services/http:")
    url = prometheus_adapter_values()["prometheus"]["url"]
    assert url == f"http://prometheus-server.{MONITORING_NS}.svc"
    assert ":prometheus-server:80/" in PROMETHEUS_FEDERATE
