"""One inference attempt against one region over HTTP/1.1 keep-alive: the only I/O of the client.

Connections: one `http.client.HTTPConnection` per thread per region (thread-local, so no lock on the hot path),
kept alive between requests and closed after any error. A kept-alive connection that the server closed while
idle fails on reuse before any answer; that is not the region's fault, so the attempt reconnects once.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from drills.client.errors import ClientConfigError
from drills.client.messages import AttemptError, RankRequest
from infra.names import ARM_HEADER

_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int | None
    prefix: str  # path prefix before /v2, "" for a plain base URL


def parse_endpoint(region: str, url: str) -> Endpoint:
    """`url` is a base URL, e.g. http://127.0.0.1:8001 or http://ranker-use1.example.internal."""
    key = f"endpoints[{region!r}]"
    if not isinstance(url, str):
        raise ClientConfigError(key, url, "must be a base URL string such as http://host:port")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ClientConfigError(key, url, f"malformed URL ({e})") from e
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientConfigError(key, url, "must be http:// or https:// with a host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ClientConfigError(key, url, "a base URL has no query, fragment or credentials")
    return Endpoint(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))


@dataclass(frozen=True)
class Outcome:
    """An attempt's result: scores, or an error and whether another region may be tried."""

    region: str
    scores: list[float] | None = None
    error: AttemptError | None = None
    retryable: bool = False


def parse_scores(data: bytes, output: str, rows: int) -> list[float]:
    """The `output` tensor of a V2 JSON response, one float per row; ValueError when it is not there."""
    try:
        for o in json.loads(data)["outputs"]:
            if o["name"] == output:
                scores = [float(x) for x in o["data"]]
                break
        else:
            raise ValueError(f"no output {output!r}")
    except (KeyError, TypeError) as e:
        raise ValueError(f"not a V2 response ({type(e).__name__}: {e})") from e
    if len(scores) != rows:
        raise ValueError(f"output {output!r} has {len(scores)} values for {rows} rows")
    return scores


class Transport:
    """Thread-safe: connections are per thread; `close()` closes every thread's connections."""

    def __init__(
        self, endpoints: Mapping[str, Endpoint], model: str, output: str, retryable_status: Collection[int]
    ) -> None:
        self._endpoints = dict(endpoints)
        self._paths = {r: f"{ep.prefix}/v2/models/{quote(model, safe='')}/infer" for r, ep in endpoints.items()}
        self._output = output
        self._retryable_status = frozenset(retryable_status)
        self._local = threading.local()
        self._open: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()

    def _conn(self, region: str) -> http.client.HTTPConnection:
        conns: dict[str, http.client.HTTPConnection] = self._local.__dict__.setdefault("conns", {})
        c = conns.get(region)
        if c is None:
            ep = self._endpoints[region]
            cls = http.client.HTTPSConnection if ep.scheme == "https" else http.client.HTTPConnection
            c = conns[region] = cls(ep.host, ep.port)
            with self._lock:
                self._open.add(c)
        return c

    def _drop(self, region: str) -> None:
        c = self._local.__dict__.get("conns", {}).pop(region, None)
        if c is not None:
            c.close()
            with self._lock:
                self._open.discard(c)

    def close(self) -> None:
        with self._lock:
            conns, self._open = self._open, set()
        for c in conns:
            c.close()

    def attempt(self, region: str, request: RankRequest, timeout_s: float) -> Outcome:
        """Send `request` to `region`, waiting at most `timeout_s` per socket operation. Never raises."""
        t0 = time.monotonic()
        # The arm header goes with every attempt (retries and hedges included): another region keeps the user's arm.
        headers = _HEADERS if request.arm is None else {**_HEADERS, ARM_HEADER: request.arm}

        def fail(kind: str, detail: str, status: int | None = None, retryable: bool = True) -> Outcome:
            ms = (time.monotonic() - t0) * 1000
            return Outcome(region, error=AttemptError(region, kind, detail[:200], ms, status), retryable=retryable)

        for stale_retry in (True, False):
            conn = self._conn(region)
            reused = conn.sock is not None
            timeout = max(1e-3, timeout_s - (time.monotonic() - t0))
            conn.timeout = timeout
            stage = "connect"
            try:
                if reused:
                    conn.sock.settimeout(timeout)
                else:
                    conn.connect()
                stage = "send"
                conn.request("POST", self._paths[region], body=request.body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except TimeoutError as e:
                self._drop(region)
                return fail("timeout", f"{stage}: no answer within {timeout * 1000:.0f} ms ({e})")
            except (ConnectionResetError, BrokenPipeError) as e:
                self._drop(region)
                if not (reused and stale_retry):
                    return fail("connect" if stage == "connect" else "reset", f"{type(e).__name__}: {e}")
            except (OSError, http.client.HTTPException) as e:
                self._drop(region)
                return fail("connect" if stage == "connect" else "reset", f"{type(e).__name__}: {e}")
        if resp.status != 200:
            retryable = resp.status in self._retryable_status
            return fail("status", data[:200].decode(errors="replace"), resp.status, retryable)
        try:
            return Outcome(region, scores=parse_scores(data, self._output, len(request.item_ids)))
        except ValueError as e:
            return fail("bad_response", str(e), resp.status)
