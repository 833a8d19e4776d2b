"""Time to first good inference of an added Triton pod, read from the Kubernetes API's objects
(drills/adapters/pod_startup.py): each part from the mark Kubernetes records, a missing mark as unknown, and the
listing of pods created since the fault."""

from __future__ import annotations

import pytest

from drills.adapters.pod_startup import PARTS, KubePodStartups, startup_parts


def _pod(name="triton-l40s-7c9f-abcde", created="2026-12-06T02:00:00Z", gate=True, ready=True, verified=True):
    conditions = [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-12-06T02:00:01Z"},
        {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-12-06T02:06:00Z"},
    ]
    if ready:
        conditions.append({"type": "ContainersReady", "status": "True", "lastTransitionTime": "2026-12-06T02:06:50Z"})
    if gate:
        conditions.append(
            {
                "type": "target-health.elbv2.k8s.aws/k8s-triton-stable-1a2b3c",
                "status": "True",
                "lastTransitionTime": "2026-12-06T02:07:05.500000Z",
            }
        )
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "spec": {"nodeName": "ip-10-0-1-7.eu-west-1.compute.internal"},
        "status": {
            "conditions": conditions,
            "initContainerStatuses": [
                {"name": "fetch-model", "state": {"terminated": {"finishedAt": "2026-12-06T02:05:40Z"}}},
                {
                    "name": "verify-model",
                    "state": {"terminated": {"finishedAt": "2026-12-06T02:06:00Z"}} if verified else {"running": {}},
                },
            ],
            "containerStatuses": [
                {"name": "triton", "ready": ready},
                {"name": "deep-health", "ready": True},
            ],
        },
    }


NODE: dict = {
    "metadata": {"name": "ip-10-0-1-7.eu-west-1.compute.internal", "creationTimestamp": "2026-12-06T02:00:20Z"},
    "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-06T02:02:30Z"}]},
}
PULLED = [
    {
        "reason": "Pulled",
        "involvedObject": {"kind": "Pod", "fieldPath": "spec.initContainers{fetch-model}"},
        "lastTimestamp": "2026-12-06T02:02:50Z",
    },
    {
        "reason": "Pulled",
        "involvedObject": {"kind": "Pod", "fieldPath": "spec.initContainers{verify-model}"},
        "lastTimestamp": "2026-12-06T02:05:30Z",
    },
    {"reason": "Started", "involvedObject": {"kind": "Pod"}, "lastTimestamp": "2026-12-06T02:05:31Z"},
]


def test_each_part_runs_from_the_previous_mark_to_its_own():
    s = startup_parts(_pod(), NODE, PULLED)
    assert list(s.parts) == list(PARTS)
    assert s.parts == {
        "node ready": 150.0,  # pod created 02:00:00, its node Ready 02:02:30 (it booted for this pod)
        "image pulled": 180.0,  # the last Pulled event (the Triton image, for verify-model) 02:05:30
        "model fetch+verify": 30.0,  # verify-model finished 02:06:00
        "Triton load+warm-up": 50.0,  # Triton's readiness probe passed 02:06:50 (models loaded, warm-up run)
        "first good inference": 15.5,  # the load balancer's target health gate 02:07:05.5
    }
    assert s.total == pytest.approx(425.5) and s.node == NODE["metadata"]["name"]


def test_a_node_ready_before_the_pod_and_an_image_present_cost_nothing():
    node = {"status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-06T01:00Z"}]}}
    s = startup_parts(_pod(), node, [])
    assert s.parts["node ready"] == 0.0 and s.parts["image pulled"] == 0.0
    assert s.parts["model fetch+verify"] == 360.0  # from the pod's creation, the whole wait is the model's


def test_a_pod_not_serving_yet_has_no_total_and_its_missing_parts_are_unknown():
    s = startup_parts(_pod(gate=False, ready=False, verified=False), NODE, PULLED)
    assert s.total is None
    assert s.parts["model fetch+verify"] is None and s.parts["Triton load+warm-up"] is None
    assert s.parts["first good inference"] is None
    with pytest.raises(ValueError, match="creationTimestamp"):
        startup_parts({"metadata": {"name": "x"}}, None, [])


class _Kube:
    def __init__(self, pods):
        self.pods, self.calls = pods, []

    def get(self, path, **params):
        self.calls.append((path, params))
        if path.endswith("/pods"):
            return {"items": self.pods}
        if "/nodes/" in path:
            return NODE
        return {"items": PULLED}


def test_only_pods_created_since_the_fault_are_read_with_their_node_and_events():
    old = _pod(name="old", created="2026-12-06T01:00:00Z")
    kube = _Kube([_pod(), old])
    out = KubePodStartups({"eu-west-1": kube}).startups("eu-west-1", since=startup_parts(_pod(), None, []).created - 5)
    assert [s.pod for s in out] == ["triton-l40s-7c9f-abcde"]
    assert kube.calls[0] == ("/api/v1/namespaces/triton/pods", {"labelSelector": "app.kubernetes.io/name=triton"})
    assert any(
        p.endswith("/events") and q["fieldSelector"].endswith("involvedObject.name=triton-l40s-7c9f-abcde")
        for p, q in kube.calls
    )
