"""Time to first good inference of the Triton pods a failover added, read from Kubernetes (the AWS backend).

A pod's start-up, split where Kubernetes records a time (`startup_parts`, pure, over the API's JSON):

  node ready            pod created -> its node's Ready condition (0 when the node was ready before the pod: no
                        node had to boot for it)
  image pulled          -> the kubelet's last `Pulled` event of the pod (the Triton image, which verify-model runs
                        too; "already present on machine" is a Pulled event as well, so then about 0)
  model fetch+verify    -> the verify-model init container finished (fetch-model copied the version from the
                        region's bucket, verify-model checked every file against the signed manifest)
  Triton load+warm-up   -> the Triton container ready (its readiness probe: /v2/health/ready answers only once the
                        models are loaded and config.pbtxt's model_warmup ran)
  first good inference  -> the pod's target healthy in the load balancer (the readiness gate the AWS Load Balancer
                        Controller injects: the target group's health check passed, so users reach it); the deep-health
                        sidecar's golden inference through the Service is what the region's deep check runs

Each part is the time since the previous mark, in seconds; None where the mark is missing (not reached yet, or an
event Kubernetes already expired: events live an hour by default). `KubePodStartups` lists the Triton pods created
after a time and reads their nodes and events. Not executed against a cluster here (no AWS account); the parsing is
tested on recorded shapes of the API's objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from infra.names import APP, NAMESPACE, TRITON_CONTAINER, VERIFY_CONTAINER

PARTS = ("node ready", "image pulled", "model fetch+verify", "Triton load+warm-up", "first good inference")
TARGET_HEALTH_GATE = "target-health.elbv2.k8s.aws/"  # the injected readiness gate's condition type prefix


def _t(value: str | None) -> float | None:
    """An RFC 3339 time of the API (`2026-12-06T02:11:51Z`, `...51.123456Z`) as epoch seconds."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _condition(obj: Mapping[str, Any], kind: str, prefix: bool = False) -> float | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        t = str(c.get("type", ""))
        if (t.startswith(kind) if prefix else t == kind) and c.get("status") == "True":
            return _t(c.get("lastTransitionTime"))
    return None


def _event_time(e: Mapping[str, Any]) -> float | None:
    return _t(e.get("eventTime") or e.get("lastTimestamp") or e.get("firstTimestamp"))


@dataclass(frozen=True)
class PodStartup:
    pod: str
    node: str | None
    created: float
    parts: dict[str, float | None] = field(default_factory=dict)
    total: float | None = None  # created -> first good inference

    def as_dict(self) -> dict[str, Any]:
        return {"pod": self.pod, "node": self.node, "created": self.created, "parts": self.parts, "total": self.total}


def startup_parts(
    pod: Mapping[str, Any], node: Mapping[str, Any] | None, events: Iterable[Mapping[str, Any]]
) -> PodStartup:
    """The pod's start-up parts (see the module) from the pod, its node and the pod's events."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    created = _t(meta.get("creationTimestamp"))
    if created is None:
        raise ValueError(f"pod {meta.get('name')!r} has no creationTimestamp")
    node_ready = _condition(node, "Ready") if node else None
    pulled = [_event_time(e) for e in events if e.get("reason") == "Pulled"]
    verified = next(
        (
            _t(((s.get("state") or {}).get("terminated") or {}).get("finishedAt"))
            for s in status.get("initContainerStatuses") or []
            if s.get("name") == VERIFY_CONTAINER
        ),
        None,
    )
    triton_ready = next(
        (
            # `ready` has no time of its own; ContainersReady is the Triton container's (the sidecar has no probe)
            _condition(pod, "ContainersReady")
            for s in status.get("containerStatuses") or []
            if s.get("name") == TRITON_CONTAINER and s.get("ready")
        ),
        None,
    )
    serving = _condition(pod, TARGET_HEALTH_GATE, prefix=True)
    marks = [
        max(created, node_ready) if node_ready is not None else None,
        max((p for p in pulled if p is not None), default=None),
        verified,
        triton_ready,
        serving,
    ]
    parts: dict[str, float | None] = {}
    previous: float | None = created
    for name, mark in zip(PARTS, marks, strict=True):
        if name == "image pulled" and mark is None and previous is not None and verified is not None:
            mark = previous  # no Pulled event: the image was on the node already (or the event expired)
        parts[name] = round(max(0.0, mark - previous), 3) if mark is not None and previous is not None else None
        previous = mark if mark is not None else None
    return PodStartup(
        str(meta.get("name")),
        (pod.get("spec") or {}).get("nodeName"),
        created,
        parts,
        round(serving - created, 3) if serving is not None else None,
    )


class KubePodStartups:
    """The Triton pods a region's cluster created after a time, with their start-up parts (one EksKube per region)."""

    def __init__(self, kubes: Mapping[str, Any]):
        self.kubes = kubes

    def startups(self, region: str, since: float) -> list[PodStartup]:
        kube = self.kubes[region]
        stable = f"app.kubernetes.io/name={APP}"  # the stable track's pods (canaries are named {APP}-canary)
        pods = kube.get(f"/api/v1/namespaces/{NAMESPACE}/pods", labelSelector=stable)["items"]
        out = []
        for pod in pods:
            created = _t((pod.get("metadata") or {}).get("creationTimestamp"))
            if created is None or created < since:
                continue
            name = pod["metadata"]["name"]
            node_name = (pod.get("spec") or {}).get("nodeName")
            node = kube.get(f"/api/v1/nodes/{node_name}") if node_name else None
            events = kube.get(
                f"/api/v1/namespaces/{NAMESPACE}/events",
                fieldSelector=f"involvedObject.kind=Pod,involvedObject.name={name}",
            )["items"]
            out.append(startup_parts(pod, node, events))
        return sorted(out, key=lambda s: s.created)
