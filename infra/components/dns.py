"""DNS failover across regions: hosted zone, each region's Route 53 health checks and one alias record per region,
plus one plain per-region name per region.

Route 53 answers `<record>.<zone>` from the records whose health check passes: by weight (active-active,
canary, standby at 0) or PRIMARY/SECONDARY. Every record carries its region's CALCULATED health check *and*
`evaluate_target_health`. The calculated check is healthy while every one of its children is (infra/health.py says
why every one): the shallow check (/v2/health/ready through the load balancer: Triton ready), the deep check (one
inference within a bound, string-matched, through the load balancer), and the metric checks that follow the region's
load-balancer alarms on the 5xx ratio and the mean latency (EdgeAlarms, infra/components/alarms.py). A region leaves
DNS when any of them fails, or when its load balancer has no healthy targets. Failover is then a data-plane event: no
Route 53 or Pulumi API call is needed when a region fails. With every record of the name unhealthy, Route 53 answers
as if all were healthy (fail-open).

Beside it, `<record>-<region short>.<zone>` (infra.names.regional_fqdn) is a simple alias record of that
region's load balancer: no weight, no failover, no health check. Resilient clients (drills.client) resolve these
to reach the region of their choice and eject a failing region themselves; DNS never takes a region away from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import pulumi
import pulumi_aws as aws

from infra.config import HealthCheck as HealthCheckConfig
from infra.health import (
    ALARM_KINDS,
    CALCULATED,
    CHECK_TAG,
    CHILD_HEALTH_THRESHOLD,
    CHILD_KINDS,
    DEEP,
    DEEP_HEALTH_OK,
    DEEP_HEALTH_PATH,
    INSUFFICIENT_DATA_HEALTH_STATUS,
    REGION_TAG,
    SHALLOW,
)
from infra.names import regional_fqdn


@dataclass
class RegionEndpoint:
    """One region's entry point, from its regional stack's outputs."""

    region: str
    lb_dns_name: pulumi.Input[str]
    lb_zone_id: pulumi.Input[str]  # the load balancer's canonical hosted zone (alias target), not ours
    weight: int | None = None  # weighted mode
    failover: Literal["PRIMARY", "SECONDARY"] | None = None  # failover mode
    # infra.health.ALARM_KINDS -> the name of this region's load-balancer alarm of that kind (in this region)
    alarm_names: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)


@dataclass
class DnsFailoverArgs:
    zone_name: str
    record: str  # the label under the zone: the weighted name is <record>.<zone>, the plain ones regional_fqdn(...)
    fqdn: str  # <record>.<zone>
    mode: Literal["weighted", "failover"]
    endpoints: list[RegionEndpoint]
    health_check: HealthCheckConfig
    zone_id: str | None = None  # an existing hosted zone; None creates (and protects) one
    checker_regions: list[str] | None = None  # Route 53 checker locations (>= 3); None: all of them
    tags: dict[str, str] = field(default_factory=dict)


def check_tags(tags: dict[str, str], fqdn: str, region: str, kind: str) -> dict[str, str]:
    """A check's tags: `region` and `check` (CHILD_KINDS, or CALCULATED) on every one, by which the drills and the
    rehearsal find a region's checks and their kinds; `Name` for the console (the record's check: `<fqdn> <region>`)."""
    name = f"{fqdn} {region}" if kind == CALCULATED else f"{fqdn} {region} {kind}"
    return {**tags, "Name": name, REGION_TAG: region, CHECK_TAG: kind}


def health_check_args(
    endpoint: RegionEndpoint, hc: HealthCheckConfig, checker_regions: list[str] | None, tags: dict[str, str], fqdn: str
) -> dict:
    """Keyword arguments of the region's shallow aws.route53.HealthCheck (pure: unit-tested without Pulumi)."""
    return {
        "type": "HTTPS",
        # The load balancer's own name: the check must probe this region, not the DNS name being failed over.
        "fqdn": endpoint.lb_dns_name,
        "port": hc.port,
        "resource_path": hc.path,
        "request_interval": hc.request_interval,
        "failure_threshold": hc.failure_threshold,
        "measure_latency": True,
        # SNI so a TLS listener with several certificates answers; Route 53 does not validate the certificate.
        "enable_sni": True,
        "regions": checker_regions,
        "tags": check_tags(tags, fqdn, endpoint.region, SHALLOW),
    }


def deep_health_check_args(
    endpoint: RegionEndpoint, hc: HealthCheckConfig, checker_regions: list[str] | None, tags: dict[str, str], fqdn: str
) -> dict:
    """The deep check: the shallow check's target, interval and threshold on DEEP_HEALTH_PATH, healthy only on a
    2xx/3xx answer whose body holds DEEP_HEALTH_OK (the sidecar answered one inference within its bound)."""
    return {
        **health_check_args(endpoint, hc, checker_regions, tags, fqdn),
        "type": "HTTPS_STR_MATCH",
        "resource_path": DEEP_HEALTH_PATH,
        "search_string": DEEP_HEALTH_OK,
        "tags": check_tags(tags, fqdn, endpoint.region, DEEP),
    }


def metric_check_args(endpoint: RegionEndpoint, kind: str, tags: dict[str, str], fqdn: str) -> dict:
    """A check that follows the region's load-balancer alarm of `kind`: unhealthy while the alarm is in ALARM."""
    if kind not in endpoint.alarm_names:
        raise ValueError(f"region {endpoint.region} has no {kind} alarm (alarm_names: {sorted(endpoint.alarm_names)})")
    return {
        "type": "CLOUDWATCH_METRIC",
        "cloudwatch_alarm_name": endpoint.alarm_names[kind],
        "cloudwatch_alarm_region": endpoint.region,  # an alarm lives beside the load balancer whose metrics it reads
        "insufficient_data_health_status": INSUFFICIENT_DATA_HEALTH_STATUS,
        "tags": check_tags(tags, fqdn, endpoint.region, kind),
    }


def calculated_check_args(
    endpoint: RegionEndpoint, children: Mapping[str, pulumi.Input[str]], tags: dict[str, str], fqdn: str
) -> dict:
    """The region's check, the one its record carries: healthy while every child (CHILD_KINDS, in that order) is."""
    if tuple(children) != CHILD_KINDS:
        raise ValueError(f"region {endpoint.region}: children {tuple(children)} are not {CHILD_KINDS}")
    return {
        "type": "CALCULATED",
        "child_healthchecks": list(children.values()),
        "child_health_threshold": CHILD_HEALTH_THRESHOLD,
        "tags": check_tags(tags, fqdn, endpoint.region, CALCULATED),
    }


def record_args(
    endpoint: RegionEndpoint, mode: str, fqdn: str, zone_id: pulumi.Input[str], health_check_id: pulumi.Input[str]
) -> dict:
    """Keyword arguments of the region's alias A record (pure)."""
    routing: dict = {}
    if mode == "weighted":
        if endpoint.weight is None:
            raise ValueError(f"weighted mode: region {endpoint.region} has no weight")
        routing["weighted_routing_policies"] = [aws.route53.RecordWeightedRoutingPolicyArgs(weight=endpoint.weight)]
    else:
        if endpoint.failover is None:
            raise ValueError(f"failover mode: region {endpoint.region} has no PRIMARY/SECONDARY role")
        routing["failover_routing_policies"] = [aws.route53.RecordFailoverRoutingPolicyArgs(type=endpoint.failover)]
    return dict(
        zone_id=zone_id,
        name=fqdn,
        type="A",
        set_identifier=endpoint.region,
        # Alias records carry no TTL of their own: resolvers see the load balancer record's TTL (60 s for ELB).
        aliases=[
            aws.route53.RecordAliasArgs(
                name=endpoint.lb_dns_name, zone_id=endpoint.lb_zone_id, evaluate_target_health=True
            )
        ],
        health_check_id=health_check_id,
        **routing,
    )


def regional_record_args(endpoint: RegionEndpoint, name: str, zone_id: pulumi.Input[str]) -> dict:
    """Keyword arguments of the region's plain alias A record `name` (pure): simple routing, so no set_identifier,
    weight, failover policy or health check; a client that finds the region failing ejects it itself."""
    return {
        "zone_id": zone_id,
        "name": name,
        "type": "A",
        "aliases": [
            aws.route53.RecordAliasArgs(
                name=endpoint.lb_dns_name,
                zone_id=endpoint.lb_zone_id,
                # False: Route 53 answers a lone simple record even with every target unhealthy; True would gate nothing
                evaluate_target_health=False,
            )
        ],
    }


class DnsFailover(pulumi.ComponentResource):
    zone: aws.route53.Zone | None  # None when an existing zone is used
    zone_id: pulumi.Output[str]
    health_checks: dict[str, aws.route53.HealthCheck]  # region -> its calculated check (the record's)
    children: dict[str, dict[str, aws.route53.HealthCheck]]  # region -> CHILD_KINDS -> check
    records: dict[str, aws.route53.Record]
    regional_records: dict[str, aws.route53.Record]  # region -> its plain per-region record
    regional_fqdns: dict[str, str]  # region -> regional_fqdn(record, region, zone)

    def __init__(
        self, name: str, args: DnsFailoverArgs, provider: aws.Provider, opts: pulumi.ResourceOptions | None = None
    ):
        """`provider`: Route 53 is a global service; the control region's provider signs its calls."""
        super().__init__("reco-dr:global:DnsFailover", name, None, opts)
        o = pulumi.ResourceOptions(parent=self, provider=provider)

        if args.zone_id:
            # An existing zone is used by id, with no lookup: a typo'd id fails at the first record, and the
            # zone's lifecycle stays with whoever owns the domain.
            self.zone = None
            self.zone_id = pulumi.Output.from_input(args.zone_id)
        else:
            self.zone = aws.route53.Zone(
                f"{name}-zone",
                name=args.zone_name,
                comment=f"reco-dr: {args.fqdn} (managed by Pulumi)",
                tags=args.tags,
                # Deleting a delegated zone breaks every name under it; `pulumi destroy` must not do it silently.
                opts=pulumi.ResourceOptions.merge(o, pulumi.ResourceOptions(protect=True)),
            )
            self.zone_id = self.zone.zone_id

        self.health_checks, self.children, self.records = {}, {}, {}
        self.regional_records, self.regional_fqdns = {}, {}
        for ep in sorted(args.endpoints, key=lambda e: e.region):
            kids = {
                # The shallow check keeps the name it always had: it is updated in place, not replaced in service.
                SHALLOW: aws.route53.HealthCheck(
                    f"{name}-hc-{ep.region}",
                    **health_check_args(ep, args.health_check, args.checker_regions, args.tags, args.fqdn),
                    opts=o,
                ),
                DEEP: aws.route53.HealthCheck(
                    f"{name}-hc-{DEEP}-{ep.region}",
                    **deep_health_check_args(ep, args.health_check, args.checker_regions, args.tags, args.fqdn),
                    opts=o,
                ),
                **{
                    kind: aws.route53.HealthCheck(
                        f"{name}-hc-{kind}-{ep.region}", **metric_check_args(ep, kind, args.tags, args.fqdn), opts=o
                    )
                    for kind in ALARM_KINDS
                },
            }
            self.children[ep.region] = kids
            hc = aws.route53.HealthCheck(
                f"{name}-hc-{CALCULATED}-{ep.region}",
                **calculated_check_args(ep, {k: c.id for k, c in kids.items()}, args.tags, args.fqdn),
                opts=o,
            )
            self.health_checks[ep.region] = hc
            self.records[ep.region] = aws.route53.Record(
                f"{name}-{ep.region}", **record_args(ep, args.mode, args.fqdn, self.zone_id, hc.id), opts=o
            )
            plain = regional_fqdn(args.record, ep.region, args.zone_name)
            self.regional_fqdns[ep.region] = plain
            self.regional_records[ep.region] = aws.route53.Record(
                f"{name}-regional-{ep.region}", **regional_record_args(ep, plain, self.zone_id), opts=o
            )

        self.register_outputs(
            {
                "zone_id": self.zone_id,
                "health_check_ids": {r: hc.id for r, hc in self.health_checks.items()},
                "health_check_children": {r: {k: c.id for k, c in x.items()} for r, x in self.children.items()},
                "record_fqdns": {r: rec.fqdn for r, rec in self.records.items()},
                "regional_fqdns": dict(self.regional_fqdns),
            }
        )
