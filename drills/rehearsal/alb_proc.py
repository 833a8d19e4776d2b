"""The weighted load-balancer model ("ALB") in its own process.

In the rehearsal's main process the engine, the Pulumi programs, the DNS/health/replication models and the
gates' scoring all share one GIL; a proxy thread there adds that wait to every user request (measured: 1 s
client timeouts on a 2-core box while a gate scored). As `loadgen_proc` does for the clients, `AlbProcess` runs
every region's proxy in a supervised child (`python -m drills.rehearsal.alb_proc SPEC STARTED`). The parent owns
the routing state (which pods are ready targets of which track, the canary weight) and pushes it on every
change through a loopback control endpoint; the push returns once the child routes by the new table, so "weight
0 before the canary pods stop" stays ordered as the listener change before the Deployment change on AWS.

The edge, as the regional ALB's listener rules have it (infra/components/load_balancer.py), when the spec names
the model (`AlbProcess(model=...)`; without one every request is routed: tests of the routing alone):
  1. `X-Reco-Track: stable|canary` pins that track, only while a canary is configured, only on the pin paths
     (infra.names.pin_paths) and only from the release tooling's addresses (`tooling_cidrs`: the region's
     `load_balancer.release_tooling_cidrs` from the stack copy, which in the rehearsal must name loopback);
  2. any other request carrying the header: 403;
  3. `X-Reco-Arm: <experiment>.<cell>` (infra.names.ARM_HEADER) naming a cell of the table's `arms` (pushed by
     `set(..., arms=...)`: infra.experiments.arm_routes, what the regional stack's arm rules declare), on the pin
     paths (inference) with POST: that cell's track (the stable track for a cell of the stable version, else the
     version's arm track); a value no rule names falls through;
  4. the routes of infra.names.edge_routes (method + ALB path pattern): weighted forward;
  5. anything else: 404 (the listener's default action).
Stand-in substitution: the rehearsal's CPU Triton serves the python-backend `<model>_py` where the stacks declare
the ONNX fallback (its stack copy declares it for every capability), so the table the child routes by names `_py`
wherever infra.names.edge_routes names `<model>_onnx` (`rehearsal_routes`); the TensorRT routes are kept.

The deep-health rule (`AlbProcess(deep_health_port=...)`, with the model's edge only): a GET of exactly
infra.health.DEEP_HEALTH_PATH goes to a stable target's address at the deep-health sidecar's port, as the listener
rule at DEEP_HEALTH_PRIORITY (after the header pins and guard, before the edge routes) forwards it to the deep
target group. Those requests are no track's traffic: `counts()` leaves them out (it is the users' split).

Weighted forward in the child (unchanged from the in-process model): the canary with probability weight/100 when
it has targets, else stable; a request that reached no server (connection refused/reset: a pod that just died)
goes to another target; a timeout is not retried.

Faults (`fault(region, {...})`, one per region at a time, None clears): gray failures on the region's data path
between the listener and its targets, where AWS FIS's aws:eks:pod-network-* actions inject them (the pods' network),
so they hit every request the listener forwards, users' and health checkers' (shallow and deep) alike, while the
listener's own answers (403/404 at the edge) stay unaffected, as they do on AWS. Per forwarded request, drawn from
the child's seeded RNG (a run is reproducible for the same request order):
  errors     a fraction answered 502 by the load balancer, no target reached;
  latency    a delay drawn from N(ms, jitter_ms) clipped at 0 before forwarding; it counts in the target time;
  loss       a fraction held unanswered until the load balancer's `timeout`, then the connection is closed;
  blackhole  every request held so (the region unreachable);
  reset      a fraction of connections reset (RST) unanswered;
  bandwidth  the target's response body paced at bytes_per_s; the target time (to its first byte, as the ALB's
             TargetResponseTime) does not see it, the client does;
  slow-model not the network but the model: `ms` added to every inference request (`.../infer`), on both the
             listener and the Service (every path to the model runs through here), in the target time; readiness
             and metadata answer at their usual speed, as a slow model's Triton does.

The request log (`requests(since)`), for the CloudWatch model (drills/rehearsal/cloudwatch.py, `requests_from_log`): one
entry per request any listener handled, forwarded or answered by the load balancer itself, as [wall time of arrival
(time.time()), region, status the load balancer counted, target response time in ms or None when no target answered,
path, whether the drills' service probe sent it (its User-Agent, infra.names.PROBE_USER_AGENT)]. The status counted is
the one the client got, except that a held request (loss, blackhole) counts 504 at its arrival (an ALB whose target
never answers returns 504 after its timeout) and a reset counts 502.

Capacity (`set(..., capacity_rps=R, queue_ms=Q)`,
the rehearsal's `--capacity-model`): the region's ready pods carry R user inference requests a second between them
(drills/rehearsal/capacity.py scales each node's declared QPS to this machine's rate). An inference request the listener
forwards waits its turn at that rate (a GCRA: each admitted request moves the next free slot on by 1/R; up to BURST_S of
capacity may arrive at once, as a batch) for up to Q ms, then is answered 503 by the target without reaching the model,
as Triton answers a request its full queue rejects (UNAVAILABLE). So an under-capacity region shows its latency rise by
up to Q, then its requests shed, until its new pods serve. Health checks (shallow, deep), the drills' own probes and the
Service are not limited (the probes are a negligible share of production traffic, a large one of this machine's
scaled-down rate): readiness and the deep check's one inference a second are not what a full queue refuses first.

A region may also have a Service listener (`services`): the pods' own way to the Triton pods (the Kubernetes Service
the deep-health sidecar calls). It forwards every request to the region's targets through the same fault (the pods'
network), applies no listener rule, and is in neither the request log nor the counts (in-cluster traffic never
reaches the ALB's metrics).
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import math
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from drills.rehearsal.procs import announce, start_announcing
from infra.health import DEEP_HEALTH_PATH
from infra.names import (
    ARM_HEADER,
    CANARY,
    PROBE_USER_AGENT,
    STABLE,
    TRACK_HEADER,
    edge_routes,
    pin_paths,
    triton_models,
)

if TYPE_CHECKING:
    from drills.rehearsal.procs import Child


BURST_S = 1.0  # capacity: up to a second of a region's capacity may arrive at once (the dynamic batcher batches it)


# ---------------------------------------------------------------- the edge's table, stand-in substituted
def rehearsal_routes(model_name: str, deep_health_port: int | None = None) -> dict[str, Any]:
    """The listener rules the child applies, as JSON: {"routes": [[method, [patterns]]], "pin_paths": [patterns]},
    from infra.names.edge_routes / pin_paths with the ONNX fallback's name replaced by the python-backend stand-in
    the rehearsal serves in its place (`<model>_onnx` -> `<model>_py`); with `deep_health_port`, also
    "deep_health": {"path": infra.health.DEEP_HEALTH_PATH, "port": the sidecar's port on each target}."""
    names = triton_models(model_name)

    onnx = re.compile(rf"(?<=/){re.escape(names['onnx'])}(?=/|$)")

    def sub(path: str) -> str:
        return onnx.sub(names["python"], path)

    routes = sorted(edge_routes(model_name).values())
    table: dict[str, Any] = {
        "routes": [[r.method, [sub(p) for p in r.paths]] for r in routes],
        "pin_paths": [sub(p) for p in pin_paths(model_name)],
    }
    if deep_health_port is not None:
        table["deep_health"] = {"path": DEEP_HEALTH_PATH, "port": int(deep_health_port)}
    return table


def _pattern(path: str) -> re.Pattern[str]:
    """An ALB path pattern: case-sensitive, `*` any run of characters, `?` one character."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in path))


FORWARD, DEEP, ARM = "forward", "deep-health", "arm"


class Edge:
    """The listener's decision for one request: (FORWARD, track or "" for weighted), (ARM, track) for an experiment
    cell's rule, (DEEP, "") for the deep-health rule (a stable target at `deep_port`), or (status, message)."""

    def __init__(self, table: dict[str, Any] | None, tooling_cidrs: Sequence[str]):
        self.filtered = table is not None
        self.routes = [(m, [_pattern(p) for p in ps]) for m, ps in (table or {}).get("routes", [])]
        self.pins = [_pattern(p) for p in (table or {}).get("pin_paths", [])]
        self.tooling = [ipaddress.ip_network(c, strict=False) for c in tooling_cidrs]
        deep = (table or {}).get("deep_health")
        self.deep_path: str | None = deep["path"] if deep else None
        self.deep_port: int | None = int(deep["port"]) if deep else None

    def decide(
        self,
        method: str,
        target: str,
        track: str | None,
        source: str,
        canary: bool,
        arm: str | None = None,
        arms: Mapping[str, str] | None = None,
    ) -> tuple[Any, str]:
        """`arm`: the request's ARM_HEADER; `arms`: {header value: track} of the arm rules."""
        path = target.split("?", 1)[0]
        if not self.filtered:
            return FORWARD, track or ""
        if track is not None:
            pinned = (
                canary
                and track.lower() in (STABLE, CANARY)  # ALB header values match case-insensitively
                and any(p.fullmatch(path) for p in self.pins)
                and any(ipaddress.ip_address(source) in n for n in self.tooling)
            )
            if pinned:
                return FORWARD, track.lower()
            return 403, f"{TRACK_HEADER} is honoured only from the release tooling's addresses\n"
        # ALB header values match case-insensitively; the cells' values are lower-case slugs.
        cell = (arms or {}).get(arm.lower()) if arm else None
        if cell is not None and method == "POST" and any(p.fullmatch(path) for p in self.pins):
            return ARM, cell
        if method == "GET" and path == self.deep_path:
            return DEEP, ""
        for m, ps in self.routes:
            if m == method and any(p.fullmatch(path) for p in ps):
                return FORWARD, ""
        return 404, "Not Found\n"


# ---------------------------------------------------------------- faults
# kind -> {parameter: (rule, what the rule says)}, parameters in the order they are checked.
_FRACTION: tuple[Callable[[float], bool], str] = (lambda v: 0 <= v <= 1, "a fraction in [0, 1]")
_NON_NEGATIVE: tuple[Callable[[float], bool], str] = (lambda v: v >= 0, ">= 0")
_FAULT_PARAMS: dict[str, dict[str, tuple[Callable[[float], bool], str]]] = {
    "errors": {"fraction": _FRACTION},
    "latency": {"ms": _NON_NEGATIVE, "jitter_ms": _NON_NEGATIVE},
    "loss": {"fraction": _FRACTION},
    "blackhole": {},
    "reset": {"fraction": _FRACTION},
    "bandwidth": {"bytes_per_s": (lambda v: v > 0, "> 0")},
    # Not the network: the model itself slow (a throttled GPU, a bad engine build). Every path to the model runs
    # through this process (the listener and the Service), so the delay is added to inference requests only.
    "slow-model": {"ms": (lambda v: v > 0, "> 0")},
}
FAULT_KINDS: tuple[str, ...] = tuple(_FAULT_PARAMS)


def validate_fault(fault: Mapping[str, Any]) -> dict[str, Any]:
    """The fault as the child applies it (latency's jitter_ms defaulted to 10 % of ms, numbers as floats); ValueError
    naming the kind, the value and the rule for an unknown kind, an unknown parameter or a value out of range."""
    if not isinstance(fault, Mapping):
        raise ValueError(f"a fault is a mapping with a kind in {FAULT_KINDS}, not {fault!r}")
    kind = fault.get("kind")
    if kind not in _FAULT_PARAMS:
        raise ValueError(f"fault kind {kind!r} is not one of {FAULT_KINDS}")
    params = _FAULT_PARAMS[kind]
    unknown = sorted(set(fault) - {"kind", *params})
    if unknown:
        raise ValueError(f"fault {kind!r}: {unknown} are not among its parameters {sorted(params)}")
    out: dict[str, Any] = {"kind": kind}
    for key, (ok, rule) in params.items():
        # jitter_ms's default is 10 % of ms, which is checked before it.
        value = 0.1 * out["ms"] if key == "jitter_ms" and key not in fault else fault.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not ok(value):
            raise ValueError(f"fault {kind!r}: {key}={value!r}, but {key} must be {rule}")
        out[key] = float(value)
    return out


# ---------------------------------------------------------------- parent side
class AlbProcess:
    """Start the child, `set(region, weight, targets)` to route, `fault(region, fault)` to inject a network fault,
    `counts()` for what each track answered, `requests(since)` for the request log."""

    def __init__(
        self,
        sup: Any,
        workdir: Path,
        listeners: dict[str, tuple[str, int]],
        *,
        seed: int | None = 0,  # None: a random one
        timeout: float = 10.0,
        ready_timeout: float = 30.0,
        name: str = "alb",
        model: str | None = None,
        tooling_cidrs: Sequence[str] = (),
        deep_health_port: int | None = None,
        services: dict[str, tuple[str, int]] | None = None,
    ):
        """`model`: `model.name`, whose edge the child applies (rehearsal_routes); None routes every request and
        honours the track header from anywhere. `tooling_cidrs`: the sources whose track header pins (the
        region's `load_balancer.release_tooling_cidrs`). `deep_health_port`: the deep-health sidecar's port beside
        each target, which GET DEEP_HEALTH_PATH is forwarded to (a rule of the model's edge: needs `model`).
        `timeout`: the load balancer's, for a target's answer and for a request a fault holds. `services`: region ->
        the address of its in-cluster Service (the pods' own path to the Triton pods, e.g. the deep-health sidecar's):
        the region's targets and fault, no listener rules, not in the request log or counts."""
        if deep_health_port is not None and model is None:
            raise ValueError("deep_health_port is a rule of the model's edge: it needs model")
        self.sup, self.workdir, self.name = sup, Path(workdir), name
        self.regions = tuple(listeners)
        self.spec = {
            "listeners": {r: list(a) for r, a in listeners.items()},
            "seed": seed,
            "timeout": timeout,
            "edge": rehearsal_routes(model, deep_health_port) if model is not None else None,
            "tooling_cidrs": list(tooling_cidrs),
            "services": {r: list(a) for r, a in (services or {}).items()},
        }
        self.ready_timeout = ready_timeout
        self.child: Child | None = None
        self.control: str | None = None
        self._lock = threading.Lock()
        self._last_counts: list[list] = []
        self._log: list[list] = []  # the child's request log as read so far (it outlives the child)
        self._log_lock = threading.Lock()

    def start(self) -> AlbProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        spec, started = self.workdir / "alb.json", self.workdir / "alb.started"
        spec.write_text(json.dumps(self.spec))
        self.child, port = start_announcing(
            self.sup,
            self.name,
            [sys.executable, "-m", "drills.rehearsal.alb_proc", str(spec), str(started)],
            started,
            "the load-balancer model",
            self.ready_timeout,
        )
        self.control = f"http://127.0.0.1:{int(port)}"
        return self

    def _call(self, path: str, body: dict | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        assert self.control is not None, "start() first"
        req = urllib.request.Request(
            self.control + path,
            data=data,
            method="POST" if data else "GET",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def set(
        self,
        region: str,
        weight: int,
        targets: dict[str, list[tuple[str, str, int, str]]],
        canary: bool | None = None,
        capacity_rps: float | None = None,
        queue_ms: float = 0.0,
        arms: Mapping[str, str] | None = None,
    ) -> None:
        """targets: track -> [(pod name, address, port, version)] of its ready pods; `canary`: a canary is configured
        (the header pins exist; default: the canary has targets); `capacity_rps`: the inference requests a second
        the ready pods carry (None: unlimited), a request waiting at most `queue_ms` for its turn (see the module);
        `arms`: {ARM_HEADER value: track} of the experiment cells' rules (see the module). Returns once the child
        routes by it."""
        if capacity_rps is not None and capacity_rps <= 0:
            raise ValueError(f"capacity_rps must be > 0 or None, got {capacity_rps}")
        with self._lock:
            self._call(
                "/route",
                {
                    "region": region,
                    "weight": weight,
                    "targets": {t: [list(p) for p in ps] for t, ps in targets.items()},
                    "canary": bool(targets.get(CANARY)) if canary is None else canary,
                    "capacity_rps": capacity_rps,
                    "queue_ms": float(queue_ms),
                    "arms": dict(arms or {}),
                },
            )

    def fault(self, region: str, fault: Mapping[str, Any] | None) -> None:
        """Inject `fault` (see the module's list; validate_fault) on `region`'s data path, replacing any before; None
        clears. Returns once the child applies it."""
        if region not in self.regions:
            raise ValueError(f"region {region!r} has no listener here ({sorted(self.regions)})")
        checked = validate_fault(fault) if fault is not None else None
        with self._lock:
            self._call("/fault", {"region": region, "fault": checked})

    def requests(self, since: int = 0) -> tuple[int, list[list]]:
        """(next index, the request log's entries from `since`): [wall time of arrival, region, status counted,
        target ms or None, path] (see the module). After stop(), what the child logged up to then."""
        with self._log_lock:
            if self.child is not None and self.child.alive():
                with contextlib.suppress(OSError):
                    self._log.extend(self._call(f"/requests?since={len(self._log)}")["entries"])
            return len(self._log), self._log[since:]

    def counts(self) -> list[list]:
        """[[wall second, region, track, version, pinned, requests answered]]; `pinned`: the request named its track
        (`X-Reco-Track`: the gates' scoring), else the weight routed it (users' traffic)."""
        if self.child is not None and self.child.alive():
            with contextlib.suppress(OSError):
                self._last_counts = self._call("/counts")
        return self._last_counts

    def stop(self) -> None:
        if self.child is None:
            return
        self.counts()
        self.requests()
        self.sup.stop(self.child, first=signal.SIGTERM, first_to_group=False, grace=5.0)
        self.child = None


# ---------------------------------------------------------------- child side
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive to clients, as an ALB listener
    disable_nagle_algorithm = True  # headers and body are two writes: Nagle + delayed ACK would add 40 ms per reply

    def log_message(self, *a: Any) -> None:
        return

    def do_GET(self) -> None:
        self._forward("GET")

    def do_POST(self) -> None:
        self._forward("POST")

    def _forward(self, method: str) -> None:
        arrived = time.time()
        srv = cast("_Proxy", self.server)
        self._probe = self.headers.get("User-Agent") == PROBE_USER_AGENT  # the drill's own probe, not a user
        path = self.path.split("?", 1)[0]
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        header = self.headers.get(TRACK_HEADER)
        table = srv.state.table
        verdict, track = srv.edge.decide(
            method,
            self.path,
            header,
            self.client_address[0],
            bool(table.get("canary")),
            self.headers.get(ARM_HEADER),
            table.get("arms"),
        )
        if verdict not in (FORWARD, DEEP, ARM):
            self._answer(arrived, path, int(verdict), None, "text/plain", track.encode())
            return
        fault = srv.state.fault or {}
        kind = fault.get("kind")
        if kind == "errors" and srv.rng.random() < fault["fraction"]:
            self._answer(arrived, path, 502, None, "text/plain", b"502 Bad Gateway (injected fault: errors)")
            return
        if kind == "blackhole" or (kind == "loss" and srv.rng.random() < fault["fraction"]):
            srv.record(arrived, path, 504, None, self._probe)
            self._hold(srv)
            return
        if kind == "reset" and srv.rng.random() < fault["fraction"]:
            srv.record(arrived, path, 502, None, self._probe)
            self._reset()
            return
        if kind == "latency":
            delay_ms = max(0.0, srv.rng.normalvariate(fault["ms"], fault["jitter_ms"]))
        elif kind == "slow-model" and path.endswith("/infer"):
            delay_ms = fault["ms"]
        else:
            delay_ms = 0.0
        if delay_ms:
            srv.stopping.wait(delay_ms / 1000)
        deep = verdict == DEEP
        limited = not deep and not self._probe and srv.owner is None and path.endswith("/infer")
        if limited and not srv.admit(table):
            self._answer(arrived, path, 503, 0.0, "text/plain", b"503 over capacity: the model's queue is full")
            return
        pinned = STABLE if deep else (track or None)
        port = srv.edge.deep_port if deep else None
        tried: set[str] = set()
        for _ in range(3):
            picked = srv.pick(pinned, tried, table)
            if picked is None:
                break
            t, pod = picked
            t0 = time.perf_counter()
            try:
                status, ctype, data = srv.send(pod, method, self.path, body, port)
            except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
                tried.add(pod[0])  # reached no server: another target
                continue
            except OSError as e:  # a timeout: the request may have been served; not retried
                self._answer(arrived, path, 504, None, "text/plain", f"upstream {pod[0]}: {e}".encode())
                return
            target_ms = delay_ms + (time.perf_counter() - t0) * 1000
            if not deep:  # the deep-health target group is no track's: counts() stays the users' split
                srv.count(t, pod[3], verdict == FORWARD and pinned is not None)
            self._answer(arrived, path, status, target_ms, ctype, data, fault.get("bytes_per_s"))
            return
        self._answer(arrived, path, 503, None, "text/plain", b"no ready target for this request")

    def _answer(
        self,
        arrived: float,
        path: str,
        status: int,
        target_ms: float | None,
        ctype: str,
        data: bytes,
        bytes_per_s: float | None = None,
    ) -> None:
        cast("_Proxy", self.server).record(arrived, path, status, target_ms, self._probe)
        self._reply(status, ctype, data, bytes_per_s)

    def _hold(self, srv: _Proxy) -> None:
        """A lost request: no answer until the load balancer's timeout, then the connection closes unanswered (at
        once when the child stops: a held request never delays shutdown)."""
        srv.stopping.wait(srv.timeout)
        self.close_connection = True

    def _reset(self) -> None:
        """TCP RST instead of an answer: SO_LINGER 0, then close before the server's own close could send a FIN."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # it holds a reference that would defer the socket's close (and the RST) past a FIN
        self.connection.close()

    def _reply(self, status: int, ctype: str, data: bytes, bytes_per_s: float | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype or "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            # The client asked for close (or spoke HTTP/1.0): say so, as any HTTP/1.1 server does (RFC 9112 9.6).
            # Without it a pooling client keeps the socket we are about to close and its next request on it fails
            # with "Remote end closed connection without response" (seen as 1-in-40 drill probe failures).
            self.send_header("Connection", "close")
        self.end_headers()
        if bytes_per_s is None:
            self.wfile.write(data)
            return
        # A throttled path: the body leaves in 10 ms slices, each when the rate allows, so it takes len/bytes_per_s.
        srv = cast("_Proxy", self.server)
        step, start = max(1, int(bytes_per_s / 100)), time.monotonic()
        for off in range(0, len(data), step):
            end = min(len(data), off + step)
            self.wfile.write(data[off:end])
            if srv.stopping.wait(max(0.0, start + end / bytes_per_s - time.monotonic())):
                return


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # socketserver's listen backlog of 5 drops SYNs when a hundred clients connect at once

    def __init__(
        self,
        region: str,
        address: str,
        port: int,
        rng: random.Random,
        timeout: float,
        counts: dict,
        log: list[list],
        lock: threading.Lock,
        edge: Edge,
        stopping: threading.Event,
        owner: _Proxy | None = None,
    ):
        """`owner`: the region's listener whose targets and fault this one shares: an in-cluster Service (no listener
        rules, not in the load balancer's metrics or counts)."""
        super().__init__((address, port), _Handler)
        self.region, self.rng, self.timeout, self._counts, self._clock = region, rng, timeout, counts, lock
        self.log, self.edge, self.stopping = log, edge, stopping
        self.owner = owner
        self.table: dict[str, Any] = {"weight": 0, "targets": {}, "canary": False}
        self.fault: dict[str, Any] | None = None  # replaced whole by the control endpoint, like the table
        self._next_free = 0.0  # monotonic time of the next free inference turn (admit)
        self._local = threading.local()

    def admit(self, table: dict[str, Any]) -> bool:
        """Wait for this request's turn at the table's capacity (GCRA) and return True, or False at once when the
        turn is more than its queue_ms away (the request is shed and takes no turn)."""
        rps = table.get("capacity_rps")
        if not rps:
            return True
        with self._clock:
            now = time.monotonic()
            start = max(self._next_free, now - BURST_S)  # a second's worth may arrive at once: batched together
            wait = start - now
            if wait > table.get("queue_ms", 0.0) / 1000:
                return False
            self._next_free = start + 1.0 / rps
        if wait > 0:
            self.stopping.wait(wait)
        return True

    @property
    def state(self) -> _Proxy:
        """Where this listener's table and fault live: its own, or its owner's (a Service listener)."""
        return self.owner or self

    def pick(self, track: str | None, exclude: set[str], table: dict[str, Any]) -> tuple[str, list] | None:
        """`table`: one consistent snapshot (replaced whole by the control endpoint)."""
        targets = table["targets"]
        if not track:
            canary = [p for p in targets.get("canary", []) if p[0] not in exclude]
            w = table["weight"]
            track = "canary" if canary and w > 0 and self.rng.random() * 100 < w else "stable"
        pods = [p for p in targets.get(track, []) if p[0] not in exclude]
        return (track, self.rng.choice(pods)) if pods else None

    def send(
        self, pod: list, method: str, path: str, body: bytes | None, port: int | None = None
    ) -> tuple[int, str, bytes]:
        """`port`: another port of the pod's address than its target port (the deep-health sidecar's)."""
        name, addr, port = pod[0], pod[1], port or pod[2]
        conns = self._local.__dict__.setdefault("conns", {})
        key = (name, addr, port)
        for attempt in (0, 1):
            c = conns.get(key)
            fresh = c is None
            if fresh:
                c = conns[key] = http.client.HTTPConnection(addr, port, timeout=self.timeout)
            try:
                c.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
                r = c.getresponse()
                return r.status, r.getheader("Content-Type", ""), r.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                c.close()
                conns.pop(key, None)
                if attempt or fresh:  # a stale keep-alive once; a dead pod is the caller's to route around
                    raise
            except BaseException:
                c.close()
                conns.pop(key, None)
                raise
        raise ConnectionResetError(name)

    def count(self, track: str, version: str, pinned: bool) -> None:
        if self.owner is not None:
            return
        with self._clock:
            k = (int(time.time()), self.region, track, version, pinned)
            self._counts[k] = self._counts.get(k, 0) + 1

    def record(self, arrived: float, path: str, status: int, target_ms: float | None, probe: bool = False) -> None:
        if self.owner is not None:  # in-cluster traffic never reaches the load balancer's metrics
            return
        with self._clock:
            self.log.append([arrived, self.region, status, target_ms, path, probe])


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    started = Path(argv[1])
    counts: dict = {}
    log: list[list] = []  # every request of every listener, kept whole: a rehearsal is minutes long
    lock = threading.Lock()
    stopping = threading.Event()
    rng = random.Random(spec.get("seed"))
    edge = Edge(spec.get("edge"), spec.get("tooling_cidrs") or [])
    timeout = float(spec.get("timeout", 10.0))
    proxies = {
        r: _Proxy(r, a, int(p), rng, timeout, counts, log, lock, edge, stopping)
        for r, (a, p) in spec["listeners"].items()
    }
    services = [
        _Proxy(r, a, int(p), rng, timeout, counts, log, lock, Edge(None, []), stopping, owner=proxies[r])
        for r, (a, p) in (spec.get("services") or {}).items()
    ]

    class Control(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            return

        def _json(self, obj: Any) -> None:
            data = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            if self.path == "/route":
                proxies[body["region"]].table = {
                    "weight": int(body["weight"]),
                    "targets": body["targets"],
                    "canary": bool(body.get("canary")),
                    "capacity_rps": body.get("capacity_rps"),
                    "queue_ms": float(body.get("queue_ms") or 0.0),
                    "arms": dict(body.get("arms") or {}),
                }
            elif self.path == "/fault":
                proxies[body["region"]].fault = body["fault"]  # validated by the parent (validate_fault)
            else:
                self.send_error(404)
                return
            self._json({"ok": True})

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/counts":
                with lock:
                    out: Any = [[*k, n] for k, n in sorted(counts.items())]
            elif url.path == "/requests":
                since = int(urllib.parse.parse_qs(url.query).get("since", ["0"])[0])
                with lock:
                    out = {"next": len(log), "entries": log[since:]}
            else:
                self.send_error(404)
                return
            self._json(out)

    control = ThreadingHTTPServer(("127.0.0.1", 0), Control)
    control.daemon_threads = True
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in [*proxies.values(), *services, control]]
    for t in threads:
        t.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    signal.signal(signal.SIGINT, lambda *a: done.set())
    announce(started, str(control.server_address[1]))
    done.wait()
    stopping.set()  # held and paced requests let go
    for s in [*proxies.values(), *services, control]:
        s.shutdown()
        s.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
