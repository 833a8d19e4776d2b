"""CloudWatch alarms for the global stack: each region's health check and each replication rule.

A CloudWatch alarm reads metrics of its own region and notifies an SNS topic of its own region, so there is
one encrypted topic per region that holds alarms:
  - Route 53 publishes HealthCheckStatus only in us-east-1: every health-check alarm lives there;
  - S3 publishes ReplicationLatency / OperationsFailedReplication in the source bucket's region, per
    (SourceBucket, DestinationBucket, RuleId): each rule's alarms live in its source region.
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


@dataclass
class AlertingArgs:
    env: str
    account_id: pulumi.Input[str]
    health_checks: dict[str, pulumi.Input[str]]  # region -> Route 53 health check id
    replication_rules: list[RuleRef]
    replication_latency_threshold_seconds: int
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


class Alerting(pulumi.ComponentResource):
    topics: dict[str, aws.sns.Topic]
    health_check_alarms: dict[str, aws.cloudwatch.MetricAlarm]
    replication_alarms: dict[tuple[str, str], list[aws.cloudwatch.MetricAlarm]]

    def __init__(
        self,
        name: str,
        args: AlertingArgs,
        providers: dict[str, aws.Provider],
        metrics_region: str,
        opts: pulumi.ResourceOptions | None = None,
    ):
        """`providers` must hold `metrics_region` (us-east-1, for Route 53 metrics) and every source region."""
        super().__init__("reco-dr:global:Alerting", name, None, opts)
        regions = sorted({metrics_region, *(r.source_region for r in args.replication_rules)})
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

        def alarm(resource_name: str, region: str, **kw) -> aws.cloudwatch.MetricAlarm:
            topic = self.topics[region].arn
            return aws.cloudwatch.MetricAlarm(
                resource_name,
                alarm_actions=[topic],
                ok_actions=[topic],
                tags=args.tags,
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

        self.register_outputs({"topic_arns": {r: t.arn for r, t in self.topics.items()}})
