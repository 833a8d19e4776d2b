"""The load-balancer model's gray faults, request log and deep-health rule (drills.rehearsal.alb_proc), observed from
outside its child process: what a client gets under each fault, what the log (the CloudWatch model's input) counts,
and where GET DEEP_HEALTH_PATH goes."""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import pytest

from drills.rehearsal.alb_proc import (
    DEEP,
    FAULT_KINDS,
    TRACK_HEADER,
    AlbProcess,
    Edge,
    rehearsal_routes,
    validate_fault,
)
from drills.rehearsal.procs import Supervisor, free_port_block
from infra.health import DEEP_HEALTH_OK, DEEP_HEALTH_PATH

INFER = "/v2/models/ranker_py/infer"
SERVICE = "127.0.0.2"  # the region's in-cluster Service listener (same port, another loopback address)
LB_TIMEOUT = 1.0  # the load balancer's timeout: how long a lost request is held


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    paths: list[str]  # what it was asked: a request the load balancer answered itself never shows here


class _Target(BaseHTTPRequestHandler):
    """A Triton stand-in: POST {"size": n} answers n bytes, anything else a small JSON naming the target."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *a: Any) -> None:
        return

    def _answer(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        asked = json.loads(self.rfile.read(n)) if n else {}
        cast("_Server", self.server).paths.append(self.path)
        data = b"x" * asked["size"] if "size" in asked else json.dumps({"server": "target"}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer


class _Deep(_Target):
    """The deep-health sidecar beside the target (another port, the same address)."""

    def do_GET(self) -> None:
        cast("_Server", self.server).paths.append(self.path)
        data = f"{DEEP_HEALTH_OK} ranker_py 1.0 ms\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _serve(handler: type[BaseHTTPRequestHandler]) -> _Server:
    s = _Server(("127.0.0.1", 0), handler)
    s.paths = []
    threading.Thread(target=s.serve_forever, daemon=True).start()
    return s


def call(
    port: int,
    method: str = "POST",
    path: str = INFER,
    body: dict | None = None,
    headers: dict | None = None,
    timeout: float = 2.0,
    host: str = "127.0.0.1",
) -> tuple[int, bytes, float]:
    """One request on a fresh connection: (status, body, seconds), or the exception the client saw."""
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    t0 = time.perf_counter()
    try:
        data = json.dumps(body or {}).encode() if method == "POST" else None
        c.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        r = c.getresponse()
        return r.status, r.read(), time.perf_counter() - t0
    finally:
        c.close()


def outcome(port: int, **kw: Any) -> int | str:
    """The status, or the name of the error the client saw."""
    try:
        return call(port, **kw)[0]
    except OSError as e:
        return type(e).__name__


@pytest.fixture(scope="module")
def lb(tmp_path_factory):
    target, deep = _serve(_Target), _serve(_Deep)
    port = free_port_block(1)
    tmp = tmp_path_factory.mktemp("alb-faults")
    with Supervisor(tmp / "logs") as sup:
        a = AlbProcess(
            sup,
            tmp / "alb",
            {"r1": ("127.0.0.1", port)},
            seed=11,
            timeout=LB_TIMEOUT,
            model="ranker",
            deep_health_port=deep.server_address[1],
            services={"r1": (SERVICE, port)},
        ).start()
        a.set("r1", 0, {"stable": [("t1", "127.0.0.1", target.server_address[1], "v1")]})
        yield a, port, target, deep
        a.stop()
    for s in (target, deep):
        s.shutdown()
        s.server_close()


@pytest.fixture
def alb(lb):
    """The shared load balancer, fault-free after each test."""
    yield lb
    lb[0].fault("r1", None)


def new_entries(a: AlbProcess, since: int) -> list[list]:
    return a.requests(since)[1]


# ---------------------------------------------------------------- pure: the table, the edge, validation
def test_the_table_carries_the_deep_rule_and_the_edge_applies_it_before_the_routes(tmp_path):
    table = rehearsal_routes("ranker", 8003)
    assert table["deep_health"] == {"path": DEEP_HEALTH_PATH, "port": 8003}
    assert "deep_health" not in rehearsal_routes("ranker")
    edge = Edge(table, ["127.0.0.0/8"])
    assert edge.decide("GET", DEEP_HEALTH_PATH, None, "127.0.0.1", False) == (DEEP, "")
    assert edge.decide("GET", f"{DEEP_HEALTH_PATH}?x=1", None, "127.0.0.1", False) == (DEEP, "")
    assert edge.decide("POST", DEEP_HEALTH_PATH, None, "127.0.0.1", False)[0] == 404
    assert edge.decide("GET", f"{DEEP_HEALTH_PATH}/more", None, "127.0.0.1", False)[0] == 404
    # The header pins and guard come first (priorities 10-20 before DEEP_HEALTH_PRIORITY).
    assert edge.decide("GET", DEEP_HEALTH_PATH, "stable", "127.0.0.1", True)[0] == 403
    assert Edge(rehearsal_routes("ranker"), []).decide("GET", DEEP_HEALTH_PATH, None, "127.0.0.1", False)[0] == 404
    with pytest.raises(ValueError, match="needs model"):
        AlbProcess(None, tmp_path, {}, deep_health_port=8003)


def test_a_latency_fault_defaults_its_jitter_to_a_tenth_of_the_delay():
    assert validate_fault({"kind": "latency", "ms": 100}) == {"kind": "latency", "ms": 100.0, "jitter_ms": 10.0}
    assert validate_fault({"kind": "latency", "ms": 100, "jitter_ms": 0}) == {
        "kind": "latency",
        "ms": 100.0,
        "jitter_ms": 0.0,
    }
    assert validate_fault({"kind": "blackhole"}) == {"kind": "blackhole"}
    assert set(FAULT_KINDS) == {"errors", "latency", "loss", "blackhole", "reset", "bandwidth", "slow-model"}


@pytest.mark.parametrize(
    "fault, words",
    [
        ({"kind": "jam"}, ["'jam'", "errors"]),
        ({"kind": "errors", "fraction": 1.5}, ["'errors'", "fraction=1.5", "[0, 1]"]),
        ({"kind": "errors", "fraction": True}, ["'errors'", "fraction=True"]),
        ({"kind": "loss"}, ["'loss'", "fraction=None", "[0, 1]"]),
        ({"kind": "reset", "fraction": -0.1}, ["'reset'", "fraction=-0.1"]),
        ({"kind": "latency", "ms": -5}, ["'latency'", "ms=-5", ">= 0"]),
        ({"kind": "latency", "ms": 5, "jitter_ms": float("nan")}, ["'latency'", "jitter_ms=nan"]),
        ({"kind": "bandwidth", "bytes_per_s": 0}, ["'bandwidth'", "bytes_per_s=0", "> 0"]),
        ({"kind": "blackhole", "fraction": 0.5}, ["'blackhole'", "fraction"]),
        ("errors", ["'errors'"]),
    ],
)
def test_a_fault_out_of_its_rules_is_refused_before_anything_is_sent(fault, words, tmp_path):
    a = AlbProcess(None, tmp_path, {"r1": ("127.0.0.1", 1)})  # never started: sending anything would fail
    with pytest.raises(ValueError) as e:
        a.fault("r1", fault)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_a_fault_for_a_region_without_a_listener_is_refused(tmp_path):
    a = AlbProcess(None, tmp_path, {"r1": ("127.0.0.1", 1)})
    with pytest.raises(ValueError, match="'r2'"):
        a.fault("r2", {"kind": "blackhole"})


# ---------------------------------------------------------------- each fault, through the child
def test_errors_answer_a_fraction_502_without_reaching_the_target_and_clearing_restores(alb):
    a, port, target, _ = alb
    since, reached = a.requests()[0], len(target.paths)
    a.fault("r1", {"kind": "errors", "fraction": 0.3})
    statuses = [outcome(port) for _ in range(200)]
    assert set(statuses) == {200, 502}
    assert 0.2 < statuses.count(502) / 200 < 0.4
    assert len(target.paths) - reached == statuses.count(200)  # a 502 never reached the target
    log = new_entries(a, since)
    assert [e[2] for e in log] == statuses  # sequential requests: the log in the clients' order
    assert all((e[3] is None) == (e[2] == 502) for e in log)  # target time only where the target answered
    a.fault("r1", None)
    assert [outcome(port) for _ in range(20)] == [200] * 20


def test_latency_delays_each_request_and_counts_in_the_target_time(alb):
    a, port, _, _ = alb
    base = statistics.median(call(port)[2] for _ in range(5))
    since = a.requests()[0]
    a.fault("r1", {"kind": "latency", "ms": 100, "jitter_ms": 5})
    slow = statistics.median(call(port)[2] for _ in range(8))
    assert 0.08 < slow - base < 0.2
    log = new_entries(a, since)
    assert [e[2] for e in log] == [200] * 8
    assert all(85 < e[3] < 200 for e in log), [e[3] for e in log]
    a.fault("r1", None)
    assert statistics.median(call(port)[2] for _ in range(5)) < base + 0.05


def test_loss_holds_a_fraction_unanswered_and_counts_them_504(alb):
    a, port, _, _ = alb
    since = a.requests()[0]
    a.fault("r1", {"kind": "loss", "fraction": 0.5})
    seen = [outcome(port, timeout=0.3) for _ in range(10)]
    assert 0 < seen.count("TimeoutError") < 10 and set(seen) == {200, "TimeoutError"}
    log = new_entries(a, since)
    assert [e[2] for e in log] == [504 if s == "TimeoutError" else 200 for s in seen]
    assert all(e[3] is None for e in log if e[2] == 504)


def test_a_blackholed_request_is_closed_unanswered_at_the_lb_timeout_and_blocks_no_other(alb):
    a, port, target, _ = alb
    since, reached = a.requests()[0], len(target.paths)
    a.fault("r1", {"kind": "blackhole"})
    held: dict[str, Any] = {}

    def patient() -> None:
        t0 = time.perf_counter()
        held["seen"] = outcome(port, timeout=5.0)
        held["after"] = time.perf_counter() - t0

    th = threading.Thread(target=patient)
    th.start()
    assert outcome(port, timeout=0.3) == "TimeoutError"
    assert len(target.paths) == reached
    a.fault("r1", None)
    t0 = time.perf_counter()
    assert outcome(port) == 200  # answered while the first request is still held
    assert time.perf_counter() - t0 < 0.5 and th.is_alive()
    th.join(5)
    # Closed without an answer once the load balancer's timeout ran out, long before the client's own.
    assert held["seen"] == "RemoteDisconnected" and LB_TIMEOUT - 0.1 < held["after"] < LB_TIMEOUT + 1.5
    assert sorted(e[2] for e in new_entries(a, since)) == [200, 504, 504]


def test_reset_connections_see_a_reset_and_count_502(alb):
    a, port, target, _ = alb
    since, reached = a.requests()[0], len(target.paths)
    a.fault("r1", {"kind": "reset", "fraction": 1.0})
    assert [outcome(port) for _ in range(5)] == ["ConnectionResetError"] * 5
    assert len(target.paths) == reached
    assert [(e[2], e[3]) for e in new_entries(a, since)] == [(502, None)] * 5
    a.fault("r1", {"kind": "reset", "fraction": 0.5})
    seen = [outcome(port) for _ in range(20)]
    assert set(seen) == {200, "ConnectionResetError"}


def test_bandwidth_paces_the_body_but_not_the_target_time(alb):
    a, port, _, _ = alb
    status, body, fast = call(port, body={"size": 100_000})
    assert status == 200 and len(body) == 100_000 and fast < 0.25
    since = a.requests()[0]
    a.fault("r1", {"kind": "bandwidth", "bytes_per_s": 250_000})
    status, body, slow = call(port, body={"size": 100_000})
    assert status == 200 and len(body) == 100_000
    assert 0.35 < slow < 1.0  # 100 kB at 250 kB/s: 0.4 s
    (entry,) = new_entries(a, since)
    assert entry[2] == 200 and entry[3] < 200  # the target's first byte was not late: TargetResponseTime
    a.fault("r1", None)
    assert call(port, body={"size": 100_000})[2] < 0.25


# ---------------------------------------------------------------- the request log and the deep-health rule
def test_the_log_holds_every_request_with_what_the_load_balancer_counted(alb):
    a, port, target, _ = alb
    since = a.requests()[0]
    before = time.time()
    assert outcome(port, method="GET", path="/metrics") == 404  # the listener's default action
    assert outcome(port, headers={TRACK_HEADER: "canary"}) == 403  # no canary configured: the guard
    assert outcome(port) == 200
    assert outcome(port, method="GET", path="/v2/health/ready") == 200
    a.set("r1", 0, {})
    try:
        assert outcome(port) == 503
    finally:
        a.set("r1", 0, {"stable": [("t1", "127.0.0.1", target.server_address[1], "v1")]})
    after = time.time()
    nxt, log = a.requests(since)
    assert nxt == since + 5 and a.requests(nxt) == (nxt, [])
    assert [(e[1], e[2], e[4]) for e in log] == [
        ("r1", 404, "/metrics"),
        ("r1", 403, INFER),
        ("r1", 200, INFER),
        ("r1", 200, "/v2/health/ready"),
        ("r1", 503, INFER),
    ]
    assert all(before <= e[0] <= after for e in log) and [e[0] for e in log] == sorted(e[0] for e in log)
    assert [e[3] is None for e in log] == [True, True, False, False, True]
    assert a.requests(since + 3)[1] == log[3:]


def test_the_deep_path_goes_to_the_sidecars_port_is_no_tracks_traffic_and_sees_the_faults(alb):
    a, port, target, deep = alb
    since, reached, counted = a.requests()[0], len(target.paths), sum(c[5] for c in a.counts())
    status, body, _ = call(port, method="GET", path=DEEP_HEALTH_PATH)
    assert status == 200 and DEEP_HEALTH_OK in body.decode()
    assert deep.paths[-1] == DEEP_HEALTH_PATH and len(target.paths) == reached
    assert sum(c[5] for c in a.counts()) == counted  # counts() is the tracks' (users') split
    assert outcome(port, method="POST", path=DEEP_HEALTH_PATH) == 404
    a.fault("r1", {"kind": "errors", "fraction": 1.0})
    assert outcome(port, method="GET", path=DEEP_HEALTH_PATH) == 502
    assert [(e[2], e[4]) for e in new_entries(a, since)] == [
        (200, DEEP_HEALTH_PATH),
        (404, DEEP_HEALTH_PATH),
        (502, DEEP_HEALTH_PATH),
    ]


def test_without_the_deep_port_the_path_is_404_and_a_held_request_never_delays_shutdown(tmp_path):
    target = _serve(_Target)
    port = free_port_block(1)
    try:
        with Supervisor(tmp_path / "logs") as sup:
            a = AlbProcess(sup, tmp_path / "alb", {"r1": ("127.0.0.1", port)}, timeout=30.0, model="ranker").start()
            a.set("r1", 0, {"stable": [("t1", "127.0.0.1", target.server_address[1], "v1")]})
            assert outcome(port, method="GET", path=DEEP_HEALTH_PATH) == 404
            a.fault("r1", {"kind": "blackhole"})
            held: dict[str, Any] = {}
            th = threading.Thread(target=lambda: held.update(seen=outcome(port, timeout=20.0)))
            th.start()
            deadline = time.monotonic() + 5
            while len(a.requests()[1]) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            t0 = time.perf_counter()
            a.stop()
            assert time.perf_counter() - t0 < 3.0  # not the 30 s hold, nor the supervisor's 5 s grace
            th.join(5)
            assert held["seen"] in ("RemoteDisconnected", "ConnectionResetError")
            # The log outlives the child.
            assert [(e[2], e[4]) for e in a.requests()[1]] == [(404, DEEP_HEALTH_PATH), (504, INFER)]
    finally:
        target.shutdown()
        target.server_close()


def test_a_slow_model_delays_inference_only_on_every_path_to_it(alb):
    a, port, _, _ = alb
    base = statistics.median(call(port)[2] for _ in range(5))
    since = a.requests()[0]
    a.fault("r1", {"kind": "slow-model", "ms": 150})
    for host in ("127.0.0.1", SERVICE):  # the listener and the Service: every path to the model
        assert 0.13 < statistics.median(call(port, host=host)[2] for _ in range(4)) - base < 0.3
    ready = call(port, "GET", "/v2/health/ready")
    assert ready[0] == 200 and ready[2] < base + 0.1  # readiness answers at its usual speed
    log = new_entries(a, since)
    assert [e[4] for e in log] == [INFER] * 4 + ["/v2/health/ready"]  # the Service's requests are not the ALB's
    assert all(e[3] > 140 for e in log[:4])
    with pytest.raises(ValueError, match="ms"):
        a.fault("r1", {"kind": "slow-model", "ms": 0})


def test_the_service_listener_shares_targets_and_faults_applies_no_rule_and_is_not_logged(alb):
    a, port, target, _ = alb
    since = a.requests()[0]
    counted = sum(n for *_, n in a.counts())
    assert call(port, "GET", "/v2/repository/index", host=SERVICE)[0] == 200  # no listener rule in the cluster
    assert target.paths[-1] == "/v2/repository/index"
    assert call(port, "GET", "/v2/repository/index")[0] == 404  # the ALB's default action
    a.fault("r1", {"kind": "errors", "fraction": 1.0})
    assert call(port, host=SERVICE)[0] == 502  # the same pods' network
    assert [e[2] for e in new_entries(a, since)] == [404]
    assert sum(n for *_, n in a.counts()) == counted
