"""`python -m model_build publish DIR --stack STACK`: upload a verified repository to the regional bucket.

- Where: the regional stack's artifact bucket, under the immutable prefix `<model>/<version>/`, keys
  mirroring the repository's relative paths. The bucket is `--bucket` when given; otherwise the stack's
  `bucket_name` output (the regional output schema, `infra/outputs.py`) read through the Pulumi Automation
  API, which needs the Pulumi CLI and the stack's state. The region comes from the stack config.
- How: every file with a SHA-256 checksum computed here and sent with the object (S3 rejects a body that
  does not match it) and `If-None-Match: *` (S3 refuses to replace an existing key); `manifest.json` last,
  so a reader never sees a manifest whose files are not all there.
- Signed only: a repository without its `model.sig` is refused; the CLI also refuses one that the stack's
  `model.signer` did not sign. The signature is uploaded after the files it covers and before the manifest.
- Never twice: if `<prefix>/manifest.json` exists the version is published and nothing is uploaded.
  Objects left by an interrupted publish (no manifest yet) are accepted only when their stored checksum
  equals the local file's; anything else is a conflict and stops the publish.
- Checked after: every object's size and stored SHA-256 checksum (HeadObject with checksum mode) must match
  the manifest before the manifest itself is uploaded, and the manifest is checked the same way.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from model_build.manifest import MANIFEST, SIGNATURE, load_manifest, sha256_file, verify

if TYPE_CHECKING:
    from infra.config import RegionConfig

MAX_SINGLE_PUT = 5 * 1024**3  # S3's limit for one PutObject


class PublishError(Exception):
    pass


@dataclass
class Uploaded:
    key: str
    size: int
    sha256: str
    version_id: str | None
    reused: bool = False


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def bucket_from_stack(stack: str) -> str:
    """The stack's `bucket_name` output through the Pulumi Automation API (needs the Pulumi CLI and state)."""
    try:
        from pulumi import automation as auto

        from infra.config import ROOT

        s = auto.select_stack(stack_name=stack, work_dir=str(ROOT))
        outputs = s.outputs()
        return str(outputs["bucket_name"].value)
    except Exception as e:  # noqa: BLE001 - no CLI, no state, not logged in, no such output: all become PublishError
        raise PublishError(
            f"no --bucket given and stack {stack}'s output bucket_name cannot be read here "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); pass --bucket "
            f'"$(pulumi stack output bucket_name -s {stack})"'
        ) from None


def regional_config(stack: str, stacks_dir: Path | None = None) -> RegionConfig:
    """A regional stack's config: where a release is published (its region's bucket) and what pins it (its signer
    and digests). PublishError for a global stack."""
    from infra.config import STACKS_DIR, RegionConfig, load_stack

    cfg = load_stack(stack, stacks_dir or STACKS_DIR)
    if not isinstance(cfg, RegionConfig):
        raise PublishError(f"{stack} is not a regional stack: releases go to, and are pinned by, a region's stack")
    return cfg


def _head(s3, bucket: str, key: str) -> dict | None:
    from botocore.exceptions import ClientError

    try:
        return s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def _matches(head: dict, size: int, sha256_hex: str) -> bool:
    return head.get("ContentLength") == size and head.get("ChecksumSHA256") == _b64(sha256_hex)


def publish(
    directory: Path,
    bucket: str,
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    s3=None,
    log: Callable[[str], None] = print,
) -> list[Uploaded]:
    directory = Path(directory)
    problems = verify(directory)
    if problems:
        raise PublishError(f"{directory} does not verify; nothing uploaded: " + "; ".join(problems[:5]))
    if not (directory / SIGNATURE).is_file():
        raise PublishError(f"{directory} has no {SIGNATURE}: an unsigned release is never published; nothing uploaded")
    m = load_manifest(directory)
    if s3 is None:
        import boto3

        s3 = boto3.client("s3", region_name=region, endpoint_url=endpoint_url)
    prefix = f"{m.model['name']}/{m.model['version']}"
    manifest_key = f"{prefix}/{MANIFEST}"
    if _head(s3, bucket, manifest_key) is not None:
        raise PublishError(
            f"s3://{bucket}/{manifest_key} exists: {m.model['name']} {m.model['version']} is published and "
            "versions are immutable; bump model.version in the stack config to publish a new build"
        )
    try:
        if s3.get_bucket_versioning(Bucket=bucket).get("Status") != "Enabled":
            log(f"warning: bucket {bucket} is not versioned; the regional stack declares it versioned")
    except Exception:  # noqa: BLE001, S110 - a role allowed to put objects may not read bucket settings
        pass

    uploaded: list[Uploaded] = [
        _put(s3, bucket, f"{prefix}/{f.path}", directory / f.path, f.size, f.sha256, log)
        for f in sorted(m.files, key=lambda f: f.path)
    ]
    sig = directory / SIGNATURE  # beside the files it covers, before the manifest makes the version visible
    uploaded.append(_put(s3, bucket, f"{prefix}/{SIGNATURE}", sig, sig.stat().st_size, sha256_file(sig), log))
    for u in uploaded:  # verify every object before the manifest makes the version visible
        head = _head(s3, bucket, u.key)
        if head is None or not _matches(head, u.size, u.sha256):
            raise PublishError(
                f"s3://{bucket}/{u.key}: after upload, size/checksum do not match the manifest "
                f"({None if head is None else (head.get('ContentLength'), head.get('ChecksumSHA256'))}); "
                "manifest not uploaded"
            )
    mpath = directory / MANIFEST
    mu = _put(s3, bucket, manifest_key, mpath, mpath.stat().st_size, sha256_file(mpath), log)
    head = _head(s3, bucket, manifest_key)
    if head is None or not _matches(head, mu.size, mu.sha256):
        raise PublishError(f"s3://{bucket}/{manifest_key}: the uploaded manifest does not match the local one")
    uploaded.append(mu)
    return uploaded


def _put(s3, bucket: str, key: str, path: Path, size: int, sha256_hex: str, log: Callable[[str], None]) -> Uploaded:
    from botocore.exceptions import ClientError

    if size > MAX_SINGLE_PUT:
        raise PublishError(f"{path}: {size} bytes exceeds a single PutObject ({MAX_SINGLE_PUT})")
    existing = _head(s3, bucket, key)
    if existing is not None:
        if _matches(existing, size, sha256_hex):
            log(f"  = s3://{bucket}/{key} (already there from an interrupted publish, same checksum)")
            return Uploaded(key, size, sha256_hex, existing.get("VersionId"), reused=True)
        raise PublishError(f"s3://{bucket}/{key} exists with different content; refusing to overwrite it")
    body = path.read_bytes()
    if len(body) != size:
        raise PublishError(f"{path} changed during publish")
    try:
        r = s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=body,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=_b64(sha256_hex),
            IfNoneMatch="*",
            Metadata={"sha256": sha256_hex},
        )
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code")
        if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
            raise PublishError(
                f"s3://{bucket}/{key} appeared while publishing (another publish?); refusing to overwrite it"
            ) from None
        raise
    log(f"  + s3://{bucket}/{key} ({size} bytes, sha256 {sha256_hex[:12]}...)")
    return Uploaded(key, size, sha256_hex, r.get("VersionId"))
