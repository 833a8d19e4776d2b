"""Triton Inference Server serving the ranker from the regional bucket.

One Deployment (with its PDB and HPA) per GPU pool rather than one per region: each pool is one GPU type
and compute capability, so each Deployment scales against its own pool's ceiling, a bad engine for one
capability degrades one pool instead of the region, and the HPA's replica bounds map to GPUs that exist.
All of them carry the same `app.kubernetes.io/name: triton` label, so one Service and one
TargetGroupBinding put every ready pod of the region behind the load balancer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.components.gpu_pools import CC_LABEL, GPU_TOLERATION, POOL_LABEL
from infra.config import GpuPool, Model, Triton as TritonConfig

NAMESPACE = "triton"
SERVICE_ACCOUNT = "triton"
APP = "triton"
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
LIVE_PATH = "/v2/health/live"
READY_PATH = "/v2/health/ready"
# Triton's own Prometheus metric (0..1 per GPU), served to the HPA through the custom metrics API.
GPU_UTIL_METRIC = "nv_gpu_utilization"


def model_repository_uri(bucket: str, model: Model) -> str:
    """The contract with model_build's publish step: the repository root of one immutable model version is
    `s3://<bucket>/<model name>/<model version>/` (holding `<model name>/config.pbtxt`, engines, fallback).
    Rolling out a model is a config change of `model.version`, which rolls the Deployments."""
    return f"s3://{bucket}/{model.name}/{model.version}"


def selector_labels(pool: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/instance": f"{APP}-{pool}"}


def pod_labels(pool: GpuPool, model: Model) -> dict[str, str]:
    return {**selector_labels(pool.name), POOL_LABEL: pool.name, "app.kubernetes.io/part-of": "reco-dr",
            "reco-dr/model-version": model.version}


def replica_bounds(pool: GpuPool, triton: TritonConfig) -> tuple[int, int]:
    """HPA bounds for one pool: the configured bounds, capped by the GPUs the pool has at max size (one GPU
    per pod), so the HPA never asks for pods no node can hold; at least one pod per pool."""
    gpus_at_max = pool.max * pool.gpu.gpus
    hi = max(1, min(triton.max_replicas, gpus_at_max))
    lo = max(1, min(triton.min_replicas, hi))
    return lo, hi


def triton_args(bucket: str, model: Model) -> list[str]:
    return [
        "tritonserver",
        f"--model-repository={model_repository_uri(bucket, model)}",
        "--model-control-mode=none",
        # Refuse to start half-loaded: a missing engine must fail the pod, not serve a subset.
        "--exit-on-error=true",
        "--strict-readiness=true",
        "--disable-auto-complete-config",
        f"--http-port={PORTS['http']}",
        f"--grpc-port={PORTS['grpc']}",
        f"--metrics-port={PORTS['metrics']}",
        "--allow-metrics=true",
        "--allow-gpu-metrics=true",
    ]


def deployment_manifest(pool: GpuPool, triton: TritonConfig, model: Model, bucket: str, region: str) -> dict:
    labels = pod_labels(pool, model)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{APP}-{pool.name}", "namespace": NAMESPACE, "labels": labels},
        "spec": {
            # No `replicas`: the HPA owns it (server-side apply leaves the field to it).
            "selector": {"matchLabels": selector_labels(pool.name)},
            # Never drop below current capacity during a rollout: surge one pod, take none away first.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "progressDeadlineSeconds": 1200,
            "template": {
                "metadata": {"labels": labels, "annotations": {
                    "prometheus.io/scrape": "true", "prometheus.io/port": str(PORTS["metrics"]), "prometheus.io/path": "/metrics",
                }},
                "spec": {
                    "serviceAccountName": SERVICE_ACCOUNT,
                    "terminationGracePeriodSeconds": 60,
                    "nodeSelector": {POOL_LABEL: pool.name, CC_LABEL: pool.gpu.compute_capability},
                    "tolerations": [GPU_TOLERATION],
                    "topologySpreadConstraints": [
                        # Spread across zones so one AZ loss costs a share of capacity, not all of it. ScheduleAnyway:
                        # a zone without GPU capacity (common for p5) must not leave pods pending.
                        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
                         "labelSelector": {"matchLabels": selector_labels(pool.name)}},
                        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
                         "labelSelector": {"matchLabels": selector_labels(pool.name)}},
                    ],
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "triton",
                        "image": triton.image,
                        "imagePullPolicy": "IfNotPresent",
                        "args": triton_args(bucket, model),
                        "env": [
                            # Triton's S3 client reads the region from the environment; IRSA's webhook adds the role.
                            {"name": "AWS_REGION", "value": region},
                            {"name": "AWS_DEFAULT_REGION", "value": region},
                        ],
                        "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in PORTS.items()],
                        "resources": {
                            "requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"},
                            "limits": {"memory": "12Gi", "nvidia.com/gpu": "1"},
                        },
                        # Engines load from S3 at start: allow up to 10 minutes before liveness applies.
                        "startupProbe": {"httpGet": {"path": LIVE_PATH, "port": "http"}, "periodSeconds": 10, "failureThreshold": 60},
                        "livenessProbe": {"httpGet": {"path": LIVE_PATH, "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 3,
                                          "failureThreshold": 3},
                        "readinessProbe": {"httpGet": {"path": READY_PATH, "port": "http"}, "periodSeconds": 5, "timeoutSeconds": 3,
                                           "failureThreshold": 2},
                        # Let the ALB deregister the pod before Triton stops accepting requests.
                        "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "sleep 15"]}}},
                        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
                    }],
                    "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}],
                },
            },
        },
    }


def pdb_manifest(pool: GpuPool) -> dict:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": f"{APP}-{pool.name}", "namespace": NAMESPACE, "labels": selector_labels(pool.name)},
        # Node drains (upgrades, scale-in) take one Triton pod of a pool at a time.
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(pool.name)}},
    }


def hpa_manifest(pool: GpuPool, triton: TritonConfig) -> dict:
    lo, hi = replica_bounds(pool, triton)
    target = f"{triton.target_gpu_utilization * 10}m"  # utilisation is 0..1; 70 % -> 700m
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"{APP}-{pool.name}", "namespace": NAMESPACE, "labels": selector_labels(pool.name)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{APP}-{pool.name}"},
            "minReplicas": lo,
            "maxReplicas": hi,
            "metrics": [{"type": "Pods", "pods": {"metric": {"name": GPU_UTIL_METRIC},
                                                  "target": {"type": "AverageValue", "averageValue": target}}}],
            "behavior": {
                # Scale up fast (a failover shifts a region's traffic here within a minute), down slowly.
                "scaleUp": {"stabilizationWindowSeconds": 0, "policies": [{"type": "Percent", "value": 100, "periodSeconds": 30}]},
                "scaleDown": {"stabilizationWindowSeconds": 600, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}]},
            },
        },
    }


def service_manifest() -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": APP, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/name": APP}},
        "spec": {
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/name": APP},
            "ports": [{"name": n, "port": p, "targetPort": n, "protocol": "TCP"} for n, p in PORTS.items()],
        },
    }


def namespace_manifest() -> dict:
    # The controller injects a readiness gate into pods here: a rollout waits until the new pod is healthy
    # in the target group, not only in Kubernetes, before the next old pod goes.
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "labels": {"elbv2.k8s.aws/pod-readiness-gate-inject": "enabled"}}}


def service_account_manifest(role_arn: str) -> dict:
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE, "annotations": {"eks.amazonaws.com/role-arn": role_arn}}}


def target_group_binding_manifest(target_group_arn: str) -> dict:
    return {
        "apiVersion": "elbv2.k8s.aws/v1beta1",
        "kind": "TargetGroupBinding",
        "metadata": {"name": APP, "namespace": NAMESPACE},
        # No `networking` block: Pulumi owns the security-group rule (nodes accept 8000 from the ALB only).
        "spec": {"serviceRef": {"name": APP, "port": PORTS["http"]}, "targetGroupARN": target_group_arn, "targetType": "ip"},
    }


@dataclass
class TritonArgs:
    pools: list[GpuPool]
    triton: TritonConfig
    model: Model
    region: str
    bucket_name: pulumi.Input[str]
    role_arn: pulumi.Input[str]
    target_group_arn: pulumi.Input[str]


class TritonServing(pulumi.ComponentResource):
    def __init__(self, name: str, args: TritonArgs, provider: k8s.Provider, opts: pulumi.ResourceOptions | None = None):
        super().__init__("reco-dr:regional:TritonServing", name, None, opts)
        o = pulumi.ResourceOptions(parent=self, provider=provider)
        # A component's depends_on does not reach its children: pods must wait for GPU nodes, the device
        # plugin and the metrics adapter, the TargetGroupBinding for the controller that serves its CRD.
        deps = list(opts.depends_on or []) if opts else []
        ns_m = namespace_manifest()
        ns = k8s.core.v1.Namespace(f"{name}-ns", metadata=ns_m["metadata"], opts=o)
        on_ns = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[ns])
        sa = k8s.core.v1.ServiceAccount(f"{name}-sa",
                                        metadata=pulumi.Output.from_input(args.role_arn).apply(lambda a: service_account_manifest(a)["metadata"]),
                                        opts=on_ns)
        svc_m = service_manifest()
        self.service = k8s.core.v1.Service(f"{name}-svc", metadata=svc_m["metadata"], spec=svc_m["spec"], opts=on_ns)

        self.deployments = {}
        for pool in args.pools:
            dep = pulumi.Output.from_input(args.bucket_name).apply(
                lambda b, p=pool: deployment_manifest(p, args.triton, args.model, b, args.region))
            self.deployments[pool.name] = k8s.apps.v1.Deployment(
                f"{name}-{pool.name}", metadata=dep.apply(lambda m: m["metadata"]), spec=dep.apply(lambda m: m["spec"]),
                opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[ns, sa, *deps]))
            pdb = pdb_manifest(pool)
            k8s.policy.v1.PodDisruptionBudget(f"{name}-{pool.name}-pdb", metadata=pdb["metadata"], spec=pdb["spec"], opts=on_ns)
            hpa = hpa_manifest(pool, args.triton)
            k8s.autoscaling.v2.HorizontalPodAutoscaler(f"{name}-{pool.name}-hpa", metadata=hpa["metadata"], spec=hpa["spec"],
                                                        opts=pulumi.ResourceOptions(parent=self, provider=provider,
                                                                                    depends_on=[self.deployments[pool.name]]))

        tgb = pulumi.Output.from_input(args.target_group_arn).apply(target_group_binding_manifest)
        k8s.apiextensions.CustomResource(
            f"{name}-tgb", api_version="elbv2.k8s.aws/v1beta1", kind="TargetGroupBinding",
            metadata=tgb.apply(lambda m: m["metadata"]), spec=tgb.apply(lambda m: m["spec"]),
            opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[self.service, *deps]))
        self.register_outputs({"namespace": NAMESPACE, "deployments": sorted(self.deployments)})
