"""ProbeAdapter speaking Triton's V2 HTTP protocol: readiness and inference, per region and through the name.

- `ready(region)`: GET /v2/health/ready on the region's endpoint (what the Route 53 health check probes).
- `infer(region)`: POST /v2/models/<model>/infer with a batch-1 request built from the model's own metadata
  (GET /v2/models/<model>: input names, datatypes, shapes), so the probe follows the model's signature.
- `service(client)`: one inference through the service name as a client sees it: a `Resolver` answers which
  region the name points that client to. `SystemResolver` asks the system resolver (AWS); `PolicyResolver`
  models clients over a DNS policy function with one TTL cache per client (tests; any backend whose DNS is a
  model). Many clients with staggered caches show the gradual move of traffic a TTL produces.
Latency is measured with perf_counter (real round trips); timestamps come from the injectable clock.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

import requests
from requests.adapters import HTTPAdapter

from drills.adapters.base import ProbeResult
from drills.clock import Clock
from infra.names import PROBE_USER_AGENT

_ZERO = {"BOOL": False, "BYTES": ""}


class Resolver(Protocol):
    def resolve(self, client: int) -> tuple[str | None, str | None]:
        """(region the name resolves to for this client, or None if unknown; base URL, or None: no answer)."""


class _ServerName(HTTPAdapter):
    """TLS to a load balancer's own DNS name while verifying the certificate for the service name (SNI and
    hostname check on `server_name`), so regional probes need no `verify=False`."""

    def __init__(self, server_name: str, **kw: Any):
        self.server_name = server_name
        super().__init__(**kw)

    def init_poolmanager(self, *a: Any, **kw: Any) -> None:
        kw["server_hostname"] = self.server_name
        kw["assert_hostname"] = self.server_name
        super().init_poolmanager(*a, **kw)


def infer_body(metadata: dict) -> dict:
    """A batch-1 V2 inference request of zeros matching the model's inputs (-1 dims become 1)."""
    inputs = []
    for i in metadata.get("inputs", []):
        shape = [1 if d in (-1, None) else int(d) for d in i.get("shape", [1])] or [1]
        n = 1
        for d in shape:
            n *= d
        dt = i.get("datatype", "FP32")
        zero = _ZERO.get(dt, 0.0 if dt.startswith(("FP", "BF")) else 0)
        inputs.append({"name": i["name"], "shape": shape, "datatype": dt, "data": [zero] * n})
    return {"inputs": inputs}


class TritonHttpProbe:
    def __init__(
        self,
        endpoints: dict[str, str],
        model: str,
        clock: Clock,
        resolver: Resolver | None = None,
        *,
        timeout: float = 2.0,
        server_name: str | None = None,
        body: dict | None = None,
        models: dict[str, str] | None = None,
    ):
        """`endpoints`: region -> base URL (http://127.0.0.1:8000, https://<lb dns name>); `server_name`: the
        certificate's name when endpoints are load balancers behind a TLS listener for the service name; `models`:
        region -> the Triton model to infer on there, where it is not `model` (a region serving the ONNX fallback)."""
        self.endpoints, self.model, self.clock, self.resolver = endpoints, model, clock, resolver
        self.models = dict(models or {})
        self.timeout, self.server_name = timeout, server_name
        self._fixed_body = body
        self._bodies: dict[str, dict] = {}
        self.session = requests.Session()
        if server_name:
            for base in endpoints.values():
                if base.startswith("https://"):
                    self.session.mount(base, _ServerName(server_name))

    def _headers(self) -> dict[str, str]:
        # Fresh connections: a probe must see a dead server as dead, not a pooled socket, and must not hold a
        # keep-alive connection that delays a Triton shutdown.
        h = {"Connection": "close", "User-Agent": PROBE_USER_AGENT}
        if self.server_name:
            h["Host"] = self.server_name
        return h

    def _call(self, target: str, kind: str, base: str | None, region: str | None, client: int | None) -> ProbeResult:
        t = self.clock.now()
        start = time.perf_counter()
        status = None
        try:
            if base is None:
                raise ConnectionError("the name resolved to no address")
            if kind == "ready":
                r = self.session.get(f"{base}/v2/health/ready", headers=self._headers(), timeout=self.timeout)
            else:
                model = self.models.get(region or "", self.model)
                body = self._fixed_body or self._body(base, model)
                r = self.session.post(
                    f"{base}/v2/models/{model}/infer", json=body, headers=self._headers(), timeout=self.timeout
                )
            status = r.status_code
            ok = r.status_code == 200
            err = None if ok else f"HTTP {r.status_code}"
            if ok and kind == "infer" and not r.json().get("outputs"):
                ok, err = False, "no outputs in the inference response"
        except (requests.RequestException, ConnectionError, ValueError) as e:
            ok, err = False, type(e).__name__ + (f": {e}" if str(e) else "")
        ms = (time.perf_counter() - start) * 1000
        return ProbeResult(
            t=t,
            target=target,
            kind=kind,
            ok=ok,
            latency_ms=round(ms, 3),
            status=status,
            region=region,
            client=client,
            error=err,
        )

    def _body(self, base: str, model: str) -> dict:
        key = f"{base} {model}"
        if key not in self._bodies:
            r = self.session.get(f"{base}/v2/models/{model}", headers=self._headers(), timeout=self.timeout)
            r.raise_for_status()
            self._bodies[key] = infer_body(r.json())
        return self._bodies[key]

    def ready(self, region: str) -> ProbeResult:
        return self._call(region, "ready", self.endpoints.get(region), region, None)

    def infer(self, region: str) -> ProbeResult:
        return self._call(region, "infer", self.endpoints.get(region), region, None)

    def service(self, client: int) -> ProbeResult:
        if self.resolver is None:
            raise LookupError("no resolver configured for service probes")
        region, base = self.resolver.resolve(client)
        return self._call("service", "infer", base, region, client)


class PolicyResolver:
    """Clients of a modelled DNS: each caches its answer for the record's TTL, as a stub resolver does, then asks
    `answer()` (region -> share) again and picks by share. Cache expiries are staggered across clients."""

    def __init__(
        self,
        answer: Callable[[], dict[str, float]],
        endpoints: dict[str, str],
        clock: Clock,
        ttl: float,
        clients: int = 8,
        seed: int = 7,
    ):
        self.answer, self.endpoints, self.clock, self.ttl = answer, endpoints, clock, ttl
        self.rng = random.Random(seed)
        self._cache: dict[int, tuple[str | None, float]] = {}
        self._clients = clients

    def resolve(self, client: int) -> tuple[str | None, str | None]:
        now = self.clock.now()
        hit = self._cache.get(client)
        if hit is None or now >= hit[1]:
            shares = self.answer()
            region = self.rng.choices(list(shares), weights=list(shares.values()))[0] if shares else None
            first = hit is None
            expires = now + (self.ttl * (client % self._clients + 1) / self._clients if first else self.ttl)
            self._cache[client] = (region, expires)
            hit = self._cache[client]
        return hit[0], self.endpoints.get(hit[0]) if hit[0] else None


class SystemResolver:
    """The service name through the system resolver (which honours the record's TTL). The region is found by
    matching the address against the load balancers' current addresses (`region_ips()`)."""

    def __init__(self, fqdn: str, region_ips: Callable[[], dict[str, str]], scheme: str = "https"):
        self.fqdn, self.region_ips, self.scheme = fqdn, region_ips, scheme

    def resolve(self, client: int) -> tuple[str | None, str | None]:
        try:
            ip = socket.getaddrinfo(self.fqdn, 443, proto=socket.IPPROTO_TCP)[0][4][0]
        except OSError:
            return None, None
        return self.region_ips().get(str(ip)), f"{self.scheme}://{self.fqdn}"
