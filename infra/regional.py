"""The regional stack: everything one AWS region needs to serve the ranker on GPUs.

Order of construction follows the dependencies: AWS provider -> network -> artifact bucket -> EKS (+ system
nodes, OIDC) -> GPU node groups -> Kubernetes provider -> controllers -> load balancer -> Triton (and the
NetworkPolicies of its namespace) -> access for model_build's engine Jobs. Stack outputs are exactly
`infra.outputs.RegionalOutputs`, the contract the global stack and the drills read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.arms import NO_ARMS, RegionArms
from infra.components.addons import CA_SA, LBC_SA, AddonArgs, ClusterAutoscaler, GpuMetrics, LoadBalancerController
from infra.components.artifacts import ArtifactBucket, ArtifactBucketArgs, bucket_name
from infra.components.cluster import Cluster, ClusterArgs, cluster_name
from infra.components.engine_build import EngineBuildAccess, EngineBuildAccessArgs
from infra.components.gpu_pools import GpuNodePool, GpuNodePoolArgs, NvidiaDevicePlugin, pool_subnets
from infra.components.identity import (
    ServiceAccountRole,
    ServiceAccountRoleArgs,
    model_reader_policy,
    node_autoscaler_policy,
    target_registrar_policy,
)
from infra.components.kms import LogsKey, LogsKeyArgs
from infra.components.load_balancer import TritonLoadBalancer, TritonLoadBalancerArgs
from infra.components.network import AZ_COUNT, Network, NetworkArgs
from infra.components.network_policy import TritonNetworkPolicies, TritonNetworkPoliciesArgs
from infra.components.triton import TritonArgs, TritonServing
from infra.config import RegionConfig
from infra.names import BREAK_GLASS_ROLE, NAMESPACE, PREVIEW_ROLE, SERVICE_ACCOUNT, deploy_role_name, role_arn
from infra.outputs import OUTPUT_KEYS
from infra.providers import aws_provider, k8s_provider


def gpu_pool_outputs(cfg: RegionConfig, created: Mapping[str, Any] | None = None) -> list[dict]:
    """The `gpu_pools` output: what each pool is, how far it can scale and what capacity it has reserved (read by
    capacity checks and `drills readiness`). `created`: pool name -> id of the reservation the stack declared."""
    created = created or {}
    return [
        {
            "name": p.name,
            "instance_type": p.instance_type,
            "gpu_model": p.gpu.gpu_model,
            "gpus_per_instance": p.gpu.gpus,
            "compute_capability": p.gpu.compute_capability,
            "min": p.min,
            "desired": p.desired,
            "max": p.max,
            "capacity": p.capacity.kind,
            "reserved_instances": p.capacity.instances,
            # The reservation's id (or its group's ARN) for drills to read its state; None without one.
            "reservation": created.get(p.name) or p.capacity.reservation_id or p.capacity.reservation_group_arn,
            "reservation_end": p.capacity.end_date,
        }
        for p in cfg.gpu_pools
    ]


def declare_regional(stack: str, cfg: RegionConfig, arms: RegionArms = NO_ARMS) -> None:
    """`arms`: what the region serves for its environment's experiments (infra/arms.py regional_arms, which the
    program computes from the global stack's `experiments` and its clock)."""
    provider = aws_provider(stack, cfg)
    invoke = pulumi.InvokeOptions(provider=provider)
    account_id = aws.get_caller_identity(opts=invoke).account_id
    # Sorted so the zone choice is stable across runs; the first three available zones of the region.
    azs = sorted(aws.get_availability_zones(state="available", opts=invoke).names)[:AZ_COUNT]
    name = cluster_name(stack)

    bucket = bucket_name(stack, account_id)
    logs_key = LogsKey("logs", LogsKeyArgs(name=name, account_id=account_id, region=cfg.region), provider)
    net = Network(
        "net",
        NetworkArgs(
            name=name,
            vpc_cidr=cfg.vpc_cidr,
            azs=azs,
            region=cfg.region,
            artifact_buckets=[bucket],
            logs_key_arn=logs_key.arn,
        ),
        provider,
    )
    artifacts = ArtifactBucket(
        "artifacts",
        ArtifactBucketArgs(
            bucket=bucket,
            noncurrent_days=cfg.artifact_noncurrent_days,
            model=cfg.model.name,
            break_glass_arn=role_arn(account_id, BREAK_GLASS_ROLE),
            pointer_writer_arn=role_arn(account_id, deploy_role_name(cfg.env)),
            account_id=account_id,
        ),
        provider,
    )
    cluster = Cluster(
        "cluster",
        ClusterArgs(
            name=name,
            kubernetes_version=cfg.kubernetes_version,
            service_cidr=cfg.service_cidr,
            private_subnet_ids=net.private_subnet_ids,
            system_pool=cfg.system_pool,
            endpoint_public_access_cidrs=cfg.cluster.endpoint_public_access_cidrs,
            logs_key_arn=logs_key.arn,
            account_id=account_id,
            # `drills readiness` on a schedule (readiness.yml, the CI preview role) reads the Triton deployments.
            viewers={role_arn(account_id, PREVIEW_ROLE): [NAMESPACE]},
        ),
        provider,
    )
    pools = [
        GpuNodePool(
            f"gpu-{p.name}",
            GpuNodePoolArgs(
                cluster_name=cluster.name,
                node_role_arn=cluster.node_role.arn,
                subnet_ids=pool_subnets(p, net.azs, net.private_subnet_ids),
                pool=p,
            ),
            provider,
            pulumi.ResourceOptions(depends_on=cluster.node_ready),
        )
        for p in cfg.gpu_pools
    ]

    kube = k8s_provider(
        f"k8s-{cfg.region}",
        cluster.name,
        cluster.endpoint,
        cluster.ca_data,
        cfg.region,
        depends_on=[cluster.system_nodes],
    )

    plugin_pools = [p.name for p in cfg.gpu_pools if p.device_plugin_needed]
    plugin = [NvidiaDevicePlugin("nvidia-device-plugin", plugin_pools, kube)] if plugin_pools else []

    def irsa(n: str, namespace: str, sa: str, policy) -> ServiceAccountRole:
        return ServiceAccountRole(
            n,
            ServiceAccountRoleArgs(
                oidc_provider_arn=cluster.oidc_provider.arn,
                oidc_issuer=cluster.oidc_issuer,
                namespace=namespace,
                service_account=sa,
                policy=policy,
            ),
            provider,
        )

    lb = TritonLoadBalancer(
        "ingress",
        TritonLoadBalancerArgs(
            stack=stack,
            vpc_id=net.vpc_id,
            public_subnet_ids=net.public_subnet_ids,
            node_security_group_id=cluster.security_group_id,
            config=cfg.load_balancer,
            deletion_protection=cfg.env == "prod",
            model_name=cfg.model.name,
            canary=cfg.model.canary_version is not None,
            canary_weight=cfg.model.canary_weight,
            arms=arms,
        ),
        provider,
    )

    # The controller registers pods in the stable and the deep-health target groups, in the canary target group too
    # while a canary runs, and in each arm version's while an experiment serves it (IAM takes a list of resources).
    registered = [lb.target_group, lb.deep_health_target_group]
    if lb.canary_target_group is not None:
        registered.append(lb.canary_target_group)
    registered += lb.arm_target_groups.values()
    registrar = pulumi.Output.all(*(tg.arn for tg in registered)).apply(lambda a: target_registrar_policy(list(a)))
    lbc_role = irsa("lb-controller", "kube-system", LBC_SA, registrar)
    ca_role = irsa("cluster-autoscaler", "kube-system", CA_SA, cluster.name.apply(node_autoscaler_policy))
    addon_args = AddonArgs(
        cluster_name=cluster.name,
        region=cfg.region,
        vpc_id=net.vpc_id,
        kubernetes_version=cfg.kubernetes_version,
        lb_controller_role_arn=lbc_role.arn,
        autoscaler_role_arn=ca_role.arn,
        depends_on=[cluster.system_nodes],
    )
    lbc = LoadBalancerController("lb-controller", addon_args, kube)
    ClusterAutoscaler("cluster-autoscaler", addon_args, kube)
    metrics = GpuMetrics("gpu-metrics", kube, depends_on=[cluster.system_nodes])

    reader = irsa(
        "triton",
        NAMESPACE,
        SERVICE_ACCOUNT,
        pulumi.Output.all(artifacts.arn, artifacts.key_arn).apply(
            lambda a: model_reader_policy(a[0], a[1], cfg.region)
        ),
    )
    serving = TritonServing(
        "triton",
        TritonArgs(
            pools=list(cfg.gpu_pools),
            triton=cfg.triton,
            model=cfg.model,
            region=cfg.region,
            bucket_name=artifacts.name,
            role_arn=reader.arn,
            target_group_arn=lb.target_group.arn,
            deep_health_target_group_arn=lb.deep_health_target_group.arn,
            canary_target_group_arn=lb.canary_target_group.arn if lb.canary_target_group is not None else None,
            arm_target_group_arns={v: tg.arn for v, tg in lb.arm_target_groups.items()},
        ),
        kube,
        pulumi.ResourceOptions(depends_on=[*pools, *plugin, lbc, metrics]),
    )
    TritonNetworkPolicies(
        "triton-network",
        TritonNetworkPoliciesArgs(lb_source_cidrs=net.public_subnet_cidrs, arm_tracks=serving.arm_tracks),
        kube,
        # The namespace, not the whole of TritonServing: an arm's pods become ready only once the policies admit the
        # load balancer's health checks to them, so the policies must not wait for those pods' Deployments.
        pulumi.ResourceOptions(depends_on=[serving.namespace]),
    )

    # model_build's TensorRT engine Jobs run on these GPU pools and publish into this bucket.
    EngineBuildAccess(
        "engine-build",
        EngineBuildAccessArgs(
            model=cfg.model,
            bucket_name=artifacts.name,
            bucket_arn=artifacts.arn,
            key_arn=artifacts.key_arn,
            oidc_provider_arn=cluster.oidc_provider.arn,
            oidc_issuer=cluster.oidc_issuer,
        ),
        provider,
        kube,
    )

    outputs = {
        "region": cfg.region,
        "cluster_name": cluster.name,
        "lb_dns_name": lb.dns_name,
        "lb_zone_id": lb.zone_id,
        "lb_arn_suffix": lb.arn_suffix,
        "target_group_arn_suffix": lb.target_group.arn_suffix,
        "bucket_name": artifacts.name,
        "bucket_arn": artifacts.arn,
        "kms_key_arn": artifacts.key_arn,
        "gpu_pools": gpu_pool_outputs(cfg, {p.pool.name: p.reservation.id for p in pools if p.reservation}),
        "triton_image": cfg.triton.image,
        "model_version": cfg.model.version,
    }
    if tuple(outputs) != OUTPUT_KEYS:  # the contract is infra.outputs; fail the run rather than export a drifted one
        raise RuntimeError(f"regional outputs {tuple(outputs)} differ from infra.outputs.RegionalOutputs {OUTPUT_KEYS}")
    for k, v in outputs.items():
        pulumi.export(k, v)
