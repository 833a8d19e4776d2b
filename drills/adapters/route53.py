"""Route53Adapter: boto3 against AWS, and a modelled variant for moto (which lacks health and DNS answers).

The records of the service name are read the same way in both (moto stores records faithfully). What moto
does not do is modelled explicitly in `ModelledRoute53`: moto's GetHealthCheckStatus is a hard-coded success
and TestDNSAnswer answers 404, so health comes from `HealthModel` (probes at the check's interval and failure
threshold, as Route 53 checkers do) and the DNS answer from `policy_answer` (Route 53's weighted/failover
rules over healthy records).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from drills.adapters.base import RecordState
from drills.clock import Clock


def _region_of(rr: dict, regions: dict[str, str | None]) -> str | None:
    """The region a record serves: its set identifier is the region (infra/components/dns.py), else its alias
    target is the region's load balancer."""
    sid = rr.get("SetIdentifier", "")
    if sid in regions:
        return sid
    target = (rr.get("AliasTarget") or {}).get("DNSName", "").rstrip(".").lower()
    for r, lb in regions.items():
        if lb and target == lb.rstrip(".").lower():
            return r
    return next((r for r in regions if r in sid), None)


def policy_answer(
    records: dict[str, RecordState], healthy: Callable[[str], bool], mode: str | None = None
) -> dict[str, float]:
    """Route 53's answer shares for one name.

    Weighted: healthy records with weight > 0 share by weight; if every weighted record is unhealthy, healthy
    zero-weight records share equally; if no record is healthy, Route 53 treats them all as healthy.
    Failover: the PRIMARY while healthy, else a healthy SECONDARY, else the PRIMARY (all unhealthy).
    """
    if not records:
        return {}
    mode = mode or ("failover" if any(r.failover for r in records.values()) else "weighted")
    up = {r for r in records if healthy(r)}
    if mode == "failover":
        prim = next((r for r, s in records.items() if s.failover == "PRIMARY"), None)
        sec = next((r for r, s in records.items() if s.failover == "SECONDARY"), None)
        pick = prim if prim in up else sec if sec in up else prim
        return {pick: 1.0} if pick else {}
    pool = up or set(records)
    weighted = {r: records[r].weight or 0 for r in pool}
    total = sum(weighted.values())
    if total == 0:
        return {r: 1 / len(pool) for r in sorted(pool)}
    return {r: w / total for r, w in sorted(weighted.items()) if w > 0}


def metric_check_healthy(alarm_state: str, insufficient_data_health_status: str, last_known: bool = True) -> bool:
    """A CLOUDWATCH_METRIC check's status from its alarm's state; `last_known`: its status before (LastKnownStatus)."""
    if alarm_state == "ALARM":
        return False
    if alarm_state != "INSUFFICIENT_DATA":
        return True
    if insufficient_data_health_status == "LastKnownStatus":
        return last_known
    if insufficient_data_health_status not in ("Healthy", "Unhealthy"):
        raise ValueError(f"insufficient_data_health_status {insufficient_data_health_status!r} is not Route 53's")
    return insufficient_data_health_status == "Healthy"


def calculated_healthy(children: Iterable[bool], threshold: int) -> bool:
    """A CALCULATED check: healthy while at least `threshold` of its children are."""
    return sum(1 for ok in children if ok) >= threshold


class Boto3Route53:
    """`client`: boto3 route53 client. `regions`: region -> its load balancer DNS name (from the regional
    stacks' outputs). `health_check_ids`: from the global stack's outputs where known (else the records')."""

    def __init__(
        self,
        client: Any,
        zone_id: str,
        fqdn: str,
        regions: dict[str, str | None],
        health_check_ids: dict[str, str] | None = None,
        answer_samples: int = 4,
        cache_seconds: float = 2.0,
        cloudwatch_for: Callable[[str], Any] | None = None,
    ):
        """Route 53's API allows 5 requests per second per account: reads are cached for `cache_seconds` (real
        time; Route 53's own checkers report every 10 s, so a poll loses nothing) and TestDNSAnswer is sampled
        `answer_samples` times per answer."""
        self.client, self.zone_id, self.fqdn = client, zone_id, fqdn.rstrip(".")
        self.regions = regions
        self._hc = dict(health_check_ids or {})
        self.answer_samples = answer_samples
        self.cache_seconds = cache_seconds
        self._cache: dict[tuple, tuple[float, Any]] = {}
        self._inverted: dict[str, bool] = {}
        self.cloudwatch_for = cloudwatch_for  # region -> CloudWatch client, for the metric checks' alarms

    def _cached(self, key: tuple, fn: Callable[[], Any]) -> Any:
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit and now - hit[0] < self.cache_seconds:
            return hit[1]
        value = fn()
        self._cache[key] = (now, value)
        return value

    def records(self) -> dict[str, RecordState]:
        return self._cached(("records",), self._records)

    def _records(self) -> dict[str, RecordState]:
        name = self.fqdn + "."
        out: dict[str, RecordState] = {}
        kw: dict[str, Any] = {"HostedZoneId": self.zone_id, "StartRecordName": name, "StartRecordType": "A"}
        while True:
            page = self.client.list_resource_record_sets(**kw)
            for rr in page["ResourceRecordSets"]:
                if rr["Name"].rstrip(".").lower() != self.fqdn.lower() or rr["Type"] != "A":
                    continue
                region = _region_of(rr, self.regions)
                if region:
                    out[region] = RecordState(
                        region=region,
                        set_identifier=rr.get("SetIdentifier", ""),
                        weight=rr.get("Weight"),
                        failover=rr.get("Failover"),
                        health_check_id=rr.get("HealthCheckId"),
                        target=(rr.get("AliasTarget") or {}).get("DNSName"),
                    )
            if not page.get("IsTruncated") or page.get("NextRecordName", "").rstrip(".").lower() != self.fqdn.lower():
                break
            kw.update(
                StartRecordName=page["NextRecordName"],
                StartRecordType=page["NextRecordType"],
                **({"StartRecordIdentifier": page["NextRecordIdentifier"]} if page.get("NextRecordIdentifier") else {}),
            )
        return out

    def health_check_id(self, region: str) -> str:
        if region not in self._hc:
            rec = self.records().get(region)
            if not rec or not rec.health_check_id:
                raise LookupError(f"no health check for {region} on {self.fqdn}")
            self._hc[region] = rec.health_check_id
        return self._hc[region]

    def inverted(self, region: str) -> bool:
        # Read once: inversions go through set_inverted, which keeps this current.
        if region not in self._inverted:
            cfg = self.client.get_health_check(HealthCheckId=self.health_check_id(region))["HealthCheck"][
                "HealthCheckConfig"
            ]
            self._inverted[region] = bool(cfg.get("Inverted"))
        return self._inverted[region]

    def health(self, region: str) -> bool:
        return self._cached(("health", region), lambda: self.check_status(self.health_check_id(region), top=True))

    def check_status(self, check_id: str, top: bool = False) -> bool:
        """Route 53's status of one check. GetHealthCheckStatus answers for endpoint checks only (not CALCULATED or
        CLOUDWATCH_METRIC), so a calculated check is evaluated from its children (healthy while HealthThreshold of
        them are) and a metric check from its alarm's state in CloudWatch (`cloudwatch_for(region)`), with its
        InsufficientDataHealthStatus. Inverted flips any of them; the record's own check reads its inversion through
        `inverted` (set_inverted keeps it current)."""
        hc = self.client.get_health_check(HealthCheckId=check_id)["HealthCheck"]
        cfg = hc["HealthCheckConfig"]
        kind = cfg["Type"]
        if kind == "CALCULATED":
            kids = [self.check_status(c) for c in cfg.get("ChildHealthChecks") or []]
            raw = calculated_healthy(kids, int(cfg.get("HealthThreshold") or 0))
        elif kind == "CLOUDWATCH_METRIC":
            alarm = cfg["AlarmIdentifier"]
            if self.cloudwatch_for is None:
                raise LookupError(f"health check {check_id} follows alarm {alarm['Name']}: no CloudWatch client given")
            found = self.cloudwatch_for(alarm["Region"]).describe_alarms(AlarmNames=[alarm["Name"]])["MetricAlarms"]
            state = found[0]["StateValue"] if found else "INSUFFICIENT_DATA"
            raw = metric_check_healthy(state, cfg.get("InsufficientDataHealthStatus", "LastKnownStatus"))
        else:
            obs = self.client.get_health_check_status(HealthCheckId=check_id)["HealthCheckObservations"]
            ok = sum(1 for o in obs if o["StatusReport"]["Status"].startswith("Success"))
            # Route 53 calls an endpoint healthy when more than 18% of its checkers do; the observations are the
            # checkers' raw results, so an inverted check's verdict is the opposite.
            raw = bool(obs) and ok / len(obs) > 0.18
        inverted = self.inverted_by_id(check_id, cfg) if top else bool(cfg.get("Inverted"))
        return raw != inverted

    def inverted_by_id(self, check_id: str, cfg: dict) -> bool:
        region = next((r for r, h in self._hc.items() if h == check_id), None)
        return self.inverted(region) if region is not None else bool(cfg.get("Inverted"))

    def _region_ips(self) -> dict[str, str]:
        return self._cached(("ips",), self._resolve_lbs) if self.cache_seconds else self._resolve_lbs()

    def _resolve_lbs(self) -> dict[str, str]:
        ips: dict[str, str] = {}
        for r, lb in self.regions.items():
            if not lb:
                continue
            try:
                for ip in socket.gethostbyname_ex(lb)[2]:
                    ips[ip] = r
            except OSError:
                continue
        return ips

    def dns_answer(self) -> dict[str, float]:
        """Route 53's routing policy over its own records and health verdicts, cross-checked with TestDNSAnswer.

        TestDNSAnswer answers one weighted pick per call, so a few samples cannot prove a region is gone (a 40%
        region is missed by 4 samples 13% of the time); they can prove it is still answered. A region counts as
        out of the answer only when the policy says so and no sample returned its load balancer's address."""
        shares = policy_answer(self.records(), self.health)
        ips = self._region_ips()
        for _ in range(self.answer_samples):
            ans = self.client.test_dns_answer(HostedZoneId=self.zone_id, RecordName=self.fqdn, RecordType="A")
            for r in {ips[ip] for ip in ans.get("RecordData", []) if ip in ips}:
                if shares.get(r, 0.0) == 0.0:
                    shares[r] = 1e-9  # observed, though the policy says not: report it as still answered
        return shares

    def set_inverted(self, region: str, inverted: bool) -> None:
        self.client.update_health_check(HealthCheckId=self.health_check_id(region), Inverted=inverted)
        self._inverted[region] = inverted
        self._cache.pop(("health", region), None)


class HealthModel:
    """Route 53 health checking, modelled: a probe every `interval` seconds per check; the status flips after
    `threshold` consecutive results that disagree with it; a new check starts healthy; an inverted check
    reports the opposite. One checker (Route 53 runs ~15 and uses an 18% quorum; with one endpoint seen alike by
    all, the verdict is the same, only without the checkers' spread in detection time).

    Probes run on the clock, at their own times: on a FakeClock as timers (so a test's fault at t+55 s is seen
    by the tick at t+60 s, not by whichever call happens to ask first), on the system clock in a daemon thread.
    """

    def __init__(self, clock: Clock, interval: float, threshold: int, probe: Callable[[str], bool]):
        self.clock, self.interval, self.threshold, self.probe = clock, interval, threshold, probe
        self._state: dict[str, list] = {}  # key -> [healthy, streak]
        self.transitions: list[tuple[float, str, bool]] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _tick(self, key: str) -> None:
        st = self._state[key]
        result = self.probe(key)
        if result == st[0]:
            st[1] = 0
        else:
            st[1] += 1
            if st[1] >= self.threshold:
                st[0], st[1] = result, 0
                self.transitions.append((self.clock.now(), key, result))

    def watch(self, key: str) -> None:
        """Start checking `key` now (first probe now, then every interval)."""
        if key in self._state:
            return
        self._state[key] = [True, 0]
        at = getattr(self.clock, "at", None)
        if at is not None:

            def periodic(k: str = key) -> None:
                if self._stop.is_set():
                    return
                self._tick(k)
                at(self.clock.now() + self.interval, periodic)

            periodic()
        elif self._thread is None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for k in list(self._state):
                self._tick(k)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()

    def status(self, key: str, inverted: bool = False) -> bool:
        self.watch(key)
        return self._state[key][0] != inverted


class ModelledRoute53(Boto3Route53):
    """Records from moto, health from `HealthModel`, DNS answers from `policy_answer` (moto has neither a
    health status nor TestDNSAnswer). No read cache: a fake clock moves faster than any cache would expire."""

    def __init__(
        self,
        client: Any,
        zone_id: str,
        fqdn: str,
        regions: dict[str, str | None],
        model: HealthModel,
        health_check_ids: dict[str, str] | None = None,
        mode: str | None = None,
    ):
        super().__init__(client, zone_id, fqdn, regions, health_check_ids, answer_samples=0, cache_seconds=0.0)
        self.model, self.mode = model, mode

    def health(self, region: str) -> bool:
        return self.model.status(region, inverted=self.inverted(region))

    def dns_answer(self) -> dict[str, float]:
        return policy_answer(self.records(), self.health, self.mode)
