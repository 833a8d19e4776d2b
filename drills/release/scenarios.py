"""Scenarios below a region, on the drills engine: bad-release, artifact-corruption, node-loss, restore.

  bad-release          release a deliberately bad candidate (`python -m model_build --bad-labels --version
                       <stable>-bad`, published to every region's bucket) as a canary in one region: the canary's
                       gates must catch it and the engine roll it back; the time from the failed gate to the
                       canary's weight at 0 is measured. Offline AUC/NDCG are recorded, not enforced (they would
                       refuse it before the canary, and the drill is about the online gates and the rollback).
                       The candidate is `<stable>-bad`, or $DRILLS_RELEASE_CANDIDATE.
  artifact-corruption  alter one file of the version a region serves in its bucket (same size, other bytes):
                       verification must refuse it before any pod serves it; the region is restored to its
                       last-known-good pointer (pinned S3 versions, exact hashes before/after), RPO reported;
                       the other regions are watched until the replicated corrupt object is replaced too.
  node-loss            lose one GPU node of a region (the biggest): capacity, readiness and latency through the
                       loss and the replacement, against the N+1 figures of one node.
  restore              bring a region back to its last-known-good pointer (`drills restore` runs this).
`python -m drills plan <scenario> --env prod --region us-west-2` works offline for each.
"""

from __future__ import annotations

import os

from drills.model import Condition, Plan, Step
from drills.planning import (
    PlanContext,
    fault_step,
    finish_plan,
    healthy_condition,
    hold_step,
    slo_condition,
    steady_abort_conditions,
)
from drills.release.planning import (
    ReleaseOptions,
    build_release_plan,
    build_restore_plan,
    canary_deletes,
    default_canary_region,
    model_config,
    node_loss_figures,
)
from drills.scenarios.base import Scenario


class BadRelease(Scenario):
    name = "bad-release"
    summary = (
        "canary a deliberately bad model in one region: the canary gates must catch it and roll it back (time "
        "to rollback measured)"
    )
    region_arg = "optional"  # the canary region (default: release.canary_region)

    def build(self, ctx: PlanContext) -> Plan:
        region = ctx.region or default_canary_region(ctx.fleet)
        stable = ctx.fleet.regions[region].model.version
        candidate = os.environ.get("DRILLS_RELEASE_CANDIDATE") or f"{stable}-bad"
        ctx.notes.append(
            f"candidate {candidate}: build it with `python -m model_build --bad-labels --version {candidate} --out "
            f"build/{candidate}` and publish it to every region's bucket (`python -m model_build publish "
            f"build/{candidate} --stack <stack>`)"
        )
        return build_release_plan(
            ctx,
            ReleaseOptions(
                candidate=candidate, canary_region=region, offline_blocking=False, promote=False, scenario=self.name
            ),
        )


class ArtifactCorruption(Scenario):
    name = "artifact-corruption"
    summary = (
        "alter a model file in one region's bucket: verification refuses it before it serves, the region is "
        "restored from its last-known-good pointer"
    )
    region_arg = "required"

    def build(self, ctx: PlanContext) -> Plan:
        fleet, region = ctx.fleet, ctx.region
        assert region
        model = fleet.regions[region].model.name
        stack = fleet.stack_names[region]
        others = sorted(r for r in fleet.regions if r != region)
        timeout = ctx.params.replication_timeout_seconds or 2 * fleet.glob.objectives.rpo_seconds
        pre = {stack: model_config(fleet)[stack]}
        steps = [
            Step(
                name="precheck",
                action="lkg_precheck",
                params={"region": region, "model": model, "expect_config": pre, "require_clean": True},
                description=f"{region} has a last-known-good pointer, serves its version, and every pinned file's "
                "bytes match (hashes before)",
            ),
            fault_step(
                "inject",
                {"region": region, "fault": "corrupt-artifact"},
                f"overwrite the served version's ONNX graph in {region}'s bucket with same-size altered bytes (a new "
                "object version)",
                name="corrupt",
            ),
            Step(
                name="detect",
                action="verify_served",
                params={"region": region, "model": model},
                description=f"verify {region}'s served version in its bucket as a release precheck, a restore and "
                "every pod's verify-model init container do (no pod restarted in between)",
                checks=[
                    Condition(
                        kind="corruption_detected",
                        params={"region": region},
                        description="verification refuses the altered file by its sha256 before any pod loads it",
                    )
                ],
            ),
            Step(
                name="restore",
                action="restore_lkg",
                mutates=True,
                params={
                    "region": region,
                    "model": model,
                    "allow_deletes": canary_deletes(fleet, region),
                    "timeout": fleet.glob.release.ready_timeout_seconds,
                },
                description=f"pin the pods' fetch to the S3 versions of {region}'s last-known-good pointer, config "
                "at the pointer's version, roll the pods so none keeps the bad bytes, wait ready",
                checks=[
                    Condition(
                        kind="lkg_exact",
                        params={"region": region, "model": model},
                        description=f"{region}: every file's sha256 equals the pointer's (hashes after) and stable "
                        "serves its version",
                    ),
                    healthy_condition(),
                ],
            ),
            Step(
                name="other-regions",
                action="verify_regions",
                params={"regions": others, "model": model, "timeout": timeout},
                description=f"watch {', '.join(others)} (replication copies the corrupt object) until "
                f"it arrives, then pin each to its own last-known-good versions, at most {timeout:g} s (any region "
                "not yet exact is pinned at the deadline)",
                checks=[
                    Condition(
                        kind="regions_exact",
                        params={},
                        description="every other region's files equal its last-known-good pointer",
                    )
                ],
            ),
            hold_step(ctx, f"with {region} restored"),
        ]
        rollback = [
            f"put back the pinned good version of the altered object in {region} (the fault's clear), then any model "
            f"key of {stack} the restore changed, pulumi up"
        ]
        return finish_plan(
            ctx,
            self.name,
            steps,
            touches={stack: list(pre[stack])},
            pre_config=pre,
            abort=steady_abort_conditions(ctx),
            rollback=rollback,
        )


class NodeLoss(Scenario):
    name = "node-loss"
    summary = (
        "lose one GPU node of a region: capacity, readiness and latency through the loss and the replacement, "
        "against the N+1 figures"
    )
    region_arg = "required"

    def build(self, ctx: PlanContext) -> Plan:
        fleet, region = ctx.fleet, ctx.region
        assert region
        fig = node_loss_figures(fleet, region, ctx.measured_qps)
        verdict = "covers" if fig["covers_peak_after_loss"] else "does NOT cover"
        ctx.notes.append(
            f"N+1 of one node in {region}: {fig['gpus_desired']} GPUs at desired size, losing one "
            f"{fig['instance_type']} ({fig['gpus_per_node']} GPUs) leaves {fig['gpus_after_loss']}, which {verdict} "
            f"the {fig['gpus_required_at_peak']} GPUs its {fig['share']:.0%} share of peak needs; the pools reach "
            f"{fig['gpus_max']}"
        )
        if not fig["covers_peak_after_loss"]:
            ctx.warnings.append(
                f"{region} is not N+1 at node level at peak: the drill measures how long the autoscaler takes to make "
                "it up"
            )
        timeout = ctx.params.capacity_timeout_seconds
        steps = [
            Step(
                name="precheck",
                action="precheck",
                params={"expect_config": {}, "engines_for": {}, "baseline_seconds": ctx.params.slo_window_seconds},
                description="every region healthy; baseline SLO",
                checks=[slo_condition(ctx, "baseline")],
            ),
            fault_step(
                "inject",
                {"region": region, "fault": "gpu-node-loss"},
                f"lose one {fig['pool']} node ({fig['instance_type']}, {fig['gpus_per_node']} GPUs) of {region}",
                name="lose-node",
            ),
            Step(
                name="observe-loss",
                action="observe_node_loss",
                params={"region": region, "timeout": timeout, "figures": fig},
                description="every poll: ready Triton pods, node groups, /v2/health/ready and inference latency in "
                f"{region}, until every pod is ready again (at most {timeout:g} s)",
                checks=[
                    Condition(
                        kind="node_loss_recovered",
                        params={},
                        description="pods dropped with the node and were all ready again",
                    ),
                    Condition(
                        kind="node_loss_capacity",
                        params={},
                        blocking=False,
                        description="at its lowest, the region served with at least the GPUs its share of peak needs "
                        "(judged in the report)",
                    ),
                    slo_condition(ctx, "service probes through the loss"),
                ],
            ),
            fault_step(
                "clear",
                {"region": region, "fault": "gpu-node-loss"},
                "nothing to undo on AWS (the node group replaced the instance); test backends restore their node",
            ),
            hold_step(ctx, f"after the node loss in {region}"),
        ]
        return finish_plan(
            ctx,
            self.name,
            steps,
            touches={},
            pre_config={},
            abort=steady_abort_conditions(ctx),
            rollback=["clear the fault (nothing to undo on AWS: the managed node group replaces the lost instance)"],
        )


class Restore(Scenario):
    name = "restore"
    summary = (
        "bring a region back to its last-known-good model version (fetch pinned to its S3 versions, config, up, "
        "exact hashes)"
    )
    region_arg = "required"

    def build(self, ctx: PlanContext) -> Plan:
        assert ctx.region
        return build_restore_plan(ctx, ctx.region)
