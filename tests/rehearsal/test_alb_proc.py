"""The rehearsal's weighted load-balancer model (drills.rehearsal.alb_proc) in its child process: routing by the
canary weight and the track header, target failover, and HTTP connection semantics clients rely on."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast

import pytest
import requests

from drills.rehearsal.alb_proc import TRACK_HEADER, AlbProcess
from drills.rehearsal.procs import Supervisor, free_port_block


class _Pod(BaseHTTPRequestHandler):
    """A target that answers with its own name (what served the request)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *a):
        return

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        data = json.dumps({"pod": cast("_PodServer", self.server).name}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _PodServer(ThreadingHTTPServer):
    name = ""  # the pod's name, which its answers carry


def _pod(name: str, address: str = "127.0.0.1") -> _PodServer:
    s = _PodServer((address, 0), _Pod)
    s.daemon_threads = True
    s.name = name
    threading.Thread(target=s.serve_forever, daemon=True).start()
    return s


@pytest.fixture
def alb(tmp_path):
    port = free_port_block(1)
    pods = {n: _pod(n) for n in ("stable-1", "stable-2", "canary-1")}
    with Supervisor(tmp_path / "logs") as sup:
        a = AlbProcess(sup, tmp_path / "alb", {"r1": ("127.0.0.1", port)}, seed=3).start()
        yield a, f"http://127.0.0.1:{port}", {n: ("127.0.0.1", s.server_address[1]) for n, s in pods.items()}
        a.stop()
    for s in pods.values():
        s.shutdown()
        s.server_close()


def _targets(addrs: dict, names: list[str], track: str) -> list:
    return [(n, *addrs[n], "v-" + track) for n in names]


def _served(url: str, n: int, headers: dict | None = None) -> list[str]:
    with requests.Session() as s:
        return [
            s.post(f"{url}/v2/models/m/infer", json={}, headers=headers or {}, timeout=5).json()["pod"]
            for _ in range(n)
        ]


def test_weight_splits_requests_and_the_header_pins_a_track(alb):
    a, url, addrs = alb
    targets = {
        "stable": _targets(addrs, ["stable-1", "stable-2"], "stable"),
        "canary": _targets(addrs, ["canary-1"], "canary"),
    }
    a.set("r1", 0, targets)
    assert set(_served(url, 40)) == {"stable-1", "stable-2"}  # weight 0: never the canary, both stable pods used
    assert set(_served(url, 10, {TRACK_HEADER: "canary"})) == {"canary-1"}
    a.set("r1", 50, targets)
    share = _served(url, 400).count("canary-1") / 400
    assert 0.4 < share < 0.6
    a.set("r1", 100, targets)
    assert set(_served(url, 20)) == {"canary-1"}
    counts: dict = {}
    for c in a.counts():
        counts[(c[2], c[3], c[4])] = counts.get((c[2], c[3], c[4]), 0) + c[5]
    # Pinned (the gates' scoring) and weight-routed (users') requests are told apart.
    assert counts == {
        ("stable", "v-stable", False): 40 + 400 - round(share * 400),
        ("canary", "v-canary", True): 10,
        ("canary", "v-canary", False): round(share * 400) + 20,
    }


def test_a_dead_target_is_routed_around_and_no_target_is_a_503(alb, tmp_path):
    a, url, addrs = alb
    dead_port = free_port_block(1)  # nothing listens: connection refused, as a pod that just died
    a.set("r1", 0, {"stable": [("dead", "127.0.0.1", dead_port, "v"), *_targets(addrs, ["stable-1"], "stable")]})
    assert set(_served(url, 30)) == {"stable-1"}
    a.set("r1", 0, {"stable": [("dead", "127.0.0.1", dead_port, "v")]})
    r = requests.post(f"{url}/v2/models/m/infer", json={}, timeout=5)
    assert r.status_code == 503


def test_a_close_request_gets_a_close_response_so_pooling_clients_never_reuse_a_closed_socket(alb):
    # The drills' probes send `Connection: close` through one pooled requests.Session; a server that closes without
    # saying so leaves the client reusing a dead socket: "Remote end closed connection without response".
    a, url, addrs = alb
    a.set("r1", 0, {"stable": _targets(addrs, ["stable-1"], "stable")})
    with requests.Session() as s:
        r = s.post(f"{url}/v2/models/m/infer", json={}, headers={"Connection": "close"}, timeout=5)
        assert r.status_code == 200 and r.headers.get("Connection", "").lower() == "close"
        errors = []
        for _ in range(300):
            try:
                s.post(
                    f"{url}/v2/models/m/infer", json={}, headers={"Connection": "close"}, timeout=5
                ).raise_for_status()
            except requests.RequestException as e:
                errors.append(repr(e))
        assert errors == []
    # Keep-alive stays keep-alive: no close header when the client did not ask for one.
    assert (
        "close"
        not in requests.post(f"{url}/v2/models/m/infer", json={}, timeout=5).headers.get("Connection", "").lower()
    )


def test_capacity_queues_then_sheds_inference_but_never_readiness(alb):
    """A region over its capacity: requests wait their turn up to queue_ms, the rest are answered 503 at once; health
    paths pass unlimited; lifting the limit serves everything again."""
    a, url, addrs = alb
    a.set("r1", 0, {"stable": _targets(addrs, ["stable-1"], "stable")}, capacity_rps=20, queue_ms=100)

    statuses: list[int] = []
    lock = threading.Lock()

    def burst() -> None:
        with requests.Session() as s:
            for _ in range(10):
                code = s.post(f"{url}/v2/models/m/infer", json={}, timeout=5).status_code
                with lock:
                    statuses.append(code)

    threads = [threading.Thread(target=burst) for _ in range(12)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    # 120 requests as fast as 12 senders go, against 20/s: a second of capacity (20) as a burst, 2 more within the
    # 100 ms queue, 20/s more while the burst lasts; the rest shed.
    admitted = statuses.count(200)
    assert 20 <= admitted <= 22 + 20 * elapsed + 2, (admitted, elapsed)
    assert statuses.count(503) == 120 - admitted > 0
    assert set(statuses) <= {200, 503}
    with requests.Session() as s:  # not an inference: never limited (the pod answers readiness as it is)
        assert all(s.get(f"{url}/v2/health/ready", timeout=5).status_code != 503 for _ in range(20))
    _, log = a.requests()
    shed = [e for e in log if e[2] == 503]
    assert shed and all(e[3] == 0.0 and e[4].endswith("/infer") for e in shed)  # the target answered, at once

    a.set("r1", 0, {"stable": _targets(addrs, ["stable-1"], "stable")}, capacity_rps=None)
    assert _served(url, 30) == ["stable-1"] * 30
    with pytest.raises(ValueError, match="capacity_rps"):
        a.set("r1", 0, {"stable": []}, capacity_rps=0)
