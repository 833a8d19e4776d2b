"""GPU managed node groups (one per configured pool) and the NVIDIA device plugin where the AMI lacks it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.config import GpuPool

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
# Pinned: the plugin's API to the kubelet changes between releases; v0.17 supports Kubernetes 1.33.
DEVICE_PLUGIN_IMAGE = "nvcr.io/nvidia/k8s-device-plugin:v0.17.1"
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
        self.node_group = aws.eks.NodeGroup(
            f"{name}-nodes",
            cluster_name=args.cluster_name,
            # A prefix, not a fixed name: changing the instance type replaces the group, and Pulumi creates the
            # new group before deleting the old one, so serving capacity never drops to zero.
            node_group_name_prefix=f"gpu-{p.name}-",
            node_role_arn=args.node_role_arn,
            subnet_ids=args.subnet_ids,
            ami_type=p.ami_type,
            capacity_type=p.capacity_type,
            instance_types=[p.instance_type],
            disk_size=GPU_DISK_GIB,
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
        self.register_outputs({"node_group_name": self.node_group.node_group_name, "arn": self.node_group.arn})


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
