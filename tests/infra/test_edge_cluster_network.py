"""Issue 15, the edge, below the load balancer: the EKS API endpoint's reach, the Triton namespace's NetworkPolicies
(and the VPC CNI that enforces them), and the S3 gateway endpoint's policy."""

from __future__ import annotations

import copy
import ipaddress
import json

import kubernetes_validate
import pytest

from infra.components import network_policy as NP
from infra.components.network import s3_endpoint_policy, subnet_plan
from infra.config import read_stack_file
from infra.health import DEEP_HEALTH_PORT
from infra.mocks import run_program
from infra.names import PORTS
from tests.signing import with_canary

POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"


def _with(stack: str, **keys) -> dict:
    v = copy.deepcopy(read_stack_file(stack))
    v.update(keys)
    return v


# ---------------------------------------------------------------- the EKS API endpoint
def test_endpoint_is_public_only_for_the_configured_blocks(regional):
    _stack, plan, cfg = regional
    vpc = plan.one("aws:eks/cluster:Cluster").inputs["vpcConfig"]
    assert vpc["endpointPrivateAccess"] is True
    cidrs = list(cfg.cluster.endpoint_public_access_cidrs)
    assert vpc["endpointPublicAccess"] is bool(cidrs)
    assert vpc.get("publicAccessCidrs") == (cidrs or None)


def test_default_is_a_private_endpoint_only():
    v = copy.deepcopy(read_stack_file("staging-usw2"))
    del v["cluster"]
    plan = run_program("staging-usw2", values=v)
    vpc = plan.one("aws:eks/cluster:Cluster").inputs["vpcConfig"]
    assert (vpc["endpointPrivateAccess"], vpc["endpointPublicAccess"]) == (True, False)
    assert "publicAccessCidrs" not in vpc


def test_public_endpoint_narrowed_to_the_listed_blocks():
    blocks = ["34.120.0.0/24", "52.1.2.3/32"]
    plan = run_program("staging-usw2", values=_with("staging-usw2", cluster={"endpoint_public_access_cidrs": blocks}))
    vpc = plan.one("aws:eks/cluster:Cluster").inputs["vpcConfig"]
    assert (vpc["endpointPrivateAccess"], vpc["endpointPublicAccess"], vpc["publicAccessCidrs"]) == (True, True, blocks)


def test_the_vpc_cni_enforces_network_policies(regional):
    _stack, plan, _cfg = regional
    cni = next(a for a in plan.of_type("aws:eks/addon:Addon") if a.inputs["addonName"] == "vpc-cni")
    assert json.loads(cni.inputs["configurationValues"]) == {"enableNetworkPolicy": "true"}
    others = [a for a in plan.of_type("aws:eks/addon:Addon") if a.inputs["addonName"] != "vpc-cni"]
    assert others and not any(a.inputs.get("configurationValues") for a in others)


# ---------------------------------------------------------------- NetworkPolicies of the Triton namespace
def _policies(plan) -> dict[str, dict]:
    return {
        r.inputs["metadata"]["name"]: {k: r.inputs[k] for k in ("apiVersion", "kind", "metadata", "spec")}
        for r in plan.of_type(POLICY)
    }


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and In/NotIn/Exists/DoesNotExist expressions) against labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        have, op = e["key"] in labels, e["operator"]
        ok = {
            "In": have and labels.get(e["key"]) in e.get("values", []),
            "NotIn": not have or labels.get(e["key"]) not in e.get("values", []),
            "Exists": have,
            "DoesNotExist": not have,
        }[op]
        if not ok:
            return False
    return True


def test_policies_are_declared_valid_and_in_the_triton_namespace(regional):
    _stack, plan, cfg = regional
    pols = _policies(plan)
    assert sorted(pols) == sorted(NP.POLICY_NAMES)
    for name, m in pols.items():
        assert m["metadata"]["namespace"] == "triton", name
        assert m["spec"]["policyTypes"] == ["Ingress"], name
        kubernetes_validate.validate(m, f"{cfg.kubernetes_version}.0", strict=True)
    for r in plan.of_type(POLICY):
        assert r.parent_type == "reco-dr:regional:TritonNetworkPolicies"
        # The namespace (TritonServing) exists first; nothing else is waited for, so an arm's pods are admitted before
        # their Deployment is awaited (infra/regional.py).
        assert r.options["depends_on"] == ["triton-ns"]


def test_pure_manifests_are_valid_strict():
    for m in NP.manifests(["10.10.192.0/20"]):
        kubernetes_validate.validate(m, "1.33.0", strict=True)
    with pytest.raises(ValueError, match="source blocks"):
        NP.manifests([])


def test_default_deny_selects_every_pod_and_admits_nothing(use1):
    deny = _policies(use1)["default-deny-ingress"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": []}


def test_http_only_from_the_load_balancers_subnets(regional):
    """The ALB's interfaces are in the public subnets; pods (private subnets) are not admitted to Triton's HTTP, nor
    to the deep-health sidecar's port (the ALB's deep-health target group, infra/health.py)."""
    _stack, plan, cfg = regional
    spec = _policies(plan)["triton-http-from-load-balancer"]["spec"]
    ((rule,),) = [spec["ingress"]]
    assert rule["ports"] == [{"protocol": "TCP", "port": PORTS["http"]}, {"protocol": "TCP", "port": DEEP_HEALTH_PORT}]
    blocks = [p["ipBlock"]["cidr"] for p in rule["from"]]
    assert all(set(p) == {"ipBlock"} and "except" not in p["ipBlock"] for p in rule["from"])
    public = sorted(s.inputs["cidrBlock"] for s in plan.of_type("aws:ec2/subnet:Subnet") if "public" in s.name)
    assert sorted(blocks) == public
    lb_subnets = set(plan.one("aws:lb/loadBalancer:LoadBalancer").inputs["subnets"])
    assert {s.id for s in plan.of_type("aws:ec2/subnet:Subnet") if s.inputs["cidrBlock"] in blocks} == lb_subnets
    private = [ipaddress.ip_network(p.private_cidr) for p in subnet_plan(cfg.vpc_cidr, ["a", "b", "c"])]
    assert not any(ipaddress.ip_network(b).overlaps(n) for b in blocks for n in private)


def test_metrics_only_from_the_prometheus_server(use1):
    from infra.components.addons import MONITORING_NS

    spec = _policies(use1)["triton-metrics-from-prometheus"]["spec"]
    ((rule,),) = [spec["ingress"]]
    assert rule["ports"] == [{"protocol": "TCP", "port": PORTS["metrics"]}]
    assert rule["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": MONITORING_NS}},
            "podSelector": {
                "matchLabels": {"app.kubernetes.io/name": "prometheus", "app.kubernetes.io/component": "server"}
            },
        }
    ]


def test_no_policy_admits_grpc(regional):
    _stack, plan, _cfg = regional
    ports = [p["port"] for m in _policies(plan).values() for r in m["spec"]["ingress"] for p in r.get("ports", [])]
    assert PORTS["grpc"] not in ports
    assert all(r.get("ports") for m in _policies(plan).values() for r in m["spec"]["ingress"])  # no all-ports rule


def test_policies_select_every_triton_pod_stable_and_canary():
    v = copy.deepcopy(read_stack_file("prod-use1"))
    with_canary(v["model"], "2026.12.0", 10)
    plan = run_program("prod-use1", values=v)
    pods = [d.inputs["spec"]["template"]["metadata"]["labels"] for d in plan.of_type("kubernetes:apps/v1:Deployment")]
    assert {p["reco-dr/track"] for p in pods} == {"stable", "canary"}
    pols = _policies(plan)
    assert sorted(pols) == sorted(NP.POLICY_NAMES)  # the same policies, a canary adds none
    for name, m in pols.items():
        selected = [_selects(m["spec"]["podSelector"], p) for p in pods]
        if name == "triton-http-from-deep-health":  # the stable Service's pods: the ones the sidecar's check reaches
            assert selected == [p["reco-dr/track"] == "stable" for p in pods]
        else:
            assert all(selected)


def test_http_from_the_stable_pods_deep_health_sidecars(use1):
    """The sidecar checks the region through the stable Service: Triton's HTTP port (only) admits the stable pods."""
    spec = _policies(use1)["triton-http-from-deep-health"]["spec"]
    assert spec["podSelector"] == {"matchLabels": {"reco-dr/track": "stable"}}
    assert spec["ingress"] == [
        {
            "from": [{"podSelector": {"matchLabels": {"reco-dr/track": "stable"}}}],
            "ports": [{"protocol": "TCP", "port": PORTS["http"]}],
        }
    ]


# ---------------------------------------------------------------- the S3 gateway endpoint
def test_s3_endpoint_policy_admits_the_fleets_bucket_and_image_layers_only(regional):
    _stack, plan, cfg = regional
    ep = plan.one("aws:ec2/vpcEndpoint:VpcEndpoint")
    doc = json.loads(ep.inputs["policy"])
    bucket = plan.outputs["bucket_arn"]
    assert plan.one("aws:s3/bucket:Bucket").state["arn"] == bucket
    statements = {s["Sid"]: s for s in doc["Statement"]}
    assert set(statements) == {"FleetArtifactBuckets", "ImageLayers"}
    assert all(s["Effect"] == "Allow" and s["Principal"] == "*" for s in statements.values())
    assert statements["FleetArtifactBuckets"]["Resource"] == [bucket, f"{bucket}/*"]
    assert statements["ImageLayers"]["Action"] == "s3:GetObject"
    assert statements["ImageLayers"]["Resource"] == [
        f"arn:aws:s3:::prod-{cfg.region}-starport-layer-bucket/*",
        f"arn:aws:s3:::prod-registry-k8s-io-{cfg.region}/*",
    ]
    resources = [r for s in doc["Statement"] for r in s["Resource"]]
    assert not any(r in ("*", "arn:aws:s3:::*") for r in resources)


def test_s3_endpoint_policy_function():
    doc = json.loads(s3_endpoint_policy("eu-west-1", ["a", "b"]))
    assert doc["Version"] == "2012-10-17"
    fleet = next(s for s in doc["Statement"] if s["Sid"] == "FleetArtifactBuckets")
    assert fleet["Resource"] == ["arn:aws:s3:::a", "arn:aws:s3:::a/*", "arn:aws:s3:::b", "arn:aws:s3:::b/*"]


def test_the_vpcs_default_security_group_is_emptied(regional):
    """Nothing uses the default security group; declared with no rules, it admits and lets out nothing."""
    _stack, plan, _cfg = regional
    (vpc,) = plan.of_type("aws:ec2/vpc:Vpc")
    (sg,) = plan.of_type("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup")
    assert sg.inputs["vpcId"] == vpc.id
    assert not sg.inputs.get("ingress") and not sg.inputs.get("egress")


def test_every_flow_of_the_vpc_is_logged_by_a_role_that_can_write_only_its_log_group(regional):
    import json

    _stack, plan, _cfg = regional
    (vpc,) = plan.of_type("aws:ec2/vpc:Vpc")
    (fl,) = plan.of_type("aws:ec2/flowLog:FlowLog")
    (lg,) = [g for g in plan.of_type("aws:cloudwatch/logGroup:LogGroup") if g.inputs["name"].endswith("vpc-flow-logs")]
    assert fl.inputs["vpcId"] == vpc.id and fl.inputs["trafficType"] == "ALL"
    assert fl.inputs["logDestinationType"] == "cloud-watch-logs" and fl.inputs["logDestination"] == lg.state["arn"]
    assert lg.inputs["retentionInDays"] == 90
    role = next(r for r in plan.of_type("aws:iam/role:Role") if r.state["arn"] == fl.inputs["iamRoleArn"])
    trust = json.loads(role.inputs["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "vpc-flow-logs.amazonaws.com"}
    (pol,) = [p for p in plan.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == role.id]
    (st,) = json.loads(pol.inputs["policy"])["Statement"]
    assert st["Resource"] == f"{lg.state['arn']}:*" and all(a.startswith("logs:") for a in st["Action"])
