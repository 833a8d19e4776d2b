"""The regional artifact bucket: versioned, SSE-KMS (CMK with rotation), private, TLS-only, lifecycle, and published
model versions immutable (create-only writes, no deletes, pointers moved by the release tooling only)."""

from __future__ import annotations

import json

from infra.components.artifacts import bucket_name, bucket_policy
from infra.mocks import ACCOUNT_ID, ResourceRecord
from infra.names import BREAK_GLASS_ROLE, deploy_role_name, lkg_key, role_arn


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
    want = bucket_policy(
        b.state["arn"],
        cfg.model.name,
        role_arn(ACCOUNT_ID, BREAK_GLASS_ROLE),
        role_arn(ACCOUNT_ID, deploy_role_name(cfg.env)),
    )
    assert json.loads(pol.inputs["policy"]) == json.loads(want)


BG, DEPLOY = "arn:aws:iam::1:role/bg", "arn:aws:iam::1:role/deploy"


def _statements() -> dict[str, dict]:
    return {s["Sid"]: s for s in json.loads(bucket_policy("arn:aws:s3:::b", "ranker", BG, DEPLOY))["Statement"]}


def test_policy_denies_plain_http_on_bucket_and_objects():
    assert _statements()["DenyInsecureTransport"] == {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": ["arn:aws:s3:::b", "arn:aws:s3:::b/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def test_published_versions_are_create_only_and_undeletable_but_for_break_glass():
    st = _statements()
    over = st["DenyOverwriteOfPublishedVersions"]
    # Every PutObject (and CopyObject, which S3 authorises as PutObject) without If-None-Match is denied on the
    # version prefixes, whoever asks, except the break-glass role.
    assert over["Effect"] == "Deny" and over["Principal"] == "*" and over["Action"] == "s3:PutObject"
    assert over["Resource"] == "arn:aws:s3:::b/ranker/*"
    assert over["Condition"] == {"Null": {"s3:if-none-match": "true"}, "ArnNotEquals": {"aws:PrincipalArn": BG}}
    dele = st["DenyDeletesOfPublishedVersions"]
    assert (
        dele["Action"] == ["s3:DeleteObject", "s3:DeleteObjectVersion"]
        and dele["Resource"] == "arn:aws:s3:::b/ranker/*"
    )
    assert dele["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": BG}}
    # Pointers move (and go) by the release tooling's role alone; they live apart from the versions.
    ptr = st["PointersOnlyByReleaseTooling"]
    assert ptr["Resource"] == "arn:aws:s3:::b/_lkg/*" and lkg_key("ranker", "us-east-1").startswith("_lkg/")
    assert ptr["Action"] == ["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"]
    assert ptr["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": [BG, DEPLOY]}}
