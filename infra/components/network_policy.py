"""Who may open a connection to a Triton pod: NetworkPolicies in the Triton namespace (enforced by the VPC CNI's
network policy agent, switched on in infra/components/cluster.py ADDON_CONFIG).

- Default deny: no ingress to any pod of the namespace unless a policy below admits it.
- Triton's HTTP port and the deep-health sidecar's (infra/health.py) from the load balancer only. The ALB registers
  pods as IP targets, so its requests and health checks come from its own interfaces, which live in the VPC's public
  subnets; a pod selector cannot name them, and
  the whole VPC CIDR would admit every pod of the cluster too (the VPC CNI gives pods addresses in the private
  subnets), so the policy admits the public subnets' blocks, nothing else.
- Triton's HTTP port from the stable pods themselves: their deep-health sidecar checks the region through the stable
  Service (infra/health.py).
- Triton's metrics port from the Prometheus server only (infra/components/addons.py: the `prometheus` chart's server
  pods in the monitoring namespace), which feeds the HPAs through prometheus-adapter.
- Triton's gRPC port from nowhere: nothing in the fleet speaks gRPC to Triton, and no stack key declares a client.

The kubelet's probes are not network clients here: the agent always admits the node's own address. The Kubernetes
API server's pod proxy (`/api/v1/namespaces/triton/pods/<pod>:8002/proxy/...`) is: it connects from the control
plane's interfaces in the private subnets, which these policies do not admit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import pulumi
import pulumi_kubernetes as k8s

from infra.components.addons import MONITORING_NS
from infra.health import DEEP_HEALTH_PORT
from infra.names import CANARY, NAMESPACE, PORTS, STABLE, TRACK_LABEL


def triton_pods(arm_tracks: Sequence[str] = ()) -> dict:
    """Every Triton pod (infra/components/triton.py pod_labels): the stable and canary tracks, and the tracks of the
    experiments' arm versions the region serves (infra.arms.arm_track), named: each carries TRACK_LABEL."""
    return {"matchExpressions": [{"key": TRACK_LABEL, "operator": "In", "values": [STABLE, CANARY, *arm_tracks]}]}


# Without experiments (the selector the policies have always had).
TRITON_PODS = triton_pods()
# The prometheus chart's server pods (its `prometheus.server.matchLabels`; the release is named after the chart).
PROMETHEUS_SERVER = {"app.kubernetes.io/name": "prometheus", "app.kubernetes.io/component": "server"}
# Kubernetes labels every namespace with its own name (since 1.21).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
POLICY_NAMES = (
    "default-deny-ingress",
    "triton-http-from-load-balancer",
    "triton-metrics-from-prometheus",
    "triton-http-from-deep-health",
)
# The stable pods, whose deep-health sidecar calls the stable Service (a pod selector, unlike the ALB's interfaces).
STABLE_PODS = {"matchLabels": {TRACK_LABEL: STABLE}}


def _policy(name: str, pod_selector: dict, ingress: list[dict]) -> dict:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/part-of": "reco-dr"}},
        "spec": {"podSelector": pod_selector, "policyTypes": ["Ingress"], "ingress": ingress},
    }


def _port(name: str) -> dict:
    return {"protocol": "TCP", "port": PORTS[name]}


def default_deny_manifest() -> dict:
    """Selects every pod of the namespace and admits nothing: only the policies below open anything."""
    return _policy(POLICY_NAMES[0], {}, [])


def http_from_load_balancer_manifest(lb_source_cidrs: Sequence[str], arm_tracks: Sequence[str] = ()) -> dict:
    # The deep-health port is admitted where the ALB's requests come from, like Triton's: the deep-health target group
    # forwards Route 53's deep checks to it (only stable pods listen there; a canary pod has nothing on it).
    return _policy(
        POLICY_NAMES[1],
        triton_pods(arm_tracks),
        [
            {
                "from": [{"ipBlock": {"cidr": c}} for c in lb_source_cidrs],
                "ports": [_port("http"), {"protocol": "TCP", "port": DEEP_HEALTH_PORT}],
            }
        ],
    )


def metrics_from_prometheus_manifest(arm_tracks: Sequence[str] = ()) -> dict:
    # One peer with both selectors: pods matching PROMETHEUS_SERVER *in* the monitoring namespace (two peers would
    # admit either one).
    peer = {
        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: MONITORING_NS}},
        "podSelector": {"matchLabels": PROMETHEUS_SERVER},
    }
    return _policy(POLICY_NAMES[2], triton_pods(arm_tracks), [{"from": [peer], "ports": [_port("metrics")]}])


def http_from_deep_health_manifest() -> dict:
    # The sidecar's one inference a second goes through the stable Service to any stable pod (infra/health.py): the
    # pods' own network is part of what it checks. Only Triton's HTTP port, only from stable pods of this namespace.
    return _policy(POLICY_NAMES[3], STABLE_PODS, [{"from": [{"podSelector": STABLE_PODS}], "ports": [_port("http")]}])


def manifests(lb_source_cidrs: Sequence[str], arm_tracks: Sequence[str] = ()) -> list[dict]:
    if not lb_source_cidrs:
        raise ValueError("the load balancer's source blocks are needed, or Triton's HTTP port admits nobody")
    return [
        default_deny_manifest(),
        http_from_load_balancer_manifest(lb_source_cidrs, arm_tracks),
        metrics_from_prometheus_manifest(arm_tracks),
        http_from_deep_health_manifest(),
    ]


@dataclass
class TritonNetworkPoliciesArgs:
    # The blocks the load balancer's interfaces have addresses in (infra.components.network: the public subnets).
    lb_source_cidrs: Sequence[str]
    # The experiments' arm tracks the region serves (infra.arms.arm_track), admitted as the stable and canary pods are.
    arm_tracks: Sequence[str] = ()


class TritonNetworkPolicies(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        args: TritonNetworkPoliciesArgs,
        provider: k8s.Provider,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("reco-dr:regional:TritonNetworkPolicies", name, None, opts)
        # A component's depends_on does not reach its children: the namespace (declared by TritonServing) must
        # exist before a policy in it. Callers pass depends_on as a list of resources: the namespace alone, as the
        # policies must admit an arm's pods before their Deployment can become ready (infra/regional.py).
        deps = list(cast("Sequence[pulumi.Resource]", opts.depends_on or [])) if opts else []
        o = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=deps)
        self.policies = [
            k8s.networking.v1.NetworkPolicy(
                f"{name}-{m['metadata']['name']}", metadata=m["metadata"], spec=m["spec"], opts=o
            )
            for m in manifests(args.lb_source_cidrs, args.arm_tracks)
        ]
        self.register_outputs({"namespace": NAMESPACE, "policies": list(POLICY_NAMES)})
