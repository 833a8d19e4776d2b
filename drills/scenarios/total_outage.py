"""total-outage: every region of the environment down at once for a stated drill time, then back.

It measures what clients see when no region can answer (a resilient client returns its degraded fallback answer,
the release's fallback ranking; a naive client fails), and that everything recovers once the fault is cleared:
every health check healthy, DNS answering every region that carries traffic, the SLO met again, within a deadline.

The fault is region-outage's data-plane fault (`fault`, default triton-down), injected in every region in one step,
each region's injection journaled before it is made, so a rollback clears every fault that was injected. With every
record unhealthy Route 53 answers with all of them (it fails open): the plan observes every health check unhealthy
and asserts nothing about DNS excluding a region. During the outage the steady-state aborts (SLO, healthy) are off,
the outage being the point; the only aborts are deadlines: the outage lasting longer than planned, and the service
not recovered in time after the clearing.

Guardrail: the whole service goes down, so the plan is refused unless the caller names the environment in
`allow_total_outage` (`--allow-total-outage ENV`, or `parameters.allow_total_outage` in a plan file): the
`--confirm ENV` convention, recorded with the plan's parameters in the journal. In production this is a game-day
drill, run only with the shop's fallback in place.
"""

from __future__ import annotations

from drills.errors import GuardrailError
from drills.model import Condition, Plan, Step
from drills.planning import (
    PlanContext,
    capacity_rows,
    engine_coverage,
    fault_step,
    finish_plan,
    precheck_step,
    shares,
    slo_condition,
    verify_step,
)
from drills.scenarios.base import Scenario
from drills.scenarios.outage import CONTROL_PLANE_FAULTS

OPT_IN = "allow_total_outage"  # the parameter that names the environment to allow the drill in


def unhealthy_condition(regions: list[str], when: str) -> Condition:
    return Condition(
        kind="unhealthy",
        params={"regions": regions},
        description=f"Route 53 health check unhealthy for every region ({', '.join(regions)}) {when}",
    )


class TotalOutage(Scenario):
    name = "total-outage"
    summary = (
        "every region down at once for hold_seconds, then back: what clients see with no region answering (the "
        "fallback answer or a failure), and full recovery. Refused unless allow_total_outage names the env; in "
        "production a game day with the shop's fallback in place"
    )
    region_arg = "ignored"  # every region of the environment

    def build(self, ctx: PlanContext) -> Plan:
        fleet, p = ctx.fleet, ctx.params
        env, regions = fleet.env, sorted(fleet.regions)
        if p.allow_total_outage != env:
            got = f" (allow_total_outage is {p.allow_total_outage!r}, not {env!r})" if p.allow_total_outage else ""
            raise GuardrailError(
                "total-outage-opt-in",
                f"total-outage takes every region of {env} down at once ({', '.join(regions)}): no region answers "
                f"for the drill and every client without the shop's fallback fails{got}. To run it, pass "
                f"--allow-total-outage {env} (or parameters.{OPT_IN}: {env} in the plan file); in production only on "
                "a game day with the shop's fallback in place. Nothing was changed.",
            )
        if p.hold_seconds <= 0:
            raise GuardrailError(
                "parameters",
                f"hold_seconds = {p.hold_seconds:g}: rule: total-outage keeps every region down for hold_seconds "
                "drill seconds, so it must be > 0",
            )
        # Every region restarts its Triton at the clearing and may serve after it: each needs its engines.
        for r in regions:
            cov = engine_coverage(ctx, fleet.regions[r])
            if cov.status == "missing":
                raise GuardrailError(
                    "engines",
                    f"after the outage {r} would restart without an engine: {cov.detail} in the model manifest. Build "
                    "the engine or declare model.onnx_fallback_for first. Nothing was changed.",
                )
        fault = p.fault
        if fault in CONTROL_PLANE_FAULTS:
            ctx.warnings.append(
                f"fault {fault!r} inverts every health check and leaves every Triton serving: Route 53 then answers "
                "with every region (it fails open), so clients see no outage; the drill proves the health checks and "
                "alarms, not what clients see"
            )
        pre = ctx.weights
        rows = capacity_rows(ctx, pre, shares(pre))  # the regions come back at their pre-drill shares
        deadline = fleet.glob.objectives.rto_seconds * p.failover_deadline_factor
        margin = max(p.slo_window_seconds, 2 * p.poll_seconds)
        outage_limit = deadline + p.hold_seconds + margin
        every = ", ".join(regions)
        steps = [
            precheck_step(ctx, {}, engines_for=regions),
            fault_step(
                "inject",
                {"regions": regions, "fault": fault},
                f"fail every region in the data plane ({fault}): {every}, each journaled before it is injected; no "
                "Route 53 or Pulumi call",
                phase="failover",
            ),
            Step(
                name="observe-outage",
                action="observe_outage",
                phase="failover",
                params={"regions": regions, "deadline": deadline},
                description="measure each region's detection (health check unhealthy) and what the service probes "
                f"see; abort if not every region is unhealthy within {deadline:g} s. No DNS assertion: with every "
                "record unhealthy Route 53 answers with all of them",
                checks=[unhealthy_condition(regions, "after the fault")],
            ),
            Step(
                name="hold",
                action="hold",
                wait_seconds=p.hold_seconds,
                phase="failover",
                description=f"hold {p.hold_seconds:g} s with every region down, probes running; no SLO abort: the "
                "outage is the point",
                checks=[unhealthy_condition(regions, "at the end of the hold")],
            ),
            fault_step(
                "clear",
                {"regions": regions, "fault": fault},
                f"undo the fault in every region ({every}) with the handle each injection recorded",
                phase="failover",
                capacity=rows,
            ),
            Step(
                name="observe-recovery",
                action="observe_recovery",
                phase="failover",
                params={"regions": regions, "timeout": deadline, "slo_recovery": True},
                description="wait until every region's health check is healthy, DNS answers every region that carries "
                f"traffic and the SLO has recovered since the clearing; abort if not within {deadline:g} s",
                checks=[
                    Condition(
                        kind="healthy",
                        params={"regions": regions, "exclude": []},
                        description=f"Route 53 health check healthy for every region ({every})",
                    ),
                    slo_condition(ctx),
                ],
            ),
            verify_step(),
        ]
        abort = [
            Condition(
                kind="deadline",
                params={"since": "fault", "until": "fault_cleared", "seconds": outage_limit},
                description=f"abort (clearing every fault) if the outage lasts beyond {outage_limit:g} s: detection "
                f"deadline {deadline:g} s + hold {p.hold_seconds:g} s + {margin:g} s",
            ),
            Condition(
                kind="deadline",
                params={"since": "fault_cleared", "until": "slo_recovered", "seconds": deadline},
                description=f"abort if the SLO has not recovered {deadline:g} s after the fault was cleared "
                f"({p.failover_deadline_factor:g} x RTO objective)",
            ),
        ]
        rollback = [
            f"clear the fault in every region ({every}), each with the handle its injection recorded in the journal",
            "verify no fault is left injected and the Route 53 records equal the pre-drill state",
        ]
        ctx.notes += [
            f"allowed by {OPT_IN}={env}: every region of {env} is down for about {p.hold_seconds:g} s plus detection; "
            "in production run it only on a game day with the shop's fallback in place (the ranker client's "
            "degraded answer from the release's fallback ranking), announced and in a window: a client without the "
            "fallback fails for the whole outage",
            "Route 53 fails open: with every health check unhealthy it answers with every record, so clients keep "
            "resolving the regions during the outage; the plan expects no region to leave the DNS answers",
            "the steady-state aborts (SLO, health) are off during the outage; only the two deadlines abort",
            "every region restarts at once at the clearing (Triton start-up and engine loading under the whole "
            "load, retries included); a hold longer than the cluster autoscaler's scale-down delay (10 min by "
            "default) may also lose the idle GPU nodes and make the recovery a cold start",
        ]
        return finish_plan(ctx, self.name, steps, touches={}, pre_config={}, abort=abort, rollback=rollback)
