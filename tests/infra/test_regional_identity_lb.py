"""Least-privilege identities and the Pulumi-owned load balancer with its security groups."""

from __future__ import annotations

import json

from infra.components.identity import model_reader_policy
from infra.health import DEEP_HEALTH_PORT


def _policy(plan, role_name):
    role = plan.one("aws:iam/role:Role", f"{role_name}-role")
    (pol,) = [p for p in plan.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == role.id]
    return role, json.loads(role.inputs["assumeRolePolicy"]), json.loads(pol.inputs["policy"])


def _actions(statement: dict) -> list[str]:
    a = statement["Action"]
    return [a] if isinstance(a, str) else a


def test_triton_reads_only_its_bucket_and_key(regional):
    _stack, plan, _cfg = regional
    _role, trust, pol = _policy(plan, "triton")
    bucket, key = plan.outputs["bucket_arn"], plan.outputs["kms_key_arn"]
    grants = {(a, s["Resource"]) for s in pol["Statement"] for a in _actions(s)}
    # GetObjectVersion: a restore's fetch pins name earlier object versions (infra.names.pins_key).
    assert grants == {
        ("s3:ListBucket", bucket),
        ("s3:GetObject", f"{bucket}/*"),
        ("s3:GetObjectVersion", f"{bucket}/*"),
        ("kms:Decrypt", key),
    }
    assert all(s["Effect"] == "Allow" and "*" not in _actions(s) for s in pol["Statement"])
    (st,) = trust["Statement"]
    oidc = plan.one("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    assert st["Principal"] == {"Federated": oidc.state["arn"]} and st["Action"] == "sts:AssumeRoleWithWebIdentity"
    issuer = oidc.inputs["url"].removeprefix("https://")
    assert st["Condition"]["StringEquals"] == {
        f"{issuer}:sub": "system:serviceaccount:triton:triton",
        f"{issuer}:aud": "sts.amazonaws.com",
    }


def test_model_reader_policy_has_no_write():
    doc = json.loads(model_reader_policy("arn:aws:s3:::b", "arn:aws:kms:us-east-1:1:key/k"))
    actions = [a for s in doc["Statement"] for a in _actions(s)]
    assert not any(a.startswith(("s3:Put", "s3:Delete")) or a == "kms:Encrypt" for a in actions)


def test_controller_roles_are_scoped(use1):
    _, trust, pol = _policy(use1, "lb-controller")
    tg = use1.one("aws:lb/targetGroup:TargetGroup", "ingress-triton").state["arn"]
    deep = use1.one("aws:lb/targetGroup:TargetGroup", "ingress-deep-health").state["arn"]
    reg = next(s for s in pol["Statement"] if s["Sid"] == "RegisterPods")
    assert reg["Resource"] == [tg, deep]  # the stable pods, on Triton's port and on the deep-health sidecar's
    assert not any("Create" in a or "Authorize" in a for s in pol["Statement"] for a in s["Action"])
    assert trust["Statement"][0]["Condition"]["StringEquals"]
    _, _, ca = _policy(use1, "cluster-autoscaler")
    scale = next(s for s in ca["Statement"] if s["Sid"] == "ScaleOwnGroups")
    assert scale["Condition"] == {
        "StringEquals": {"aws:ResourceTag/k8s.io/cluster-autoscaler/reco-dr-prod-use1": "owned"}
    }
    # The one describe call that takes a resource is scoped to this cluster's node groups.
    ng = next(s for s in ca["Statement"] if s["Sid"] == "DescribeOwnNodegroups")
    assert ng["Resource"] == "arn:aws:eks:*:*:nodegroup/reco-dr-prod-use1/*/*"
    assert not any("eks:" in a for s in ca["Statement"] if s["Resource"] == "*" for a in _actions(s))


def test_alb_listener_and_target_group(regional):
    _stack, plan, cfg = regional
    lb = plan.one("aws:lb/loadBalancer:LoadBalancer")
    assert lb.inputs["loadBalancerType"] == "application" and lb.inputs["internal"] is False
    public = {s.id for s in plan.of_type("aws:ec2/subnet:Subnet") if "public" in s.name}
    assert set(lb.inputs["subnets"]) == public
    assert lb.inputs["dropInvalidHeaderFields"] is True
    assert lb.inputs["enableDeletionProtection"] is (cfg.env == "prod")
    tg = plan.one("aws:lb/targetGroup:TargetGroup", "ingress-triton")
    assert (tg.inputs["port"], tg.inputs["protocol"], tg.inputs["targetType"]) == (8000, "HTTP", "ip")
    hc = tg.inputs["healthCheck"]
    assert (hc["path"], hc["protocol"], hc["port"], hc["matcher"]) == (
        "/v2/health/ready",
        "HTTP",
        "traffic-port",
        "200",
    )
    lst = plan.one("aws:lb/listener:Listener")
    assert (lst.inputs["port"], lst.inputs["protocol"]) == (443, "HTTPS")
    assert lst.inputs["certificateArn"] == cfg.load_balancer.certificate_arn
    assert lst.inputs["sslPolicy"] == cfg.load_balancer.ssl_policy
    assert lst.inputs["loadBalancerArn"] == lb.state["arn"]
    # Nothing is forwarded by default (issue 15, the edge): only the routes of tests/infra/test_edge_listener.py.
    assert [a["type"] for a in lst.inputs["defaultActions"]] == ["fixed-response"]
    routes = [r for r in plan.of_type("aws:lb/listenerRule:ListenerRule") if r.name.startswith("ingress-route-")]
    assert routes and all(
        r.inputs["actions"] == [{"type": "forward", "targetGroupArn": tg.state["arn"]}] for r in routes
    )


def test_security_groups_least_privilege(regional):
    _stack, plan, cfg = regional
    lb_sg = plan.one("aws:ec2/securityGroup:SecurityGroup")
    assert plan.one("aws:lb/loadBalancer:LoadBalancer").inputs["securityGroups"] == [lb_sg.id]
    assert not lb_sg.inputs.get("ingress") and not lb_sg.inputs.get("egress")
    node_sg = plan.one("aws:eks/cluster:Cluster").state["vpcConfig"]["clusterSecurityGroupId"]
    ingress = plan.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    to_lb = [r.inputs for r in ingress if r.inputs["securityGroupId"] == lb_sg.id]
    assert sorted(r["cidrIpv4"] for r in to_lb) == sorted(cfg.load_balancer.allowed_cidrs)
    assert all((r["fromPort"], r["toPort"], r["ipProtocol"]) == (443, 443, "tcp") for r in to_lb)
    # Triton's port and the deep-health sidecar's (infra/health.py), each from the load balancer only; nothing else.
    to_nodes = [r.inputs for r in ingress if r.inputs["securityGroupId"] == node_sg]
    assert to_nodes == [
        {**to_nodes[i], "fromPort": port, "toPort": port, "referencedSecurityGroupId": lb_sg.id}
        for i, port in enumerate((8000, DEEP_HEALTH_PORT))
    ]
    assert not any("cidrIpv4" in r for r in to_nodes)
    egress = plan.of_type("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
    assert [
        (e.inputs["securityGroupId"], e.inputs["referencedSecurityGroupId"], e.inputs["fromPort"], e.inputs["toPort"])
        for e in egress
    ] == [(lb_sg.id, node_sg, port, port) for port in (8000, DEEP_HEALTH_PORT)]


def test_allowed_cidrs_follow_config(values, plan_for):
    from infra.mocks import run_program

    values["load_balancer"]["allowed_cidrs"] = ["198.51.100.0/24", "203.0.113.0/24"]
    plan = run_program("prod-use1", values=values)
    lb_sg = plan.one("aws:ec2/securityGroup:SecurityGroup")
    cidrs = sorted(
        r.inputs["cidrIpv4"]
        for r in plan.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if r.inputs["securityGroupId"] == lb_sg.id
    )
    assert cidrs == ["198.51.100.0/24", "203.0.113.0/24"]


def test_lb_dns_and_zone_are_real_shape(regional):
    from infra.mocks import ALB_ZONE_IDS

    _stack, plan, cfg = regional
    assert plan.outputs["lb_zone_id"] == ALB_ZONE_IDS[cfg.region]
    assert plan.outputs["lb_dns_name"].endswith(f".{cfg.region}.elb.amazonaws.com")


def test_engine_builder_access_for_model_build_jobs(regional):
    """model_build/k8s_jobs.py's contract: namespace model-build, SA engine-builder (IRSA), ConfigMap with the
    bucket."""
    _stack, plan, cfg = regional
    role, trust, pol = _policy(plan, "engine-build-irsa")
    bucket, key, m = plan.outputs["bucket_arn"], plan.outputs["kms_key_arn"], cfg.model.name
    cond = trust["Statement"][0]["Condition"]["StringEquals"]
    assert any(v == "system:serviceaccount:model-build:engine-builder" for v in cond.values())
    writes = next(s for s in pol["Statement"] if s["Sid"] == "WriteEngines")
    assert writes["Action"] == "s3:PutObject"
    assert writes["Resource"] == [
        f"{bucket}/{m}/*/{m}_trt/1/*",
        f"{bucket}/{m}/*/engine_records/*",
        f"{bucket}/timing-cache/*",
    ]
    # Engines are added to versions before they serve: never into the version the region serves.
    deny = next(s for s in pol["Statement"] if s["Sid"] == "NoWritesToServingVersions")
    assert deny["Effect"] == "Deny" and deny["Resource"] == [f"{bucket}/{m}/{cfg.model.version}/*"]
    assert not any(
        "Delete" in a
        for s in pol["Statement"]
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    )
    kms = next(s for s in pol["Statement"] if s["Sid"] == "Kms")
    # The key decrypts the bucket's objects through S3 in the stack's region only, never directly.
    assert kms["Resource"] == key
    assert kms["Condition"] == {"StringEquals": {"kms:ViaService": f"s3.{cfg.region}.amazonaws.com"}}
    sa = plan.one("kubernetes:core/v1:ServiceAccount", "engine-build-sa")
    assert sa.inputs["metadata"] == {
        "name": "engine-builder",
        "namespace": "model-build",
        "annotations": {"eks.amazonaws.com/role-arn": role.state["arn"]},
    }
    cm = plan.one("kubernetes:core/v1:ConfigMap", "engine-build-bucket")
    assert cm.inputs["metadata"] == {"name": "reco-dr-artifacts", "namespace": "model-build"}
    assert cm.inputs["data"] == {"bucket": plan.outputs["bucket_name"]}
