"""What one region serves for the A/B experiments' arms (infra/experiments.py): Pulumi-free, so the regional program
(infra/regional.py), the drills and the tests read the same plan and the same names.

Public API:
  region_arms(experiments, now, stable_version) -> RegionArms
                                   from `arm_routes`: the versions that need pods of their own (every routed version
                                   but the stable one) and, per arm header value, the listener rule that forwards it
  regional_arms(stack, cfg, experiments, now) -> RegionArms
                                   the same for a regional stack's config, refusing (ConfigError) an arm version the
                                   stack does not pin in `model.digests`
  environment_experiments(env, stacks_dir) -> the `experiments` of the environment's global stack file
  arm_track(version)               the arm pods' `reco-dr/track` label (infra.names.app_name(track): their
                                   `app.kubernetes.io/name`)
  ARM_PER_POOL, ARM_PER_VERSION, arm_resource_count(versions, pools), arm_aws_resources(arms)
                                   what the arms add to a region (and an experiment's end deletes), as the canary's
                                   counts in infra.names

Per arm version (a version a cell is served that is not the region's stable `model.version`) the region declares
its own pods, like a canary's: per GPU pool a Deployment (with its PDB and an HPA starting at one replica), and per
version a Service, a TargetGroupBinding and the load balancer's target group `infra.names.arm_target_group_name`.
A cell served the stable version (the control arm and its holdout, as a rule) needs nothing of its own: its rule
forwards to the stable target group. Every cell gets one listener rule at ARM_PRIORITY_BASE + i, i its header value's
place in sorted order; rules are named by that place, so adding or ending an experiment updates or appends rules in
place and never makes two rules hold one priority during an `up`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from infra.config import STACKS_DIR, ConfigError, GlobalConfig, RegionConfig, load_stack
from infra.experiments import Experiment, arm_routes
from infra.names import ARM_PRIORITY_BASE, arm_target_group_name

ARM_TRACK_PREFIX = "arm-"
# Kubernetes objects per arm version: per GPU pool a Deployment, its PDB and HPA; per region a Service and a
# TargetGroupBinding (the canary's set, infra.names.CANARY_PER_POOL and CANARY_PER_REGION).
ARM_PER_POOL = 3
ARM_PER_VERSION = 2


def arm_track(version: str) -> str:
    """The `reco-dr/track` label of the pods serving arm `version`: `arm-<8 hex of its sha256>` (a label value is
    short and of few characters; the hash is the one `arm_target_group_name` uses). Never `stable` nor `canary`, so
    neither track's Service, selector or target group ever holds an arm's pods."""
    return ARM_TRACK_PREFIX + hashlib.sha256(version.encode()).hexdigest()[:8]


def arm_resource_count(versions: int, pools: int) -> int:
    """Kubernetes objects `versions` arm versions add (and their experiment's end deletes) in a region of `pools`
    GPU pools."""
    return versions * (ARM_PER_POOL * pools + ARM_PER_VERSION)


class ArmRoute(NamedTuple):
    """One listener rule: requests carrying ARM_HEADER `header` on the inference paths go to the target group of
    `target` (an arm version), or to the stable target group where `target` is None (`version` is the stable one)."""

    priority: int
    header: str
    version: str
    target: str | None


class RegionArms(NamedTuple):
    versions: tuple[str, ...] = ()  # sorted: each has pods and a target group of its own
    routes: tuple[ArmRoute, ...] = ()  # by priority, which is sorted header order

    def target_group_names(self, stack: str) -> dict[str, str]:
        """{arm version: its target group's name}."""
        return {v: arm_target_group_name(stack, v) for v in self.versions}


NO_ARMS = RegionArms()


def arm_aws_resources(arms: RegionArms) -> int:
    """AWS resources the arms add (and their end deletes): a target group per arm version, a listener rule per cell."""
    return len(arms.versions) + len(arms.routes)


def region_arms(experiments: Iterable[Experiment], now: datetime, stable_version: str) -> RegionArms:
    """What a region whose stable version is `stable_version` serves for the cells of every experiment not ended at
    `now` (a UTC time; infra.experiments.arm_routes). ValueError when the cells exceed the arm rule priorities, or two
    arm versions share a hash (their tracks and target group names would collide)."""
    if now.utcoffset() != timedelta(0):
        raise ValueError(f"now must be a UTC time (experiment windows are), got {now!r}")
    routes = arm_routes(experiments, now)
    versions = tuple(sorted({v for v in routes.values() if v != stable_version}))
    tracks = {arm_track(v) for v in versions}
    if len(tracks) != len(versions):
        raise ValueError(f"arm versions {list(versions)} share a track hash; rename one")
    return RegionArms(
        versions=versions,
        routes=tuple(
            ArmRoute(ARM_PRIORITY_BASE + i, h, routes[h], None if routes[h] == stable_version else routes[h])
            for i, h in enumerate(sorted(routes))
        ),
    )


def environment_experiments(env: str, stacks_dir: Path = STACKS_DIR) -> tuple[Experiment, ...]:
    """The experiments the environment's global stack (`<env>-global`, its file in `stacks_dir`) declares."""
    glob = load_stack(f"{env}-global", stacks_dir)
    if not isinstance(glob, GlobalConfig):
        raise ConfigError(f"{env}-global", "role", glob.role, "rule: the environment's global stack has role global")
    return glob.experiments


def regional_arms(stack: str, cfg: RegionConfig, experiments: Iterable[Experiment], now: datetime) -> RegionArms:
    """region_arms for regional `stack`, as ConfigError where it cannot serve them: every arm version must be pinned
    in the stack's `model.digests` (the pods verify the manifest against it). infra.config.check_fleet refuses an
    experiment whose versions a region does not pin; this is the program's own refusal, before it declares anything."""
    glob = f"{cfg.env}-global"
    try:
        arms = region_arms(experiments, now, cfg.model.version)
    except ValueError as e:
        raise ConfigError(glob, "experiments", "(the experiments not yet ended)", f"rule: {e}") from None
    unpinned = [v for v in arms.versions if cfg.model.digest(v) is None]
    if unpinned:
        raise ConfigError(
            stack,
            "model.digests",
            sorted(cfg.model.digests),
            f"rule: pins every version an experiment of {glob} serves ({unpinned} not pinned: the arm pods would "
            "have no manifest digest to verify; pin the release's digest, or end the experiment)",
        )
    return arms
