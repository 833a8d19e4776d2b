"""FaultAdapter implementations for AWS.

`triton-down` (data plane, the default): scale the region's Triton deployments to 0 through the Kubernetes API.
The load balancer loses its targets, Route 53's health check on /v2/health/ready fails, and Route 53 stops
answering with the region: the failover under test is the one a real outage triggers. An HPA does not act on a
deployment scaled to 0 (Kubernetes disables autoscaling at zero replicas), so the fault holds; `clear` puts back
each deployment's recorded replica count and the HPA resumes.

`hc-invert` (control plane, a cloud drill variant): invert the region's Route 53 health check. It proves the
records and routing, not the data-plane path; the plan warns when it is chosen.
"""

from __future__ import annotations

from typing import Any

from drills.adapters.capacity import TRITON_NAMESPACE, TRITON_SELECTOR


class KubernetesFaults:
    kinds = ("triton-down",)

    def __init__(self, kubes: dict[str, Any]):
        self.kubes = kubes

    def prepare(self, region: str, kind: str) -> dict:
        items = self.kubes[region].get(
            f"/apis/apps/v1/namespaces/{TRITON_NAMESPACE}/deployments", labelSelector=TRITON_SELECTOR
        )["items"]
        return {"replicas": {d["metadata"]["name"]: d["spec"].get("replicas", 1) for d in items}}

    def _scale(self, region: str, name: str, n: int) -> None:
        self.kubes[region].patch(
            f"/apis/apps/v1/namespaces/{TRITON_NAMESPACE}/deployments/{name}/scale", {"spec": {"replicas": n}}
        )

    def inject(self, region: str, kind: str, handle: dict) -> None:
        for name in handle["replicas"]:
            self._scale(region, name, 0)

    def clear(self, region: str, kind: str, handle: dict) -> None:
        for name, n in handle["replicas"].items():
            self._scale(region, name, n)


class HealthCheckInversion:
    kinds = ("hc-invert",)

    def __init__(self, route53: Any):
        self.route53 = route53

    def prepare(self, region: str, kind: str) -> dict:
        return {"inverted": self.route53.inverted(region)}

    def inject(self, region: str, kind: str, handle: dict) -> None:
        self.route53.set_inverted(region, not handle["inverted"])

    def clear(self, region: str, kind: str, handle: dict) -> None:
        self.route53.set_inverted(region, handle["inverted"])


class CompositeFaults:
    """Several fault adapters behind one: each kind goes to the adapter that offers it."""

    def __init__(self, *adapters: Any):
        self._by_kind = {k: a for a in adapters for k in a.kinds}
        self.kinds = tuple(self._by_kind)

    def _get(self, kind: str) -> Any:
        base = kind.partition("=")[0]  # a kind with its value (region-brownout's errors=0.3) goes by its name
        if base not in self._by_kind:
            raise LookupError(f"fault {kind!r} is not offered by this backend (it offers {', '.join(self.kinds)})")
        return self._by_kind[base]

    def prepare(self, region: str, kind: str) -> dict:
        return self._get(kind).prepare(region, kind)

    def inject(self, region: str, kind: str, handle: dict) -> None:
        self._get(kind).inject(region, kind, handle)

    def clear(self, region: str, kind: str, handle: dict) -> None:
        self._get(kind).clear(region, kind, handle)
