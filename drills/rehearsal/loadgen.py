"""Client traffic: resolve the ranker's name through the rehearsal DNS, honour the TTL, send V2 inference.

Model of the real clients: `clients` independent callers, each with its own stub-resolver cache (an
answer is reused until its TTL runs out, then the name is resolved again, as an OS or library resolver
does), sending ranking requests at a fixed aggregate rate (open loop: the schedule does not wait for
slow answers, so a stalled region shows up as timeouts, not as a lower rate). A weighted Route 53 answer
holds one region's address, so the traffic split emerges from many clients each holding one answer for a
TTL, as in production (the first answer of each client is kept for a random part of its TTL: see
`CachingResolver`). Clients do not retry: every failed request is visible in the record, which is the
ground truth for RTO. Connections are kept alive per client thread and address, as HTTP clients do; a
client whose cached answer points at a dead region keeps failing until its cache expires.

Every request is recorded: scheduled and actual send time (wall clock), the client, the address it
resolved, the region that address stands for, HTTP status (0 when there was no answer), success,
latency, error text.

`drills.measure.rto_parts(...)` turns those records plus the health-check transitions and DNS changes into the
parts of RTO, by the same definitions the drills engine uses.

Two kinds of client (`--client-mix naive=N,resilient=M`), side by side on the same faults:
- naive (above): every request to the address the weighted name answered, no retry;
- resilient: the project's ranker client (drills.client.RankerClient, one per process, shared by these clients as
  a shop's service shares it), over the plain per-region names the global stack declares (resolved through the
  same DNS at start), preferring the region the weighted name answered for that client; it retries on another
  region, ejects a failing one and answers with the release's fallback ranking when no region does. Its records
  carry `degraded` and `attempts` (the extra requests it sent: amplification).
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from drills.rehearsal.dns import query
from drills.rehearsal.triton import v2_infer_body


# ---------------------------------------------------------------- inputs
def feature_batches(
    inputs_sig: Sequence[dict], n: int = 32, batch: int = 32, seed: int | None = None
) -> list[dict[str, np.ndarray]]:
    """`n` request batches of `batch` rows matching the model's input signature.

    Real feature rows from model_build's data generator (the golden split the build's parity gates use)
    when it is importable and its columns match the signature; otherwise synthetic tensors of the right
    names, types and shapes (small ids, valid for any vocabulary of 3 or more).
    """
    names = [s["name"] for s in inputs_sig]
    try:
        from model_build import data as mb_data

        seed_ = seed if seed is not None else mb_data.DEFAULT_SEED
        rows = mb_data.golden_batch(seed_, n * batch)
        if sorted(rows) == sorted(names):
            return [{k: np.ascontiguousarray(rows[k][i * batch : (i + 1) * batch]) for k in names} for i in range(n)]
    except Exception:  # noqa: BLE001, S110 - generator absent or different: synthetic inputs below
        pass
    rng = np.random.default_rng(seed or 0)
    out = []
    for _ in range(n):
        b = {}
        for s in inputs_sig:
            dims = [d if isinstance(d, int) and d > 0 else 1 for d in (s.get("shape") or [-1, 1])[1:]]
            if s["datatype"].startswith("INT"):
                b[s["name"]] = rng.integers(0, 3, (batch, *dims)).astype(
                    np.int32 if s["datatype"] == "INT32" else np.int64
                )
            else:
                b[s["name"]] = rng.standard_normal((batch, *dims)).astype(np.float32)
        out.append(b)
    return out


# ---------------------------------------------------------------- resolver
class CachingResolver:
    """One client's resolver cache: an answer is kept until its TTL expires.

    `stagger`: the first answer is kept for a uniform random part of its TTL. Real clients resolved at
    random moments before the rehearsal began, so in steady state the time their cached answers have left
    is spread over [0, TTL]; without this, every client of a freshly started load generator would expire
    its cache at the same moment and the TTL part of RTO would show as one cliff.

    `attempts`: a query unanswered within `timeout` is sent again, as a stub resolver retransmits (glibc's
    resolv.conf default is `attempts:2`): one UDP answer lost to a busy moment on 2 shared cores is not an outage.
    """

    def __init__(
        self,
        server: tuple[str, int],
        timeout: float = 0.5,
        clock: Callable[[], float] = time.time,
        stagger: random.Random | None = None,
        attempts: int = 2,
    ):
        self.server, self.timeout, self.clock, self.stagger = server, timeout, clock, stagger
        self.attempts = attempts
        self._cache: dict[str, tuple[str, float]] = {}
        self.lookups = 0

    def resolve(self, name: str) -> tuple[str, bool]:
        """(address, from_cache). Raises on no answer, like getaddrinfo."""
        now = self.clock()
        hit = self._cache.get(name)
        if hit and now < hit[1]:
            return hit[0], True
        for attempt in range(self.attempts):
            try:
                ips, ttl, rcode = query(name, self.server, self.timeout)
                break
            except TimeoutError:
                if attempt + 1 == self.attempts:
                    raise
        self.lookups += 1
        if not ips:
            raise LookupError(f"DNS {rcode} for {name}")
        keep = ttl * self.stagger.random() if (self.stagger is not None and hit is None) else ttl
        self._cache[name] = (ips[0], now + keep)
        return ips[0], False


# ---------------------------------------------------------------- records
@dataclass
class RequestRecord:
    seq: int
    client: int
    scheduled: float  # wall clock the open-loop schedule assigned
    t: float  # wall clock the request was sent (after resolution)
    ip: str | None
    region: str | None
    status: int  # HTTP status; 0 = no response (refused, reset, timeout, DNS failure)
    ok: bool
    latency_ms: float
    error: str | None = None
    resolved: bool = False  # this request triggered a DNS lookup (cache miss)
    kind: str = "naive"  # naive | resilient (see the module docstring)
    degraded: bool = False  # resilient: no region answered in time, the fallback ranking did (ok is False)
    attempts: int = 1  # requests sent for this ranking (retries and hedges included)


@dataclass(frozen=True)
class Resilient:
    """The resilient clients of a load: how many, the plain per-region names they reach (region -> fqdn), the
    release's fallback ranking (path and the sha256 its manifest lists) and the client's deadline settings."""

    clients: int
    regional_names: dict[str, str]
    fallback_path: str
    fallback_sha256: str
    deadline_ms: float = 250.0
    attempt_timeout_ms: float = 100.0
    hedging_delay_ms: float | None = None
    # 400 and 404 too: every client sends the same well-formed request to every region, so a region that answers it
    # with "unknown model" (a brownout: its model unloaded) is failing, not the request.
    retryable_status: tuple[int, ...] = (*range(500, 600), 400, 404)


def item_ids(batch: Mapping[str, np.ndarray]) -> list[int]:
    """The candidates of a feature batch: its item_id column (model_build's sparse layout), else row numbers."""
    sparse = batch.get("sparse_ids")
    if sparse is not None:
        from model_build.data import SPARSE

        return [int(x) for x in sparse[:, [n for n, _ in SPARSE].index("item_id")]]
    return list(range(len(next(iter(batch.values())))))


class LoadGenerator:
    """Fixed-rate ranking traffic, bounded by `duration` seconds and/or `count` requests."""

    def __init__(
        self,
        *,
        dns_server: tuple[str, int],
        name: str,
        port: int,
        model: str,
        batches: Sequence[Mapping[str, np.ndarray]],
        rate: float,
        duration: float | None = None,
        count: int | None = None,
        clients: int = 8,
        timeout: float = 1.0,
        ip_region: Mapping[str, str] | None = None,
        workers: int | None = None,
        stagger: bool = True,
        seed: int | None = None,
        resilient: Resilient | None = None,
        shoppers: Any = None,
    ):
        """`clients` naive clients, then `resilient.clients` resilient ones (client numbers after the naive).
        `shoppers` (drills.experiment.shoppers.Shoppers, with resilient clients only): the A/B rehearsal's shoppers;
        request i is the catalogue's request i (its user, its candidates), the resilient clients' RankerClient is
        given the experiment (it sets the user's arm header), and every ranking a region served is logged with the
        clicks drawn on it."""
        if shoppers is not None and (resilient is None or clients):
            raise ValueError("shoppers are resilient clients (the client library sets their arm): no naive clients")
        if duration is None and count is None:
            raise ValueError("bound the load: give duration and/or count")
        self.dns_server, self.name, self.port, self.model = dns_server, name, port, model
        self.rate, self.duration, self.count, self.timeout = rate, duration, count, timeout
        self.ip_region = dict(ip_region or {})
        for ip in [*self.ip_region, dns_server[0]]:
            if not ip.startswith("127."):
                raise ValueError(f"{ip} is not a loopback address: the load generator only talks to 127.0.0.0/8")
        self.bodies = [v2_infer_body(b) for b in batches]
        self.candidates = [item_ids(b) for b in batches]
        self.naive, self.resilient = clients, resilient
        total = clients + (resilient.clients if resilient else 0)
        if total < 1:
            raise ValueError("a load needs at least one client (naive or resilient)")
        rng = random.Random(seed)
        self.resolvers = [
            CachingResolver(dns_server, stagger=random.Random(rng.random()) if stagger else None) for _ in range(total)
        ]
        self.shoppers = shoppers
        self.client: Any = None  # the shared RankerClient of the resilient clients, built when the load starts
        self.workers = workers or max(4, min(64, int(rate * timeout * 1.5) + 2))
        self._records: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._client_locks = [threading.Lock() for _ in range(total)]
        self._local = threading.local()
        self._conns: list[http.client.HTTPConnection] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started_at: float | None = None

    # ------------------------------------------------------------ running
    def start(self) -> LoadGenerator:
        self._thread = threading.Thread(target=self.run, name="loadgen", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.join()

    def join(self, timeout: float | None = None) -> None:
        if self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def run(self) -> list[RequestRecord]:
        t0 = time.time()
        self.started_at = t0
        mono0 = time.monotonic()
        n_max = self.count if self.count is not None else int(self.rate * (self.duration or 0)) + 1
        if self.resilient is not None and self.client is None:
            self.client = self.ranker_client(self.resilient)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="loadgen") as pool:
            for i in range(n_max):
                if self.duration is not None and i / self.rate >= self.duration:
                    break
                delay = mono0 + i / self.rate - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                if self._stop.is_set():
                    break
                pool.submit(self._one, i, t0 + i / self.rate)
        self._close_connections()  # Triton waits on open keep-alive connections at shutdown
        if self.client is not None:
            self.client.close()
        return self.records()

    def ranker_client(self, r: Resilient) -> Any:
        """The resilient clients' RankerClient: the plain per-region names resolved through the rehearsal DNS (as a
        service resolves its endpoints at start), the fallback checked against its published sha256."""
        from drills.client import RankerClient, load_fallback

        endpoints = {}
        for region, name in r.regional_names.items():
            ips, _ttl, rcode = query(name, self.dns_server, 2.0)
            if not ips:
                raise LookupError(f"DNS {rcode} for {name} ({region}'s plain name): the resilient clients need it")
            endpoints[region] = f"http://{ips[0]}:{self.port}"
        return RankerClient(
            endpoints,
            self.model,
            deadline_ms=r.deadline_ms,
            attempt_timeout_ms=r.attempt_timeout_ms,
            hedging_delay_ms=r.hedging_delay_ms,
            fallback=load_fallback(r.fallback_path, r.fallback_sha256),
            retryable_status=r.retryable_status,
            max_workers=max(2, self.workers * 2),
            experiment=self.shoppers.experiment if self.shoppers is not None else None,
        )

    def _conn(self, ip: str) -> http.client.HTTPConnection:
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        c = conns.get(ip)
        if c is None:
            c = conns[ip] = http.client.HTTPConnection(ip, self.port, timeout=self.timeout)
            with self._lock:
                self._conns.append(c)
        return c

    def _drop(self, ip: str) -> None:
        c = getattr(self._local, "conns", {}).pop(ip, None)
        if c is not None:
            c.close()

    def _close_connections(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            c.close()

    def _one(self, seq: int, scheduled: float) -> None:
        client = seq % len(self.resolvers)
        if client >= self.naive:
            self._resilient(seq, client, scheduled)
            return
        body = self.bodies[seq % len(self.bodies)]
        t = time.time()
        ip = None
        resolved = False
        try:
            with self._client_locks[client]:  # one resolver cache per client, shared by its requests
                ip, cached = self.resolvers[client].resolve(self.name)
            resolved = not cached
        except Exception as e:  # noqa: BLE001 - a failed lookup is a failed request
            self._add(
                RequestRecord(
                    seq, client, scheduled, t, None, None, 0, False, (time.time() - t) * 1000, f"dns: {e}", True
                )
            )
            return
        t_send = time.time()
        status, ok, err = 0, False, None
        try:
            c = self._conn(ip)
            c.request(
                "POST",
                f"/v2/models/{self.model}/infer",
                body=body,
                headers={"Content-Type": "application/json", "Host": self.name},
            )
            r = c.getresponse()
            data = r.read()
            status = r.status
            ok = status == 200 and b'"outputs"' in data
            if not ok:
                err = data[:200].decode(errors="replace")
        except Exception as e:  # noqa: BLE001 - refused, reset, timeout: recorded, the connection is dropped
            err = f"{type(e).__name__}: {e}"[:200]
            self._drop(ip)
        latency = (time.time() - t_send) * 1000
        self._add(
            RequestRecord(
                seq, client, scheduled, t_send, ip, self.ip_region.get(ip, ip), status, ok, latency, err, resolved
            )
        )

    def _resilient(self, seq: int, client: int, scheduled: float) -> None:
        """One ranking through the shared RankerClient, preferring the region the weighted name answered."""
        from drills.client import RankRequest

        prefer, resolved = None, False
        try:
            with self._client_locks[client]:
                ip, cached = self.resolvers[client].resolve(self.name)
            prefer, resolved = self.ip_region.get(ip), not cached
        except Exception:  # noqa: BLE001, S110 - no answer: the client's own region order decides
            pass
        i = seq % len(self.bodies)
        req = RankRequest(tuple(self.candidates[i]), self.bodies[i])
        t = time.time()
        user = self.shoppers.catalogue.users[i] if self.shoppers is not None else None
        resp = self.client.rank(req, prefer=prefer if prefer in self.client.regions else None, user_id=user)
        region = resp.region
        if self.shoppers is not None and region is not None and resp.arm is not None and resp.scores is not None:
            # What the shopper saw: the region's ranking (a degraded answer is the fallback's, no arm's: not logged).
            self.shoppers.observe(i, f"r{seq}", resp.arm, region, resp.scores, datetime.fromtimestamp(t, UTC))
        err = None if region else "; ".join(f"{e.region}: {e.kind} {e.detail}"[:80] for e in resp.errors)[:200]
        self._add(
            RequestRecord(
                seq,
                client,
                scheduled,
                t,
                None,
                region,
                200 if region else 0,
                region is not None,
                resp.latency_ms,
                err,
                resolved,
                kind="resilient",
                degraded=resp.degraded and not resp.failed,
                attempts=resp.attempts,
            )
        )

    def _add(self, rec: RequestRecord) -> None:
        with self._lock:
            self._records.append(rec)

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return sorted(self._records, key=lambda r: r.seq)


def records_to_json(records: Iterable[RequestRecord]) -> str:
    return json.dumps([asdict(r) for r in records])


__all__ = ["CachingResolver", "LoadGenerator", "RequestRecord", "Resilient", "feature_batches", "records_to_json"]
