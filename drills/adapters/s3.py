"""S3Adapter: canaries, heads and manifests in each region's artifact bucket; a replication model for moto.

moto stores a bucket's replication configuration but never replicates: `ReplicatingS3` models S3 Replication
(every enabled rule of the source bucket copies a new object to the rule's destination bucket after a lag),
so RPO is measurable against moto the same way as against AWS, by polling HEAD in the destination.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from drills.clock import Clock


def _missing(e: Exception) -> bool:
    code = str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound", "NoSuchVersion")


class Boto3S3:
    """`clients`: region -> boto3 s3 client for that region; `buckets`: region -> bucket name (regional stack
    output `bucket_name`); `models`: region -> (model name, version) it serves (regional stack config).
    The Triton repository lives at s3://<bucket>/<model>/<version>/ (infra/components/triton.py); the manifest
    beside it at `manifest_key`."""

    def __init__(
        self,
        clients: dict[str, Any],
        buckets: dict[str, str],
        models: dict[str, tuple[str, str]],
        manifest_key: str = "{model}/{version}/manifest.json",
    ):
        self.clients, self.buckets, self.models, self.manifest_key = clients, buckets, models, manifest_key

    def bucket_ok(self, region: str) -> bool:
        try:
            self.clients[region].head_bucket(Bucket=self.buckets[region])
            return True
        except Exception:  # noqa: BLE001 - any failure means "not usable" here; the caller reports which
            return False

    def put_object(self, region: str, key: str, body: bytes) -> str | None:
        r = self.clients[region].put_object(
            Bucket=self.buckets[region], Key=key, Body=body, ContentType="application/json"
        )
        return r.get("VersionId")

    def head(self, region: str, key: str) -> dict | None:
        try:
            r = self.clients[region].head_object(Bucket=self.buckets[region], Key=key)
        except Exception as e:
            if _missing(e):
                return None
            raise
        return {
            "etag": r.get("ETag"),
            "version_id": r.get("VersionId"),
            "replication_status": r.get("ReplicationStatus"),
            "last_modified": r["LastModified"].timestamp() if r.get("LastModified") else None,
        }

    def delete_object(self, region: str, key: str) -> None:
        c, b = self.clients[region], self.buckets[region]
        page = c.list_object_versions(Bucket=b, Prefix=key)
        for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            if v["Key"] == key:
                c.delete_object(Bucket=b, Key=key, VersionId=v["VersionId"])

    # ------------------------------------------------------------ ArtifactStore (model releases, restore)
    def get_object(self, region: str, key: str, version_id: str | None = None) -> bytes | None:
        kw = {"VersionId": version_id} if version_id else {}
        try:
            return self.clients[region].get_object(Bucket=self.buckets[region], Key=key, **kw)["Body"].read()
        except Exception as e:
            if _missing(e):
                return None
            raise

    def list_keys(self, region: str, prefix: str) -> list[str]:
        c, keys, kw = self.clients[region], [], {"Bucket": self.buckets[region], "Prefix": prefix}
        while True:
            page = c.list_objects_v2(**kw)
            keys += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return sorted(keys)
            kw["ContinuationToken"] = page["NextContinuationToken"]

    def versions(self, region: str, key: str) -> list[dict]:
        """Every version of exactly `key`, newest first: {version_id, latest, delete_marker}."""
        c, out, kw = self.clients[region], [], {"Bucket": self.buckets[region], "Prefix": key}
        while True:
            page = c.list_object_versions(**kw)
            out += [
                {
                    "version_id": v["VersionId"],
                    "latest": v["IsLatest"],
                    "delete_marker": False,
                    "t": v["LastModified"].timestamp(),
                }
                for v in page.get("Versions", [])
                if v["Key"] == key
            ]
            out += [
                {
                    "version_id": v["VersionId"],
                    "latest": v["IsLatest"],
                    "delete_marker": True,
                    "t": v["LastModified"].timestamp(),
                }
                for v in page.get("DeleteMarkers", [])
                if v["Key"] == key
            ]
            if not page.get("IsTruncated"):
                return sorted(out, key=lambda v: v["t"], reverse=True)
            kw.update(KeyMarker=page["NextKeyMarker"], VersionIdMarker=page["NextVersionIdMarker"])

    def restore_version(self, region: str, key: str, version_id: str) -> str | None:
        # A server-side copy of the pinned version onto the same key: the version becomes current again and the
        # bad one stays as a noncurrent version (evidence), nothing is deleted.
        b = self.buckets[region]
        r = self.clients[region].copy_object(
            Bucket=b, Key=key, CopySource={"Bucket": b, "Key": key, "VersionId": version_id}
        )
        return r.get("VersionId")

    def current_manifest(self, region: str) -> tuple[dict | None, str | None]:
        name, version = self.models[region]
        key = self.manifest_key.format(model=name, version=version)
        try:
            body = self.clients[region].get_object(Bucket=self.buckets[region], Key=key)["Body"].read()
        except Exception as e:
            if _missing(e):
                return None, None
            raise
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None  # present but unreadable: the skew report shows its hash
        return doc, hashlib.sha256(body).hexdigest()


class ReplicatingS3(Boto3S3):
    """Boto3S3 plus a model of S3 Replication on an injectable clock. `lag(source, destination)` gives the
    seconds a new object takes to appear in the destination (AWS with RTC: 99.99% within 15 minutes)."""

    def __init__(
        self,
        clients: dict[str, Any],
        buckets: dict[str, str],
        models: dict[str, tuple[str, str]],
        clock: Clock,
        lag: Callable[[str, str], float],
        **kw: Any,
    ):
        super().__init__(clients, buckets, models, **kw)
        self.clock, self.lag = clock, lag
        self._pending: list[tuple[float, str, str, str, bytes]] = []  # due, src, dst, key, body
        self._region_of_bucket = {b: r for r, b in buckets.items()}

    def _destinations(self, region: str) -> list[str]:
        try:
            cfg = self.clients[region].get_bucket_replication(Bucket=self.buckets[region])["ReplicationConfiguration"]
        except Exception:  # noqa: BLE001 - no replication configured
            return []
        out = []
        for rule in cfg.get("Rules", []):
            if rule.get("Status") == "Enabled":
                bucket = rule["Destination"]["Bucket"].split(":::")[-1]
                if bucket in self._region_of_bucket:
                    out.append(self._region_of_bucket[bucket])
        return out

    def pump(self) -> None:
        now = self.clock.now()
        due = [p for p in self._pending if p[0] <= now]
        self._pending = [p for p in self._pending if p[0] > now]
        for _, _src, dst, key, body in due:
            # A replica is not replicated again (S3 replicates replicas only when configured to; ours is not).
            self.clients[dst].put_object(Bucket=self.buckets[dst], Key=key, Body=body)

    def put_object(self, region: str, key: str, body: bytes) -> str | None:
        vid = super().put_object(region, key, body)
        for dst in self._destinations(region):
            self._pending.append((self.clock.now() + self.lag(region, dst), region, dst, key, body))
        self.pump()
        return vid

    def head(self, region: str, key: str) -> dict | None:
        self.pump()
        return super().head(region, key)

    def get_object(self, region: str, key: str, version_id: str | None = None) -> bytes | None:
        self.pump()
        return super().get_object(region, key, version_id)

    def versions(self, region: str, key: str) -> list[dict]:
        self.pump()
        return super().versions(region, key)

    def restore_version(self, region: str, key: str, version_id: str) -> str | None:
        # The copy is a new object version in the source, so S3 Replication copies it on like any other write.
        vid = super().restore_version(region, key, version_id)
        body = super().get_object(region, key, vid)
        for dst in self._destinations(region):
            self._pending.append((self.clock.now() + self.lag(region, dst), region, dst, key, body or b""))
        self.pump()
        return vid
