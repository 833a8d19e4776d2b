"""Cross-region replication of the model-artifact buckets: every regional bucket to every other region.

One `BucketReplicationConfiguration` per source bucket (S3 keeps exactly one per bucket; a second resource
would overwrite the first), one rule per destination with its own priority. Each rule replicates
SSE-KMS objects re-encrypted under the destination region's key, replicates delete markers (so a version
withdrawn in one region is withdrawn everywhere), and turns on Replication Time Control with metrics at 15
minutes: RTC is what bounds the artifact RPO, and its metrics feed the ReplicationLatency alarms.

Replicas are never replicated again, so a full mesh does not loop. Versioning on both sides is the regional
stacks' job; the policy pack checks it there.

The IAM documents are pure functions over plain strings so tests read exactly what AWS will evaluate.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

SOURCE_BUCKET_ACTIONS = ("s3:GetReplicationConfiguration", "s3:ListBucket")
SOURCE_OBJECT_ACTIONS = ("s3:GetObjectVersionForReplication", "s3:GetObjectVersionAcl", "s3:GetObjectVersionTagging")
DESTINATION_OBJECT_ACTIONS = ("s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags")


@dataclass(frozen=True)
class BucketFacts:
    """A regional bucket as plain strings (resolved outputs)."""

    region: str
    name: str
    arn: str
    kms_key_arn: str


@dataclass
class ReplicatedBucket:
    """A regional bucket as Pulumi inputs (from StackReference outputs)."""

    region: str
    name: pulumi.Input[str]
    arn: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]


@dataclass(frozen=True)
class RuleRef:
    """One replication rule, for alarms: ReplicationLatency is published per source, destination and rule."""

    source_region: str
    destination_region: str
    rule_id: str
    source_bucket: pulumi.Input[str]
    destination_bucket: pulumi.Input[str]


@dataclass
class ReplicationArgs:
    buckets: list[ReplicatedBucket]
    account_id: pulumi.Input[str]  # the fleet's AWS account: the trust policy's confused-deputy guard
    rtc_minutes: int = 15
    tags: dict[str, str] = field(default_factory=dict)


def rule_id(destination_region: str) -> str:
    return f"to-{destination_region}"


def _sid(prefix: str, region: str) -> str:
    # IAM statement ids are alphanumeric only.
    return prefix + "".join(p.capitalize() for p in re.split(r"[^a-z0-9]+", region))


def kms_context(bucket_arn: str) -> list[str]:
    # S3 passes the object ARN as encryption context, or the bucket ARN when S3 Bucket Keys are on.
    return [bucket_arn, f"{bucket_arn}/*"]


def trust_policy(account_id: str, source_bucket_arns: list[str]) -> dict:
    """Only S3, acting for these buckets in this account, may assume the replication role."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": account_id},
                    "ArnLike": {"aws:SourceArn": sorted(source_bucket_arns)},
                },
            }
        ],
    }


def permissions_policy(buckets: list[BucketFacts]) -> dict:
    """Exactly what S3 replication needs, and nothing else: read the configuration and object versions of
    the sources, write replicas to the destinations, decrypt with source keys and encrypt with destination
    keys, each KMS grant only through S3 in that key's region and only for that bucket's objects.
    In a full mesh every bucket is both a source and a destination."""
    buckets = sorted(buckets, key=lambda b: b.region)
    arns = [b.arn for b in buckets]
    statements: list[dict] = [
        {
            "Sid": "ReadSourceReplicationConfig",
            "Effect": "Allow",
            "Action": list(SOURCE_BUCKET_ACTIONS),
            "Resource": arns,
        },
        {
            "Sid": "ReadSourceObjectVersions",
            "Effect": "Allow",
            "Action": list(SOURCE_OBJECT_ACTIONS),
            "Resource": [f"{a}/*" for a in arns],
        },
        {
            "Sid": "WriteReplicas",
            "Effect": "Allow",
            "Action": list(DESTINATION_OBJECT_ACTIONS),
            "Resource": [f"{a}/*" for a in arns],
        },
    ]
    for b in buckets:
        via = {"kms:ViaService": f"s3.{b.region}.amazonaws.com"}
        ctx = {"kms:EncryptionContext:aws:s3:arn": kms_context(b.arn)}
        statements.append(
            {
                "Sid": _sid("DecryptSource", b.region),
                "Effect": "Allow",
                "Action": ["kms:Decrypt"],
                "Resource": [b.kms_key_arn],
                "Condition": {"StringEquals": via, "StringLike": ctx},
            }
        )
        statements.append(
            {
                "Sid": _sid("EncryptReplica", b.region),
                "Effect": "Allow",
                "Action": ["kms:Encrypt"],
                "Resource": [b.kms_key_arn],
                "Condition": {"StringEquals": via, "StringLike": ctx},
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def replication_rule(
    destination_region: str,
    priority: int,
    destination_bucket_arn: pulumi.Input[str],
    destination_kms_key_arn: pulumi.Input[str],
    rtc_minutes: int,
) -> aws.s3.BucketReplicationConfigRuleArgs:
    """One rule: everything in the bucket (empty filter, which multi-destination rules require) to one region."""
    return aws.s3.BucketReplicationConfigRuleArgs(
        id=rule_id(destination_region),
        priority=priority,
        status="Enabled",
        filter=aws.s3.BucketReplicationConfigRuleFilterArgs(),
        # A delete (or a delete marker hiding a published file) in one region must not spread to every region.
        delete_marker_replication=aws.s3.BucketReplicationConfigRuleDeleteMarkerReplicationArgs(status="Disabled"),
        source_selection_criteria=aws.s3.BucketReplicationConfigRuleSourceSelectionCriteriaArgs(
            # Without this opt-in S3 silently skips SSE-KMS objects, i.e. every artifact.
            sse_kms_encrypted_objects=aws.s3.BucketReplicationConfigRuleSourceSelectionCriteriaSseKmsEncryptedObjectsArgs(
                status="Enabled"
            ),
        ),
        destination=aws.s3.BucketReplicationConfigRuleDestinationArgs(
            bucket=destination_bucket_arn,
            encryption_configuration=aws.s3.BucketReplicationConfigRuleDestinationEncryptionConfigurationArgs(
                replica_kms_key_id=destination_kms_key_arn,  # a KMS key lives in one region: the destination's
            ),
            replication_time=aws.s3.BucketReplicationConfigRuleDestinationReplicationTimeArgs(
                status="Enabled",
                time=aws.s3.BucketReplicationConfigRuleDestinationReplicationTimeTimeArgs(minutes=rtc_minutes),
            ),
            # RTC requires metrics; the event threshold is what OperationsMissedThreshold counts against.
            metrics=aws.s3.BucketReplicationConfigRuleDestinationMetricsArgs(
                status="Enabled",
                event_threshold=aws.s3.BucketReplicationConfigRuleDestinationMetricsEventThresholdArgs(
                    minutes=rtc_minutes
                ),
            ),
        ),
    )


def _account_of(kms_key_arns: list[str]) -> str:
    accounts = {a.split(":")[4] for a in kms_key_arns}
    if len(accounts) != 1:
        # Cross-account replication needs destination account + owner override; this design is one account.
        raise ValueError(
            f"the regional buckets' KMS keys span accounts {sorted(accounts)}: replication here is same-account only"
        )
    return accounts.pop()


def account_from_kms_arns(kms_key_arns: list[pulumi.Input[str]]) -> pulumi.Output[str]:
    """The fleet's account id, read from the regional KMS key ARNs (no credentials-dependent invoke)."""
    return pulumi.Output.all(*kms_key_arns).apply(lambda arns: _account_of(list(arns)))


class ArtifactReplication(pulumi.ComponentResource):
    role: aws.iam.Role
    configs: dict[str, aws.s3.BucketReplicationConfig]
    rules: list[RuleRef]

    def __init__(
        self,
        name: str,
        args: ReplicationArgs,
        providers: dict[str, aws.Provider],
        control: aws.Provider,
        opts: pulumi.ResourceOptions | None = None,
    ):
        """`providers`: one per bucket region (each configuration is written in its source's region);
        `control`: signs the IAM calls (IAM is global)."""
        super().__init__("reco-dr:global:ArtifactReplication", name, None, opts)
        buckets = sorted(args.buckets, key=lambda b: b.region)
        if len(buckets) < 2:
            raise ValueError(f"replication needs at least two regional buckets, got {[b.region for b in buckets]}")
        oc = pulumi.ResourceOptions(parent=self, provider=control)

        self.role = aws.iam.Role(
            f"{name}-role",
            description="S3 replication of reco-dr model artifacts between regional buckets",
            assume_role_policy=pulumi.Output.all(args.account_id, *[b.arn for b in buckets]).apply(
                lambda a: json.dumps(trust_policy(a[0], list(a[1:])), sort_keys=True)
            ),
            tags=args.tags,
            opts=oc,
        )
        facts = pulumi.Output.all(*[pulumi.Output.all(b.name, b.arn, b.kms_key_arn) for b in buckets]).apply(
            lambda rows: [BucketFacts(b.region, *row) for b, row in zip(buckets, rows, strict=True)]
        )
        policy = aws.iam.RolePolicy(
            f"{name}-policy",
            role=self.role.id,
            policy=facts.apply(lambda fs: json.dumps(permissions_policy(fs), sort_keys=True)),
            opts=oc,
        )

        self.configs, self.rules = {}, []
        for src in buckets:
            dests = [b for b in buckets if b.region != src.region]
            rules = [
                replication_rule(d.region, i + 1, d.arn, d.kms_key_arn, args.rtc_minutes) for i, d in enumerate(dests)
            ]
            self.configs[src.region] = aws.s3.BucketReplicationConfig(
                f"{name}-{src.region}",
                bucket=src.name,
                role=self.role.arn,
                rules=rules,
                # S3 checks it may assume the role when the configuration is written; the permissions must
                # exist before the first object is replicated.
                opts=pulumi.ResourceOptions(parent=self, provider=providers[src.region], depends_on=[policy]),
            )
            self.rules += [RuleRef(src.region, d.region, rule_id(d.region), src.name, d.name) for d in dests]

        self.register_outputs(
            {
                "role_arn": self.role.arn,
                "configurations": {r: c.id for r, c in self.configs.items()},
            }
        )
