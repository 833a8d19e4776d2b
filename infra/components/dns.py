"""DNS failover across regions: hosted zone, one Route 53 health check and one alias record per region, plus
one plain per-region name per region.

Route 53 answers `<record>.<zone>` from the records whose health check passes: by weight (active-active,
canary, standby at 0) or PRIMARY/SECONDARY. Every record carries its region's health check *and*
`evaluate_target_health`, so a region leaves DNS when Triton stops being ready (the health check probes
/v2/health/ready through the load balancer) or when the load balancer itself has no healthy targets.
Failover is then a data-plane event: no Route 53 or Pulumi API call is needed when a region dies.

Beside it, `<record>-<region short>.<zone>` (infra.names.regional_fqdn) is a simple alias record of that
region's load balancer: no weight, no failover, no health check. Resilient clients (drills.client) resolve these
to reach the region of their choice and eject a failing region themselves; DNS never takes a region away from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pulumi
import pulumi_aws as aws

from infra.config import HealthCheck as HealthCheckConfig
from infra.names import regional_fqdn


@dataclass
class RegionEndpoint:
    """One region's entry point, from its regional stack's outputs."""

    region: str
    lb_dns_name: pulumi.Input[str]
    lb_zone_id: pulumi.Input[str]  # the load balancer's canonical hosted zone (alias target), not ours
    weight: int | None = None  # weighted mode
    failover: Literal["PRIMARY", "SECONDARY"] | None = None  # failover mode


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


def health_check_args(
    endpoint: RegionEndpoint, hc: HealthCheckConfig, checker_regions: list[str] | None, tags: dict[str, str], fqdn: str
) -> dict:
    """Keyword arguments of the region's aws.route53.HealthCheck (pure: unit-tested without Pulumi)."""
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
        "tags": {**tags, "Name": f"{fqdn} {endpoint.region}", "region": endpoint.region},
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
    health_checks: dict[str, aws.route53.HealthCheck]
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

        self.health_checks, self.records = {}, {}
        self.regional_records, self.regional_fqdns = {}, {}
        for ep in sorted(args.endpoints, key=lambda e: e.region):
            hc = aws.route53.HealthCheck(
                f"{name}-hc-{ep.region}",
                **health_check_args(ep, args.health_check, args.checker_regions, args.tags, args.fqdn),
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
                "record_fqdns": {r: rec.fqdn for r, rec in self.records.items()},
                "regional_fqdns": dict(self.regional_fqdns),
            }
        )
