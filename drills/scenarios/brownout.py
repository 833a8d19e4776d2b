"""region-brownout and quiet: gray failures the shallow health check misses, and the soak that proves the deeper
checks raise no false alarm.

region-brownout runs region-outage's plan (inject in the data plane, observe the failover, hold, clear, observe the
recovery) with one of drills.brownout's faults: `--fault errors=0.3`, `latency=400ms`, `loss=0.2`, `reset=0.2`,
`blackhole`, `bandwidth=65536`, `unload` or `slow-model=400`. The region's record carries a calculated Route 53 check
over the shallow, deep and ALB-metric checks (infra/health.py), so the drill passes only when some check sees the fault
and DNS moves users away; the report says when each kind of check did. On AWS the network faults come from AWS FIS
actions on the region's Triton pods (aws:eks:pod-network-latency, -packet-loss, -blackhole-port) or the deployment's
own fault hooks; `unload` from Triton's model-control API.

quiet injects nothing: it holds `hold_seconds` with traffic and every check watched; any detection is a false positive.
"""

from __future__ import annotations

from drills import brownout
from drills.errors import GuardrailError
from drills.model import Plan, Step
from drills.planning import (
    PlanContext,
    fault_step,
    finish_plan,
    hold_step,
    precheck_step,
    slo_condition,
    steady_abort_conditions,
)
from drills.scenarios.base import Scenario
from drills.scenarios.outage import RegionOutage
from drills.scenarios.replication import (
    bucket_precheck_step,
    canary_cleanup_step,
    canary_write_step,
    measure_replication_step,
)

# Which checks are built to see each kind (infra/health.py); the others may see it too.
DESIGNED_FOR = {
    "errors": "the ALB 5xx-ratio alarm (metric check)",
    "latency": "the ALB response-time alarm (metric check)",
    "loss": "the endpoint checks (timeouts) and the 5xx-ratio alarm (504s)",
    "reset": "the endpoint checks and the 5xx-ratio alarm (502s)",
    "blackhole": "the shallow and deep endpoint checks (timeouts)",
    "bandwidth": "the response-time alarm",
    "unload": "the deep check (no inference while /v2/health/ready stays 200)",
    "slow-model": "the deep check (one inference beyond its 250 ms bound) and the response-time alarm",
    "replication-partition": "the replication-latency alarm (no health check: serving is untouched)",
}


class RegionBrownout(RegionOutage):
    name = "region-brownout"
    summary = (
        "a gray failure in one region (errors, latency, loss, resets, blackhole, bandwidth, unloaded model): "
        "detection by each kind of check, DNS failover, RTO in parts, fail-back"
    )

    def build(self, ctx: PlanContext) -> Plan:
        if brownout.base_kind(ctx.params.fault) not in brownout.KINDS:  # region-outage's default, or another kind
            raise GuardrailError(
                "bad-fault",
                f"region-brownout needs --fault KIND[=VALUE], KIND one of {', '.join(brownout.KINDS)}; got fault "
                f"{ctx.params.fault!r} (region-outage's kinds belong to region-outage)",
            )
        fault = brownout.parse(ctx.params.fault)
        ctx.notes.append(f"fault {fault.text}: built to be seen by {DESIGNED_FOR[fault.kind]}")
        if fault.kind in brownout.REPLICATION:
            return self.partition(ctx, fault)
        return super().build(ctx)

    def partition(self, ctx: PlanContext, fault: brownout.Fault) -> Plan:
        """Replication cut to and from the region while canaries are written in the others: serving is untouched, RPO
        grows for as long as the partition lasts, the replication alarm fires once the backlog is older than its
        threshold; after the heal every canary must land within the RPO objective (the catch-up)."""
        fleet, region = ctx.fleet, ctx.region
        assert region
        others = sorted(r for r in fleet.regions if r != region)
        if not others:
            raise GuardrailError("no-survivor", f"{fleet.env} has one region: there is no replication to cut")
        rpo = fleet.glob.objectives.rpo_seconds
        timeout = ctx.params.replication_timeout_seconds or 2 * rpo
        steps = [
            bucket_precheck_step(sorted(fleet.regions)),
            fault_step(
                "inject", {"region": region, "fault": fault.text}, f"cut artifact replication to and from {region}"
            ),
            canary_write_step(
                others, f"put a canary object in {', '.join(others)}: none can reach {region} while it is cut"
            ),
            hold_step(ctx, f"with replication to and from {region} cut (RPO grows; the replication alarm fires)"),
            fault_step("clear", {"region": region, "fault": fault.text}, f"heal replication to and from {region}"),
            measure_replication_step(
                others,
                timeout,
                rpo,
                f"every canary visible everywhere after the heal (catch-up, measured from the heal; gives up after "
                f"{timeout:g} s)",
                f"every canary caught up within {rpo:g} s of the heal",
                since_heal=True,
            ),
            canary_cleanup_step(),
        ]
        return finish_plan(
            ctx,
            self.name,
            steps,
            touches={},
            pre_config={},
            abort=steady_abort_conditions(ctx),
            rollback=[
                f"heal replication to and from {region} (recorded in the journal)",
                "delete every canary object the journal records, in every region",
            ],
        )


class Quiet(Scenario):
    name = "quiet"
    summary = "a soak with traffic and no fault: every health check and alarm must stay healthy (no false positive)"
    region_arg = "ignored"

    def build(self, ctx: PlanContext) -> Plan:
        steps = [
            precheck_step(ctx, {}, engines_for=[]),
            Step(
                name="soak",
                action="hold",
                wait_seconds=ctx.params.hold_seconds,
                description=f"hold {ctx.params.hold_seconds:g} s with traffic; any region leaving DNS is a false "
                "positive",
                checks=[slo_condition(ctx), *steady_abort_conditions(ctx)[1:]],
            ),
        ]
        return finish_plan(
            ctx,
            self.name,
            steps,
            touches={},
            pre_config={},
            abort=steady_abort_conditions(ctx),
            rollback=["nothing to undo: the soak changes nothing"],
        )
