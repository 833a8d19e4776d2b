"""CloudWatch alarms for the global stack, in two kinds:

- for people (Alerting): each region's health check (the calculated check its record carries), each replication rule,
  and each region's p99 response time, notifying an SNS topic;
- for Route 53 (EdgeAlarms): each region's load-balancer alarms (infra.health.ALARM_KINDS), which the region's metric
  checks follow (infra/components/dns.py). They notify nobody: their action is to fail a child of the region's
  calculated check, and the health-check alarm above tells people when that takes the region out of DNS.

A CloudWatch alarm reads metrics of its own region and notifies an SNS topic of its own region, so there is
one encrypted topic per region that holds alarms:
  - Route 53 publishes HealthCheckStatus only in us-east-1: every health-check alarm lives there;
  - S3 publishes ReplicationLatency / OperationsFailedReplication in the source bucket's region, per
    (SourceBucket, DestinationBucket, RuleId): each rule's alarms live in its source region;
  - a load balancer publishes its metrics (AWS/ApplicationELB) in its own region: its alarms live there.
Each topic is encrypted with a customer-managed KMS key whose policy lets CloudWatch use it: the AWS-managed
SNS key cannot be granted to CloudWatch, so alarms published to a topic encrypted with it are dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from infra.components.kms import rotating_key
from infra.components.replication import RuleRef
from infra.config import HealthAlarms
from infra.health import (
    ALARM_KINDS,
    ALARM_TAG,
    ALB_NAMESPACE,
    ERROR_METRICS,
    ERROR_RATIO_EXPRESSION,
    ERROR_RATIO_ID,
    ERRORS,
    LATENCY,
    LATENCY_METRIC,
    LATENCY_STATISTIC,
    P99,
    P99_STATISTIC,
    REGION_TAG,
    TREAT_MISSING_DATA,
    alarm_name,
    p99_alarm_name,
)


@dataclass
class AlbDimensions:
    """A region's load balancer as CloudWatch names it (its regional stack's outputs)."""

    lb_arn_suffix: pulumi.Input[str]  # dimension `LoadBalancer`: app/<name>/<id>
    target_group_arn_suffix: pulumi.Input[str]  # dimension `TargetGroup` of the stable Triton target group


@dataclass
class AlertingArgs:
    env: str
    account_id: pulumi.Input[str]
    health_checks: dict[str, pulumi.Input[str]]  # region -> Route 53 health check id (the record's)
    replication_rules: list[RuleRef]
    replication_latency_threshold_seconds: int
    load_balancers: dict[str, AlbDimensions]  # region -> its load balancer, for the p99 alarm
    health_alarms: HealthAlarms  # period and M of N of the p99 alarm
    p99_ms: float  # objectives.p99_ms: the p99 alarm's threshold
    email: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


def topic_key_policy(account_id: str) -> dict:
    """The account administers the key; CloudWatch may only generate data keys and decrypt for SNS."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AccountAdministers",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            # As AWS documents it for alarms on encrypted topics; the key serves only this topic.
            {
                "Sid": "CloudWatchPublishesToEncryptedTopic",
                "Effect": "Allow",
                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                "Resource": "*",
            },
        ],
    }


def health_check_alarm_args(region: str, health_check_id: pulumi.Input[str], env: str) -> dict:
    """HealthCheckStatus is 1 while healthy: alarm when the minimum over a minute drops below 1.
    Missing data counts as breaching because a health check that stops reporting is not a healthy one."""
    return {
        "alarm_description": (
            f"reco-dr {env}: Route 53 health check of {region} is failing; DNS has taken it out of rotation"
        ),
        "namespace": "AWS/Route53",
        "metric_name": "HealthCheckStatus",
        "dimensions": {"HealthCheckId": health_check_id},
        "statistic": "Minimum",
        "period": 60,
        "evaluation_periods": 1,
        "threshold": 1,
        "comparison_operator": "LessThanThreshold",
        "treat_missing_data": "breaching",
    }


def _replication_alarm(rule: RuleRef, *, description: str, metric: str, statistic: str, threshold: float) -> dict:
    """An alarm on one replication rule's S3 metric over 5 minutes. No data means nothing was written, which is
    not a breach."""
    return {
        "alarm_description": description,
        "namespace": "AWS/S3",
        "metric_name": metric,
        "dimensions": {
            "SourceBucket": rule.source_bucket,
            "DestinationBucket": rule.destination_bucket,
            "RuleId": rule.rule_id,
        },
        "statistic": statistic,
        "period": 300,
        "evaluation_periods": 1,
        "threshold": threshold,
        "comparison_operator": "GreaterThanThreshold",
        "treat_missing_data": "notBreaching",
    }


def replication_latency_alarm_args(rule: RuleRef, threshold_seconds: int, env: str) -> dict:
    """Maximum ReplicationLatency above the configured RPO budget."""
    return _replication_alarm(
        rule,
        metric="ReplicationLatency",
        statistic="Maximum",
        threshold=threshold_seconds,
        description=(
            f"reco-dr {env}: artifacts from {rule.source_region} reach {rule.destination_region} "
            f"later than {threshold_seconds} s"
        ),
    )


def replication_failure_alarm_args(rule: RuleRef, env: str) -> dict:
    """Failed operations never show up as latency (e.g. a KMS grant missing): alarm on any of them."""
    return _replication_alarm(
        rule,
        metric="OperationsFailedReplication",
        statistic="Sum",
        threshold=0,
        description=f"reco-dr {env}: replication from {rule.source_region} to {rule.destination_region} is failing",
    )


# ---------------------------------------------------------------- a region's load balancer
def _m_of_n(cfg: HealthAlarms) -> dict:
    """M of N and missing data, shared by every load-balancer alarm (infra.config.HealthAlarms says why)."""
    return {
        "evaluation_periods": cfg.evaluation_periods,
        "datapoints_to_alarm": cfg.datapoints_to_alarm,
        "treat_missing_data": TREAT_MISSING_DATA,
        "comparison_operator": "GreaterThanThreshold",
    }


def alb_alarm_tags(tags: dict[str, str], region: str, kind: str) -> dict[str, str]:
    # The drills and the rehearsal find a region's alarms and their kinds by these tags (infra/health.py).
    return {**tags, REGION_TAG: region, ALARM_TAG: kind}


def error_ratio_alarm_args(env: str, region: str, alb: AlbDimensions, cfg: HealthAlarms) -> dict:
    """5xx answers (the targets' and the load balancer's own) over requests, by metric math (infra.health): above
    `error_ratio`. Each count is a Sum over one period; the alarm itself takes no period of its own."""
    queries = [
        aws.cloudwatch.MetricAlarmMetricQueryArgs(
            id=qid,
            metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
                namespace=ALB_NAMESPACE,
                metric_name=metric,
                dimensions={"LoadBalancer": alb.lb_arn_suffix},
                period=cfg.period_seconds,
                stat="Sum",
            ),
            return_data=False,
        )
        for qid, metric in ERROR_METRICS.items()
    ]
    queries.append(
        aws.cloudwatch.MetricAlarmMetricQueryArgs(
            id=ERROR_RATIO_ID, expression=ERROR_RATIO_EXPRESSION, label="5xx ratio", return_data=True
        )
    )
    return {
        "name": alarm_name(env, region, ERRORS),
        "alarm_description": (
            f"reco-dr {env}: more than {cfg.error_ratio:.2%} of the requests to {region} answered 5xx in "
            f"{cfg.datapoints_to_alarm} of {cfg.evaluation_periods} periods of {cfg.period_seconds} s; "
            "its Route 53 metric check takes the region out of DNS"
        ),
        "metric_queries": queries,
        "threshold": cfg.error_ratio,
        **_m_of_n(cfg),
    }


def _response_time(alb: AlbDimensions, cfg: HealthAlarms) -> dict:
    """The stable Triton target group's TargetResponseTime (seconds) over one period (infra/health.py says why the
    target group's, not the whole load balancer's)."""
    return {
        "namespace": ALB_NAMESPACE,
        "metric_name": LATENCY_METRIC,
        "dimensions": {"LoadBalancer": alb.lb_arn_suffix, "TargetGroup": alb.target_group_arn_suffix},
        "period": cfg.period_seconds,
        **_m_of_n(cfg),
    }


def latency_alarm_args(env: str, region: str, alb: AlbDimensions, cfg: HealthAlarms) -> dict:
    """The mean response time above `latency_ms` (Route 53 follows no percentile: infra.health.LATENCY_STATISTIC)."""
    return {
        "name": alarm_name(env, region, LATENCY),
        "alarm_description": (
            f"reco-dr {env}: mean response time of {region} above {cfg.latency_ms:g} ms in {cfg.datapoints_to_alarm} "
            f"of {cfg.evaluation_periods} periods of {cfg.period_seconds} s; its Route 53 metric check takes the "
            "region out of DNS"
        ),
        "statistic": LATENCY_STATISTIC,
        "threshold": cfg.latency_ms / 1000,
        **_response_time(alb, cfg),
    }


def p99_alarm_args(env: str, region: str, alb: AlbDimensions, cfg: HealthAlarms, p99_ms: float) -> dict:
    """The p99 response time above the objective, for people: no health check follows it, so it moves no traffic."""
    return {
        "name": p99_alarm_name(env, region),
        "alarm_description": (
            f"reco-dr {env}: p99 response time of {region} above the objective of {p99_ms:g} ms in "
            f"{cfg.datapoints_to_alarm} of {cfg.evaluation_periods} periods of {cfg.period_seconds} s (DNS does not "
            "act on this alarm; the mean-latency and 5xx alarms move traffic)"
        ),
        "extended_statistic": P99_STATISTIC,
        "threshold": p99_ms / 1000,
        **_response_time(alb, cfg),
    }


@dataclass
class EdgeAlarmsArgs:
    env: str
    load_balancers: dict[str, AlbDimensions]  # region -> its load balancer
    config: HealthAlarms
    tags: dict[str, str] = field(default_factory=dict)


class EdgeAlarms(pulumi.ComponentResource):
    """Each region's load-balancer alarms that its Route 53 metric checks follow (infra.health.ALARM_KINDS), in the
    load balancer's own region. No SNS action: see the module docstring."""

    alarms: dict[str, dict[str, aws.cloudwatch.MetricAlarm]]  # region -> ALARM_KINDS -> alarm

    def __init__(
        self,
        name: str,
        args: EdgeAlarmsArgs,
        providers: dict[str, aws.Provider],
        opts: pulumi.ResourceOptions | None = None,
    ):
        """`providers` must hold every region of `args.load_balancers`."""
        super().__init__("reco-dr:global:EdgeAlarms", name, None, opts)
        self.alarms = {}
        for region, alb in sorted(args.load_balancers.items()):
            o = pulumi.ResourceOptions(parent=self, provider=providers[region])
            kinds = {
                ERRORS: error_ratio_alarm_args(args.env, region, alb, args.config),
                LATENCY: latency_alarm_args(args.env, region, alb, args.config),
            }
            assert tuple(kinds) == ALARM_KINDS, "one alarm per infra.health.ALARM_KINDS"
            self.alarms[region] = {
                kind: aws.cloudwatch.MetricAlarm(
                    f"{name}-{kind}-{region}", tags=alb_alarm_tags(args.tags, region, kind), opts=o, **kw
                )
                for kind, kw in kinds.items()
            }
        self.register_outputs({"alarm_names": {r: {k: a.name for k, a in x.items()} for r, x in self.alarms.items()}})


# ---------------------------------------------------------------- alarms for people
class Alerting(pulumi.ComponentResource):
    topics: dict[str, aws.sns.Topic]
    health_check_alarms: dict[str, aws.cloudwatch.MetricAlarm]
    replication_alarms: dict[tuple[str, str], list[aws.cloudwatch.MetricAlarm]]
    p99_alarms: dict[str, aws.cloudwatch.MetricAlarm]  # region -> its p99 alarm

    def __init__(
        self,
        name: str,
        args: AlertingArgs,
        providers: dict[str, aws.Provider],
        metrics_region: str,
        opts: pulumi.ResourceOptions | None = None,
    ):
        """`providers` must hold `metrics_region` (us-east-1, for Route 53 metrics), every source region and every
        region of `args.load_balancers`."""
        super().__init__("reco-dr:global:Alerting", name, None, opts)
        regions = sorted({metrics_region, *(r.source_region for r in args.replication_rules), *args.load_balancers})
        key_policy = pulumi.Output.from_input(args.account_id).apply(
            lambda a: json.dumps(topic_key_policy(a), sort_keys=True)
        )

        self.topics = {}
        for region in regions:
            o = pulumi.ResourceOptions(parent=self, provider=providers[region])
            key = rotating_key(
                f"{name}-key-{region}", f"reco-dr {args.env} alarm topic in {region}", key_policy, o, args.tags
            )
            topic = aws.sns.Topic(f"{name}-{region}", kms_master_key_id=key.arn, tags=args.tags, opts=o)
            if args.email:
                # The address must confirm the subscription once; until then nothing is delivered.
                aws.sns.TopicSubscription(
                    f"{name}-email-{region}", topic=topic.arn, protocol="email", endpoint=args.email, opts=o
                )
            self.topics[region] = topic

        def alarm(
            resource_name: str, region: str, tags: dict[str, str] = args.tags, **kw
        ) -> aws.cloudwatch.MetricAlarm:
            topic = self.topics[region].arn
            return aws.cloudwatch.MetricAlarm(
                resource_name,
                alarm_actions=[topic],
                ok_actions=[topic],
                tags=tags,
                opts=pulumi.ResourceOptions(parent=self, provider=providers[region]),
                **kw,
            )

        self.health_check_alarms = {
            region: alarm(f"{name}-hc-{region}", metrics_region, **health_check_alarm_args(region, hc_id, args.env))
            for region, hc_id in sorted(args.health_checks.items())
        }
        self.replication_alarms = {}
        for rule in args.replication_rules:
            pair = f"{rule.source_region}-to-{rule.destination_region}"
            self.replication_alarms[(rule.source_region, rule.destination_region)] = [
                alarm(
                    f"{name}-repl-latency-{pair}",
                    rule.source_region,
                    **replication_latency_alarm_args(rule, args.replication_latency_threshold_seconds, args.env),
                ),
                alarm(
                    f"{name}-repl-failed-{pair}", rule.source_region, **replication_failure_alarm_args(rule, args.env)
                ),
            ]

        self.p99_alarms = {
            region: alarm(
                f"{name}-{P99}-{region}",
                region,
                tags=alb_alarm_tags(args.tags, region, P99),
                **p99_alarm_args(args.env, region, alb, args.health_alarms, args.p99_ms),
            )
            for region, alb in sorted(args.load_balancers.items())
        }

        self.register_outputs({"topic_arns": {r: t.arn for r, t in self.topics.items()}})
