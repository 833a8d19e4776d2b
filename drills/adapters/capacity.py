"""CapacityAdapter: EKS managed node groups (boto3) and ready Triton pods (Kubernetes API).

Pre-scaling goes through the EKS API, not the regional stack: the regional program declares the GPU node
groups with `ignore_changes=["scalingConfig.desiredSize"]` (the cluster autoscaler owns the desired size), so a
stack config change plus `pulumi up` would never reach the node group. The drill raises `minSize` with
`desiredSize` so the autoscaler cannot reclaim the new nodes before traffic arrives, records the previous
values in the journal, and restores them exactly.
"""

from __future__ import annotations

from typing import Any, Protocol

from drills.adapters.base import NodeGroupState

TRITON_NAMESPACE = "triton"  # infra/components/triton.py
TRITON_SELECTOR = "app.kubernetes.io/name=triton"


class PodReadiness(Protocol):
    def ready(self, region: str) -> tuple[int, int]: ...


def pool_of(name: str, tags: dict[str, str] | None) -> str | None:
    """The GPU pool a node group belongs to: its `reco-dr/gpu-pool` tag, else the `gpu-<pool>-` name prefix."""
    if tags and tags.get("reco-dr/gpu-pool"):
        return tags["reco-dr/gpu-pool"]
    if name.startswith("gpu-"):
        return name[4:].rsplit("-", 1)[0] if name.count("-") >= 2 else name[4:]
    return None


class EksCapacity:
    def __init__(self, clients: dict[str, Any], clusters: dict[str, str], pods: PodReadiness):
        """`clients`: region -> boto3 eks client; `clusters`: region -> cluster name (regional output)."""
        self.clients, self.clusters, self.pods = clients, clusters, pods

    def _groups(self, region: str) -> list[dict]:
        c, cluster = self.clients[region], self.clusters[region]
        names: list[str] = []
        kw: dict[str, Any] = {"clusterName": cluster}
        while True:
            page = c.list_nodegroups(**kw)
            names += page.get("nodegroups", [])
            if not page.get("nextToken"):
                break
            kw["nextToken"] = page["nextToken"]
        return [c.describe_nodegroup(clusterName=cluster, nodegroupName=n)["nodegroup"] for n in names]

    def node_groups(self, region: str) -> list[NodeGroupState]:
        out = []
        for g in self._groups(region):
            pool = pool_of(g["nodegroupName"], g.get("tags"))
            if pool is None:
                continue  # the CPU system group
            s = g.get("scalingConfig", {})
            out.append(
                NodeGroupState(
                    region=region,
                    pool=pool,
                    name=g["nodegroupName"],
                    min=s.get("minSize", 0),
                    desired=s.get("desiredSize", 0),
                    max=s.get("maxSize", 0),
                    status=g.get("status", "UNKNOWN"),
                )
            )
        return sorted(out, key=lambda n: n.pool)

    def set_scaling(self, region: str, pool: str, *, min: int | None = None, desired: int | None = None) -> None:
        ng = next((n for n in self.node_groups(region) if n.pool == pool), None)
        if ng is None:
            raise LookupError(f"{region}: no node group for GPU pool {pool!r} in cluster {self.clusters[region]}")
        new_min = ng.min if min is None else min
        new_desired = ng.desired if desired is None else desired
        if not new_min <= new_desired <= ng.max:
            raise ValueError(f"{region}/{pool}: min {new_min} <= desired {new_desired} <= max {ng.max} does not hold")
        self.clients[region].update_nodegroup_config(
            clusterName=self.clusters[region],
            nodegroupName=ng.name,
            scalingConfig={"minSize": new_min, "desiredSize": new_desired, "maxSize": ng.max},
        )

    def triton_ready(self, region: str) -> tuple[int, int]:
        return self.pods.ready(region)


class KubernetesPods:
    """Ready/desired replicas of the Triton deployments (one per GPU pool) through the cluster's API."""

    def __init__(self, kubes: dict[str, Any]):
        self.kubes = kubes  # region -> drills.adapters.kube.EksKube

    def ready(self, region: str) -> tuple[int, int]:
        items = self.kubes[region].get(
            f"/apis/apps/v1/namespaces/{TRITON_NAMESPACE}/deployments", labelSelector=TRITON_SELECTOR
        )["items"]
        return (
            sum(d.get("status", {}).get("readyReplicas", 0) or 0 for d in items),
            sum(d.get("spec", {}).get("replicas", 0) or 0 for d in items),
        )


class StaticPods:
    """Test implementation: ready pods as a settable figure per region (default: all `replicas` ready)."""

    def __init__(self, replicas: dict[str, int]):
        self.replicas = dict(replicas)
        self.ready_now = dict(replicas)

    def ready(self, region: str) -> tuple[int, int]:
        return self.ready_now.get(region, 0), self.replicas.get(region, 0)
