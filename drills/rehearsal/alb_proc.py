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
  3. the routes of infra.names.edge_routes (method + ALB path pattern): weighted forward;
  4. anything else: 404 (the listener's default action).
Stand-in substitution: the rehearsal's CPU Triton serves the python-backend `<model>_py` where the stacks declare
the ONNX fallback (its stack copy declares it for every capability), so the table the child routes by names `_py`
wherever infra.names.edge_routes names `<model>_onnx` (`rehearsal_routes`); the TensorRT routes are kept.

Weighted forward in the child (unchanged from the in-process model): the canary with probability weight/100 when
it has targets, else stable; a request that reached no server (connection refused/reset: a pod that just died)
goes to another target; a timeout is not retried.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import random
import re
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from drills.rehearsal.procs import announce, start_announcing
from infra.names import CANARY, STABLE, TRACK_HEADER, edge_routes, pin_paths, triton_models

if TYPE_CHECKING:
    from drills.rehearsal.procs import Child


# ---------------------------------------------------------------- the edge's table, stand-in substituted
def rehearsal_routes(model_name: str) -> dict[str, Any]:
    """The listener rules the child applies, as JSON: {"routes": [[method, [patterns]]], "pin_paths": [patterns]},
    from infra.names.edge_routes / pin_paths with the ONNX fallback's name replaced by the python-backend stand-in
    the rehearsal serves in its place (`<model>_onnx` -> `<model>_py`)."""
    names = triton_models(model_name)

    onnx = re.compile(rf"(?<=/){re.escape(names['onnx'])}(?=/|$)")

    def sub(path: str) -> str:
        return onnx.sub(names["python"], path)

    routes = sorted(edge_routes(model_name).values())
    return {
        "routes": [[r.method, [sub(p) for p in r.paths]] for r in routes],
        "pin_paths": [sub(p) for p in pin_paths(model_name)],
    }


def _pattern(path: str) -> re.Pattern[str]:
    """An ALB path pattern: case-sensitive, `*` any run of characters, `?` one character."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in path))


class Edge:
    """The listener's decision for one request: ("forward", track or None for weighted), or (status, message)."""

    def __init__(self, table: dict[str, Any] | None, tooling_cidrs: Sequence[str]):
        self.filtered = table is not None
        self.routes = [(m, [_pattern(p) for p in ps]) for m, ps in (table or {}).get("routes", [])]
        self.pins = [_pattern(p) for p in (table or {}).get("pin_paths", [])]
        self.tooling = [ipaddress.ip_network(c, strict=False) for c in tooling_cidrs]

    def decide(self, method: str, target: str, track: str | None, source: str, canary: bool) -> tuple[Any, str]:
        path = target.split("?", 1)[0]
        if not self.filtered:
            return "forward", track or ""
        if track is not None:
            pinned = (
                canary
                and track.lower() in (STABLE, CANARY)  # ALB header values match case-insensitively
                and any(p.fullmatch(path) for p in self.pins)
                and any(ipaddress.ip_address(source) in n for n in self.tooling)
            )
            if pinned:
                return "forward", track.lower()
            return 403, f"{TRACK_HEADER} is honoured only from the release tooling's addresses\n"
        for m, ps in self.routes:
            if m == method and any(p.fullmatch(path) for p in ps):
                return "forward", ""
        return 404, "Not Found\n"


# ---------------------------------------------------------------- parent side
class AlbProcess:
    """Start the child, `set(region, weight, targets)` to route, `counts()` for what each track answered."""

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
    ):
        """`model`: `model.name`, whose edge the child applies (rehearsal_routes); None routes every request and
        honours the track header from anywhere. `tooling_cidrs`: the sources whose track header pins (the
        region's `load_balancer.release_tooling_cidrs`)."""
        self.sup, self.workdir, self.name = sup, Path(workdir), name
        self.spec = {
            "listeners": {r: list(a) for r, a in listeners.items()},
            "seed": seed,
            "timeout": timeout,
            "edge": rehearsal_routes(model) if model is not None else None,
            "tooling_cidrs": list(tooling_cidrs),
        }
        self.ready_timeout = ready_timeout
        self.child: Child | None = None
        self.control: str | None = None
        self._lock = threading.Lock()
        self._last_counts: list[list] = []

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
    ) -> None:
        """targets: track -> [(pod name, address, port, version)] of its ready pods; `canary`: a canary is configured
        (the header pins exist; default: the canary has targets). Returns once the child routes by it."""
        with self._lock:
            self._call(
                "/route",
                {
                    "region": region,
                    "weight": weight,
                    "targets": {t: [list(p) for p in ps] for t, ps in targets.items()},
                    "canary": bool(targets.get(CANARY)) if canary is None else canary,
                },
            )

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
        srv = cast("_Proxy", self.server)
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        header = self.headers.get(TRACK_HEADER)
        table = srv.table
        verdict, track = srv.edge.decide(method, self.path, header, self.client_address[0], bool(table.get("canary")))
        if verdict != "forward":
            self._reply(int(verdict), "text/plain", track.encode())
            return
        pinned = track or None
        tried: set[str] = set()
        for _ in range(3):
            picked = srv.pick(pinned, tried, table)
            if picked is None:
                break
            t, pod = picked
            try:
                status, ctype, data = srv.send(pod, method, self.path, body)
            except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
                tried.add(pod[0])  # reached no server: another target
                continue
            except OSError as e:  # a timeout: the request may have been served; not retried
                self._reply(504, "text/plain", f"upstream {pod[0]}: {e}".encode())
                return
            srv.count(t, pod[3], pinned is not None)
            self._reply(status, ctype, data)
            return
        self._reply(503, "text/plain", b"no ready target for this request")

    def _reply(self, status: int, ctype: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype or "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            # The client asked for close (or spoke HTTP/1.0): say so, as any HTTP/1.1 server does (RFC 9112 9.6).
            # Without it a pooling client keeps the socket we are about to close and its next request on it fails
            # with "Remote end closed connection without response" (seen as 1-in-40 drill probe failures).
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        region: str,
        address: str,
        port: int,
        rng: random.Random,
        timeout: float,
        counts: dict,
        lock: threading.Lock,
        edge: Edge,
    ):
        super().__init__((address, port), _Handler)
        self.region, self.rng, self.timeout, self._counts, self._clock = region, rng, timeout, counts, lock
        self.edge = edge
        self.table: dict[str, Any] = {"weight": 0, "targets": {}, "canary": False}
        self._local = threading.local()

    def pick(self, track: str | None, exclude: set[str], table: dict[str, Any]) -> tuple[str, list] | None:
        """`table`: one consistent snapshot (replaced whole by the control endpoint)."""
        targets = table["targets"]
        if track not in ("stable", "canary"):
            canary = [p for p in targets.get("canary", []) if p[0] not in exclude]
            w = table["weight"]
            track = "canary" if canary and w > 0 and self.rng.random() * 100 < w else "stable"
        pods = [p for p in targets.get(track, []) if p[0] not in exclude]
        return (track, self.rng.choice(pods)) if pods else None

    def send(self, pod: list, method: str, path: str, body: bytes | None) -> tuple[int, str, bytes]:
        name, addr, port = pod[0], pod[1], pod[2]
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
        with self._clock:
            k = (int(time.time()), self.region, track, version, pinned)
            self._counts[k] = self._counts.get(k, 0) + 1


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    started = Path(argv[1])
    counts: dict = {}
    lock = threading.Lock()
    rng = random.Random(spec.get("seed"))
    edge = Edge(spec.get("edge"), spec.get("tooling_cidrs") or [])
    proxies = {
        r: _Proxy(r, a, int(p), rng, float(spec.get("timeout", 10.0)), counts, lock, edge)
        for r, (a, p) in spec["listeners"].items()
    }

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
            proxies[body["region"]].table = {
                "weight": int(body["weight"]),
                "targets": body["targets"],
                "canary": bool(body.get("canary")),
            }
            self._json({"ok": True})

        def do_GET(self) -> None:
            with lock:
                self._json([[*k, n] for k, n in sorted(counts.items())])

    control = ThreadingHTTPServer(("127.0.0.1", 0), Control)
    control.daemon_threads = True
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in [*proxies.values(), control]]
    for t in threads:
        t.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    signal.signal(signal.SIGINT, lambda *a: done.set())
    announce(started, str(control.server_address[1]))
    done.wait()
    for s in [*proxies.values(), control]:
        s.shutdown()
        s.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
