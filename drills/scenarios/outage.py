"""region-outage: an unplanned regional failure, made in the data plane, and the DNS failover it triggers.

The fault is injected below Route 53 and Pulumi (Triton scaled to zero or answering not-ready), so the failover
under test is the one production relies on: health checks fail, Route 53 stops answering with the region,
clients move when their cached answer expires. The control-plane variant (`fault: hc-invert`, inverting the
region's health check) exists for accounts where the data plane may not be touched; the report marks it.
"""

from __future__ import annotations

from drills.errors import GuardrailError
from drills.model import Condition, Plan, Step
from drills.planning import (
    PlanContext,
    capacity_rows,
    fault_step,
    finish_plan,
    healthy_condition,
    hold_step,
    precheck_step,
    refuse_unsafe,
    shares,
    slo_condition,
    steady_abort_conditions,
    verify_step,
)
from drills.scenarios.base import Scenario
from infra.catalog import AUTOSCALER_SYNC_S, CAPACITY_STARTUP

CONTROL_PLANE_FAULTS = {"hc-invert"}
# How long measure-startup waits for added pods still starting: the stated start-up (infra/catalog.py) and one HPA
# sync beyond it; a pod still not serving then is reported as such (e.g. one waiting for EC2 capacity).
STARTUP_TIMEOUT = sum(s.seconds for s in CAPACITY_STARTUP) + AUTOSCALER_SYNC_S


class RegionOutage(Scenario):
    name = "region-outage"
    summary = (
        "unplanned: fail the region's health check in the data plane, observe DNS failover, measure RTO in "
        "parts, restore"
    )

    def build(self, ctx: PlanContext) -> Plan:
        fleet, region = ctx.fleet, ctx.region
        assert region
        pre = ctx.weights
        if len(fleet.regions) < 2:
            raise GuardrailError(
                "no-survivor", f"{fleet.env} has one region: an outage of {region} leaves nothing to fail over to"
            )
        rows = capacity_rows(ctx, pre, shares(pre), lost=region)
        refuse_unsafe(f"the loss of {region}", rows)
        fault = ctx.params.fault
        if fault in CONTROL_PLANE_FAULTS:
            ctx.warnings.append(
                f"fault {fault!r} uses the Route 53 control plane: the drill then proves records and routing, not the "
                "data-plane failover path"
            )
        o = fleet.glob.objectives
        deadline = o.rto_seconds * ctx.params.failover_deadline_factor
        survivors = sorted(r.region for r in rows)
        if fleet.glob.routing.mode == "failover" and fleet.glob.routing.regions[region].failover == "SECONDARY":
            ctx.notes.append(
                f"{region} is the SECONDARY: its outage moves no traffic; the drill proves its health check and alarms"
            )
        steps = [
            precheck_step(ctx, {}, engines_for=[r.region for r in rows if r.gains_share]),
            fault_step(
                "inject",
                {"region": region, "fault": fault},
                f"fail {region} in the data plane ({fault}); no Route 53 or Pulumi call makes the failover",
                phase="failover",
                capacity=rows,
            ),
            Step(
                name="observe-failover",
                action="observe_failover",
                phase="failover",
                params={"region": region, "deadline": deadline},
                description="measure detection (health check unhealthy), DNS answers without the region, TTL, first "
                f"success from the survivors, SLO recovered; abort if not at SLO within {deadline:g} s",
                checks=[
                    Condition(
                        kind="dns_excludes", params={"region": region}, description=f"DNS answers exclude {region}"
                    ),
                    healthy_condition([region]),
                ],
            ),
            hold_step(ctx, f"with {region} failed", exclude=[region]),
            Step(
                name="measure-startup",
                action="measure_startup",
                params={"regions": survivors, "timeout": STARTUP_TIMEOUT},
                description="time to first good inference of every Triton pod the survivors added since the fault: "
                "node ready, image pulled, model fetched and verified, Triton loaded and warmed up, serving; waits "
                f"up to {STARTUP_TIMEOUT:g} s for the pods still starting",
            ),
            fault_step(
                "clear",
                {"region": region, "fault": fault},
                f"undo the fault in {region} (restore its Triton replicas / readiness)",
            ),
            Step(
                name="observe-recovery",
                action="observe_recovery",
                params={"region": region, "timeout": deadline},
                description=f"wait until {region}'s health check is healthy and DNS answers include it again",
                checks=[healthy_condition(), slo_condition(ctx)],
            ),
            verify_step(),
        ]
        abort = [
            Condition(
                kind="deadline",
                params={"since": "fault", "until": "slo_recovered", "seconds": deadline},
                description=f"abort if the SLO has not recovered {deadline:g} s after the fault "
                f"({ctx.params.failover_deadline_factor:g} x RTO objective)",
            ),
            *steady_abort_conditions(ctx, exclude=[region]),
        ]
        rollback = [
            f"clear the fault in {region} (recorded in the journal with what it changed)",
            "verify every region is healthy and answered again",
        ]
        ctx.notes.append(
            f"survivors after the loss: {', '.join(survivors)}; they are not pre-scaled: the drill measures "
            "autoscaling as an outage would"
        )
        short = [r for r in rows if r.gains_share and r.qps_at_desired < r.qps]
        if short:
            # Seen in the rehearsal (--capacity-model): a survivor over what it runs sheds 503s until new nodes serve,
            # and its own ALB 5xx alarm, which its calculated health check follows, can then take it out of DNS too.
            ctx.warnings.append(
                "; ".join(
                    f"{r.region} runs {r.qps_at_desired:,.0f} QPS at desired size for {r.qps:,.0f}" for r in short
                )
                + f" after the loss of {region}: until added nodes serve (the capacity part of RTO, stated "
                f"{STARTUP_TIMEOUT - AUTOSCALER_SYNC_S:g} s) such a survivor sheds, and shedding past the 5xx alarm's "
                "ratio takes it out of DNS as well. Run the survivors at what their worst loss needs, or pre-scale "
                "before a planned drill"
            )
        return finish_plan(ctx, self.name, steps, touches={}, pre_config={}, abort=abort, rollback=rollback)
