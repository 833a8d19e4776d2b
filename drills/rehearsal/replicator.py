"""Model of S3 Cross-Region Replication (moto stores a bucket's replication configuration, never applies it).

What it models, per source bucket with a stored configuration:
- rules with Status Enabled apply; each rule's filter (empty, Prefix, Tag, And{Prefix, Tags}, or the
  legacy rule-level Prefix) selects object keys; for each destination the matching rule with the highest
  Priority applies (S3's rule conflict resolution);
- every new object version written after the configuration was in place is copied to each destination
  bucket (body, content type, user metadata) once, `lag` seconds after the replicator first saw it (plus
  up to one `poll` interval of discovery). S3 RTC promises 99.99% within 15 minutes and typically takes
  seconds; `lag` stands for that delay and is what an RPO drill measures;
- delete markers are replicated only when the rule's DeleteMarkerReplication is Enabled (deletes of a
  specific version are never replicated, as in S3);
- objects that existed before the configuration was first seen are not replicated (S3 needs Batch
  Replication for those); replicas are not replicated again (S3 does not chain replicas, which is what
  makes a full mesh of buckets safe);
- not modelled: KMS re-encryption (objects are copied as plain bytes), replication metrics/events,
  ReplicationStatus headers (moto cannot set them).

The configuration comes from `stored_config()`: in the world, moto's GetBucketReplication with the two
fields moto drops (DeleteMarkerReplication, Filter) restored from what was put (`moto.replication_config`);
moto's stored form (`Rule`, as in its model dump) is accepted too.

Every replication is recorded with the time the version was first seen and the time its copy landed
(wall clock), so RPO of a canary object is `replicated_at - put time`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    id: str
    priority: int
    prefix: str
    tags: dict[str, str]
    dest_bucket: str
    delete_markers: bool


@dataclass
class Replication:
    source_bucket: str
    key: str
    version_id: str
    dest_bucket: str
    rule_id: str
    kind: str  # "object" | "delete_marker"
    seen_at: float  # when the replicator first saw the source version
    replicated_at: float | None = None
    dest_version_id: str | None = None
    error: str | None = None

    @property
    def lag_s(self) -> float | None:
        return None if self.replicated_at is None else self.replicated_at - self.seen_at


def _status(v) -> bool:
    return isinstance(v, dict) and str(v.get("Status", "")).lower() == "enabled"


def parse_rules(config: dict | None) -> list[Rule]:
    """Rules from a replication configuration (moto's stored form `Rule` or the API form `Rules`)."""
    if not config:
        return []
    raw = config.get("Rules") or config.get("Rule") or []
    if isinstance(raw, dict):
        raw = [raw]
    rules = []
    for r in raw:
        if str(r.get("Status", "")).lower() != "enabled":
            continue
        flt = r.get("Filter") or {}
        prefix = r.get("Prefix") or ""
        tags: dict[str, str] = {}
        if flt.get("And"):
            prefix = flt["And"].get("Prefix") or prefix
            t = flt["And"].get("Tag") or flt["And"].get("Tags") or []
            for tag in [t] if isinstance(t, dict) else t:
                tags[tag["Key"]] = tag["Value"]
        else:
            prefix = flt.get("Prefix") or prefix
            if flt.get("Tag"):
                tags[flt["Tag"]["Key"]] = flt["Tag"]["Value"]
        dest = r["Destination"]["Bucket"]
        rules.append(
            Rule(
                id=str(r.get("ID") or ""),
                priority=int(r.get("Priority") or 0),
                prefix=prefix,
                tags=tags,
                dest_bucket=dest.split(":::")[-1],
                delete_markers=_status(r.get("DeleteMarkerReplication")),
            )
        )
    return rules


def rules_for(rules: list[Rule], key: str, tags: dict[str, str] | None = None) -> dict[str, Rule]:
    """destination bucket -> the highest-priority enabled rule matching `key` (and its tags)."""
    out: dict[str, Rule] = {}
    for r in sorted(rules, key=lambda r: -r.priority):
        if not key.startswith(r.prefix):
            continue
        if r.tags and (tags is None or any(tags.get(k) != v for k, v in r.tags.items())):
            continue
        out.setdefault(r.dest_bucket, r)
    return out


class Replicator:
    def __init__(
        self,
        s3,
        stored_config: Callable[[], dict[str, dict | None]],
        *,
        lag: float = 0.0,
        poll: float = 0.2,
        config_interval: float = 1.0,
    ):
        """`poll`: how often new versions are listed; `config_interval`: how often the configurations are
        re-read (they change rarely)."""
        self.s3, self.stored_config, self.lag, self.poll = s3, stored_config, lag, poll
        self.config_interval = config_interval
        self._configs: dict[str, dict | None] = {}
        self._configs_at = float("-inf")
        self._lock = threading.RLock()
        self._baseline: dict[str, set[tuple[str, str]]] = {}  # bucket -> versions existing when its rule appeared
        self._replicas: set[tuple[str, str, str]] = set()  # (bucket, key, version) written by us
        self._seen: dict[tuple[str, str, str], float] = {}
        self._records: dict[tuple[str, str, str, str], Replication] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._done = threading.Condition(self._lock)
        self.errors: list[str] = []
        # Buckets the replicator cannot reach (a partition between regions): nothing is copied to or from them, and
        # what is pending stays pending until the partition heals, as S3 replication retries until it succeeds.
        self.partitioned: set[str] = set()

    # ------------------------------------------------------------ running
    def start(self) -> Replicator:
        self.sync_once()  # baseline: what exists now is "existing objects"
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="s3-replicator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def __enter__(self) -> Replicator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.sync_once()
            except Exception as e:  # noqa: BLE001 - keep replicating; the error is reported
                self.errors.append(f"{time.time():.3f} {type(e).__name__}: {e}")

    # ------------------------------------------------------------ one pass
    def _versions(self, bucket: str) -> tuple[list[dict], list[dict]]:
        versions, markers = [], []
        for page in self.s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            versions += page.get("Versions", [])
            markers += page.get("DeleteMarkers", [])
        return versions, markers

    def sync_once(self) -> int:
        """Discover new versions and replicate those whose lag has passed; return how many copies landed."""
        if time.monotonic() - self._configs_at >= self.config_interval:
            self._configs, self._configs_at = self.stored_config(), time.monotonic()
        configs = self._configs
        landed = 0
        for bucket, cfg in sorted(configs.items()):
            rules = parse_rules(cfg)
            if not rules:
                continue
            versions, markers = self._versions(bucket)
            items = [("object", v) for v in versions] + [("delete_marker", m) for m in markers]
            with self._lock:
                if bucket not in self._baseline:
                    self._baseline[bucket] = {(v["Key"], v["VersionId"]) for _, v in items}
                    continue
            now = time.time()
            for kind, v in items:
                ident = (bucket, v["Key"], v["VersionId"])
                with self._lock:
                    if (v["Key"], v["VersionId"]) in self._baseline[bucket] or ident in self._replicas:
                        continue
                    seen = self._seen.setdefault(ident, now)
                if now < seen + self.lag:
                    continue
                tags = None
                if any(r.tags for r in rules):
                    tags = self._tags(bucket, v) if kind == "object" else {}
                for dest, rule in rules_for(rules, v["Key"], tags).items():
                    if bucket in self.partitioned or dest in self.partitioned:
                        continue
                    rk = (*ident, dest)
                    with self._lock:
                        if rk in self._records:
                            continue
                    if kind == "delete_marker" and not rule.delete_markers:
                        continue
                    landed += self._copy(kind, bucket, v, dest, rule, seen)
        return landed

    def _tags(self, bucket: str, v: dict) -> dict[str, str]:
        r = self.s3.get_object_tagging(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
        return {t["Key"]: t["Value"] for t in r.get("TagSet", [])}

    def _copy(self, kind: str, bucket: str, v: dict, dest: str, rule: Rule, seen: float) -> int:
        rec = Replication(bucket, v["Key"], v["VersionId"], dest, rule.id, kind, seen)
        try:
            if kind == "object":
                src = self.s3.get_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
                put = self.s3.put_object(
                    Bucket=dest,
                    Key=v["Key"],
                    Body=src["Body"].read(),
                    ContentType=src.get("ContentType", "binary/octet-stream"),
                    Metadata=src.get("Metadata", {}),
                )
            else:
                put = self.s3.delete_object(Bucket=dest, Key=v["Key"])
            rec.dest_version_id = put.get("VersionId")
            rec.replicated_at = time.time()
        except Exception as e:  # noqa: BLE001 - e.g. destination missing or not versioned: recorded, retried never
            rec.error = f"{type(e).__name__}: {e}"
            self.errors.append(f"{bucket}/{v['Key']}@{v['VersionId']} -> {dest}: {rec.error}")
        with self._lock:
            if rec.dest_version_id:
                self._replicas.add((dest, v["Key"], rec.dest_version_id))
            self._records[(bucket, v["Key"], v["VersionId"], dest)] = rec
            self._done.notify_all()
        return 1 if rec.replicated_at else 0

    # ------------------------------------------------------------ reading
    def backlog(self, bucket: str, window: float) -> tuple[int, float]:
        """(versions out of `bucket` not replicated yet or failed, worst lag in wall seconds over the last `window`
        seconds: landed ones, and pending ones by their age), as S3's OperationsPendingReplication and
        ReplicationLatency would show them."""
        now = time.time()
        with self._lock:
            recorded = {(r.source_bucket, r.key, r.version_id) for r in self._records.values()}
            pending = [seen for ident, seen in self._seen.items() if ident[0] == bucket and ident not in recorded]
            failed = sum(1 for r in self._records.values() if r.source_bucket == bucket and r.error)
            lags = [
                r.lag_s
                for r in self._records.values()
                if r.source_bucket == bucket
                and r.lag_s is not None
                and r.replicated_at is not None
                and r.replicated_at >= now - window
            ]
        return len(pending) + failed, max([*lags, *(now - s for s in pending)], default=0.0)

    def records(self) -> list[Replication]:
        with self._lock:
            return list(self._records.values())

    def replicated(self, bucket: str, key: str, version_id: str) -> dict[str, Replication]:
        """destination bucket -> record, for one source version."""
        with self._lock:
            return {d: r for (b, k, vid, d), r in self._records.items() if (b, k, vid) == (bucket, key, version_id)}

    def wait(self, bucket: str, key: str, version_id: str, dests: list[str], timeout: float) -> dict[str, Replication]:
        """Block until the version has landed in every bucket of `dests` (or `timeout`); return what landed."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                got = {d: r for d, r in self.replicated(bucket, key, version_id).items() if r.replicated_at}
                left = deadline - time.monotonic()
                if set(dests) <= set(got) or left <= 0:
                    return got
                self._done.wait(min(left, 0.1))
