"""The release adapters one by one: V2 scoring pinned by header, metrics scrapes, ALB weights + Deployments
(moto's elbv2 and a fake Kubernetes API), the node-loss fault's choice of instance."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from drills.release import metrics as M
from drills.release.adapters import (
    AlbKubeServing,
    Ec2NodeLoss,
    HttpTritonMetrics,
    KubernetesTritonMetrics,
    TritonScoreProbe,
)


class Server:
    """A Triton stand-in behind a load balancer: the `X-Reco-Track` header picks the version that answers."""

    def __init__(self):
        self.seen: list[dict] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def _send(self, code: int, body: Any, ctype: str = "application/json") -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                track = self.path.rsplit("/", 2)[-2] if self.path.startswith("/t/") else "stable"
                self._send(200, M.render({"success": 7 if track == "canary" else 70}, "ranker_trt"), "text/plain")

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                track = self.headers.get("X-Reco-Track", "none")
                outer.seen.append(
                    {
                        "path": self.path,
                        "track": track,
                        "shapes": {i["name"]: i["shape"] for i in body["inputs"]},
                        "types": {i["name"]: i["datatype"] for i in body["inputs"]},
                        "outputs": body.get("outputs"),
                    }
                )
                if track == "broken":
                    return self._send(500, {"error": "boom"})
                dense = np.array(
                    next(i["data"] for i in body["inputs"] if i["name"] == "dense"), dtype=np.float64
                ).reshape(-1, 8)
                score = dense.sum(axis=1) * (2.0 if track == "canary" else 1.0)
                self._send(
                    200,
                    {
                        "outputs": [
                            {"name": "score", "datatype": "FP32", "shape": [len(score), 1], "data": score.tolist()}
                        ]
                    },
                )

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


def test_score_probe_pins_the_version_and_keeps_row_order(server):
    from model_build.data import golden_batch

    rows = golden_batch(20261100, 300)
    p = TritonScoreProbe({"us-west-2": server.url}, "ranker_trt")
    s, c = p.scores("us-west-2", "stable", rows, batch=128), p.scores("us-west-2", "canary", rows, batch=128)
    assert s.ok and c.ok and len(s.scores) == 300 and len(s.latency_ms) == 3
    assert np.allclose(np.array(c.scores), 2 * np.array(s.scores), rtol=1e-6)
    assert np.allclose(s.scores, rows["dense"].astype(np.float64).sum(axis=1), rtol=1e-5)
    first = server.seen[0]
    assert first["path"] == "/v2/models/ranker_trt/infer" and first["track"] == "stable"
    assert first["shapes"] == {"sparse_ids": [128, 8], "dense": [128, 8]} and first["types"] == {
        "sparse_ids": "INT32",
        "dense": "FP32",
    }
    assert first["outputs"] == [{"name": "score"}] and server.seen[-1]["shapes"]["dense"] == [44, 8]
    bad = p.scores("us-west-2", "broken", rows, batch=128)
    assert not bad.ok and bad.errors == 3 and bad.scores == [] and "HTTP 500" in (bad.error or "")


def test_score_probe_with_one_url_per_version(server):
    p = TritonScoreProbe(
        {}, "ranker_py", track_endpoints={"eu-west-1/canary": server.url}, models={"canary": "ranker_py"}
    )
    r = p.scores(
        "eu-west-1", "canary", {"dense": np.ones((4, 8), np.float32), "sparse_ids": np.zeros((4, 8), np.int32)}
    )
    assert r.ok and r.scores == [8.0] * 4 and server.seen[0]["track"] == "none"


def test_http_metrics_scrape(server):
    m = HttpTritonMetrics(
        {"us-west-2/canary": [f"{server.url}/t/canary/metrics"], "us-west-2/stable": [f"{server.url}/metrics"]}
    )
    snaps = M.snapshots(m.scrape("us-west-2", "canary"))
    assert [s.success for s in snaps.values()] == [7]
    assert m.scrape("eu-west-1", "canary") == {}


class FakeKube:
    def __init__(self, deployments: list[dict], pods: list[dict] | None = None):
        self.deployments, self.pods = deployments, pods or []
        self.patches: list[tuple[str, dict]] = []
        self.reads: list[tuple[str, dict[str, Any]]] = []

    def get(self, path: str, **params: Any) -> dict:
        self.reads.append((path, params))
        sel = params.get("labelSelector", "")
        if path.endswith("/deployments"):
            k, v = sel.split("=")
            return {"items": [d for d in self.deployments if d["metadata"]["labels"].get(k) == v]}
        k, v = sel.split("=")
        return {"items": [p for p in self.pods if p["metadata"]["labels"].get(k) == v]}

    def get_text(self, path: str, **params: Any) -> str:
        self.reads.append((path, params))
        return M.render({"success": 5, "failure": 1}, "ranker_trt") if "canary-a" in f"{path} {params}" else ""

    def patch(self, path: str, body: dict) -> dict:
        self.patches.append((path, body))
        return {}


def _dep(name: str, track: str, version: str, ready: int, updated: int, replicas: int) -> dict:
    app = "triton" if track == "stable" else "triton-canary"
    return {
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/name": app, "reco-dr/track": track, "reco-dr/model-version": version},
        },
        "spec": {"replicas": replicas},
        "status": {"readyReplicas": ready, "updatedReplicas": updated},
    }


def test_alb_weights_and_deployments(aws):
    import boto3

    from infra.names import lb_name, target_group_name

    ec2, elb = boto3.client("ec2", region_name="us-west-2"), boto3.client("elbv2", region_name="us-west-2")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.9.{i}.0/24", AvailabilityZone=f"us-west-2{z}")["Subnet"]["SubnetId"]
        for i, z in enumerate("ab")
    ]
    lb = elb.create_load_balancer(Name=lb_name("prod-usw2"), Subnets=subnets)["LoadBalancers"][0]["LoadBalancerArn"]
    tgs = {
        t: elb.create_target_group(
            Name=target_group_name("prod-usw2", t), Protocol="HTTP", Port=8000, VpcId=vpc, TargetType="ip"
        )["TargetGroups"][0]["TargetGroupArn"]
        for t in ("stable", "canary")
    }
    from tests.release.test_edge_followups import closed_listener

    closed_listener(elb, lb, tgs, (90, 10))
    kube = FakeKube(
        [
            _dep("triton-a100", "stable", "2026.11.0", 2, 2, 2),
            _dep("triton-a100-canary", "canary", "2026.12.0", 0, 1, 1),
        ],
        pods=[
            {
                "metadata": {"name": "triton-a100-canary-a", "labels": {"reco-dr/track": "canary"}},
                "status": {"phase": "Running"},
            },
            {
                "metadata": {"name": "triton-a100-canary-b", "labels": {"reco-dr/track": "canary"}},
                "status": {"phase": "Pending"},
            },
        ],
    )
    s = AlbKubeServing({"us-west-2": elb}, {"us-west-2": kube}, {"us-west-2": "prod-usw2"}, model="ranker")
    t = s.tracks("us-west-2")
    assert (t["stable"].version, t["stable"].weight, t["stable"].ready, t["stable"].desired) == ("2026.11.0", 90, 2, 2)
    assert (t["canary"].version, t["canary"].weight, t["canary"].ready) == ("2026.12.0", 10, 0)
    s.restart("us-west-2", "canary")
    ((path, body),) = kube.patches
    assert (
        path.endswith("/deployments/triton-a100-canary")
        and "kubectl.kubernetes.io/restartedAt" in body["spec"]["template"]["metadata"]["annotations"]
    )
    texts = KubernetesTritonMetrics({"us-west-2": kube}).scrape("us-west-2", "canary")
    assert list(texts) == ["triton-a100-canary-a"]  # the pending pod is not scraped
    assert M.snapshot(texts["triton-a100-canary-a"]).failure == 1


def test_node_loss_terminates_one_in_service_instance_of_the_pool():
    calls: dict[str, Any] = {}

    class Eks:
        def list_nodegroups(self, clusterName):
            return {"nodegroups": ["system-1", "gpu-a100-2026"]}

        def describe_nodegroup(self, clusterName, nodegroupName):
            return {
                "nodegroup": {
                    "tags": {"reco-dr/gpu-pool": "a100"} if "gpu" in nodegroupName else {},
                    "resources": {"autoScalingGroups": [{"name": f"asg-{nodegroupName}"}]},
                }
            }

    class Asg:
        def describe_auto_scaling_groups(self, AutoScalingGroupNames):
            calls["asg"] = AutoScalingGroupNames
            return {
                "AutoScalingGroups": [
                    {
                        "Instances": [
                            {"InstanceId": "i-2", "LifecycleState": "InService"},
                            {"InstanceId": "i-1", "LifecycleState": "Terminating"},
                            {"InstanceId": "i-3", "LifecycleState": "InService"},
                        ]
                    }
                ]
            }

    class Ec2:
        def terminate_instances(self, InstanceIds):
            calls["terminated"] = InstanceIds

    f = Ec2NodeLoss(
        {"us-west-2": Eks()}, {"us-west-2": Ec2()}, {"us-west-2": Asg()}, {"us-west-2": "c"}, {"us-west-2": "a100"}
    )
    h = f.prepare("us-west-2", "gpu-node-loss")
    assert h == {"nodegroup": "gpu-a100-2026", "instance_id": "i-2", "pool": "a100"} and calls["asg"] == [
        "asg-gpu-a100-2026"
    ]
    f.inject("us-west-2", "gpu-node-loss", h)
    assert calls["terminated"] == ["i-2"]
    f.clear("us-west-2", "gpu-node-loss", h)  # nothing to undo: the node group replaces the instance


def test_the_aws_backend_gets_the_release_adapters(monkeypatch):
    """The `aws` backend builds the release adapters itself, from the stack outputs, session and Kubernetes clients
    it built the core adapters with (no AWS call is made to build them)."""
    from types import SimpleNamespace

    import boto3

    from drills.adapters.faults import CompositeFaults
    from drills.backends import BACKENDS, _with_release_adapters, aws_backend
    from infra.config import load_fleet
    from infra.mocks import regional_outputs
    from infra.outputs import validate_outputs

    assert BACKENDS["aws"][0] is aws_backend and "release adapters" in BACKENDS["aws"][1]
    fleet = load_fleet("prod")
    b = SimpleNamespace(
        stacks=SimpleNamespace(get_config=lambda s, p: "2026.11.0"),
        s3=SimpleNamespace(buckets={r: f"b-{r}" for r in fleet.regions}),
        faults=CompositeFaults(),
    )
    out = {r: validate_outputs(s, regional_outputs(s)) for r, s in fleet.stack_names.items()}
    session = boto3.Session(region_name="us-east-1")
    kubes = {r: object() for r in out}
    _with_release_adapters(b, fleet, {}, session, out, kubes)  # type: ignore[arg-type]  # a stand-in backend
    assert isinstance(b.serving, AlbKubeServing) and isinstance(b.metrics, KubernetesTritonMetrics)
    assert (
        b.scores.endpoints["us-west-2"] == "https://" + regional_outputs("prod-usw2")["lb_dns_name"]
        and b.scores.model == "ranker_trt"
    )
    assert b.scores.server_name == fleet.glob.fqdn
    assert set(b.faults.kinds) == {"corrupt-artifact", "gpu-node-loss"}
