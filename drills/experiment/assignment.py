"""Which arm a user is in: a pure function of the experiment and the user id, the same in every region.

Public API:
  bucket(salt, user_id) -> int in [0, 10000)   the first 8 bytes of sha256(f"{salt}:{user_id}"), modulo 10000
  arm_for_bucket(experiment, b) -> str         "holdout" or an arm name
  assign(experiment, user_id) -> str           arm_for_bucket(experiment, bucket(experiment.salt, user_id))

Nothing else goes in (no region, clock or request): a regional failover, a retry in another region or a restart
keeps every user in the arm they had. Buckets [0, holdout*100) are the holdout; the rest are split by cumulative
arm weight in declaration order. 2**64 mod 10000 leaves a bias below 1e-15 per bucket.
"""

from __future__ import annotations

import hashlib

from infra.experiments import HOLDOUT, Experiment

BUCKETS = 10_000


def bucket(salt: str, user_id: str) -> int:
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def arm_for_bucket(experiment: Experiment, b: int) -> str:
    holdout = experiment.holdout * BUCKETS // 100
    if b < holdout:
        return HOLDOUT
    # Integer bounds: the arms share BUCKETS - holdout buckets, weight percent each, with no rounding drift.
    per_percent = (BUCKETS - holdout) // 100
    upper = holdout
    for arm in experiment.arms:
        upper += arm.weight * per_percent
        if b < upper:
            return arm.name
    raise ValueError(f"bucket {b} outside [0, {BUCKETS})")


def assign(experiment: Experiment, user_id: str) -> str:
    return arm_for_bucket(experiment, bucket(experiment.salt, user_id))
