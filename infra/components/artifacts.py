"""The regional artifact bucket that Triton reads its model repository from.

Versioned (replication and rollback need it), SSE-KMS with a customer-managed, rotating key (the global
stack's replication grants decrypt on it), private, TLS-only, noncurrent versions expire.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


def bucket_name(stack: str, account_id: str) -> str:
    """Globally unique and stable per stack: the global stack and the drills find buckets by output, and a
    rename would mean a new bucket (S3 names are immutable)."""
    return f"reco-dr-{stack}-artifacts-{account_id}"


def tls_only_policy(bucket_arn: str) -> str:
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
                }
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


class ArtifactBucket(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: ArtifactBucketArgs, provider: aws.Provider, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("reco-dr:regional:ArtifactBucket", name, None, opts)
        o = pulumi.ResourceOptions(parent=self, provider=provider)
        self.key = aws.kms.Key(
            f"{name}-key",
            description=f"SSE-KMS for {args.bucket}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            opts=o,
        )
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
            policy=self.bucket.arn.apply(tls_only_policy),
            opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[pab, own]),
        )

        self.name = self.bucket.bucket
        self.arn = self.bucket.arn
        self.key_arn = self.key.arn
        self.register_outputs({"bucket_name": self.name, "bucket_arn": self.arn, "kms_key_arn": self.key_arn})
