"""evacuate-region: the planned move of a region's traffic to the survivors and back."""

from __future__ import annotations

from drills.errors import GuardrailError
from drills.model import Condition, Plan, Step
from drills.planning import (
    PlanContext,
    capacity_rows,
    finish_plan,
    healthy_condition,
    hold_step,
    precheck_step,
    prescale_steps,
    refuse_unsafe,
    scale_back_step,
    shares,
    shift_schedule,
    slo_condition,
    steady_abort_conditions,
    verify_step,
    weight_path,
)
from drills.scenarios.base import Scenario


def shift_step(ctx: PlanContext, name: str, weights: dict[str, int], baseline: dict[str, float], note: str) -> Step:
    """Set every region's weight in the global stack (absolute values, so re-running the step is harmless),
    `pulumi up`, wait for clients' caches (the TTL), then gate on records, health and the SLO."""
    rows = capacity_rows(ctx, weights, baseline)
    refuse_unsafe(name, rows)
    g = ctx.fleet
    settle = ctx.params.settle_seconds if ctx.params.settle_seconds is not None else float(g.glob.ttl)
    return Step(
        name=name,
        action="set_config",
        mutates=True,
        weights=weights,
        capacity=rows,
        wait_seconds=settle,
        params={"changes": {g.global_stack: {weight_path(r): w for r, w in sorted(weights.items())}}},
        description=f"{note}: weights "
        + " / ".join(f"{r} {w}" for r, w in weights.items())
        + f", then wait {settle:g} s (TTL)",
        checks=[
            Condition(
                kind="weights_applied",
                params={"weights": weights},
                description="Route 53 records carry the new weights",
            ),
            healthy_condition(),
            slo_condition(ctx),
        ],
    )


class EvacuateRegion(Scenario):
    name = "evacuate-region"
    summary = (
        "planned: pre-scale the survivors, shift the region's weight to 0 stepwise with probes between steps, "
        "hold, restore"
    )
    modes = ("weighted",)
    mode_hint = "In failover mode move the primary with stack-flip."

    def build(self, ctx: PlanContext) -> Plan:
        fleet, region = ctx.fleet, ctx.region
        assert region
        pre = ctx.weights
        if pre[region] == 0:
            raise GuardrailError(
                "nothing-to-evacuate", f"{region} already has weight 0 in {fleet.env}: no traffic to move"
            )
        if sum(w for r, w in pre.items() if r != region) == 0:
            raise GuardrailError(
                "last-weighted-region",
                f"{region} is the only region of {fleet.env} with weight > 0: evacuating it would zero the last region "
                "that serves traffic. Give another region weight (and capacity) first. Nothing was changed.",
            )
        baseline = shares(pre)
        schedule = shift_schedule(pre, region, ctx.params.steps)
        n = len(schedule)
        shifts = [shift_step(ctx, f"shift-{k}", w, baseline, f"shift {k}/{n}") for k, w in enumerate(schedule, 1)]
        # Pre-scale each survivor to the largest share it reaches (the last step), pool by pool.
        targets = {
            row.region: dict(row.prescale) for row in shifts[-1].capacity if row.region != region and row.prescale
        }
        drain = Step(
            name="observe-drain",
            action="observe_switch",
            phase="steady",
            params={"away_from": [region], "timeout": ctx.params.slo_window_seconds + 3 * fleet.glob.ttl},
            description=f"measure until no client is answered by {region}: records in sync, TTL, first success from "
            "the survivors, SLO",
            checks=[
                Condition(kind="dns_excludes", params={"region": region}, description=f"DNS answers exclude {region}")
            ],
        )
        back = [*reversed(schedule[:-1]), pre]
        restores = [
            shift_step(ctx, f"restore-{k}", w, baseline, f"restore {k}/{len(back)}") for k, w in enumerate(back, 1)
        ]
        touches = {fleet.global_stack: [weight_path(r) for r in sorted(pre)]}
        pre_config = {fleet.global_stack: {weight_path(r): w for r, w in sorted(pre.items())}}
        survivors = sorted(r for r in pre if r != region and pre[r] > 0)
        steps = [
            precheck_step(ctx, pre_config, engines_for=survivors),
            *prescale_steps(ctx, targets),
            *shifts,
            drain,
            hold_step(ctx, f"with {region} evacuated", exclude=[region]),
            *restores,
            *scale_back_step(ctx, targets),
            verify_step(),
        ]
        if not targets:
            ctx.notes.append("the survivors' desired GPU counts already carry the evacuated share: no pre-scale")
        rollback = [
            "restore the routing weights recorded in the journal before the first change: "
            + " / ".join(f"{r} {w}" for r, w in pre.items())
            + " (global stack config, pulumi up)",
        ]
        if targets:
            rollback.append("then return pre-scaled node groups to their recorded min and desired sizes (EKS API)")
        rollback.append("verify the records and config equal the recorded pre-drill state")
        return finish_plan(
            ctx,
            self.name,
            steps,
            touches=touches,
            pre_config=pre_config,
            abort=steady_abort_conditions(ctx),
            rollback=rollback,
        )
