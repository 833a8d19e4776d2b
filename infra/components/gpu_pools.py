"""GPU managed node groups (one per configured pool) and the NVIDIA device plugin where the AMI lacks it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.config import CapacityGuarantee, GpuPool

GPU_TAINT_KEY = "nvidia.com/gpu"
# Only pods that tolerate this taint (Triton, the device plugin, engine builds) land on GPU nodes.
GPU_TAINT = {"key": GPU_TAINT_KEY, "value": "true", "effect": "NO_SCHEDULE"}  # EKS API spelling
GPU_TOLERATION = {
    "key": GPU_TAINT_KEY,
    "operator": "Equal",
    "value": "true",
    "effect": "NoSchedule",
}  # Kubernetes spelling
POOL_LABEL = "reco-dr/gpu-pool"
MODEL_LABEL = "reco-dr/gpu-model"
CC_LABEL = "reco-dr/compute-capability"
# Pinned: the plugin's API to the kubelet changes between releases; v0.17 supports Kubernetes 1.33. By digest too (the
# kubelet pulls the digest, the tag documents it): the v0.17.1 index digest as other public repositories pin it; check
# with `crane digest nvcr.io/nvidia/k8s-device-plugin:v0.17.1` before changing the tag.
DEVICE_PLUGIN_IMAGE = (
    "nvcr.io/nvidia/k8s-device-plugin:v0.17.1@sha256:af31e2b7c7f89834c4e5219860def7ac2e49a207b3d4e8610d5a26772b7738e5"
)
GPU_DISK_GIB = 200  # the Triton image is ~15 GiB unpacked, plus the model repository Triton copies from S3


def gpu_node_labels(pool: GpuPool) -> dict[str, str]:
    """Labels Triton's node selector and the engine-build Jobs match on."""
    return {
        POOL_LABEL: pool.name,
        MODEL_LABEL: pool.gpu.gpu_model,
        CC_LABEL: pool.gpu.compute_capability,
        "reco-dr/gpus-per-node": str(pool.gpu.gpus),
    }


def device_plugin_daemonset(pool_names: list[str], image: str = DEVICE_PLUGIN_IMAGE) -> dict:
    """The NVIDIA device plugin, only on the named pools (AL2023 NVIDIA AMIs ship the driver, not the plugin;
    Bottlerocket NVIDIA runs its own, and a second plugin would double-advertise the GPUs)."""
    labels = {"app.kubernetes.io/name": "nvidia-device-plugin", "app.kubernetes.io/part-of": "reco-dr"}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "nvidia-device-plugin", "namespace": "kube-system", "labels": labels},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "nvidia-device-plugin"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "priorityClassName": "system-node-critical",
                    # The runtime's default seccomp profile (the kubelet's default is Unconfined); the plugin only
                    # talks gRPC over the kubelet's socket directory and NVML, which RuntimeDefault allows.
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    # It needs no Kubernetes API access (it registers with the kubelet over the socket).
                    "automountServiceAccountToken": False,
                    "tolerations": [GPU_TOLERATION, {"key": "CriticalAddonsOnly", "operator": "Exists"}],
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchExpressions": [
                                            {"key": POOL_LABEL, "operator": "In", "values": sorted(pool_names)}
                                        ]
                                    }
                                ]
                            }
                        }
                    },
                    "containers": [
                        {
                            "name": "nvidia-device-plugin",
                            "image": image,
                            "env": [{"name": "FAIL_ON_INIT_ERROR", "value": "false"}],
                            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
                            "volumeMounts": [{"name": "device-plugin", "mountPath": "/var/lib/kubelet/device-plugins"}],
                        }
                    ],
                    "volumes": [
                        {
                            "name": "device-plugin",
                            "hostPath": {"path": "/var/lib/kubelet/device-plugins", "type": "Directory"},
                        }
                    ],
                },
            },
        },
    }


# Instance metadata: IMDSv2 only (a session token, no plain GET that an SSRF could turn into credentials), and a
# hop limit of 1 so the token response never leaves the node's own network namespace: pods (which have their own
# namespace on the VPC CNI) cannot reach the node role's credentials; they use IRSA. hostNetwork pods (aws-node,
# kube-proxy) still can. The controllers here get region and VPC from their values, not from IMDS.
IMDS_TOKENS = "required"
IMDS_HOP_LIMIT = 1


def root_device_name(ami_type: str) -> str:
    """The volume EKS sizes with `diskSize`: Bottlerocket keeps the OS on /dev/xvda and containers and images on its
    data volume /dev/xvdb; AL2023 has one root volume, /dev/xvda."""
    return "/dev/xvdb" if ami_type.startswith("BOTTLEROCKET") else "/dev/xvda"


@dataclass(frozen=True)
class ReservationTarget:
    """What a GPU pool's launch template says about capacity reservations (None fields: nothing reserved)."""

    specification: aws.ec2.LaunchTemplateCapacityReservationSpecificationArgs | None = None
    market: aws.ec2.LaunchTemplateInstanceMarketOptionsArgs | None = None


def reservation_target(cap: CapacityGuarantee, created_id: pulumi.Input[str] | None = None) -> ReservationTarget:
    """The launch template's capacity reservation settings for `cap`; `created_id` is the reservation the stack
    declared when `cap.creates`. A target (an id or a group) launches the pool's nodes into that reservation, so they
    use the capacity paid for instead of competing for the region's On-Demand pool; a Capacity Block also needs the
    `capacity-block` market type (EKS: launch template with InstanceMarketOptions and the block's id)."""
    if cap.kind == "none":
        return ReservationTarget()
    target = aws.ec2.LaunchTemplateCapacityReservationSpecificationCapacityReservationTargetArgs(
        capacity_reservation_id=created_id if cap.creates else cap.reservation_id,
        capacity_reservation_resource_group_arn=cap.reservation_group_arn,
    )
    spec = aws.ec2.LaunchTemplateCapacityReservationSpecificationArgs(capacity_reservation_target=target)
    market = (
        aws.ec2.LaunchTemplateInstanceMarketOptionsArgs(market_type="capacity-block")
        if cap.kind == "capacity-block"
        else None
    )
    return ReservationTarget(spec, market)


def node_group_capacity_type(pool: GpuPool) -> str:
    # EKS's API takes CAPACITY_BLOCK for a group launching into a Capacity Block (the provider's docs list only
    # ON_DEMAND and SPOT; the value passes through to CreateNodegroup).
    return "CAPACITY_BLOCK" if pool.capacity.kind == "capacity-block" else pool.capacity_type


def pool_subnets(pool: GpuPool, azs: Sequence[str], subnet_ids: Sequence[pulumi.Input[str]]) -> list:
    """The subnets a pool launches into: all of them, except for a reservation the stack creates in one zone, where
    only that zone's subnet is given (a node launched in another zone would not use the reservation)."""
    az = pool.capacity.availability_zone
    if az is None:
        return list(subnet_ids)
    if az not in azs:
        raise ValueError(
            f"GPU pool {pool.name}: capacity.availability_zone {az} is not a zone the network uses {list(azs)}"
        )
    return [subnet_ids[list(azs).index(az)]]


def node_launch_template(
    name: str,
    ami_type: str,
    disk_gib: int | None,
    opts: pulumi.ResourceOptions,
    reservation: ReservationTarget | None = None,
) -> aws.ec2.LaunchTemplate:
    """The launch template of an EKS managed node group: metadata options (IMDS) and, where the group sizes its disk,
    the disk (EKS refuses `diskSize` on a node group with a launch template), and a GPU pool's capacity reservation.
    No image, no user data: EKS still picks the AMI of the group's `amiType` and bootstraps the node as before."""
    reservation = reservation or ReservationTarget()
    disks = (
        [
            aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                device_name=root_device_name(ami_type),
                ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                    volume_size=disk_gib, volume_type="gp3", encrypted="true", delete_on_termination="true"
                ),
            )
        ]
        if disk_gib
        else None
    )
    return aws.ec2.LaunchTemplate(
        name,
        name_prefix=f"{name}-",
        description="EKS managed nodes: IMDSv2 only, hop limit 1",
        metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
            http_endpoint="enabled", http_tokens=IMDS_TOKENS, http_put_response_hop_limit=IMDS_HOP_LIMIT
        ),
        block_device_mappings=disks,
        capacity_reservation_specification=reservation.specification,
        instance_market_options=reservation.market,
        update_default_version=True,
        opts=opts,
    )


def node_group_launch_template(lt: aws.ec2.LaunchTemplate) -> aws.eks.NodeGroupLaunchTemplateArgs:
    # The template's latest version: a change to it rolls the group's nodes (EKS updates them, max_unavailable 1).
    return aws.eks.NodeGroupLaunchTemplateArgs(id=lt.id, version=lt.latest_version.apply(str))


@dataclass
class GpuNodePoolArgs:
    cluster_name: pulumi.Input[str]
    node_role_arn: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]
    pool: GpuPool


class GpuNodePool(pulumi.ComponentResource):
    """One EKS managed node group of one GPU instance type."""

    def __init__(
        self, name: str, args: GpuNodePoolArgs, provider: aws.Provider, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("reco-dr:regional:GpuNodePool", name, None, opts)
        p = args.pool
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        # A reservation the stack holds (an On-Demand Capacity Reservation, paid for from creation whether used or
        # not); targeted, so only this pool's nodes, launched through the template below, consume it.
        self.reservation = (
            aws.ec2.CapacityReservation(
                f"{name}-reservation",
                instance_type=p.instance_type,
                instance_platform="Linux/UNIX",
                availability_zone=p.capacity.availability_zone,
                instance_count=p.capacity.instances,
                instance_match_criteria="targeted",
                end_date_type="unlimited",
                tags={"reco-dr/gpu-pool": p.name},
                opts=child,
            )
            if p.capacity.creates
            else None
        )
        self.launch_template = node_launch_template(
            f"{name}-nodes",
            p.ami_type,
            GPU_DISK_GIB,
            child,
            reservation_target(p.capacity, self.reservation.id if self.reservation else None),
        )
        self.node_group = aws.eks.NodeGroup(
            f"{name}-nodes",
            cluster_name=args.cluster_name,
            # A prefix, not a fixed name: changing the instance type replaces the group, and Pulumi creates the
            # new group before deleting the old one, so serving capacity never drops to zero.
            node_group_name_prefix=f"gpu-{p.name}-",
            node_role_arn=args.node_role_arn,
            subnet_ids=args.subnet_ids,
            ami_type=p.ami_type,
            capacity_type=node_group_capacity_type(p),
            instance_types=[p.instance_type],
            # The disk (GPU_DISK_GIB) is in the launch template, with the metadata options.
            launch_template=node_group_launch_template(self.launch_template),
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(min_size=p.min, desired_size=p.desired, max_size=p.max),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            labels=gpu_node_labels(p),
            taints=[aws.eks.NodeGroupTaintArgs(**GPU_TAINT)],
            tags={"reco-dr/gpu-pool": p.name},
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=provider,
                # A component's depends_on does not reach its children: pass it down (node role policies).
                # Callers pass it as a list of resources, never a single resource or an Output.
                depends_on=list(cast("Sequence[pulumi.Resource]", opts.depends_on or [])) if opts else [],
                # The cluster autoscaler owns desired size between min and max; `pulumi up` must not reset it.
                ignore_changes=["scalingConfig.desiredSize"],
            ),
        )
        self.pool = p
        self.register_outputs(
            {
                "node_group_name": self.node_group.node_group_name,
                "arn": self.node_group.arn,
                "reservation_id": self.reservation.id if self.reservation else None,
            }
        )


class NvidiaDevicePlugin(pulumi.ComponentResource):
    def __init__(
        self, name: str, pool_names: list[str], provider: k8s.Provider, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("reco-dr:regional:NvidiaDevicePlugin", name, None, opts)
        m = device_plugin_daemonset(pool_names)
        self.daemonset = k8s.apps.v1.DaemonSet(
            f"{name}-ds",
            metadata=m["metadata"],
            spec=m["spec"],
            opts=pulumi.ResourceOptions(parent=self, provider=provider),
        )
        self.register_outputs({"pools": sorted(pool_names)})
