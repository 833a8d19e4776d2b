"""The deep check's regional half (infra/health.py): the sidecar's program, run as the pod runs it (`python3 -c`),
against a tiny stand-in for Triton's V2 HTTP API; the sidecar container in the Triton pod; the load balancer's
deep-health target group and listener rule; the regional outputs the global stack's alarms read."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from infra import health as H
from infra.components import triton as T
from infra.config import RegionConfig, load_stack
from infra.names import PORTS
from tests.infra.test_edge_listener import answer

MODEL = "ranker_trt"
# A model's metadata as Triton answers GET /v2/models/<m>: a dynamic batch dimension, fixed feature dimensions.
METADATA = {
    "name": MODEL,
    "inputs": [
        {"name": "user_id", "datatype": "INT32", "shape": [-1]},
        {"name": "dense", "datatype": "FP32", "shape": [-1, 3]},
    ],
    "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1, 1]}],
}


class FakeTriton:
    """Triton's model metadata and inference for MODEL only (404 for any other model, as Triton answers); `scores`,
    `delay_s` make its answer non-finite or slow. Records the inference bodies it receives."""

    def __init__(self) -> None:
        self.scores: list[float] = [0.25]
        self.delay_s = 0.0
        self.bodies: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, doc: dict) -> None:
                body = json.dumps(doc).encode()  # NaN and Infinity as Python's json writes them
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == f"/v2/models/{MODEL}":
                    self._send(200, METADATA)
                else:
                    self._send(404, {"error": f"Request for unknown model: '{self.path}' is not found"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != f"/v2/models/{MODEL}/infer":
                    self._send(404, {"error": "Request for unknown model"})
                    return
                fake.bodies.append(body)
                time.sleep(fake.delay_s)
                out = {"name": "score", "datatype": "FP32", "shape": [1, len(fake.scores)], "data": fake.scores}
                self._send(200, {"model_name": MODEL, "outputs": [out]})

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def triton() -> Iterator[FakeTriton]:
    fake = FakeTriton()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


@pytest.fixture
def sidecar(triton: FakeTriton):
    """Starts the sidecar's exact command line (but its port) for `model`; returns its deep-health URL."""
    procs: list[subprocess.Popen] = []

    def start(model: str = MODEL) -> str:
        port = _free_port()
        proc = subprocess.Popen(H.deep_health_argv(triton.url, model, port=port))
        procs.append(proc)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the sidecar did not start"
                time.sleep(0.05)
        return f"http://127.0.0.1:{port}{H.DEEP_HEALTH_PATH}"

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=5)


# ---------------------------------------------------------------- the sidecar's program
def test_ok_when_one_inference_answers_finite_within_the_bound(triton, sidecar):
    status, body = _get(sidecar())
    assert status == 200 and body.startswith(f"{H.DEEP_HEALTH_OK} {MODEL} ")
    # One row shaped from the model's metadata: batch 1, every input filled with zeros.
    assert triton.bodies == [
        {
            "inputs": [
                {"name": "user_id", "shape": [1], "datatype": "INT32", "data": [0]},
                {"name": "dense", "shape": [1, 3], "datatype": "FP32", "data": [0, 0, 0]},
            ]
        }
    ]


def test_fails_when_the_model_is_not_there(triton, sidecar):
    status, body = _get(sidecar("ranker_onnx"))  # Triton answers 404: the pod loaded another model, or none
    assert status == 503 and body.startswith(f"{H.DEEP_HEALTH_FAIL} ranker_onnx: HTTP 404")
    assert H.DEEP_HEALTH_OK not in body and triton.bodies == []


def test_a_model_the_answering_pod_does_not_serve_passes_to_the_next(triton, sidecar):
    """The Service may answer from a pod of another pool: a 404 for one of the region's models tries the next."""
    status, body = _get(sidecar(f"ranker_onnx,{MODEL}"))
    assert status == 200 and body.startswith(f"{H.DEEP_HEALTH_OK} {MODEL} ")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_fails_on_non_finite_output(triton, sidecar, bad):
    triton.scores = [0.25, bad]
    status, body = _get(sidecar())
    assert (status, body) == (503, f"{H.DEEP_HEALTH_FAIL} {MODEL}: no finite output\n")


def test_fails_when_the_answer_is_slower_than_the_bound_and_recovers(triton, sidecar):
    url = sidecar()
    triton.delay_s = H.DEEP_HEALTH_BOUND_MS / 1000 + 0.2
    status, body = _get(url)
    assert status == 503 and body.startswith(f"{H.DEEP_HEALTH_FAIL} {MODEL}: ") and H.DEEP_HEALTH_OK not in body
    # Healthy again once Triton answers in time, after the cached result's life.
    triton.delay_s = 0.0
    time.sleep(H.DEEP_HEALTH_CACHE_S)
    assert _get(url)[0] == 200


def test_a_result_is_reused_so_no_request_rate_drives_more_inferences(triton, sidecar):
    url = sidecar()
    assert [_get(url)[0] for _ in range(5)] == [200] * 5
    assert len(triton.bodies) == 1  # within DEEP_HEALTH_CACHE_S: one inference for all five


def test_other_paths_are_not_found(triton, sidecar):
    url = sidecar()
    assert _get(url.replace(H.DEEP_HEALTH_PATH, "/v2/health/ready"))[0] == 404
    assert triton.bodies == []


# ---------------------------------------------------------------- the sidecar in the Triton pod
def _use1() -> RegionConfig:
    cfg = load_stack("prod-use1")
    assert isinstance(cfg, RegionConfig)
    return cfg


def _deep(pod: dict) -> dict:
    (c,) = [c for c in pod["containers"] if c["name"] == H.DEEP_HEALTH_CONTAINER]
    return c


def test_every_stable_pod_runs_the_sidecar_on_the_model_it_serves(regional, as_manifest):
    _stack, plan, cfg = regional
    for d in plan.of_type("kubernetes:apps/v1:Deployment"):
        pod = as_manifest(d)["spec"]["template"]["spec"]
        c = _deep(pod)
        # Through the stable Service (across the pods' network), on the models the region's pods load.
        (served, *_) = [a.removeprefix("--load-model=") for a in pod["containers"][0]["args"] if "--load-model" in a]
        service = f"http://triton.triton.svc.cluster.local:{PORTS['http']}"
        assert c["command"] == H.deep_health_argv(service, served)
        assert c["command"][:3] == ["python3", "-c", H.DEEP_HEALTH_SCRIPT]
        assert c["image"] == cfg.triton.image
        assert c["ports"] == [{"name": "deep-health", "containerPort": H.DEEP_HEALTH_PORT, "protocol": "TCP"}]
        # The restricted profile of every container here.
        assert c["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        assert c["resources"] == {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "250m", "memory": "128Mi"},
        }
        # No readiness probe: a failing deep check must not take the pod out of the Service (and so hide it).
        assert "readinessProbe" not in c and "startupProbe" not in c
        assert c["livenessProbe"]["tcpSocket"] == {"port": "deep-health"}


def test_the_sidecar_follows_the_onnx_fallback():
    cfg = _use1()
    pool = cfg.gpu_pools[0]
    model = cfg.model.model_copy(update={"onnx_fallback_for": (pool.gpu.compute_capability,)})
    pod = T.deployment_manifest(pool, cfg.triton, model, "bucket", cfg.region)["spec"]["template"]["spec"]
    assert _deep(pod)["command"][5] == f"{cfg.model.name}_onnx"
    # In a region whose pools serve both, every pod's sidecar names both: the Service answers from any pool's pod.
    both = [f"{cfg.model.name}_trt", f"{cfg.model.name}_onnx"]
    pod = T.deployment_manifest(pool, cfg.triton, model, "bucket", cfg.region, region_models=both)
    assert _deep(pod["spec"]["template"]["spec"])["command"][5] == ",".join(both)


def test_canary_pods_run_no_sidecar():
    """The deep check judges the stable version; a canary is judged by the release gates."""
    cfg = _use1()
    pod = T.deployment_manifest(cfg.gpu_pools[0], cfg.triton, cfg.model, "bucket", cfg.region, track=T.CANARY)
    assert [c["name"] for c in pod["spec"]["template"]["spec"]["containers"]] == ["triton"]
    assert H.DEEP_HEALTH_PORT_NAME not in T.service_ports(T.CANARY)


# ---------------------------------------------------------------- the load balancer
def test_deep_health_target_group_holds_the_pods_users_are_sent_to(regional):
    stack, plan, _cfg = regional
    tg = plan.one("aws:lb/targetGroup:TargetGroup", "ingress-deep-health")
    stable = plan.one("aws:lb/targetGroup:TargetGroup", "ingress-triton")
    assert (tg.inputs["name"], tg.inputs["port"], tg.inputs["protocol"], tg.inputs["targetType"]) == (
        H.deep_health_target_group_name(stack),
        H.DEEP_HEALTH_PORT,
        "HTTP",
        "ip",
    )
    # Judged on Triton's readiness, on Triton's port: the same pods as the stable group, none dropped for failing the
    # deep check itself.
    assert tg.inputs["healthCheck"] == {**stable.inputs["healthCheck"], "port": str(PORTS["http"])}


def test_listener_forwards_get_deep_health_only(regional):
    _stack, plan, _cfg = regional
    rule = plan.one("aws:lb/listenerRule:ListenerRule", "ingress-deep-health")
    assert rule.inputs["priority"] == H.DEEP_HEALTH_PRIORITY
    deep = plan.one("aws:lb/targetGroup:TargetGroup", "ingress-deep-health").state["arn"]
    assert answer(plan, "GET", H.DEEP_HEALTH_PATH) == ("forward", {deep: 1})
    for method, path in (("POST", H.DEEP_HEALTH_PATH), ("GET", f"{H.DEEP_HEALTH_PATH}/x"), ("GET", "/deep")):
        assert answer(plan, method, path) == ("fixed", "404"), (method, path)


# ---------------------------------------------------------------- what the global stack's alarms read
def test_outputs_name_the_load_balancer_and_target_group_as_cloudwatch_does(regional):
    _stack, plan, _cfg = regional
    lb = plan.one("aws:lb/loadBalancer:LoadBalancer")
    tg = plan.one("aws:lb/targetGroup:TargetGroup", "ingress-triton")
    assert plan.outputs["lb_arn_suffix"] == lb.state["arnSuffix"] == lb.state["arn"].split(":loadbalancer/")[1]
    assert plan.outputs["target_group_arn_suffix"] == tg.state["arnSuffix"] == tg.state["arn"].split(":", 5)[5]
