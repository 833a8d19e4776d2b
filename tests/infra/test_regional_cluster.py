"""EKS control plane, system nodes, add-ons and the OIDC provider."""

from __future__ import annotations

import json


def test_eks_cluster(regional):
    stack, plan, cfg = regional
    c = plan.one("aws:eks/cluster:Cluster")
    assert c.inputs["name"] == f"reco-dr-{stack}" and c.inputs["version"] == cfg.kubernetes_version
    vpc = c.inputs["vpcConfig"]
    private_ids = {s.id for s in plan.of_type("aws:ec2/subnet:Subnet") if "private" in s.name}
    assert set(vpc["subnetIds"]) == private_ids
    assert vpc["endpointPrivateAccess"] is True
    assert c.inputs["accessConfig"]["authenticationMode"] == "API"
    enc = c.inputs["encryptionConfig"]
    assert enc["resources"] == ["secrets"]
    key = plan.one("aws:kms/key:Key", "cluster-secrets")
    assert enc["provider"]["keyArn"] == key.state["arn"] and key.inputs["enableKeyRotation"] is True
    assert set(c.inputs["enabledClusterLogTypes"]) == {
        "api",
        "audit",
        "authenticator",
        "controllerManager",
        "scheduler",
    }
    assert c.inputs["kubernetesNetworkConfig"]["serviceIpv4Cidr"] == cfg.service_cidr
    logs = plan.one("aws:cloudwatch/logGroup:LogGroup", "cluster-logs")
    assert logs.inputs["name"] == f"/aws/eks/{c.inputs['name']}/cluster" and logs.inputs["retentionInDays"] > 0


def test_control_plane_and_node_roles(use1):
    roles = {r.name: json.loads(r.inputs["assumeRolePolicy"]) for r in use1.of_type("aws:iam/role:Role")}
    assert roles["cluster-control-plane"]["Statement"][0]["Principal"] == {"Service": "eks.amazonaws.com"}
    assert roles["cluster-nodes"]["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    attached = {
        r.inputs["policyArn"].rsplit("/", 1)[1]
        for r in use1.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    }
    assert attached == {
        "AmazonEKSClusterPolicy",
        "AmazonEKSWorkerNodePolicy",
        "AmazonEC2ContainerRegistryReadOnly",
        "AmazonEKS_CNI_Policy",
    }


def test_system_node_group_is_cpu_and_untainted(regional):
    _stack, plan, cfg = regional
    ng = plan.one("aws:eks/nodeGroup:NodeGroup", "cluster-system")
    assert ng.inputs["instanceTypes"] == [cfg.system_pool.instance_type]
    assert ng.inputs["amiType"] == "AL2023_x86_64_STANDARD"
    assert ng.inputs["scalingConfig"] == {
        "minSize": cfg.system_pool.min,
        "desiredSize": cfg.system_pool.desired,
        "maxSize": cfg.system_pool.max,
    }
    assert not ng.inputs.get("taints")
    assert ng.options["ignore_changes"] == ["scalingConfig.desiredSize"]


def test_addons_and_oidc(use1):
    assert {a.inputs["addonName"] for a in use1.of_type("aws:eks/addon:Addon")} == {"vpc-cni", "kube-proxy", "coredns"}
    oidc = use1.one("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    issuer = use1.one("aws:eks/cluster:Cluster").state["identities"][0]["oidcs"][0]["issuer"]
    assert oidc.inputs["url"] == issuer and oidc.inputs["clientIdLists"] == ["sts.amazonaws.com"]


def test_prometheus_evaluates_the_fleet_alert_rules(use1):
    """The rules promtool checks are the rules the cluster's Prometheus loads, not a copy."""
    import yaml

    from infra.components.addons import ALERT_RULES

    releases = [r for r in use1.of_type("kubernetes:helm.sh/v3:Release") if r.inputs.get("chart") == "prometheus"]
    assert len(releases) == 1
    loaded = releases[0].inputs["values"]["serverFiles"]["alerting_rules.yml"]
    assert loaded == yaml.safe_load(ALERT_RULES.read_text())
    assert any(r.get("alert") for g in loaded["groups"] for r in g["rules"])


def test_only_the_ci_preview_role_reads_the_cluster_and_only_the_triton_namespace(regional):
    """`drills readiness` on a schedule (readiness.yml, role reco-dr-ci-preview) reads the Triton deployments: one
    access entry, EKS's view policy (no Secrets, no writes), scoped to the Triton namespace, nothing cluster-wide."""
    from infra.names import NAMESPACE, PREVIEW_ROLE

    _stack, plan, _cfg = regional
    entries = plan.of_type("aws:eks/accessEntry:AccessEntry")
    assocs = plan.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    assert len(entries) == len(assocs) == 1
    principal = entries[0].inputs["principalArn"]
    assert principal.endswith(f":role/{PREVIEW_ROLE}") and entries[0].inputs["type"] == "STANDARD"
    a = assocs[0].inputs
    assert a["principalArn"] == principal
    assert a["policyArn"] == "arn:aws:eks::aws:cluster-access-policy/AmazonEKSViewPolicy"
    assert a["accessScope"] == {"type": "namespace", "namespaces": [NAMESPACE]}
