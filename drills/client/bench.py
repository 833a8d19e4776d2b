"""Client overhead per request against a raw http.client call to the same local server (not a timed test).

    python -m drills.client.bench [--requests N] [--rows R] [--json]

A KServe V2 stand-in server (fixed answer of R scores, HTTP/1.1 keep-alive) runs in a child process so it does not
share the GIL with the measured calls. Three paths, interleaved request by request so drift hits all alike:
`raw` (http.client POST + read on a kept-alive connection), `client` (RankerClient.rank, no hedging: the caller's
thread does the I/O) and `client+hedging` (the hedging path: every attempt runs on a worker thread). Overhead is
the client path's percentile minus raw's.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import sys
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from drills.client import RankerClient, RankRequest
from drills.measure import percentile


def _serve(rows: int, port_out: mp.Queue) -> None:
    answer = json.dumps(
        {"model_name": "ranker", "outputs": [{"name": "score", "shape": [rows, 1], "data": list(range(rows))}]}
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize = 1 << 16  # headers and body in one segment, as Triton writes them (no Nagle/delayed-ACK stall)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_out.put(server.server_address[1])
    server.serve_forever()


def run(requests: int, rows: int) -> dict[str, dict[str, float]]:
    ports: mp.Queue = mp.Queue()
    server = mp.Process(target=_serve, args=(rows, ports), daemon=True)
    server.start()
    try:
        port = ports.get(timeout=10)
        req = RankRequest.from_inputs(list(range(rows)), [{"name": "x", "shape": [rows, 1], "data": [0.0] * rows}])
        raw = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        endpoints = {"local": f"http://127.0.0.1:{port}"}
        plain = RankerClient(endpoints, "ranker", deadline_ms=1000, attempt_timeout_ms=1000)
        hedged = RankerClient(endpoints, "ranker", deadline_ms=1000, attempt_timeout_ms=1000, hedging_delay_ms=500)

        def raw_call() -> None:
            raw.request("POST", "/v2/models/ranker/infer", body=req.body, headers={"Content-Type": "application/json"})
            raw.getresponse().read()

        def client_call(c: RankerClient) -> Callable[[], None]:
            def call() -> None:
                if c.rank(req).degraded:
                    raise RuntimeError("the local server did not answer: the benchmark measures nothing")

            return call

        paths = {"raw": raw_call, "client": client_call(plain), "client+hedging": client_call(hedged)}
        times: dict[str, list[float]] = {p: [] for p in paths}
        for i in range(requests + 50):  # the first 50 rounds warm connections, threads and caches
            for name, call in paths.items():
                t0 = time.perf_counter()
                call()
                if i >= 50:
                    times[name].append((time.perf_counter() - t0) * 1000)
        raw.close()
        plain.close()
        hedged.close()
    finally:
        server.terminate()
        server.join()
    out = {p: {"p50_ms": percentile(t, 50) or 0.0, "p99_ms": percentile(t, 99) or 0.0} for p, t in times.items()}
    for p in ("client", "client+hedging"):
        out[p]["overhead_p50_us"] = (out[p]["p50_ms"] - out["raw"]["p50_ms"]) * 1000
        out[p]["overhead_p99_us"] = (out[p]["p99_ms"] - out["raw"]["p99_ms"]) * 1000
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m drills.client.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="measured requests per path (default 2000)")
    ap.add_argument("--rows", type=int, default=32, help="candidates per request (default 32)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    if args.requests < 2 or args.rows < 1:
        ap.error("--requests must be >= 2 and --rows >= 1")
    result = run(args.requests, args.rows)
    if args.json:
        json.dump({"requests": args.requests, "rows": args.rows, "paths": result}, sys.stdout, indent=2)
        print()
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ranker client overhead: {args.requests} requests per path, {args.rows} candidates, loopback")
    for col in ("path", "p50 ms", "p99 ms", "overhead p50 µs", "overhead p99 µs"):
        table.add_column(col, justify="left" if col == "path" else "right")
    for path, r in result.items():
        over = [f"{r[k]:+.0f}" if k in r else "" for k in ("overhead_p50_us", "overhead_p99_us")]
        table.add_row(path, f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}", *over)
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
