"""stack-flip: swap PRIMARY and SECONDARY through the global stack's config, observe the switch, swap back."""

from __future__ import annotations

from drills.errors import GuardrailError
from drills.model import Condition, Plan, Step
from drills.planning import (
    PlanContext,
    capacity_rows,
    failover_path,
    finish_plan,
    healthy_condition,
    hold_step,
    precheck_step,
    prescale_steps,
    refuse_unsafe,
    roles_of,
    scale_back_step,
    shares,
    slo_condition,
    steady_abort_conditions,
    verify_step,
)
from drills.scenarios.base import Scenario


def _flip_step(ctx: PlanContext, name: str, roles: dict[str, str], baseline: dict[str, float], note: str) -> list[Step]:
    fleet = ctx.fleet
    weights = {r: int(v == "PRIMARY") for r, v in roles.items()}
    rows = capacity_rows(ctx, weights, baseline)
    refuse_unsafe(name, rows)
    primary = next(r for r, v in roles.items() if v == "PRIMARY")
    old = [r for r in roles if r != primary]
    return [
        # Both roles in one config change and one `up`: the program never sees two PRIMARYs.
        Step(
            name=name,
            action="set_config",
            mutates=True,
            roles=roles,
            weights=weights,
            capacity=rows,
            params={"changes": {fleet.global_stack: {failover_path(r): v for r, v in sorted(roles.items())}}},
            description=f"{note}: " + ", ".join(f"{r} {v}" for r, v in roles.items()),
            checks=[
                Condition(
                    kind="roles_applied",
                    params={"roles": roles},
                    description="Route 53 failover records carry the new roles",
                )
            ],
        ),
        Step(
            name=f"observe-{name}",
            action="observe_switch",
            params={"away_from": old, "timeout": ctx.params.slo_window_seconds + 3 * fleet.glob.ttl},
            description=f"measure the switch to {primary}: records in sync, TTL, first success from {primary}, SLO",
            checks=[healthy_condition(), slo_condition(ctx)],
        ),
    ]


class StackFlip(Scenario):
    name = "stack-flip"
    summary = (
        "failover mode: swap PRIMARY and SECONDARY through the global stack config and pulumi up, observe, swap back"
    )
    modes = ("failover",)
    region_arg = "optional"  # the region to make PRIMARY; with two regions, the current secondary
    mode_hint = "In weighted mode move traffic with evacuate-region."

    def build(self, ctx: PlanContext) -> Plan:
        fleet = ctx.fleet
        pre = roles_of(fleet)
        assert pre is not None
        primary = next(r for r, v in pre.items() if v == "PRIMARY")
        secondary = next(r for r, v in pre.items() if v == "SECONDARY")
        if ctx.region == primary:
            raise GuardrailError(
                "already-primary",
                f"{primary} is already the PRIMARY of {fleet.env}; pass the secondary ({secondary}) or no --region",
            )
        new = {r: ("PRIMARY" if r == secondary else "SECONDARY" if r == primary else v) for r, v in pre.items()}
        baseline = shares(ctx.weights)
        flip = _flip_step(ctx, "flip", new, baseline, f"make {secondary} PRIMARY")
        back = _flip_step(ctx, "flip-back", pre, baseline, f"make {primary} PRIMARY again")
        row = next(r for r in flip[0].capacity if r.region == secondary)
        targets = {secondary: dict(row.prescale)} if row.prescale else {}
        touches = {fleet.global_stack: [failover_path(r) for r in sorted(pre)]}
        pre_config = {fleet.global_stack: {failover_path(r): v for r, v in sorted(pre.items())}}
        steps = [
            precheck_step(ctx, pre_config, engines_for=[secondary]),
            *prescale_steps(ctx, targets),
            *flip,
            hold_step(ctx, f"with {secondary} PRIMARY"),
            *back,
            *scale_back_step(ctx, targets),
            verify_step(),
        ]
        rollback = [
            f"restore the failover roles recorded in the journal ({primary} PRIMARY, {secondary} SECONDARY; global "
            "stack config, pulumi up)"
        ]
        if targets:
            rollback.append("then return pre-scaled node groups to their recorded min and desired sizes (EKS API)")
        return finish_plan(
            ctx,
            self.name,
            steps,
            touches=touches,
            pre_config=pre_config,
            abort=steady_abort_conditions(ctx),
            rollback=rollback,
        )
