"""S3 in the rehearsal: the declared artifact buckets in moto, cross-region replication modelled over them (moto
stores a replication configuration but does not replicate), and the canary objects drills time it with.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drills.rehearsal.declared import Applied
from drills.rehearsal.moto import replication_config
from drills.rehearsal.replicator import Replicator


@dataclass
class Canary:
    region: str
    bucket: str
    key: str
    version_id: str
    t_put: float  # wall clock just before the PUT was sent


class Storage:
    def __init__(self, s3_for: Callable[[str | None], Any], *, lag: float, poll: float):
        self.s3_for, self.lag, self.poll = s3_for, lag, poll
        self.applied: Applied | None = None
        self.buckets: dict[str, str] = {}  # region -> its artifact bucket
        self.replicator: Replicator | None = None

    def update(self, applied: Applied, buckets: dict[str, str]) -> None:
        """Follow the objects the world (re-)created in moto."""
        self.applied, self.buckets = applied, dict(buckets)

    def start(self) -> None:
        self.replicator = Replicator(self.s3_for(None), self.replication_configs, lag=self.lag, poll=self.poll)
        self.replicator.start()

    def stop(self) -> None:
        if self.replicator is not None:
            self.replicator.stop()

    def replication_backlog(self, region: str, window: float) -> tuple[int, float]:
        """(versions pending replication out of the region's bucket, worst lag in wall seconds over `window`)."""
        assert self.replicator is not None
        return self.replicator.backlog(self.buckets[region], window)

    def wait_drained(self, timeout: float) -> dict[str, int]:
        """Wait until no region's bucket has a version pending replication (after two of the replicator's listings,
        so what was just written is seen); returns the backlog left per region at `timeout` (empty: drained). What a
        publisher waits for before a release: readiness refuses a fleet with replication pending."""
        assert self.replicator is not None
        time.sleep(2 * self.poll)
        deadline = time.monotonic() + timeout
        while True:
            left = {r: n for r in self.buckets if (n := self.replication_backlog(r, 0.0)[0])}
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(self.poll)

    def partition(self, region: str, cut: bool) -> None:
        """Cut (or heal) replication to and from `region`'s bucket: the replicator cannot reach it."""
        assert self.replicator is not None
        bucket = self.buckets[region]
        if cut:
            self.replicator.partitioned.add(bucket)
        else:
            self.replicator.partitioned.discard(bucket)

    def replication_configs(self) -> dict[str, dict | None]:
        """bucket -> its replication configuration in moto (fields moto drops restored from what was put)."""
        assert self.applied is not None
        s3 = self.s3_for(None)
        return {b: replication_config(s3, b, self.applied.replication.get(b)) for b in self.applied.buckets}

    def put_canary(self, region: str, key: str | None = None, body: bytes | None = None) -> Canary:
        bucket = self.buckets[region]
        key = key or f"drills/canary/{uuid.uuid4().hex}"
        body = body if body is not None else json.dumps({"t": time.time(), "region": region}).encode()
        t = time.time()
        r = self.s3_for(region).put_object(Bucket=bucket, Key=key, Body=body)
        return Canary(region, bucket, key, r["VersionId"], t)

    def replication_of(self, canary: Canary) -> dict[str, dict]:
        """destination region -> {bucket, replicated_at, rpo_s (landing time - PUT time)} for a canary."""
        assert self.replicator is not None
        bucket_region = {b: r for r, b in self.buckets.items()}
        out = {}
        for dest, rec in self.replicator.replicated(canary.bucket, canary.key, canary.version_id).items():
            out[bucket_region.get(dest, dest)] = {
                "bucket": dest,
                "replicated_at": rec.replicated_at,
                "error": rec.error,
                "rpo_s": None if rec.replicated_at is None else rec.replicated_at - canary.t_put,
            }
        return out

    def wait_replicated(self, canary: Canary, timeout: float = 30.0) -> dict[str, dict]:
        assert self.replicator is not None and self.applied is not None
        cfg = self.applied.replication.get(canary.bucket, {})
        dests = [r["Destination"]["Bucket"].split(":::")[-1] for r in cfg.get("Rules", [])]
        self.replicator.wait(canary.bucket, canary.key, canary.version_id, dests, timeout)
        return self.replication_of(canary)
