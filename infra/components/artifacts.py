"""The regional artifact bucket that Triton reads its model repository from.

Versioned (replication and rollback need it), SSE-KMS with a customer-managed, rotating key (the global
stack's replication grants decrypt on it), private, TLS-only, noncurrent versions expire, and published model
versions immutable (`bucket_policy`: create-only writes, no deletes, pointers moved by the release tooling only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.components.kms import account_key_policy, rotating_key
from infra.names import LKG_PREFIX


def bucket_name(stack: str, account_id: str) -> str:
    """Globally unique and stable per stack: the global stack and the drills find buckets by output, and a
    rename would mean a new bucket (S3 names are immutable)."""
    return f"reco-dr-{stack}-artifacts-{account_id}"


def bucket_policy(bucket_arn: str, model: str, break_glass_arn: str, pointer_writer_arn: str) -> str:
    """TLS only; and published model versions immutable to every principal but the break-glass role:
    - writes under `<model>/` must be create-only (`If-None-Match: *`, enforced with S3's `s3:if-none-match`
      condition key), so no one can overwrite a published file or manifest, and CopyObject (a copy-over) is refused;
    - no object or object version under `<model>/` may be deleted (replication does not copy delete markers either);
    - the last-known-good pointers (`_lkg/`) move, or go, only by the release tooling's role (the env's deploy role).
    Object Lock was the alternative: its retention stops deletes but still lets a new current version be written
    over a key, which is exactly the swap to prevent; create-only writes prevent it."""
    versions, pointers = f"{bucket_arn}/{model}/*", f"{bucket_arn}/{LKG_PREFIX}/*"
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "DenyInsecureTransport",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [bucket_arn, f"{bucket_arn}/*"],
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                },
                {
                    "Sid": "DenyOverwriteOfPublishedVersions",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:PutObject",
                    "Resource": versions,
                    "Condition": {
                        "Null": {"s3:if-none-match": "true"},
                        "ArnNotEquals": {"aws:PrincipalArn": break_glass_arn},
                    },
                },
                {
                    "Sid": "DenyDeletesOfPublishedVersions",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],
                    "Resource": versions,
                    "Condition": {"ArnNotEquals": {"aws:PrincipalArn": break_glass_arn}},
                },
                {
                    "Sid": "PointersOnlyByReleaseTooling",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": ["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"],
                    "Resource": pointers,
                    "Condition": {"ArnNotEquals": {"aws:PrincipalArn": [break_glass_arn, pointer_writer_arn]}},
                },
            ],
        },
        sort_keys=True,
    )


def lifecycle_rules(noncurrent_days: int) -> list[aws.s3.BucketLifecycleConfigurationRuleArgsDict]:
    return [
        {
            "id": "expire-noncurrent-versions",
            "status": "Enabled",
            "filter": {},
            "noncurrent_version_expiration": {"noncurrent_days": noncurrent_days},
            "abort_incomplete_multipart_upload": {"days_after_initiation": 7},
        }
    ]


@dataclass
class ArtifactBucketArgs:
    bucket: str
    noncurrent_days: int
    model: str  # the model name: its version prefixes are the immutable ones
    break_glass_arn: str  # the one role that may overwrite or delete published files (an incident's last resort)
    pointer_writer_arn: str  # the release tooling's role: moves the last-known-good pointers
    account_id: str  # for the key's explicit policy (infra.components.kms)


class ArtifactBucket(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: ArtifactBucketArgs, provider: aws.Provider, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("reco-dr:regional:ArtifactBucket", name, None, opts)
        o = pulumi.ResourceOptions(parent=self, provider=provider)
        self.key = rotating_key(f"{name}-key", f"SSE-KMS for {args.bucket}", account_key_policy(args.account_id), o)
        aws.kms.Alias(f"{name}-key-alias", name=f"alias/{args.bucket}", target_key_id=self.key.key_id, opts=o)
        # Keep the bucket if the stack is destroyed by mistake: it holds the only copy of this region's engines.
        self.bucket = aws.s3.Bucket(
            f"{name}-bucket",
            bucket=args.bucket,
            force_destroy=False,
            opts=pulumi.ResourceOptions(parent=self, provider=provider, retain_on_delete=True),
        )
        b = self.bucket.id
        own = aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=b,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=o,
        )
        pab = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=b,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=o,
        )
        self.versioning = aws.s3.BucketVersioning(
            f"{name}-versioning",
            bucket=b,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=o,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-sse",
            bucket=b,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="aws:kms", kms_master_key_id=self.key.arn
                    ),
                    # S3 Bucket Keys cut KMS requests (and cost) by orders of magnitude for many small objects.
                    bucket_key_enabled=True,
                )
            ],
            opts=o,
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=b,
            rules=lifecycle_rules(args.noncurrent_days),
            opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[self.versioning]),
        )
        # After the public access block, so the policy is never briefly evaluated on a bucket without it.
        aws.s3.BucketPolicy(
            f"{name}-tls-only",
            bucket=b,
            policy=self.bucket.arn.apply(
                lambda arn: bucket_policy(arn, args.model, args.break_glass_arn, args.pointer_writer_arn)
            ),
            opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[pab, own]),
        )

        self.name = self.bucket.bucket
        self.arn = self.bucket.arn
        self.key_arn = self.key.arn
        self.register_outputs({"bucket_name": self.name, "bucket_arn": self.arn, "kms_key_arn": self.key_arn})
