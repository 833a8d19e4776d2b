"""Pure planning of a model release and of the sub-region drills: Plans for the drills engine, no cloud calls.

A release is a sequence of regional stack config changes plus `pulumi up`, each followed by gates:

  precheck           the candidate is published and verifies in every region's bucket (model_build's own
                     verification over the downloaded prefix), its engines cover every region's compute
                     capabilities (or an explicit ONNX fallback), its offline AUC/NDCG pass; live config and
                     serving are what the plan was made from. Any failure refuses: nothing has changed.
  canary-<R>         model.canary_version := V, weight 0: canary pods beside the stable ones, no user traffic;
                     gates: canary ready, score drift (PSI, KS) against stable on the same golden rows, probe errors
  shift-<R>          model.canary_weight := N: N % of the region's requests on the candidate; bake; gates: traffic
                     split, canary error rate and p99 (Triton's counters + probes), drift again
                     (the canary region first, then region by region; a region without traffic gets no shift)
  promote-<R>        model.version := V, canary cleared: the stable Deployments roll to V, the canary's
                     resources go; gates: stable serves V, error rate and p99
  verify-release     every region serves V, no canary
  record-lkg         each region's last-known-good pointer := V with the S3 version id of every file
The first failed gate (or abort condition, error, SIGINT/SIGTERM) rolls back through the engine: every regional
stack's three model keys back to the values recorded before the first change, canary region first, then
`pulumi up`: before promotion that only takes the canary's weight away (the stable pods never stopped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drills.drillplan import load_drill_file, merged_parameters
from drills.errors import GuardrailError
from drills.manifest import find_manifest
from drills.model import Condition, Plan, Step
from drills.planning import PlanContext, finish_plan, healthy_condition, slo_condition
from infra.capacity import region_capacity, replica_bounds, shares_after_loss
from infra.config import MODEL_VERSION, ROOT, STACKS_DIR, ConfigError, Fleet, envs, load_fleet
from infra.engines import coverage
from infra.experiments import arm_versions_locked
from infra.names import TRACK_HEADER, canary_aws_resources, canary_resource_count, lkg_key

VERSION, CANARY_VERSION, CANARY_WEIGHT = "model.version", "model.canary_version", "model.canary_weight"
REGION_PATHS = (VERSION, CANARY_VERSION, CANARY_WEIGHT)
NO_CANARY = ""  # how stack config says "no canary" (infra.config.Model)
RELEASE_TOOLING = "load_balancer.release_tooling_cidrs"  # where the X-Reco-Track pins are allowed from
GOLDEN_SEED = 20261100  # model_build.data.DEFAULT_SEED: the golden rows the build's parity gates used


@dataclass(frozen=True)
class ReleaseOptions:
    candidate: str
    canary_region: str | None = None
    canary_weight: int | None = None
    bake_seconds: float | None = None
    shadow: bool = True  # deploy the canary at weight 0 and compare scores before any user request reaches it
    offline_blocking: bool = True  # offline AUC/NDCG refuse (a bad-release drill records them instead)
    promote: bool = True  # False (bad-release): end after the canary with a step that fails if nothing caught it
    scenario: str = "release"


# ---------------------------------------------------------------- context (the release command's own)
def release_context(
    env: str,
    region: str | None,
    *,
    plan_file: str | Path | None = None,
    stacks_dir: Path = STACKS_DIR,
    manifest: str | None = None,
    overrides: dict[str, Any] | None = None,
    root: Path = ROOT,
    candidate: str | None = None,
) -> PlanContext:
    """The PlanContext `drills.scenarios.build_plan` makes for a scenario, for the `release` and `restore`
    commands (which take arguments a scenario cannot): same checks, same refusals."""
    drill = load_drill_file(plan_file)
    if drill.env and drill.env != env:
        raise GuardrailError("plan-file", f"the drill plan file is for env {drill.env!r}, not {env!r}")
    known = envs(stacks_dir)
    if env not in known:
        raise GuardrailError(
            "unknown-env", f"unknown environment {env!r}; known: {', '.join(known) or '(none)'} (from {stacks_dir})"
        )
    try:
        fleet = load_fleet(env, stacks_dir)
    except ConfigError as e:
        raise GuardrailError("config", f"the {env} stacks do not validate: {e}") from None
    region = region or drill.region
    if region and region not in fleet.regions:
        raise GuardrailError(
            "unknown-region", f"{env} has no region {region!r}; its regions: {', '.join(sorted(fleet.regions))}"
        )
    version = candidate or next(iter(fleet.regions.values())).model.version
    facts = find_manifest(manifest, version, root)
    if facts is not None and facts.model_version not in (None, version):
        facts = None  # the newest manifest on disk is another version's: not evidence for this one
    ctx = PlanContext(
        fleet=fleet,
        region=region,
        params=merged_parameters(drill, overrides or {}),
        drill=drill,
        manifest=facts,
    )
    return ctx


def model_config(fleet: Fleet) -> dict[str, dict[str, Any]]:
    """The three model keys of every regional stack as the stack files write them ("" for no canary), the
    values a rollback restores and the precheck expects live."""
    return {
        stack: {
            VERSION: fleet.regions[r].model.version,
            CANARY_VERSION: fleet.regions[r].model.canary_version or NO_CANARY,
            CANARY_WEIGHT: fleet.regions[r].model.canary_weight,
        }
        for r, stack in sorted(fleet.stack_names.items())
    }


def same_model_value(path: str, live: Any, want: Any) -> bool:
    """Live config against planned, reading an absent canary key as "no canary" (a stack file written before
    releases existed has neither key)."""
    if path == CANARY_VERSION:
        return (live or NO_CANARY) == (want or NO_CANARY)
    if path == CANARY_WEIGHT:
        return int(live or 0) == int(want or 0)
    return live == want


# ---------------------------------------------------------------- pure helpers
def rollout_order(fleet: Fleet, canary_region: str) -> list[str]:
    """The canary region first, then the rest by ascending traffic share (smallest blast radius first)."""
    shares = shares_after_loss(fleet.glob.routing.weights(), None)
    rest = sorted((r for r in fleet.regions if r != canary_region), key=lambda r: (shares.get(r, 0.0), r))
    return [canary_region, *rest]


def default_canary_region(fleet: Fleet) -> str:
    cfg = fleet.glob.release.canary_region
    if cfg:
        return cfg
    shares = shares_after_loss(fleet.glob.routing.weights(), None)
    serving = [r for r, s in shares.items() if s > 0]
    return min(serving, key=lambda r: (shares[r], r))


def split_capacity(
    fleet: Fleet, region: str, canary_weight: int, measured: dict[str, float] | None = None
) -> dict[str, Any]:
    """GPUs the region needs at peak with `canary_weight` % of its share on the canary: the stable Deployments
    carry the rest (never below their HPA minimum), the canary at least one pod per pool (its HPA minimum)."""
    cfg = fleet.regions[region]
    share = shares_after_loss(fleet.glob.routing.weights(), None).get(region, 0.0)
    w = canary_weight / 100.0
    stable = region_capacity(fleet, cfg, share * (1 - w), measured)
    canary = region_capacity(fleet, cfg, share * w, measured)
    stable_min = sum(replica_bounds(p, cfg.triton)[0] for p in cfg.gpu_pools)
    need = max(stable.gpus_required, stable_min) + max(canary.gpus_required, len(cfg.gpu_pools))
    return {
        "region": region,
        "share": round(share, 6),
        "canary_weight": canary_weight,
        "stable_gpus": max(stable.gpus_required, stable_min),
        "canary_gpus": max(canary.gpus_required, len(cfg.gpu_pools)),
        "gpus_required": need,
        "gpus_max": stable.gpus_max,
        "ok": need <= stable.gpus_max,
    }


def ccs_by_region(fleet: Fleet) -> dict[str, dict[str, list[str]]]:
    return {
        r: {"ccs": c.compute_capabilities, "fallback": list(c.model.onnx_fallback_for)}
        for r, c in sorted(fleet.regions.items())
    }


def has_pins(fleet: Fleet, region: str) -> bool:
    """Whether the region's load balancer gets the X-Reco-Track pin rules while a canary runs: only where its stack
    names the release tooling's addresses (infra/components/load_balancer.py)."""
    return bool(fleet.regions[region].load_balancer.release_tooling_cidrs)


def canary_deletes(fleet: Fleet, region: str) -> int:
    """Resources a promotion or rollback removes in the region: the canary's Kubernetes objects, its target group,
    and the two header pins where the stack has them (infra.names.canary_aws_resources)."""
    return canary_resource_count(len(fleet.regions[region].gpu_pools)) + canary_aws_resources(has_pins(fleet, region))


def pinned_scoring_refusal(stacks: list[str]) -> GuardrailError:
    """Why a release cannot score pinned versions (drift and probe gates: the same golden rows on stable and canary
    through the load balancer, chosen by X-Reco-Track) where these stacks give the header no pin rules: every pinned
    request gets the listener's 403, so the release would fail its first gate after deploying a canary. The release
    precheck raises it from the live config, before anything changes; `drills plan` shows the requirement."""
    return GuardrailError(
        "release-tooling",
        f"{', '.join(stacks)}: {RELEASE_TOOLING} is empty, so the load balancer refuses {TRACK_HEADER} (HTTP 403) and "
        f"the canary gates' pinned scoring cannot reach either version. Set {RELEASE_TOOLING} in "
        + " and ".join(f"Pulumi.{s}.yaml" for s in stacks)
        + " to the egress blocks (IPv4, /16 or narrower, inside allowed_cidrs) of wherever `python -m drills "
        "release` runs, and `pulumi up`. Nothing was changed.",
    )


def _check_candidate_name(candidate: str) -> None:
    if not re.fullmatch(MODEL_VERSION, candidate):
        raise GuardrailError(
            "candidate",
            f"{candidate!r} is not a model version (letters, digits, '.' and '-', starting with a letter or digit)",
        )


def release_abort_conditions(ctx: PlanContext) -> list[Condition]:
    g = ctx.fleet.glob.release.gates
    return [
        slo_condition(ctx, "abort if service probes drop below the SLO"),
        healthy_condition(),
        Condition(
            kind="canary_errors",
            params={"max": g.error_rate_max, "min_requests": g.min_requests},
            description=f"abort if a canary's error rate (Triton counters + probes) exceeds {g.error_rate_max:.2%} "
            f"over {g.min_requests}+ requests",
        ),
    ]


# ---------------------------------------------------------------- the release plan
def build_release_plan(ctx: PlanContext, opts: ReleaseOptions) -> Plan:
    fleet = ctx.fleet
    rel = fleet.glob.release
    gates = rel.gates
    cand = opts.candidate
    _check_candidate_name(cand)
    model = next(iter(fleet.regions.values())).model.name
    canary_region = opts.canary_region or ctx.region or default_canary_region(fleet)
    if canary_region not in fleet.regions:
        raise GuardrailError(
            "unknown-region",
            f"{fleet.env} has no region {canary_region!r}; its regions: {', '.join(sorted(fleet.regions))}",
        )
    ctx.region = canary_region  # the plan's region is the canary's (journal, status, report)
    weight = opts.canary_weight if opts.canary_weight is not None else rel.canary_weight
    if not 1 <= weight <= 100:
        raise GuardrailError(
            "canary-weight", f"--canary-weight is a percentage of the canary region's traffic, 1..100 (got {weight})"
        )
    bake = float(opts.bake_seconds if opts.bake_seconds is not None else rel.bake_seconds)
    shares = shares_after_loss(fleet.glob.routing.weights(), None)
    if shares.get(canary_region, 0.0) <= 0:
        serving = ", ".join(sorted(r for r, s in shares.items() if s > 0))
        raise GuardrailError(
            "canary-region",
            f"{canary_region} gets no traffic in {fleet.env} ({fleet.glob.routing.mode} mode): a canary "
            f"there would be judged on nothing. Pick a region that serves: {serving}. Nothing was changed.",
        )
    stable = {r: c.model.version for r, c in fleet.regions.items()}
    if all(v == cand for v in stable.values()):
        raise GuardrailError("candidate", f"every region of {fleet.env} already serves {cand}: nothing to release")
    locked = arm_versions_locked(fleet.glob.experiments, datetime.now(UTC))
    arms = sorted({(v, locked[v]) for v in stable.values() if v in locked and v != cand})
    if arms:
        raise GuardrailError(
            "experiment-running",
            "; ".join(f"{v} is an arm of experiment {eid}" for v, eid in arms)
            + f": releasing {cand} would replace it for that arm's users mid-experiment. Release after the experiment "
            "ends (its `end` in the global stack's experiments), or end it first. Nothing was changed.",
        )
    busy = {
        r: (c.model.canary_version, c.model.canary_weight) for r, c in fleet.regions.items() if c.model.canary_version
    }
    if busy:
        raise GuardrailError(
            "release-in-progress",
            "a canary is already configured ("
            + ", ".join(f"{r}: {v} at {w}%" for r, (v, w) in sorted(busy.items()))
            + "): finish or roll back that release first (`drills status`). Nothing was changed.",
        )
    order = rollout_order(fleet, canary_region)
    # Every region that gets a canary step scores both versions pinned by the header (drift and probe gates): the
    # precheck refuses, from the live config, where its stack names no release tooling range.
    pinned = order if opts.promote else [canary_region]
    # Capacity: the region must hold the stable and the canary pods side by side at peak.
    splits = [split_capacity(fleet, r, weight, ctx.measured_qps) for r in order if shares.get(r, 0) > 0]
    short = [s for s in splits if not s["ok"]]
    if short:
        s = short[0]
        raise GuardrailError(
            "capacity",
            f"{s['region']} cannot hold the stable ({s['stable_gpus']} GPUs) and the canary ({s['canary_gpus']} GPUs) "
            f"side by side at peak: its pools reach {s['gpus_max']} GPUs. Lower --canary-weight or raise the pools' "
            "max. Nothing was changed.",
        )
    # Engines, where a manifest of the candidate is available offline; otherwise judged at precheck from the buckets.
    if ctx.manifest is not None and ctx.manifest.model_version == cand:
        for r, c in fleet.regions.items():
            # Planned engines pass here (the precheck requires them built or added by a Job in the buckets).
            absent = coverage(c.compute_capabilities, ctx.manifest.available, c.model.onnx_fallback_for).missing
            if absent:
                raise GuardrailError(
                    "engines",
                    f"{cand}'s manifest ({ctx.manifest_source}) has no engine for compute capability "
                    f"{', '.join(absent)} of {r}: build it or declare model.onnx_fallback_for. Nothing was changed.",
                )
    pre_config = model_config(fleet)
    stack_of = fleet.stack_names
    # Rollback restores stacks in this order: the canary region first takes the candidate's traffic away first.
    touches = {stack_of[r]: list(REGION_PATHS) for r in order}
    pre_config = {stack_of[r]: pre_config[stack_of[r]] for r in order}
    ttl = float(fleet.glob.ttl)
    p99 = fleet.glob.release_p99_ms
    drift = {"rows": gates.golden_rows, "seed": GOLDEN_SEED}
    release = {
        "candidate": cand,
        "model": model,
        "stable": stable,
        "canary_region": canary_region,
        "canary_weight": weight,
        "bake_seconds": bake,
        "order": order,
        "gates": gates.model_dump() | {"p99_ms_max": p99},
        "shadow": opts.shadow,
        "offline_blocking": opts.offline_blocking,
        "promote": opts.promote,
        "capacity": splits,
        "pinned_scoring": {r: stack_of[r] for r in pinned},  # stacks whose pins the gates score through
    }

    def drift_checks(region: str) -> list[Condition]:
        return [
            Condition(
                kind="score_drift",
                params={"region": region, "stat": "psi", "max": gates.psi_max, **drift},
                description=f"{region}: score PSI canary vs stable on {gates.golden_rows} golden rows <= "
                f"{gates.psi_max:g}",
            ),
            Condition(
                kind="score_drift",
                params={"region": region, "stat": "ks", "max": gates.ks_max, **drift},
                description=f"{region}: score KS statistic canary vs stable <= {gates.ks_max:g}",
            ),
        ]

    def traffic_checks(region: str, track: str, w: int | None) -> list[Condition]:
        out = []
        if w is not None:
            out.append(
                Condition(
                    kind="traffic_split",
                    params={"region": region, "canary_weight": w},
                    description=f"{region}: the load balancer sends {w}% to the canary",
                )
            )
        out += [
            Condition(
                kind="track_errors",
                params={
                    "region": region,
                    "track": track,
                    "max": gates.error_rate_max,
                    "min_requests": gates.min_requests,
                    "window": max(bake, ttl),
                },
                description=f"{region}: {track} error rate <= {gates.error_rate_max:.2%} over >= {gates.min_requests} "
                "requests",
            ),
            Condition(
                kind="track_p99",
                params={"region": region, "track": track, "max_ms": p99},
                description=f"{region}: {track} p99 latency <= {p99:g} ms",
            ),
        ]
        return out

    def set_step(
        name: str,
        region: str,
        values: dict[str, Any],
        description: str,
        *,
        ready: dict,
        checks: list[Condition],
        wait: float = 0.0,
        deletes: int = 0,
    ) -> Step:
        return Step(
            name=name,
            action="release_set",
            mutates=True,
            wait_seconds=wait,
            checks=checks,
            description=description,
            params={
                "region": region,
                "stack": stack_of[region],
                "values": values,
                "ready": ready,
                "allow_deletes": deletes,
                "timeout": rel.ready_timeout_seconds,
            },
        )

    steps: list[Step] = [
        Step(
            name="precheck",
            action="release_precheck",
            description=f"{cand} published and verified in every region's bucket (hashes, sizes, the release "
            "signature of the stack's signer and the manifest digest it pins), engines for every compute capability"
            f", offline AUC >= {gates.auc_min:g} and NDCG@10 >= {gates.ndcg_min:g}"
            + ("" if opts.offline_blocking else " (recorded, not enforced: the drill exercises the online gates)")
            + "; live config and serving as planned; baseline SLO",
            params={
                "release": release,
                "expect_config": pre_config,
                "regions": ccs_by_region(fleet),
                "baseline_seconds": ctx.params.slo_window_seconds,
            },
            checks=[slo_condition(ctx, "baseline")],
        )
    ]
    targets = order if opts.promote else [canary_region]
    for r in targets:
        gets_traffic = shares.get(r, 0.0) > 0
        w = weight
        if opts.shadow or not gets_traffic:
            steps.append(
                set_step(
                    f"canary-{r}",
                    r,
                    {CANARY_VERSION: cand, CANARY_WEIGHT: 0},
                    f"{stack_of[r]}: canary_version={cand}, canary_weight=0, pulumi up; canary pods ready beside "
                    "stable; score both versions on the same golden rows (no user request reaches the candidate yet)",
                    ready={"track": "canary", "version": cand, "weight": 0},
                    checks=[
                        Condition(
                            kind="canary_ready",
                            params={"region": r, "version": cand},
                            description=f"{r}: canary pods serve {cand}, all ready",
                        ),
                        Condition(
                            kind="probe_errors",
                            params={"region": r, "track": "canary", "max": gates.error_rate_max, **drift},
                            description=f"{r}: the candidate answers the golden rows (error rate <= "
                            f"{gates.error_rate_max:.2%})",
                        ),
                        *drift_checks(r),
                    ],
                )
            )
            if gets_traffic:
                steps.append(
                    set_step(
                        f"shift-{r}",
                        r,
                        {CANARY_WEIGHT: w},
                        f"{stack_of[r]}: canary_weight={w}, pulumi up: {w}% of {r}'s requests on {cand}; bake {bake:g} "
                        "s, aborts watched",
                        ready={"track": "canary", "version": cand, "weight": w},
                        wait=bake,
                        checks=[*traffic_checks(r, "canary", w), *drift_checks(r)],
                    )
                )
        else:
            steps.append(
                set_step(
                    f"canary-{r}",
                    r,
                    {CANARY_VERSION: cand, CANARY_WEIGHT: w},
                    f"{stack_of[r]}: canary_version={cand}, canary_weight={w}, pulumi up; bake {bake:g} s",
                    ready={"track": "canary", "version": cand, "weight": w},
                    wait=bake,
                    checks=[
                        Condition(
                            kind="canary_ready",
                            params={"region": r, "version": cand},
                            description=f"{r}: canary pods serve {cand}, all ready",
                        ),
                        *traffic_checks(r, "canary", w),
                        *drift_checks(r),
                    ],
                )
            )
    if not opts.promote:
        steps.append(
            Step(
                name="expect-caught",
                action="expect_caught",
                params={"candidate": cand},
                description=f"{cand} is a deliberately bad candidate: if every canary gate passed, the gates are too "
                "lax. Either way the drill ends by rolling the canary back (never promoted)",
            )
        )
        rollback = [
            f"take the canary away: {', '.join(stack_of[r] for r in targets)} model.canary_version/canary_weight back "
            "to the values recorded before the first change, pulumi up (the stable pods never stopped serving)",
            "measure the time from the failed gate to the canary's weight at 0",
        ]
        return _finish(ctx, opts.scenario, steps, touches, pre_config, rollback)
    for r in order:
        gets_traffic = shares.get(r, 0.0) > 0
        checks = [
            Condition(
                kind="stable_serving",
                params={"region": r, "version": cand},
                description=f"{r}: stable pods serve {cand}, all ready, no canary",
            )
        ]
        if gets_traffic:
            checks += traffic_checks(r, "stable", None)
        steps.append(
            set_step(
                f"promote-{r}",
                r,
                {VERSION: cand, CANARY_VERSION: NO_CANARY, CANARY_WEIGHT: 0},
                f"{stack_of[r]}: version={cand}, canary cleared, pulumi up (stable Deployments roll to {cand}, the "
                f"canary's {canary_deletes(fleet, r)} resources go)" + (f"; bake {bake:g} s" if gets_traffic else ""),
                ready={"track": "stable", "version": cand, "weight": 100},
                wait=bake if gets_traffic else 0.0,
                deletes=canary_deletes(fleet, r),
                checks=checks,
            )
        )
    steps.append(
        Step(
            name="verify-release",
            action="release_verify",
            params={"version": cand, "regions": order},
            description=f"every region serves {cand} as stable, no canary, config as released",
        )
    )
    steps.append(
        Step(
            name="record-lkg",
            action="record_lkg",
            mutates=True,
            params={"version": cand, "model": model, "regions": order},
            description=f"each region's last-known-good pointer ({lkg_key(model, '<region>')}) := {cand} with the S3 "
            "version id and sha256 of every file, verified again first",
        )
    )
    rollback = [
        "before promotion: every touched regional stack's model.canary_version/canary_weight back to the recorded "
        f"values (canary region {canary_region} first), pulumi up: the candidate's weight goes to 0 at once, the "
        "stable pods never stopped",
        "after a promotion began: model.version back as well: the stable Deployments roll back to the previous version",
        "verify the config equals the recorded pre-release state; the time from the failed gate to the canary's "
        "removal is reported",
    ]
    return _finish(ctx, opts.scenario, steps, touches, pre_config, rollback)


def _finish(
    ctx: PlanContext, scenario: str, steps: list[Step], touches: dict, pre_config: dict, rollback: list[str]
) -> Plan:
    ctx.notes.append("release steps change regional stacks only; Route 53 weights are untouched")
    return finish_plan(
        ctx,
        scenario,
        steps,
        touches=touches,
        pre_config=pre_config,
        abort=release_abort_conditions(ctx),
        rollback=rollback,
    )


# ---------------------------------------------------------------- restore to the last-known-good version
def build_restore_plan(ctx: PlanContext, region: str, *, adopt: bool = False, scenario: str = "restore") -> Plan:
    """Bring `region` back to its last-known-good pointer: pin the pods' fetch to the pointer's S3 versions when
    any file a pod would fetch differs from the pinned versions, model.version := the pointer's version, canary
    cleared, pulumi up, roll the pods if a file they serve was pinned, then verify exact hashes. `adopt`: record
    the currently served version as the pointer (first use, before any release wrote one) after verifying it."""
    fleet = ctx.fleet
    if region not in fleet.regions:
        raise GuardrailError("unknown-region", f"{fleet.env} has no region {region!r}")
    stack = fleet.stack_names[region]
    model = fleet.regions[region].model.name
    pre_config = {stack: model_config(fleet)[stack]}
    if adopt:
        steps = [
            Step(
                name="adopt-lkg",
                action="adopt_lkg",
                mutates=True,
                params={"region": region, "model": model},
                description=f"verify the version {region} serves in its bucket and record it as its last-known-good "
                "pointer",
            )
        ]
        return finish_plan(
            ctx,
            scenario,
            steps,
            touches={},
            pre_config={},
            abort=[],
            rollback=["nothing to undo: only the pointer is written"],
            readiness_gate=False,
        )
    steps = [
        Step(
            name="lkg-precheck",
            action="lkg_precheck",
            params={"region": region, "model": model, "expect_config": pre_config},
            description=f"read {model}/_lkg/{region}.json; compare every pinned file with the bucket's current bytes",
        ),
        Step(
            name="restore-lkg",
            action="restore_lkg",
            mutates=True,
            params={
                "region": region,
                "stack": stack,
                "model": model,
                "allow_deletes": canary_deletes(fleet, region),
                "timeout": fleet.glob.release.ready_timeout_seconds,
            },
            description=f"pin the fetch to the pointer's S3 versions if a file differs; {stack}: model.version := the "
            "pointer's version, canary cleared, pulumi up; roll the pods if a served file was pinned; wait ready",
            checks=[
                Condition(
                    kind="lkg_exact",
                    params={"region": region, "model": model},
                    description=f"{region}: every file's sha256 equals the last-known-good pointer's and the stable "
                    "pods serve its version",
                ),
                healthy_condition(),
            ],
        ),
    ]
    rollback = [
        f"{stack}: model keys back to the recorded values, pulumi up (fetch pins are kept: they point at pinned bytes)"
    ]
    return finish_plan(
        ctx,
        scenario,
        steps,
        touches={stack: list(REGION_PATHS)},
        pre_config=pre_config,
        abort=[healthy_condition()],
        rollback=rollback,
        readiness_gate=False,  # a restore repairs what readiness reports (a differing served manifest, drift)
    )


# ---------------------------------------------------------------- node loss: the N+1 figures of one node
def node_loss_figures(fleet: Fleet, region: str, measured: dict[str, float] | None = None) -> dict[str, Any]:
    """What losing the region's biggest GPU node costs, against what its share of peak needs (N+1 math)."""
    cfg = fleet.regions[region]
    share = shares_after_loss(fleet.glob.routing.weights(), None).get(region, 0.0)
    rc = region_capacity(fleet, cfg, share, measured)
    pool = max(cfg.gpu_pools, key=lambda p: (p.gpu.gpus, p.name))
    desired = sum(p.desired * p.gpu.gpus for p in cfg.gpu_pools)
    after = desired - pool.gpu.gpus
    return {
        "region": region,
        "share": round(share, 6),
        "peak_qps": round(rc.qps, 1),
        "gpus_required_at_peak": rc.gpus_required,
        "gpus_desired": desired,
        "pool": pool.name,
        "instance_type": pool.instance_type,
        "gpus_per_node": pool.gpu.gpus,
        "gpus_after_loss": after,
        "gpus_max": rc.gpus_max,
        "covers_peak_after_loss": after >= rc.gpus_required,
        "recoverable": rc.gpus_required <= rc.gpus_max,
        "triton_pods_per_gpu": 1,
        "ceil_loss_fraction": round(pool.gpu.gpus / desired, 4) if desired else None,
    }
