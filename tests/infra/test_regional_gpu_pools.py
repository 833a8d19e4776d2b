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
        capacity_type = "CAPACITY_BLOCK" if p.capacity.kind == "capacity-block" else p.capacity_type
        assert ng.inputs["amiType"] == p.ami_type and ng.inputs["capacityType"] == capacity_type
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
        if p.capacity.availability_zone is None:
            assert set(ng.inputs["subnetIds"]) == private
        else:  # a reservation the stack creates in one zone: only that zone's subnet (test_created_reservation...)
            assert len(ng.inputs["subnetIds"]) == 1 and set(ng.inputs["subnetIds"]) <= private


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


# ---------------------------------------------------------------- capacity reservations (issue 18)
def _template_of(plan, pool: str):
    return plan.one("aws:ec2/launchTemplate:LaunchTemplate", f"gpu-{pool}-nodes")


def test_pools_target_their_reservations(regional):
    _stack, plan, cfg = regional
    created = {r.name: r for r in plan.of_type("aws:ec2/capacityReservation:CapacityReservation")}
    for p in cfg.gpu_pools:
        spec = _template_of(plan, p.name).inputs.get("capacityReservationSpecification")
        if p.capacity.kind == "none":
            assert not spec
            continue
        target = spec["capacityReservationTarget"]
        if p.capacity.creates:
            assert target["capacityReservationId"] == created[f"gpu-{p.name}-reservation"].id
        elif p.capacity.reservation_group_arn:
            assert target == {"capacityReservationResourceGroupArn": p.capacity.reservation_group_arn}
        else:
            assert target == {"capacityReservationId": p.capacity.reservation_id}
    assert len(created) == sum(p.capacity.creates for p in cfg.gpu_pools)


def test_created_reservation_in_prod_euw1(euw1):
    r = euw1.one("aws:ec2/capacityReservation:CapacityReservation", "gpu-l40s-reservation")
    assert r.parent_type == "reco-dr:regional:GpuNodePool"
    assert r.inputs["instanceType"] == "g6e.12xlarge" and r.inputs["instanceCount"] == 4
    assert r.inputs["availabilityZone"] == "eu-west-1a" and r.inputs["instanceMatchCriteria"] == "targeted"
    assert r.inputs["instancePlatform"] == "Linux/UNIX" and r.inputs["endDateType"] == "unlimited"
    assert euw1.provider_of(r) is not None  # the region's explicit provider, as every resource
    # Its nodes launch only in its zone (elsewhere they would not use it).
    ng = _pool_groups(euw1)["l40s"]
    subnets = {s.id: s for s in euw1.of_type("aws:ec2/subnet:Subnet")}
    assert [subnets[i].inputs["availabilityZone"] for i in ng.inputs["subnetIds"]] == ["eu-west-1a"]
    # Exported for the drills with the other pool facts.
    pools = {p["name"]: p for p in euw1.outputs["gpu_pools"]}
    assert pools["l40s"]["reservation"] == r.id and pools["l40s"]["reserved_instances"] == 4
    assert pools["a10g"]["reservation"] == "cr-0b1c2d3e000000003" and pools["a10g"]["capacity"] == "odcr"


def test_capacity_block_pool(values):
    values["gpu_pools"][0]["capacity"] = {
        "kind": "capacity-block",
        "reservation_id": "cr-0123456789abcdef0",
        "instances": 2,
        "end_date": "2027-03-01T11:30:00Z",
    }
    plan = run_program("prod-use1", values=values)
    lt = _template_of(plan, "h100")
    assert lt.inputs["instanceMarketOptions"] == {"marketType": "capacity-block"}
    assert lt.inputs["capacityReservationSpecification"] == {
        "capacityReservationTarget": {"capacityReservationId": "cr-0123456789abcdef0"}
    }
    assert _pool_groups(plan)["h100"].inputs["capacityType"] == "CAPACITY_BLOCK"
    h100 = next(p for p in plan.outputs["gpu_pools"] if p["name"] == "h100")
    assert h100["reservation_end"] == "2027-03-01T11:30:00Z" and h100["capacity"] == "capacity-block"


def test_no_reservation_no_capacity_settings(values):
    for p in values["gpu_pools"]:
        p.pop("capacity", None)
    plan = run_program("prod-use1", values=values)
    for lt in plan.of_type("aws:ec2/launchTemplate:LaunchTemplate"):
        assert not lt.inputs.get("capacityReservationSpecification") and not lt.inputs.get("instanceMarketOptions")
    assert plan.of_type("aws:ec2/capacityReservation:CapacityReservation") == []
