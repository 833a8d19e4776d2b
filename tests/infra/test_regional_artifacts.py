"""The regional artifact bucket: versioned, SSE-KMS (CMK with rotation), private, TLS-only, lifecycle."""

from __future__ import annotations

import json

from infra.components.artifacts import bucket_name, lifecycle_rules, tls_only_policy
from infra.mocks import ACCOUNT_ID, ResourceRecord, run_program


def test_bucket_and_its_configuration(regional):
    stack, plan, cfg = regional
    b = plan.one("aws:s3/bucket:Bucket")
    assert b.inputs["bucket"] == bucket_name(stack, ACCOUNT_ID) and b.inputs["forceDestroy"] is False
    assert b.options.get("retain_on_delete") is True

    def by_bucket(t: str) -> list[ResourceRecord]:
        return [r for r in plan.of_type(t) if r.inputs["bucket"] == b.id]

    (ver,) = by_bucket("aws:s3/bucketVersioning:BucketVersioning")
    assert ver.inputs["versioningConfiguration"]["status"] == "Enabled"
    (sse,) = by_bucket("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
    key = plan.one("aws:kms/key:Key", "artifacts-key")
    assert key.inputs["enableKeyRotation"] is True
    rule = sse.inputs["rules"][0]
    assert rule["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": key.state["arn"]}
    assert rule["bucketKeyEnabled"] is True
    (pab,) = by_bucket("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    assert all(
        pab.inputs[k] is True
        for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    )
    (own,) = by_bucket("aws:s3/bucketOwnershipControls:BucketOwnershipControls")
    assert own.inputs["rule"]["objectOwnership"] == "BucketOwnerEnforced"
    (lc,) = by_bucket("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
    assert lc.inputs["rules"][0]["noncurrentVersionExpiration"]["noncurrentDays"] == cfg.artifact_noncurrent_days
    assert lc.inputs["rules"][0]["status"] == "Enabled"
    (pol,) = by_bucket("aws:s3/bucketPolicy:BucketPolicy")
    assert json.loads(pol.inputs["policy"]) == json.loads(tls_only_policy(b.state["arn"]))


def test_tls_only_policy_denies_plain_http_on_bucket_and_objects():
    st = json.loads(tls_only_policy("arn:aws:s3:::b"))["Statement"]
    assert st == [
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": ["arn:aws:s3:::b", "arn:aws:s3:::b/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }
    ]


def test_lifecycle_follows_config(values):
    assert lifecycle_rules(9)[0]["noncurrent_version_expiration"] == {"noncurrent_days": 9}
    values["artifact_noncurrent_days"] = 9
    plan = run_program("prod-use1", values=values)
    lc = plan.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
    assert lc.inputs["rules"][0]["noncurrentVersionExpiration"]["noncurrentDays"] == 9
