"""The rehearsal's load-balancer model mirrors the regional ALB's closed edge (infra/components/load_balancer.py):
only the routes of infra.names.edge_routes are forwarded (with the `_py` stand-in for the ONNX fallback), everything
else is 404, and X-Reco-Track pins only from the release tooling's addresses while a canary is configured (403
otherwise)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import pytest
import requests

from drills.rehearsal.alb_proc import TRACK_HEADER, AlbProcess, rehearsal_routes
from drills.rehearsal.procs import Supervisor, free_port_block
from infra.names import ARM_HEADER


class _Echo(BaseHTTPRequestHandler):
    """A trivial backend: answers every method and path with what it was asked."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *a: Any) -> None:
        return

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        port = cast("ThreadingHTTPServer", self.server).server_address[1]
        data = json.dumps({"path": self.path, "server": port}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer


@pytest.fixture
def edge(tmp_path):
    port = free_port_block(1)
    pods = {}
    for name in ("stable-1", "canary-1"):
        s = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
        s.daemon_threads = True
        threading.Thread(target=s.serve_forever, daemon=True).start()
        pods[name] = s

    def targets(*names: str) -> dict[str, list[tuple[str, str, int, str]]]:
        return {
            t: [(n, "127.0.0.1", pods[n].server_address[1], "v1") for n in names if n.startswith(t)]
            for t in ("stable", "canary")
        }

    with Supervisor(tmp_path / "logs") as sup:

        def start(tooling: list[str]) -> tuple[AlbProcess, str]:
            a = AlbProcess(
                sup,
                tmp_path / f"alb-{len(tooling)}",
                {"r1": ("127.0.0.1", port)},
                model="ranker",
                tooling_cidrs=tooling,
            ).start()
            return a, f"http://127.0.0.1:{port}"

        yield start, targets, {n: s.server_address[1] for n, s in pods.items()}
    for s in pods.values():
        s.shutdown()
        s.server_close()


def test_the_table_substitutes_the_stand_in_for_the_onnx_fallback():
    t = rehearsal_routes("ranker")
    paths = {p for _, ps in t["routes"] for p in ps}
    assert "/v2/models/ranker_py/infer" in paths and "/v2/models/ranker_py/ready" in paths
    assert "/v2/models/ranker_trt/versions/*/infer" in paths
    assert not any("ranker_onnx" in p for p in paths) and "/v2/models/ranker_py/infer" in t["pin_paths"]


def test_only_the_edge_routes_are_forwarded_and_the_header_pins_only_from_the_tooling(edge):
    start, targets, ports = edge
    a, url = start(["127.0.0.0/16"])  # the rehearsal's release tooling: loopback (the stack copy's cidrs)
    try:
        a.set("r1", 0, targets("stable-1"))
        with requests.Session() as s:
            assert s.get(f"{url}/v2/repository/index", timeout=5).status_code == 404
            assert s.post(f"{url}/v2/repository/index", timeout=5).status_code == 404
            assert s.get(f"{url}/v2/models/ranker_py/config", timeout=5).status_code == 404
            assert s.get(f"{url}/v2/models/ranker_py/stats", timeout=5).status_code == 404
            assert s.get(f"{url}/metrics", timeout=5).status_code == 404
            assert s.get(f"{url}/v2/models/ranker_py/infer", timeout=5).status_code == 404  # wrong method
            r = s.post(f"{url}/v2/models/ranker_py/infer", json={}, timeout=5)
            assert r.status_code == 200 and r.json()["path"] == "/v2/models/ranker_py/infer"
            assert s.post(f"{url}/v2/models/ranker_py/versions/3/infer", json={}, timeout=5).status_code == 200
            assert s.get(f"{url}/v2/models/ranker_py", timeout=5).status_code == 200
            assert s.get(f"{url}/v2/health/ready", timeout=5).status_code == 200
            # No canary configured: no pin rules, the header is refused.
            r = s.post(f"{url}/v2/models/ranker_py/infer", json={}, headers={TRACK_HEADER: "stable"}, timeout=5)
            assert r.status_code == 403 and TRACK_HEADER in r.text
            a.set("r1", 100, targets("stable-1", "canary-1"))
            # A canary configured: from the tooling's address the header pins, on the inference paths only.
            for track in ("stable", "canary"):
                r = s.post(f"{url}/v2/models/ranker_py/infer", json={}, headers={TRACK_HEADER: track}, timeout=5)
                assert r.status_code == 200 and r.json()["server"] == ports[f"{track}-1"]
            r = s.get(f"{url}/v2/models/ranker_py", headers={TRACK_HEADER: "canary"}, timeout=5)
            assert r.status_code == 403  # not a pin path: the guard
            r = s.post(f"{url}/v2/models/ranker_py/infer", json={}, headers={TRACK_HEADER: "beta"}, timeout=5)
            assert r.status_code == 403
            # Weighted (100 % canary) without the header.
            r = s.post(f"{url}/v2/models/ranker_py/infer", json={}, timeout=5)
            assert r.json()["server"] == ports["canary-1"]
        pinned = {(c[2], c[4]) for c in a.counts()}
        assert ("stable", True) in pinned and ("canary", True) in pinned and ("canary", False) in pinned
    finally:
        a.stop()


def test_the_header_from_an_address_outside_the_tooling_is_refused(edge):
    start, targets, _ = edge
    a, url = start(["198.51.100.0/28"])  # the stack names other addresses: loopback may not pin
    try:
        a.set("r1", 50, targets("stable-1", "canary-1"))
        r = requests.post(f"{url}/v2/models/ranker_py/infer", json={}, headers={TRACK_HEADER: "canary"}, timeout=5)
        assert r.status_code == 403
        assert requests.post(f"{url}/v2/models/ranker_py/infer", json={}, timeout=5).status_code == 200
    finally:
        a.stop()


def test_the_arm_header_routes_a_cell_to_its_track_and_an_unknown_cell_falls_through(edge):
    """X-Reco-Arm (infra.names.ARM_HEADER) as the regional stack's arm rules route it: a cell the table names goes
    to its track, on the inference paths only; any other value is served by the ordinary routes, never refused."""
    start, targets, ports = edge
    a, url = start([])  # no release tooling: the arm header needs none
    try:
        t = targets("stable-1", "canary-1")
        a.set("r1", 0, {"stable": t["stable"], "arm-v2": t["canary"]}, arms={"exp.candidate": "arm-v2"})
        with requests.Session() as s:
            infer = f"{url}/v2/models/ranker_py/infer"
            for value in ("exp.candidate", "EXP.Candidate"):  # ALB header values match case-insensitively
                r = s.post(infer, json={}, headers={ARM_HEADER: value}, timeout=5)
                assert r.status_code == 200 and r.json()["server"] == ports["canary-1"]
            for value in ("exp.control", "other.candidate"):
                r = s.post(infer, json={}, headers={ARM_HEADER: value}, timeout=5)
                assert r.status_code == 200 and r.json()["server"] == ports["stable-1"]
            r = s.get(f"{url}/v2/models/ranker_py", headers={ARM_HEADER: "exp.candidate"}, timeout=5)
            assert r.json()["server"] == ports["stable-1"]  # metadata is no arm rule's path
            assert s.post(infer, json={}, timeout=5).json()["server"] == ports["stable-1"]
        counted = {(c[2], c[4]) for c in a.counts()}
        assert ("arm-v2", False) in counted  # users' traffic, not a pinned score
    finally:
        a.stop()
