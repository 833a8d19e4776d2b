"""Route 53 in the rehearsal: the declared zone's records in moto, the models of what moto lacks over them (the
health checker, the DNS server answering by the stored routing policy), the API paths the drills use, and the
failover timing the configuration predicts.

`Route53Model.update(applied, health_check_ids, declared)` follows the objects the world created in moto from a plan;
`start()` starts the health model (endpoint checks probed, metric checks from the alarm model over the load-balancer
models' request logs, calculated checks from their children: health_model.py) and the DNS server over them. Nothing
here knows about Tritons or buckets: a health check's target is the loopback endpoint of its region's load-balancer
address, and the request logs come from `logs()`, whatever serves the regions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drills.measure import Slo, rto_parts
from drills.rehearsal.declared import Applied
from drills.rehearsal.dns import PolicyDNS, query
from drills.rehearsal.health_model import T_ALARM, HealthModel, alarm_kinds, declared_alarms
from drills.rehearsal.healthcheck import HealthChecker, Transition, specs_from_route53
from drills.rehearsal.loadgen import RequestRecord
from drills.rehearsal.procs import ProcessError


class Route53Model:
    def __init__(
        self,
        fleet: Any,
        route53: Any,
        *,
        region_ip: dict[str, str],
        dns_address: tuple[str, int],
        http_port: int,
        scale: Any,
        workdir: Path,
        seed: int | None,
        logs: Any = list,
    ):
        """`logs()`: the load-balancer models whose request logs feed the CloudWatch alarm model."""
        self.fleet, self.route53, self.region_ip, self.scale = fleet, route53, region_ip, scale
        self.ip_region = {ip: r for r, ip in region_ip.items()}
        self.fqdn = fleet.glob.fqdn
        self.dns_address, self.http_port, self.workdir, self.seed = dns_address, http_port, workdir, seed
        self.applied: Applied | None = None
        self.health_check_ids: dict[str, str] = {}  # region -> moto health check id
        self.logs = logs
        self.declared: list[dict] = []
        self.health: HealthChecker | None = None
        self.model: HealthModel | None = None
        self.dns: PolicyDNS | None = None

    # ------------------------------------------------------------ lifecycle
    def update(self, applied: Applied, health_check_ids: dict[str, str], declared: list[dict] | None = None) -> None:
        """Follow the objects the world (re-)created in moto; `declared`: the plan's resources (its alarms)."""
        self.applied, self.health_check_ids = applied, dict(health_check_ids)
        if declared is not None and any(r.get("type") == T_ALARM for r in declared):  # a regional plan has none
            self.declared = declared

    def labels(self) -> dict[str, str]:
        """check id -> label: the region for a record's own check, "<region> <kind>" for a check it combines."""
        assert self.applied is not None
        own = {hid: r for r, hid in self.health_check_ids.items()}
        return {
            hid: own.get(hid) or f"{i.get('region')} {i.get('kind')}"
            for hid, i in self.applied.hc_info.items()
            if i.get("region") in self.region_ip
        }

    def start(self) -> None:
        assert self.applied is not None
        applied = self.applied
        labels = self.labels()

        def specs() -> list:
            return specs_from_route53(
                self.route53,
                self._hc_endpoint,
                interval=self.scale.hc_interval,
                timeout=self.scale.probe_timeout,
                labels=labels,
            )

        def recompute() -> None:
            if self.dns:
                self.dns.recompute("health")

        def on_transition(tr: Transition) -> None:
            if self.model is not None:
                self.model.evaluate()  # a calculated check over this one may change with it
            recompute()

        # Health checks are re-read from moto at the DNS propagation interval, so one updated through the
        # Route 53 API (inverted for a control-plane drill, disabled) takes effect like in Route 53.
        self.health = HealthChecker(
            status_file=self.workdir / "health-status.json",
            seed=self.seed,
            on_transition=on_transition,
            source=specs,
            source_interval=self.scale.dns_refresh,
        )
        hc_info = {h: i for h, i in applied.hc_info.items() if i.get("region") in self.region_ip}
        self.model = HealthModel(
            self.health,
            hc_info,
            labels,
            declared_alarms(self.declared, alarm_kinds(hc_info), self.scale.time),
            self.logs,
            # A tenth of a scaled alarm minute, within [0.1, 0.5] wall s: polling the logs shares this process's
            # GIL with the DNS model, which must keep answering within the clients' timeout.
            tick=min(0.5, max(0.1, 6.0 * self.scale.time)),
            on_change=recompute,
        )
        self.health.start()
        self.model.start()
        zone_id = self.zone_id()
        targets = {name: self.region_ip[r] for name, r in applied.alias_targets().items() if r in self.region_ip}
        self.dns = PolicyDNS(
            host=self.dns_address[0],
            port=self.dns_address[1],
            zone=applied.zone_names[zone_id],
            source=lambda: _rrsets(self.route53, zone_id),
            health=self.model.status,
            targets=targets,
            target_healthy=self._target_healthy,
            alias_ttl=self.fleet.glob.ttl,
            ttl_override=self.scale.ttl,
            refresh_interval=self.scale.dns_refresh,
            seed=self.seed,
        )
        self.dns.start()

    def stop(self) -> None:
        for part in (self.dns, self.model, self.health):
            if part is not None:
                part.stop()

    def propagate(self) -> None:
        """Make the DNS model read the zone now (skipping the modelled propagation delay)."""
        if self.dns:
            self.dns.refresh()

    # ------------------------------------------------------------ the zone
    def zone_id(self) -> str:
        """The hosted zone holding the service name (the longest zone name it ends with)."""
        assert self.applied is not None
        name = self.fqdn.rstrip(".")
        zones = [(len(z), zid) for zid, z in self.applied.zone_names.items() if name == z or name.endswith("." + z)]
        if not zones:
            raise ProcessError(
                f"no declared hosted zone holds {name}; declared zones: {sorted(self.applied.zone_names.values())}"
            )
        return max(zones)[1]

    def _hc_endpoint(self, cfg: dict) -> tuple[str, int] | None:
        """A health check's target -> the loopback endpoint standing for it (its region's HTTP port)."""
        assert self.applied is not None
        fqdn = (cfg.get("FullyQualifiedDomainName") or "").lower().rstrip(".")
        region = self.applied.alias_targets().get(fqdn)
        if region is None:
            region = next(
                (i["region"] for i in self.applied.hc_info.values() if i["fqdn"] == fqdn and i["region"]), None
            )
        if region in self.region_ip:
            return self.region_ip[region], self.http_port
        ip = cfg.get("IPAddress")
        if ip and ip.startswith("127."):
            return ip, int(cfg.get("Port") or self.http_port)
        return None

    def _target_healthy(self, alias_name: str) -> bool:
        """EvaluateTargetHealth: the ELB's target health, approximated by its region's health check."""
        assert self.applied is not None and self.model is not None
        region = self.applied.alias_targets().get(alias_name)
        hid = self.health_check_ids.get(region or "")
        return self.model.status(hid) if hid else True

    def records(self) -> list[dict]:
        """The service name's A records as stored in Route 53 (moto)."""
        name = self.fqdn.rstrip(".") + "."
        return [rr for rr in _rrsets(self.route53, self.zone_id()) if rr["Name"] == name and rr["Type"] == "A"]

    def _region_of(self, rr: dict) -> str:
        assert self.applied is not None
        return self.applied.record_regions().get(rr.get("SetIdentifier", ""), rr.get("SetIdentifier", ""))

    def get_weights(self) -> dict[str, int | None]:
        """region -> Weight of its record as stored in Route 53 (moto); None for failover records."""
        return {self._region_of(rr): rr.get("Weight") for rr in self.records()}

    def set_weights(self, weights: dict[str, int]) -> None:
        """Route 53 API path: UPSERT the weighted records' weights (the Pulumi path is `World.reapply`)."""
        unknown = set(weights) - set(self.region_ip)
        if unknown:
            raise ValueError(f"unknown regions {sorted(unknown)}; this world has {list(self.region_ip)}")
        changes = []
        for rr in self.records():
            region = self._region_of(rr)
            if region in weights:
                if "Weight" not in rr:
                    raise ValueError(
                        f"record {rr.get('SetIdentifier')} is a {('failover' if rr.get('Failover') else 'simple')}"
                        f" record; weights apply to weighted routing only"
                    )
                changes.append({**rr, "Weight": int(weights[region])})
        self.route53.change_resource_record_sets(
            HostedZoneId=self.zone_id(),
            ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": rr} for rr in changes]},
        )
        self.propagate()  # still subject to the modelled propagation for other readers

    def set_inverted(self, region: str, inverted: bool) -> None:
        """Invert the region's health check through the Route 53 API (control-plane drill variant)."""
        assert self.health is not None and self.health.source is not None and self.model is not None
        hid = self.health_check_ids[region]
        self.route53.update_health_check(HealthCheckId=hid, Inverted=inverted)
        if hid in self.model.derived:
            self.model.set_inverted(hid, inverted)
        else:
            self.health.set_specs(self.health.source())  # no need to wait for the next re-read

    # ------------------------------------------------------------ the models' view
    def health_status(self) -> dict[str, bool]:
        """region -> the modelled Route 53 health-check status."""
        assert self.model is not None
        st = self.model.statuses()
        return {r: st[h] for r, h in self.health_check_ids.items() if h in st}

    def hc_transitions(self) -> list:
        """Every check's status changes (labels: `labels()`), in time order."""
        return self.model.transitions() if self.model else []

    def alarm_transitions(self) -> list:
        return self.model.alarm_transitions() if self.model else []

    def dns_changes(self) -> list:
        return self.dns.changes(self.fqdn) if self.dns else []

    def routing(self) -> dict[str, float]:
        """region -> probability that an answer for the name now points at it (the DNS model's outcome)."""
        assert self.dns is not None
        out = self.dns.outcome(self.fqdn)
        if out is None:
            return {}
        assert self.applied is not None
        return {self.applied.record_regions().get(k, k): v for k, v in out.shares.items()}

    def resolve(self, n: int = 1) -> list[str | None]:
        """Ask the DNS server for the name `n` times over UDP; the regions answered (a TestDNSAnswer stand-in)."""
        out = []
        for _ in range(n):
            ips, _ttl, _rc = query(self.fqdn, self.dns_address)
            out.append(self.ip_region.get(ips[0]) if ips else None)
        return out

    # ------------------------------------------------------------ failover timing
    @property
    def ttl(self) -> int:
        return self.scale.ttl if self.scale.ttl is not None else self.fleet.glob.ttl

    def predicted_rto(self) -> dict[str, float]:
        """interval x threshold (detection) + propagation + TTL: the configuration's prediction."""
        hc = self.fleet.glob.health_check
        interval = self.scale.hc_interval if self.scale.hc_interval is not None else hc.request_interval
        detection = interval * hc.failure_threshold
        return {
            "detection_s": detection,
            "propagation_s": self.scale.dns_refresh,
            "ttl_s": float(self.ttl),
            "total_s": detection + self.scale.dns_refresh + self.ttl,
        }

    def rto(
        self,
        records: Sequence[RequestRecord],
        fault_time: float,
        region: str,
        slo: Slo,
        *,
        window_limit_s: float | None = None,
    ) -> dict[str, Any]:
        """drills.measure's RTO and its parts for a fault in `region`, with the configuration's prediction."""
        out = rto_parts(
            records,
            fault_time,
            self.hc_transitions(),
            self.dns_changes(),
            self.ttl,
            slo,
            region=region,
            window_limit_s=window_limit_s,
        )
        out["predicted"] = self.predicted_rto()
        return out


def _rrsets(route53: Any, zone_id: str) -> list[dict]:
    out = []
    for page in route53.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone_id):
        out += page["ResourceRecordSets"]
    return out
