"""Publish against moto: immutable version prefix, SHA-256 checksums, manifest last, no overwrite."""

from __future__ import annotations

import base64
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from model_build.__main__ import main
from model_build.build import BuildResult
from model_build.manifest import MANIFEST, SIGNATURE, load_manifest
from model_build.publish import PublishError, bucket_from_stack, publish
from tests.drills.drills_support import copy_stacks

BUCKET = "reco-dr-prod-use1-artifacts"


@pytest.fixture
def s3():
    with mock_aws():
        c = boto3.client("s3", region_name="us-east-1")
        c.create_bucket(Bucket=BUCKET)
        c.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield c


def _record_puts(s3) -> list[str]:
    keys: list[str] = []
    s3.meta.events.register("before-parameter-build.s3.PutObject", lambda params, **kw: keys.append(params["Key"]))
    return keys


def test_publish_uploads_every_file_with_checksums_manifest_last(built: BuildResult, s3):
    puts = _record_puts(s3)
    up = publish(built.out, BUCKET, s3=s3, log=lambda s: None)
    m = load_manifest(built.out)
    prefix = "ranker/2026.11.0"
    # Every file, then the signature over them, then the manifest that makes the version visible.
    assert puts[-1] == f"{prefix}/{MANIFEST}" and puts[-2] == f"{prefix}/{SIGNATURE}" and len(puts) == len(m.files) + 2
    assert sorted(puts[:-2]) == sorted(f"{prefix}/{f.path}" for f in m.files)
    for f in m.files:
        head = s3.head_object(Bucket=BUCKET, Key=f"{prefix}/{f.path}", ChecksumMode="ENABLED")
        assert head["ContentLength"] == f.size
        assert head["ChecksumSHA256"] == base64.b64encode(bytes.fromhex(f.sha256)).decode()
        assert head["Metadata"]["sha256"] == f.sha256
    body = s3.get_object(Bucket=BUCKET, Key=f"{prefix}/{MANIFEST}")["Body"].read()
    assert body == (built.out / MANIFEST).read_bytes()
    assert all(u.version_id for u in up)  # the bucket is versioned


def test_a_published_version_is_never_overwritten(built: BuildResult, s3):
    publish(built.out, BUCKET, s3=s3, log=lambda s: None)
    puts = _record_puts(s3)
    with pytest.raises(PublishError, match="immutable"):
        publish(built.out, BUCKET, s3=s3, log=lambda s: None)
    assert puts == []  # refused before uploading anything


def test_interrupted_publish_resumes_only_over_identical_objects(built: BuildResult, s3):
    m = load_manifest(built.out)
    first = m.files[0]
    key = f"ranker/2026.11.0/{first.path}"
    s3.put_object(Bucket=BUCKET, Key=key, Body=(built.out / first.path).read_bytes(), ChecksumAlgorithm="SHA256")
    up = publish(built.out, BUCKET, s3=s3, log=lambda s: None)
    assert [u.key for u in up if u.reused] == [key]


def test_conflicting_leftover_object_stops_before_the_manifest(built: BuildResult, s3):
    m = load_manifest(built.out)
    key = f"ranker/2026.11.0/{m.files[-1].path}"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"something else", ChecksumAlgorithm="SHA256")
    with pytest.raises(PublishError, match="different content"):
        publish(built.out, BUCKET, s3=s3, log=lambda s: None)
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"ranker/2026.11.0/{MANIFEST}")


def test_a_repository_that_does_not_verify_is_not_published(repo: Path, s3):
    with open(repo / "ranker_onnx/1/model.onnx", "ab") as f:
        f.write(b"x")
    with pytest.raises(PublishError, match=r"ranker_onnx/1/model\.onnx"):
        publish(repo, BUCKET, s3=s3, log=lambda s: None)
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_cli_publish_with_bucket_and_stack(built: BuildResult, s3, capsys, tmp_path):
    stacks = str(copy_stacks(tmp_path / "stacks"))  # the regional stacks name the test signer
    publish = ["publish", str(built.out), "--bucket", BUCKET, "--stacks-dir", stacks]
    assert main([*publish, "--stack", "prod-use1"]) == 0
    assert "manifest last" in capsys.readouterr().out
    assert main([*publish, "--stack", "prod-use1"]) == 1
    assert main([*publish, "--stack", "prod-global"]) == 1  # not regional


def test_without_bucket_the_stack_output_is_needed():
    # No Pulumi CLI or state here: the error says how to pass the bucket instead.
    with pytest.raises(PublishError, match="--bucket"):
        bucket_from_stack("prod-use1")
