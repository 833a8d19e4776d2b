"""GPU managed node groups: taint, labels, AMI, scaling, and the device plugin only where needed."""

from __future__ import annotations

import pytest

from infra.mocks import run_program


def _pool_groups(plan):
    return {
        r.name.removeprefix("gpu-").removesuffix("-nodes"): r
        for r in plan.of_type("aws:eks/nodeGroup:NodeGroup")
        if r.name.startswith("gpu-")
    }


def test_one_tainted_labelled_node_group_per_gpu_pool(regional):
    _stack, plan, cfg = regional
    groups = _pool_groups(plan)
    assert sorted(groups) == sorted(p.name for p in cfg.gpu_pools)
    for p in cfg.gpu_pools:
        ng = groups[p.name]
        assert ng.inputs["instanceTypes"] == [p.instance_type]
        assert ng.inputs["amiType"] == p.ami_type and ng.inputs["capacityType"] == p.capacity_type
        assert ng.inputs["taints"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}]
        labels = ng.inputs["labels"]
        assert labels["reco-dr/gpu-model"] == p.gpu.gpu_model
        assert labels["reco-dr/compute-capability"] == p.gpu.compute_capability
        assert labels["reco-dr/gpu-pool"] == p.name
        assert ng.inputs["scalingConfig"] == {"minSize": p.min, "desiredSize": p.desired, "maxSize": p.max}
        # The autoscaler owns the desired size; `pulumi up` must not reset it.
        assert ng.options["ignore_changes"] == ["scalingConfig.desiredSize"]
        assert ng.inputs["nodeGroupNamePrefix"] == f"gpu-{p.name}-"
        private = {s.id for s in plan.of_type("aws:ec2/subnet:Subnet") if "private" in s.name}
        assert set(ng.inputs["subnetIds"]) == private


def test_concrete_labels_prod_use1(use1):
    h100 = _pool_groups(use1)["h100"]
    assert h100.inputs["labels"]["reco-dr/gpu-model"] == "H100"
    assert h100.inputs["labels"]["reco-dr/compute-capability"] == "9.0"


def test_device_plugin_only_on_pools_whose_ami_lacks_it(euw1, as_manifest):
    # prod-euw1: l40s on AL2023 (needs the plugin), a10g on Bottlerocket (ships its own).
    ds = as_manifest(euw1.one("kubernetes:apps/v1:DaemonSet"))
    terms = ds["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "reco-dr/gpu-pool", "operator": "In", "values": ["l40s"]}]}]
    tol = ds["spec"]["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"} in tol
    assert ds["spec"]["template"]["spec"]["containers"][0]["image"].split(":")[1].startswith("v")


def test_no_device_plugin_when_every_pool_is_bottlerocket(values):
    for p in values["gpu_pools"]:
        p["ami_type"] = "BOTTLEROCKET_x86_64_NVIDIA"
    plan = run_program("prod-use1", values=values)
    assert plan.of_type("kubernetes:apps/v1:DaemonSet") == []
    assert len(plan.of_type("kubernetes:apps/v1:Deployment")) == len(values["gpu_pools"])


@pytest.mark.parametrize("stack", ["prod-use1", "prod-euw1"])
def test_gpu_node_groups_wait_for_node_role_policies(stack, plan_for):
    """The node group's role must carry its policies before EKS launches nodes (else they never join)."""
    plan = plan_for(stack)
    node_policies = {
        r.name
        for r in plan.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if r.name.startswith("cluster-nodes-")
    }
    assert len(node_policies) == 2  # worker, ecr: the CNI policy is on its own IRSA role (test_pods_nodes.py)
    for ng in _pool_groups(plan).values():
        assert ng.parent_type == "reco-dr:regional:GpuNodePool"
        assert node_policies <= set(ng.options["depends_on"])
