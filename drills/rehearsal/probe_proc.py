"""The drills' service probes in their own process: latencies measured where the drill's own work cannot add to them.

In the rehearsal the drill process also runs the DNS, health-check and replication models, the gates' scoring and
the Pulumi programs, all under one GIL. A probe timed there measures that wait too: in a prod release rehearsal on
this 2-core machine one probe took 581 ms (aborting the release on the 250 ms p99 objective) while the client
process, on the same servers over the same minutes, saw at most 96 ms. As `loadgen_proc` does for the clients,
`ProbeProcess` runs `TritonHttpProbe` in a supervised child (`python -m drills.rehearsal.probe_proc SPEC STARTED`)
and asks it for each probe over a loopback control endpoint; the child times the request, the drill stamps it with
its own clock. Same interface as any `ProbeAdapter`: `ready(region)`, `infer(region)`, `service(client)`.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from drills.adapters.base import ProbeResult
from drills.rehearsal.procs import Child, announce, start_announcing


class ProbeProcess:
    """A ProbeAdapter whose probes run in a child of `sup`. `stop()` when done (a backend closer)."""

    def __init__(
        self,
        sup: Any,
        workdir: Path,
        clock: Any,
        *,
        endpoints: dict[str, str],
        model: str,
        dns_server: tuple[str, int],
        name: str,
        port: int,
        ip_region: dict[str, str],
        timeout: float,
        seed: int,
        body: dict | None,
        ready_timeout: float = 30.0,
        child_name: str = "probes",
    ):
        self.sup, self.workdir, self.clock, self.child_name = sup, Path(workdir), clock, child_name
        self.spec: dict[str, Any] = {
            "endpoints": endpoints,
            "model": model,
            "dns_server": list(dns_server),
            "name": name,
            "port": port,
            "ip_region": ip_region,
            "timeout": timeout,
            "seed": seed,
            "body": body,
        }
        self.ready_timeout = ready_timeout
        self.child: Child | None = None
        self.control: str | None = None

    def start(self) -> ProbeProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        spec, started = self.workdir / "probes.json", self.workdir / "probes.started"
        spec.write_text(json.dumps(self.spec))
        self.child, port = start_announcing(
            self.sup,
            self.child_name,
            [sys.executable, "-m", "drills.rehearsal.probe_proc", str(spec), str(started)],
            started,
            "the probe process",
            self.ready_timeout,
        )
        self.control = f"http://127.0.0.1:{int(port)}"
        return self

    def _probe(self, **req: Any) -> ProbeResult:
        t = self.clock.now()
        body = json.dumps(req).encode()
        assert self.control is not None, "start() first"
        http = urllib.request.Request(
            self.control + "/probe", data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        # The child answers within its own request timeout; the margin covers this process being slow to read.
        with urllib.request.urlopen(http, timeout=self.spec["timeout"] + 30) as r:
            res = json.loads(r.read())
        return ProbeResult(t=t, **res)

    def ready(self, region: str) -> ProbeResult:
        return self._probe(kind="ready", region=region)

    def infer(self, region: str) -> ProbeResult:
        return self._probe(kind="infer", region=region)

    def service(self, client: int) -> ProbeResult:
        return self._probe(kind="service", client=client)

    def stop(self) -> None:
        if self.child is not None:
            self.sup.stop(self.child, first=signal.SIGTERM, first_to_group=False, grace=5.0)
            self.child = None


# ---------------------------------------------------------------- child side
def main(argv: list[str]) -> int:
    from drills.adapters.probes import TritonHttpProbe
    from drills.clock import SystemClock
    from drills.rehearsal.adapters import DnsClients

    spec = json.loads(Path(argv[0]).read_text())
    started = Path(argv[1])
    resolver = DnsClients(tuple(spec["dns_server"]), spec["name"], spec["ip_region"], spec["port"], seed=spec["seed"])
    probes = TritonHttpProbe(
        spec["endpoints"], spec["model"], SystemClock(), resolver, timeout=spec["timeout"], body=spec["body"]
    )
    # one probe at a time, as the drill asks them: a requests.Session is not shared across threads
    lock = threading.Lock()

    class Control(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            return

        def do_POST(self) -> None:
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            with lock:
                if req["kind"] == "service":
                    r = probes.service(int(req["client"]))
                else:
                    r = getattr(probes, req["kind"])(req["region"])
            d = r.to_dict()
            d.pop("t")
            data = json.dumps(d).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    control = ThreadingHTTPServer(("127.0.0.1", 0), Control)
    control.daemon_threads = True
    threading.Thread(target=control.serve_forever, daemon=True).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    signal.signal(signal.SIGINT, lambda *a: done.set())
    announce(started, str(control.server_address[1]))
    done.wait()
    control.shutdown()
    control.server_close()
    probes.session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
