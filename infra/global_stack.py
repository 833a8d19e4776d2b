"""The global stack (`<env>-global`): DNS failover across the environment's regions (each region's health: shallow,
deep and load-balancer metric checks combined by a calculated check, infra/health.py), artifact replication between
their buckets, and the alarms on both.

It reads each regional stack's outputs through a StackReference and validates them against
infra.outputs.RegionalOutputs, so a regional stack that was never deployed, or exports something else,
fails here naming the stack and the output instead of as a provider error halfway through an update.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.catalog import REGIONS
from infra.components.alarms import AlbDimensions, Alerting, AlertingArgs, EdgeAlarms, EdgeAlarmsArgs
from infra.components.dns import DnsFailover, DnsFailoverArgs, RegionEndpoint
from infra.components.replication import ArtifactReplication, ReplicatedBucket, ReplicationArgs, account_from_kms_arns
from infra.config import PROJECT, GlobalConfig
from infra.invariants import ROUTE53_METRICS_REGION, refuse_global
from infra.outputs import OUTPUT_KEYS, RegionalOutputs, validate_outputs


def regional_stack_name(env: str, region: str) -> str:
    # infra.config enforces `<env>-<region short>` for regional stacks, so the name is derived, not configured.
    return f"{env}-{REGIONS[region]}"


def stack_reference_name(org: str, stack: str) -> str:
    return f"{org}/{PROJECT}/{stack}"


def global_tags(stack: str, cfg: GlobalConfig) -> dict[str, str]:
    return {"project": PROJECT, "stack": stack, "env": cfg.env, "region-role": "global", "managed-by": "pulumi"}


def aws_providers(stack: str, cfg: GlobalConfig) -> dict[str, aws.Provider]:
    """One explicit provider per region the stack touches: every routed region, the control region and
    us-east-1 (Route 53 metrics). Nothing falls back to a default provider and an ambient AWS_REGION."""
    regions = sorted({*cfg.routing.regions, cfg.control_region, ROUTE53_METRICS_REGION})
    tags = aws.ProviderDefaultTagsArgs(tags=global_tags(stack, cfg))
    return {r: aws.Provider(f"aws-{r}", region=r, default_tags=tags) for r in regions}


def regional_outputs(org: str, stack: str) -> pulumi.Output[RegionalOutputs]:
    """A regional stack's outputs, validated. Every schema key is fetched with get_output (None when
    absent) and the whole set validated at once, so a missing or malformed output raises OutputError
    "stack <stack>: output '<key>' ..." — require_output would raise a bare KeyError naming neither."""
    ref = pulumi.StackReference(stack_reference_name(org, stack))
    values = {k: ref.get_output(k) for k in OUTPUT_KEYS}
    return pulumi.Output.all(**values).apply(
        lambda v: validate_outputs(stack, {k: x for k, x in v.items() if x is not None})
    )


@dataclass
class GlobalStack:
    providers: dict[str, aws.Provider]
    outputs: dict[str, pulumi.Output[RegionalOutputs]]
    dns: DnsFailover
    replication: ArtifactReplication
    alerting: Alerting
    edge_alarms: EdgeAlarms


def declare_global(stack: str, cfg: GlobalConfig) -> GlobalStack:
    # Refuse a stack that is wrong on its own (all weights 0, not one PRIMARY) before declaring anything.
    refuse_global(stack, cfg)
    tags = global_tags(stack, cfg)
    providers = aws_providers(stack, cfg)
    control = providers[cfg.control_region]
    regions = sorted(cfg.routing.regions)

    outputs = {r: regional_outputs(cfg.stack_org, regional_stack_name(cfg.env, r)) for r in regions}

    def field(r: str, name: str) -> pulumi.Output[str]:
        return outputs[r].apply(lambda o: getattr(o, name))

    albs = {r: AlbDimensions(field(r, "lb_arn_suffix"), field(r, "target_group_arn_suffix")) for r in regions}
    # Before the DNS: each region's metric checks name these alarms, and Route 53 refuses a check on an alarm that does
    # not exist yet (the alarm's name, an output, orders the two).
    edge_alarms = EdgeAlarms(
        "edge-alarms",
        EdgeAlarmsArgs(env=cfg.env, load_balancers=albs, config=cfg.health_alarms, tags=tags),
        providers=providers,
    )

    dns = DnsFailover(
        "dns",
        DnsFailoverArgs(
            zone_name=cfg.zone.name,
            record=cfg.record,
            zone_id=cfg.zone.zone_id,
            fqdn=cfg.fqdn,
            mode=cfg.routing.mode,
            health_check=cfg.health_check,
            endpoints=[
                RegionEndpoint(
                    r,
                    field(r, "lb_dns_name"),
                    field(r, "lb_zone_id"),
                    weight=cfg.routing.regions[r].weight,
                    failover=cfg.routing.regions[r].failover,
                    alarm_names={k: a.name for k, a in edge_alarms.alarms[r].items()},
                )
                for r in regions
            ],
            tags=tags,
        ),
        provider=control,
    )

    buckets = [
        ReplicatedBucket(r, field(r, "bucket_name"), field(r, "bucket_arn"), field(r, "kms_key_arn")) for r in regions
    ]
    account_id = account_from_kms_arns([b.kms_key_arn for b in buckets])
    replication = ArtifactReplication(
        "artifacts",
        ReplicationArgs(buckets=buckets, account_id=account_id, rtc_minutes=cfg.replication_rtc_minutes, tags=tags),
        providers=providers,
        control=control,
    )

    alerting = Alerting(
        "alarms",
        AlertingArgs(
            env=cfg.env,
            account_id=account_id,
            health_checks={r: hc.id for r, hc in dns.health_checks.items()},
            replication_rules=replication.rules,
            replication_latency_threshold_seconds=cfg.replication_latency_alarm_seconds,
            load_balancers=albs,
            health_alarms=cfg.health_alarms,
            p99_ms=cfg.objectives.p99_ms,
            email=cfg.alarm_email,
            tags=tags,
        ),
        providers=providers,
        metrics_region=ROUTE53_METRICS_REGION,
    )

    pulumi.export("fqdn", cfg.fqdn)
    pulumi.export("zone_id", dns.zone_id)
    pulumi.export("routing_mode", cfg.routing.mode)
    pulumi.export("weights", cfg.routing.weights())
    # region -> the record's (calculated) check; its children by kind (infra.health.CHILD_KINDS); the load-balancer
    # alarms they follow by kind (infra.health.ALARM_KINDS)
    pulumi.export("health_check_ids", {r: hc.id for r, hc in dns.health_checks.items()})
    pulumi.export("health_check_children", {r: {k: c.id for k, c in x.items()} for r, x in dns.children.items()})
    pulumi.export("health_alarm_names", {r: {k: a.name for k, a in x.items()} for r, x in edge_alarms.alarms.items()})
    pulumi.export("record_set_identifiers", regions)
    # region -> its plain name (`<record>-<region short>.<zone>`): what resilient clients resolve to pick a region
    pulumi.export("regional_fqdns", dict(dns.regional_fqdns))
    pulumi.export("replication_role_arn", replication.role.arn)
    pulumi.export("alarm_topic_arns", {r: t.arn for r, t in alerting.topics.items()})
    pulumi.export("regional_stacks", {r: regional_stack_name(cfg.env, r) for r in regions})
    return GlobalStack(providers, outputs, dns, replication, alerting, edge_alarms)
