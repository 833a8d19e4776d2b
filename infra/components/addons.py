"""In-cluster controllers the serving path depends on, each a pinned Helm chart with its own IRSA role:

- AWS Load Balancer Controller: reconciles the TargetGroupBinding that registers Triton pod IPs in the
  Pulumi-owned target group (it creates no load balancers here; its policy does not allow it to).
- Cluster autoscaler: grows GPU node groups between the configured min and max when the HPA asks for pods
  that do not fit (the node groups ignore `desired_size` changes so Pulumi does not fight it).
- Prometheus (server only) and prometheus-adapter: serve Triton's `nv_gpu_utilization` through the custom
  metrics API, the metric the Triton HPAs scale on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s
import yaml

from infra.components.triton import GPU_UTIL_METRIC

# Pinned chart versions: an unpinned chart upgrades controllers on an unrelated `pulumi up`.
CHARTS = {
    "aws-load-balancer-controller": ("https://aws.github.io/eks-charts", "1.14.0"),
    "cluster-autoscaler": ("https://kubernetes.github.io/autoscaler", "9.46.3"),
    "prometheus": ("https://prometheus-community.github.io/helm-charts", "27.37.0"),
    "prometheus-adapter": ("https://prometheus-community.github.io/helm-charts", "4.14.1"),
}
LBC_SA = "aws-load-balancer-controller"
CA_SA = "cluster-autoscaler"
MONITORING_NS = "monitoring"


def lb_controller_values(cluster_name: str, region: str, vpc_id: str, role_arn: str) -> dict:
    return {
        "clusterName": cluster_name,
        "region": region,
        "vpcId": vpc_id,  # given, so the controller needs no EC2 metadata access to discover it
        "replicaCount": 2,
        "serviceAccount": {"create": True, "name": LBC_SA, "annotations": {"eks.amazonaws.com/role-arn": role_arn}},
        # Only TargetGroupBindings are used; no Service of type LoadBalancer should be turned into an NLB.
        "enableServiceMutatorWebhook": False,
        "nodeSelector": {"reco-dr/pool": "system"},
    }


def cluster_autoscaler_values(cluster_name: str, region: str, role_arn: str, kubernetes_version: str) -> dict:
    return {
        "cloudProvider": "aws",
        "awsRegion": region,
        "autoDiscovery": {"clusterName": cluster_name},
        # The autoscaler's minor version must match the cluster's.
        "image": {"tag": f"v{kubernetes_version}.0"},
        "rbac": {
            "serviceAccount": {"create": True, "name": CA_SA, "annotations": {"eks.amazonaws.com/role-arn": role_arn}}
        },
        "extraArgs": {
            "balance-similar-node-groups": "true",  # keep a pool's nodes spread across its three AZs
            "expander": "least-waste",
            "skip-nodes-with-system-pods": "false",
        },
        "nodeSelector": {"reco-dr/pool": "system"},
    }


ALERT_RULES = Path(__file__).resolve().parent.parent / "monitoring" / "alerts.yml"


def prometheus_values() -> dict:
    """Server only, in memory: it holds a few hours of serving metrics for autoscaling, not an archive
    (the cluster has no EBS CSI driver, so a persistent volume would never bind). It evaluates the fleet's
    alert rules (infra/monitoring/alerts.yml, the file promtool checks in the tests); routing them to a pager
    is the operator's Alertmanager, not declared here."""
    return {
        "serverFiles": {"alerting_rules.yml": yaml.safe_load(ALERT_RULES.read_text())},
        "alertmanager": {"enabled": False},
        "prometheus-pushgateway": {"enabled": False},
        "kube-state-metrics": {"enabled": False},
        "prometheus-node-exporter": {"enabled": False},
        "server": {
            "persistentVolume": {"enabled": False},
            "retention": "6h",
            "global": {"scrape_interval": "15s"},
            "nodeSelector": {"reco-dr/pool": "system"},
        },
    }


def prometheus_adapter_values() -> dict:
    """Expose Triton's per-GPU utilisation as a per-pod custom metric of the same name."""
    return {
        "prometheus": {"url": f"http://prometheus-server.{MONITORING_NS}.svc", "port": 80},
        "nodeSelector": {"reco-dr/pool": "system"},
        "rules": {
            "default": False,
            "custom": [
                {
                    "seriesQuery": f'{GPU_UTIL_METRIC}{{namespace!="",pod!=""}}',
                    "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
                    "name": {"matches": f"^{GPU_UTIL_METRIC}$", "as": GPU_UTIL_METRIC},
                    "metricsQuery": "avg(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
                }
            ],
        },
    }


def _release(
    name: str,
    chart: str,
    namespace: str,
    values,
    provider: k8s.Provider,
    parent: pulumi.Resource,
    depends_on: list | None = None,
    create_namespace: bool = False,
) -> k8s.helm.v3.Release:
    repo, version = CHARTS[chart]
    return k8s.helm.v3.Release(
        name,
        name=chart,
        chart=chart,
        version=version,
        repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=repo),
        namespace=namespace,
        create_namespace=create_namespace,
        values=values,
        atomic=True,
        cleanup_on_fail=True,
        opts=pulumi.ResourceOptions(parent=parent, provider=provider, depends_on=depends_on or []),
    )


@dataclass
class AddonArgs:
    cluster_name: pulumi.Input[str]
    region: str
    vpc_id: pulumi.Input[str]
    kubernetes_version: str
    lb_controller_role_arn: pulumi.Input[str]
    autoscaler_role_arn: pulumi.Input[str]
    depends_on: list[pulumi.Resource]


class LoadBalancerController(pulumi.ComponentResource):
    def __init__(self, name: str, args: AddonArgs, provider: k8s.Provider, opts: pulumi.ResourceOptions | None = None):
        super().__init__("reco-dr:regional:LoadBalancerController", name, None, opts)
        values = pulumi.Output.all(args.cluster_name, args.vpc_id, args.lb_controller_role_arn).apply(
            lambda a: lb_controller_values(a[0], args.region, a[1], a[2])
        )
        self.release = _release(
            f"{name}-chart", "aws-load-balancer-controller", "kube-system", values, provider, self, args.depends_on
        )
        self.register_outputs({"status": self.release.status})


class ClusterAutoscaler(pulumi.ComponentResource):
    def __init__(self, name: str, args: AddonArgs, provider: k8s.Provider, opts: pulumi.ResourceOptions | None = None):
        super().__init__("reco-dr:regional:ClusterAutoscaler", name, None, opts)
        values = pulumi.Output.all(args.cluster_name, args.autoscaler_role_arn).apply(
            lambda a: cluster_autoscaler_values(a[0], args.region, a[1], args.kubernetes_version)
        )
        self.release = _release(
            f"{name}-chart", "cluster-autoscaler", "kube-system", values, provider, self, args.depends_on
        )
        self.register_outputs({"status": self.release.status})


class GpuMetrics(pulumi.ComponentResource):
    """The custom-metrics path of the Triton HPAs: Prometheus scrapes Triton's :8002, the adapter serves it."""

    def __init__(
        self,
        name: str,
        provider: k8s.Provider,
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("reco-dr:regional:GpuMetrics", name, None, opts)
        prom = _release(
            f"{name}-prometheus",
            "prometheus",
            MONITORING_NS,
            prometheus_values(),
            provider,
            self,
            depends_on,
            create_namespace=True,
        )
        self.adapter = _release(
            f"{name}-adapter", "prometheus-adapter", MONITORING_NS, prometheus_adapter_values(), provider, self, [prom]
        )
        self.register_outputs({"adapter_status": self.adapter.status})
