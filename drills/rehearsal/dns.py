"""Model of Route 53's DNS answers: a real DNS server (dnslib, UDP) on a loopback address.

moto stores records but answers no DNS queries; this server answers `A` queries for the names in the
hosted zone from the records stored in moto, the way Route 53's name servers do
("How Amazon Route 53 chooses records when health checking is configured"):

- a record is healthy when it has no health check or its health check is healthy, and, for an alias
  record with EvaluateTargetHealth, when its target is healthy (`target_healthy`; the rehearsal
  approximates an ELB's target health by the health check probing the same endpoint);
- weighted: one record per answer, chosen at random with probability weight / sum(weights) among the
  healthy records with weight > 0; if every record with weight > 0 is unhealthy, equally among the
  healthy records with weight 0; if no record is healthy, Route 53 "considers all records healthy" and
  chooses by weight among all of them (equally if all weights are 0);
- failover: the PRIMARY when healthy, else the SECONDARY when healthy, else (none healthy) the PRIMARY;
- a record without a routing policy: all its values;
- the answer carries the record's TTL; an alias record has none, resolvers see the target's TTL (60 s for
  an ELB), given here as `alias_ttl` (the rehearsal passes the global stack's `ttl`, scaled for CI);
- alias targets resolve to the loopback address standing for that region's load balancer (`targets`);
  those names are answered too, so a client can resolve an LB name itself.

Propagation: Route 53 applies a change to all its name servers within about 60 s (the change turns
INSYNC). Here the server re-reads the zone from moto every `refresh_interval` seconds: that interval is the
modelled propagation delay. Health status changes take effect at the next query (Route 53 evaluates
health at query time from the checks' current status).

`changes()` records every change of the routing outcome for a name (the set of records that can be
answered and their shares) with a wall-clock time: the "DNS answer changed" part of RTO. Answers
themselves are counted per record in `answer_counts()`.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from dnslib import QTYPE, RCODE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer


def norm(name: str) -> str:
    return name.lower().rstrip(".")


@dataclass(frozen=True)
class RecordSet:
    """One Route 53 resource record set, normalised."""

    name: str
    type: str
    set_id: str | None = None
    weight: int | None = None
    failover: str | None = None  # PRIMARY | SECONDARY
    ttl: int | None = None
    values: tuple[str, ...] = ()
    alias: str | None = None  # alias target DNS name
    evaluate_target_health: bool = False
    health_check_id: str | None = None

    @property
    def key(self) -> str:
        return self.set_id or self.name

    @classmethod
    def from_route53(cls, rr: dict) -> RecordSet:
        alias = rr.get("AliasTarget")
        return cls(
            name=norm(rr["Name"]),
            type=rr["Type"],
            set_id=rr.get("SetIdentifier"),
            weight=int(rr["Weight"]) if rr.get("Weight") is not None else None,
            failover=rr.get("Failover"),
            ttl=int(rr["TTL"]) if rr.get("TTL") is not None else None,
            values=tuple(v["Value"] for v in rr.get("ResourceRecords", [])),
            alias=norm(alias["DNSName"]) if alias else None,
            evaluate_target_health=bool(alias and alias.get("EvaluateTargetHealth")),
            health_check_id=rr.get("HealthCheckId"),
        )


@dataclass(frozen=True)
class Outcome:
    """The routing outcome for one name and type: which records can be answered, with what probability."""

    mode: str  # weighted | failover | simple | none
    shares: dict[str, float]  # record key -> probability of being the answer
    fail_open: bool = False  # no record was healthy: Route 53 answered as if all were

    def same_as(self, other: Outcome | None) -> bool:
        return (
            other is not None
            and self.mode == other.mode
            and self.fail_open == other.fail_open
            and set(self.shares) == set(other.shares)
            and all(abs(self.shares[k] - other.shares[k]) < 1e-9 for k in self.shares)
        )


def route(group: list[RecordSet], healthy: Callable[[RecordSet], bool]) -> Outcome:
    """Route 53's choice among records of one name and type, as probabilities (pure)."""
    if not group:
        return Outcome("none", {})
    if any(r.weight is not None for r in group):
        ok = [r for r in group if healthy(r)]
        fail_open = not ok
        pool = ok or group
        nonzero = [r for r in pool if (r.weight or 0) > 0]
        if nonzero:
            # every weight in `nonzero` is > 0, so `r.weight or 0` is the weight itself (typed without the None)
            total = sum(r.weight or 0 for r in nonzero)
            return Outcome("weighted", {r.key: (r.weight or 0) / total for r in nonzero}, fail_open)
        return Outcome("weighted", {r.key: 1 / len(pool) for r in pool}, fail_open)
    if any(r.failover for r in group):
        primary = next((r for r in group if r.failover == "PRIMARY"), None)
        secondary = next((r for r in group if r.failover == "SECONDARY"), None)
        if primary is not None and healthy(primary):
            return Outcome("failover", {primary.key: 1.0})
        if secondary is not None and healthy(secondary):
            return Outcome("failover", {secondary.key: 1.0})
        chosen = primary or secondary
        assert chosen is not None  # Route 53 failover records are PRIMARY or SECONDARY
        return Outcome("failover", {chosen.key: 1.0}, fail_open=True)
    return Outcome("simple", {group[0].key: 1.0})


def pick(outcome: Outcome, rng: random.Random) -> str | None:
    if not outcome.shares:
        return None
    keys = sorted(outcome.shares)
    return rng.choices(keys, weights=[outcome.shares[k] for k in keys])[0]


@dataclass(frozen=True)
class DnsChange:
    t: float  # wall clock
    name: str
    before: dict[str, float] | None
    after: dict[str, float]
    fail_open: bool
    cause: str  # "records" (zone changed in moto) or "health" (a health status changed) or "start"


class _Resolver(BaseResolver):
    def __init__(self, server: PolicyDNS):
        self.server = server

    def resolve(self, request, handler):
        reply = request.reply()
        q = request.q
        name = norm(str(q.qname))
        answer = self.server.answer(name, QTYPE[q.qtype])
        if answer is None:
            if not self.server.in_zone(name):
                reply.header.rcode = RCODE.REFUSED  # not authoritative for it (Route 53 answers its zones only)
            elif not self.server.has_name(name):
                reply.header.rcode = RCODE.NXDOMAIN
            # else NOERROR with no answer: the name exists, not with this type (e.g. AAAA)
            return reply
        ips, ttl, _key = answer
        for ip in ips:
            reply.add_answer(RR(q.qname, QTYPE.A, ttl=ttl, rdata=A(ip)))
        return reply


class PolicyDNS:
    """The DNS server. `source()` returns the zone's record sets (Route 53 API dicts), e.g. from moto."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int,
        zone: str,
        source: Callable[[], Iterable[dict]],
        health: Callable[[str], bool],
        targets: dict[str, str],
        target_healthy: Callable[[str], bool] = lambda name: True,
        alias_ttl: int = 60,
        refresh_interval: float = 0.5,
        seed: int | None = None,
        ttl_override: int | None = None,
    ):
        self.host, self.port, self.zone = host, port, norm(zone)
        self.source, self.health, self.target_healthy = source, health, target_healthy
        self.targets = {norm(k): v for k, v in targets.items()}  # alias target name -> loopback IP
        self.alias_ttl, self.refresh_interval, self.ttl_override = alias_ttl, refresh_interval, ttl_override
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._groups: dict[tuple[str, str], list[RecordSet]] = {}
        self._outcomes: dict[tuple[str, str], Outcome] = {}
        self._changes: list[DnsChange] = []
        self._counts: dict[tuple[str, str], int] = {}
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        self._server: DNSServer | None = None
        self.refreshes = 0
        self.refresh_errors = 0

    # ------------------------------------------------------------ zone data
    def has_name(self, name: str) -> bool:
        with self._lock:
            return name in self.targets or any(n == name for n, _ in self._groups)

    def in_zone(self, name: str) -> bool:
        return name == self.zone or name.endswith("." + self.zone) or name in self.targets

    def load(self, rrsets: Iterable[dict]) -> None:
        groups: dict[tuple[str, str], list[RecordSet]] = {}
        for rr in rrsets:
            rs = RecordSet.from_route53(rr)
            if rs.type in ("A", "AAAA", "CNAME", "TXT"):
                groups.setdefault((rs.name, rs.type), []).append(rs)
        with self._lock:
            changed = groups != self._groups
            self._groups = groups
        # An unchanged zone re-read can still notice a health change first: attribute it to health.
        self.recompute("records" if changed else "health")

    def refresh(self) -> None:
        """Re-read the zone from the source now (the refresher thread calls this every refresh_interval)."""
        try:
            rrsets = list(self.source())
        except Exception:  # noqa: BLE001 - moto briefly unavailable: keep serving the last zone, as Route 53 would
            self.refresh_errors += 1
            return
        self.refreshes += 1
        self.load(rrsets)

    def _healthy(self, rs: RecordSet) -> bool:
        if rs.health_check_id is not None:
            try:
                if not self.health(rs.health_check_id):
                    return False
            except KeyError:
                pass  # a health check the checker does not know: Route 53 would have rejected the record
        return not (rs.alias and rs.evaluate_target_health and not self.target_healthy(rs.alias))

    def recompute(self, cause: str = "health") -> None:
        """Re-evaluate the routing outcome of every name; record the names whose outcome changed."""
        with self._lock:
            for key, group in self._groups.items():
                out = route(group, self._healthy)
                prev = self._outcomes.get(key)
                if not out.same_as(prev):
                    self._outcomes[key] = out
                    if key[1] == "A":
                        self._changes.append(
                            DnsChange(
                                time.time(),
                                key[0],
                                dict(prev.shares) if prev else None,
                                dict(out.shares),
                                out.fail_open,
                                cause if prev else "start",
                            )
                        )
            for key in list(self._outcomes):
                if key not in self._groups:
                    del self._outcomes[key]

    # ------------------------------------------------------------ answers
    def outcome(self, name: str, qtype: str = "A") -> Outcome | None:
        self.recompute()  # health is evaluated at query time
        with self._lock:
            return self._outcomes.get((norm(name), qtype))

    def answer(self, name: str, qtype: str = "A") -> tuple[list[str], int, str] | None:
        """(IPs, TTL, record key) for a query, or None (no such name/type)."""
        name = norm(name)
        if qtype == "A" and name in self.targets and (name, "A") not in self._groups:
            return [self.targets[name]], self._ttl(None), name  # an LB name itself
        with self._lock:
            out = self.outcome(name, qtype)
            if out is None:
                return None
            key = pick(out, self._rng)
            rs = next((r for r in self._groups[(name, qtype)] if r.key == key), None)
            if rs is None:
                return None
            self._counts[(name, rs.key)] = self._counts.get((name, rs.key), 0) + 1
        if rs.alias:
            ip = self.targets.get(rs.alias)
            ips = [ip] if ip else []
        else:
            ips = [v for v in rs.values if _is_ipv4(v)]
        return ips, self._ttl(rs), rs.key

    def _ttl(self, rs: RecordSet | None) -> int:
        if self.ttl_override is not None:
            return self.ttl_override
        if rs is not None and rs.ttl is not None and not rs.alias:
            return rs.ttl
        return self.alias_ttl

    def changes(self, name: str | None = None) -> list[DnsChange]:
        with self._lock:
            return [c for c in self._changes if name is None or c.name == norm(name)]

    def answer_counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)

    # ------------------------------------------------------------ server
    def start(self) -> PolicyDNS:
        self.refresh()
        quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
        self._server = DNSServer(_Resolver(self), address=self.host, port=self.port, logger=quiet)
        self._server.start_thread()
        self._stop.clear()
        self._refresher = threading.Thread(target=self._refresh_loop, name="dns-refresh", daemon=True)
        self._refresher.start()
        return self

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_interval):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._refresher:
            self._refresher.join(timeout=5)
        if self._server is not None:
            self._server.server.shutdown()
            self._server.server.server_close()  # release the UDP port now, not at garbage collection
            self._server = None

    def __enter__(self) -> PolicyDNS:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _is_ipv4(v: str) -> bool:
    try:
        socket.inet_aton(v)
        return v.count(".") == 3
    except OSError:
        return False


def query(name: str, server: tuple[str, int], timeout: float = 1.0) -> tuple[list[str], int, str]:
    """Ask `server` (host, port) for `name` A over UDP: (IPs, TTL, rcode name). Raises TimeoutError."""
    q = DNSRecord.question(name, "A")
    try:
        raw = q.send(server[0], server[1], timeout=timeout)
    except TimeoutError as e:
        raise TimeoutError(f"no DNS answer for {name} from {server[0]}:{server[1]} in {timeout} s") from e
    r = DNSRecord.parse(raw)
    ips = [str(rr.rdata) for rr in r.rr if rr.rtype == QTYPE.A]
    ttl = min((rr.ttl for rr in r.rr if rr.rtype == QTYPE.A), default=0)
    return ips, ttl, RCODE[r.header.rcode]


__all__ = ["DnsChange", "Outcome", "PolicyDNS", "RecordSet", "pick", "query", "route"]
