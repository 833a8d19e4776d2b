"""Pure planning: weights per step, N+1 capacity per step, pre-scale targets, guardrails, common steps.

No adapters and no cloud calls here: everything is computed from the fleet config (`infra.config`), the N+1
math (`infra.capacity`) and, where one is known, the model manifest. Scenarios compose these pieces; a new
scenario (a release, a node loss) reuses them rather than re-deriving weights or capacity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from drills.drillplan import DrillFile, Parameters, roles_and_communication
from drills.errors import GuardrailError
from drills.model import CapacityRow, Condition, EngineCoverage, Objectives, Plan, Step
from infra.capacity import qps_per_gpu, region_capacity, shares_after_loss
from infra.config import Fleet, RegionConfig
from infra.engines import coverage
from infra.experiments import running
from infra.invariants import ManifestFacts

MAX_WEIGHT = 255  # Route 53's weight range is 0..255


@dataclass
class PlanContext:
    """Everything a scenario may read to build its plan."""

    fleet: Fleet
    region: str | None
    params: Parameters
    drill: DrillFile = field(default_factory=DrillFile)
    manifest: ManifestFacts | None = None  # the model manifest found offline (drills.manifest.find_manifest)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def weights(self) -> dict[str, int]:
        return self.fleet.glob.routing.weights()

    @property
    def mode(self) -> str:
        return self.fleet.glob.routing.mode

    @property
    def manifest_source(self) -> str | None:
        return self.manifest.source if self.manifest else None

    @property
    def measured_qps(self) -> dict[str, float]:
        """The manifest's benchmarked QPS per GPU by compute capability ({} without a manifest: configured figures)."""
        return self.manifest.qps_per_gpu if self.manifest else {}


# ---------------------------------------------------------------- config paths the drills set
def weight_path(region: str) -> str:
    return f"routing.regions.{region}.weight"


def failover_path(region: str) -> str:
    return f"routing.regions.{region}.failover"


def roles_of(fleet: Fleet) -> dict[str, str] | None:
    r = fleet.glob.routing
    if r.mode != "failover":
        return None
    return {k: v.failover for k, v in r.regions.items()}  # type: ignore[misc]  # failover mode: every region has a role


# ---------------------------------------------------------------- weights
def _apportion(amount: int, weights: dict[str, int]) -> dict[str, int]:
    """Split `amount` over regions in proportion to `weights`, in integers summing exactly to `amount`
    (largest remainder; ties broken by name so a plan is reproducible)."""
    total = sum(weights.values())
    exact = {r: amount * w / total for r, w in weights.items()}
    out = {r: math.floor(x) for r, x in exact.items()}
    left = amount - sum(out.values())
    for r in sorted(exact, key=lambda r: (-(exact[r] - out[r]), r))[:left]:
        out[r] += 1
    return out


def shift_schedule(weights: dict[str, int], region: str, steps: int) -> list[dict[str, int]]:
    """Weights after each step of moving `region` from its weight to 0.

    The weight taken from `region` goes to the survivors in proportion to their weights, so the total stays
    constant and the weights keep reading as the percentages they were written as (40/30/30 -> 0/50/50).
    Where that would push a survivor past Route 53's 255, survivors keep their weights and only `region` is
    lowered: the shares are the same either way, since Route 53 renormalises over the total.
    """
    w0 = weights[region]
    survivors = {r: w for r, w in weights.items() if r != region}
    keep_total = w0 + max(survivors.values(), default=0) <= MAX_WEIGHT
    out: list[dict[str, int]] = []
    for k in range(1, steps + 1):
        wk = w0 * (steps - k) // steps
        add = _apportion(w0 - wk, survivors) if keep_total else dict.fromkeys(survivors, 0)
        nxt = {r: (wk if r == region else survivors[r] + add[r]) for r in weights}
        if not out or nxt != out[-1]:  # a small weight in many steps repeats values: drop no-op steps
            out.append(nxt)
    return out


def shares(weights: dict[str, int]) -> dict[str, float]:
    return shares_after_loss(weights, None)


# ---------------------------------------------------------------- engines and capacity
def engine_coverage(ctx: PlanContext, region: RegionConfig) -> EngineCoverage:
    """Every compute capability of the region's GPU pools has an engine, or is an explicit ONNX fallback."""
    m = ctx.manifest
    if m is None:  # no manifest offline: only the stack's own fallback can be judged here
        cov = coverage(region.compute_capabilities, {}, region.model.onnx_fallback_for)
        if cov.ok:
            return EngineCoverage(status="ok", detail="ONNX Runtime fallback for " + ", ".join(cov.states))
        return EngineCoverage(
            status="unverified", detail="no manifest offline; checked at precheck from the region's bucket"
        )
    cov = coverage(region.compute_capabilities, m.available, region.model.onnx_fallback_for)
    if cov.missing:
        return EngineCoverage(
            status="missing", missing=cov.missing, detail=f"no engine for compute capability {', '.join(cov.missing)}"
        )
    if cov.planned:
        return EngineCoverage(
            status="unverified",
            detail=f"engines for {', '.join(cov.planned)} listed but not built in this manifest; "
            "precheck requires them built in the region's bucket",
        )
    return EngineCoverage(status="ok", detail=", ".join(f"{cc} {s}" for cc, s in cov.states.items()))


def prescale_targets(ctx: PlanContext, region: RegionConfig, qps: float) -> tuple[list[int], bool]:
    """Desired instance counts per pool that carry `qps`, growing from the current desired counts.

    Greedy by throughput per instance (fewest instances added), never past a pool's max. Returns the counts
    and whether they reach `qps` (they always do when the N+1 check passes: guaranteed capacity is within max).
    """
    pools = region.gpu_pools
    desired = [p.desired for p in pools]
    per_instance = [p.gpu.gpus * qps_per_gpu(ctx.fleet, p.gpu.compute_capability, ctx.measured_qps) for p in pools]

    def cap() -> float:
        return sum(d * q for d, q in zip(desired, per_instance, strict=True))

    while cap() < qps - 1e-6:
        grow = [i for i, p in enumerate(pools) if desired[i] < p.max]
        if not grow:
            return desired, False
        i = max(grow, key=lambda i: (per_instance[i], -i))
        desired[i] += 1
    return desired, True


def capacity_rows(
    ctx: PlanContext, weights: dict[str, int], baseline: dict[str, float], lost: str | None = None
) -> list[CapacityRow]:
    """Each serving region's N+1 figures at `weights` (with `lost` not answering)."""
    rows = []
    for r, share in sorted(shares_after_loss(weights, lost).items()):
        cfg = ctx.fleet.regions[r]
        rc = region_capacity(ctx.fleet, cfg, share, ctx.measured_qps)
        targets, _ = prescale_targets(ctx, cfg, rc.qps)
        at_desired = sum(
            p.desired * p.gpu.gpus * qps_per_gpu(ctx.fleet, p.gpu.compute_capability, ctx.measured_qps)
            for p in cfg.gpu_pools
        )
        rows.append(
            CapacityRow(
                region=r,
                weight=weights[r],
                share=round(share, 6),
                qps=round(rc.qps, 1),
                gpus_required=rc.gpus_required,
                gpus_desired=sum(p.desired * p.gpu.gpus for p in cfg.gpu_pools),
                gpus_max=rc.gpus_max,
                qps_at_desired=round(at_desired, 1),
                ok=rc.ok,
                gpus_guaranteed=rc.gpus_guaranteed,
                shortfall=rc.shortfall,
                prescale={p.name: t for p, t in zip(cfg.gpu_pools, targets, strict=True) if t > p.desired},
                engines=engine_coverage(ctx, cfg),
                gains_share=share > baseline.get(r, 0.0) + 1e-9,
            )
        )
    return rows


def refuse_unsafe(step: str, rows: list[CapacityRow]) -> None:
    """Guardrail: never move traffic onto a region whose pools cannot carry it or that lacks an engine."""
    for row in rows:
        if not row.gains_share:
            continue
        if not row.ok:
            raise GuardrailError(
                "capacity",
                f"at {step}, {row.region} would carry {row.share:.0%} of peak ({row.qps:,.0f} QPS) and needs "
                f"{row.gpus_required} GPUs, but has {row.gpus_guaranteed} guaranteed (running or reserved; its pools "
                f"reach {row.gpus_max} at max, not guaranteed) (N+1 math): reserve capacity for its pools "
                "(gpu_pools[].capacity) or raise their min in its regional stack first. Nothing was changed.",
            )
        if row.engines.status == "missing":
            raise GuardrailError(
                "engines",
                f"at {step}, traffic would move onto {row.region}, which has {row.engines.detail} in the model "
                "manifest: build the engine or declare model.onnx_fallback_for. Nothing was changed.",
            )


# ---------------------------------------------------------------- common steps and conditions
def objectives(fleet: Fleet) -> Objectives:
    o = fleet.glob.objectives
    return Objectives(
        rto_seconds=o.rto_seconds, rpo_seconds=o.rpo_seconds, success_rate=o.success_rate, p99_ms=o.p99_ms
    )


def slo_condition(ctx: PlanContext, what: str = "service probes") -> Condition:
    o = ctx.fleet.glob.objectives
    p = ctx.params
    return Condition(
        kind="slo",
        params={
            "success_rate": o.success_rate,
            "p99_ms": o.p99_ms,
            "window_seconds": p.slo_window_seconds,
            "min_samples": p.min_samples,
        },
        description=f"{what}: success rate >= {o.success_rate:.2%} and p99 <= {o.p99_ms:g} ms over "
        f"{p.slo_window_seconds:g} s",
    )


def healthy_condition(exclude: list[str] | None = None) -> Condition:
    ex = sorted(exclude or [])
    return Condition(
        kind="healthy",
        params={"regions": "serving", "exclude": ex},
        description="Route 53 health check healthy for every region serving traffic"
        + (f" (except {', '.join(ex)})" if ex else ""),
    )


def steady_abort_conditions(ctx: PlanContext, exclude: list[str] | None = None) -> list[Condition]:
    return [slo_condition(ctx, "abort if service probes drop below the SLO"), healthy_condition(exclude)]


def precheck_step(ctx: PlanContext, pre_config: dict[str, dict[str, Any]], engines_for: list[str]) -> Step:
    fleet = ctx.fleet
    ccs = {
        r: [cc for cc in fleet.regions[r].compute_capabilities if cc not in fleet.regions[r].model.onnx_fallback_for]
        for r in sorted(engines_for)
    }
    return Step(
        name="precheck",
        action="precheck",
        description="live config equals the plan's, every region healthy, GPU node groups active, engines in the "
        "buckets, baseline SLO",
        params={"expect_config": pre_config, "engines_for": ccs, "baseline_seconds": ctx.params.slo_window_seconds},
        checks=[slo_condition(ctx, "baseline")],
    )


def prescale_steps(ctx: PlanContext, targets: dict[str, dict[str, int]]) -> list[Step]:
    """Raise survivors' GPU node groups (min and desired) before traffic moves, then wait for them.

    Through the EKS API, not the regional stack: the regional program leaves `desiredSize` to the cluster
    autoscaler (ignore_changes), so a stack change would not reach the node group. Raising min too keeps the
    autoscaler from reclaiming the idle new nodes before the traffic arrives.
    """
    targets = {r: t for r, t in sorted(targets.items()) if t}
    if not targets:
        return []
    fleet = ctx.fleet
    desc = "; ".join(
        f"{r}: "
        + ", ".join(
            f"{p} {next(x.desired for x in fleet.regions[r].gpu_pools if x.name == p)}->{n}"
            for p, n in sorted(t.items())
        )
        for r, t in targets.items()
    )
    return [
        Step(
            name="prescale",
            action="scale_pools",
            mutates=True,
            params={"targets": targets},
            description=f"pre-scale survivors' GPU node groups, min and desired, through the EKS API ({desc})",
        ),
        Step(
            name="wait-capacity",
            action="wait_capacity",
            params={"targets": targets, "timeout": ctx.params.capacity_timeout_seconds},
            description="wait until the pre-scaled node groups are active at their new size and Triton pods are ready",
            checks=[
                Condition(
                    kind="capacity_ready",
                    params={"targets": targets},
                    description="node groups at target, Triton pods ready",
                )
            ],
        ),
    ]


def scale_back_step(ctx: PlanContext, targets: dict[str, dict[str, int]]) -> list[Step]:
    pools = {r: sorted(t) for r, t in sorted(targets.items()) if t}
    if not pools:
        return []
    return [
        Step(
            name="scale-back",
            action="restore_pools",
            mutates=True,
            params={"pools": pools},
            description="return pre-scaled node groups to the min and desired sizes recorded before the drill",
        )
    ]


def fault_step(
    act: Literal["inject", "clear"],
    params: dict[str, Any],
    description: str,
    *,
    name: str | None = None,
    phase: Literal["steady", "failover"] = "steady",
    capacity: list[CapacityRow] | None = None,
) -> Step:
    """The step that injects (`inject_fault`) or clears (`clear_fault`) a fault through the backend's fault adapter:
    mutating, so the engine journals it before it acts and a rollback clears what it injected. Named
    `<act>-fault` unless the scenario names it for what the fault is (`corrupt`, `lose-node`)."""
    return Step(
        name=name or f"{act}-fault",
        action=f"{act}_fault",
        mutates=True,
        phase=phase,
        capacity=capacity or [],
        params=params,
        description=description,
    )


def hold_step(
    ctx: PlanContext, what: str, exclude: list[str] | None = None, phase: Literal["steady", "failover"] = "steady"
) -> Step:
    return Step(
        name="hold",
        action="hold",
        wait_seconds=ctx.params.hold_seconds,
        phase=phase,
        description=f"hold {ctx.params.hold_seconds:g} s {what}, abort conditions watched",
        checks=[slo_condition(ctx), healthy_condition(exclude)],
    )


def verify_step() -> Step:
    return Step(
        name="verify",
        action="verify_restored",
        description="stack config, Route 53 records and pools are back to the pre-drill state",
    )


# Brownout faults seen first by an ALB alarm (drills.brownout): detection is the alarm's, not the endpoint check's.
ALARM_DETECTED = ("errors", "latency", "bandwidth")


def predicted_rto(ctx: PlanContext) -> dict[str, float]:
    """RTO predicted from config: detection + Route 53 acting on it + record TTL. Detection is the endpoint check's
    interval x threshold, or for a fault only an ALB alarm sees (ALARM_DETECTED) the alarm's worst case: the fault's
    own first period, which may not breach, then `datapoints_to_alarm` breaching periods."""
    g = ctx.fleet.glob
    det = g.health_check.request_interval * g.health_check.failure_threshold
    if ctx.params.fault.partition("=")[0] in ALARM_DETECTED:
        a = g.health_alarms
        det = a.period_seconds * (a.datapoints_to_alarm + 1)
    parts = {"detection": float(det), "dns_change": float(ctx.params.dns_propagation_seconds), "ttl": float(g.ttl)}
    parts["total"] = sum(parts.values())
    return parts


def finish_plan(
    ctx: PlanContext,
    scenario: str,
    steps: list[Step],
    *,
    touches: dict[str, list[str]],
    pre_config: dict[str, dict[str, Any]],
    abort: list[Condition],
    rollback: list[str],
    readiness_gate: bool = True,
) -> Plan:
    fleet = ctx.fleet
    g = fleet.glob
    roles, comms, warn = roles_and_communication(ctx.drill, fleet.env, g.fqdn)
    window = None
    if ctx.drill.window:
        w = ctx.drill.window
        window = {"start": w.start.isoformat(), "end": w.end.isoformat(), "timezone": w.timezone}
    return Plan(
        scenario=scenario,
        env=fleet.env,
        region=ctx.region,
        mode=g.routing.mode,
        global_stack=fleet.global_stack,
        stack_names=dict(fleet.stack_names),
        fqdn=g.fqdn,
        ttl=g.ttl,
        health_check={
            "request_interval": g.health_check.request_interval,
            "failure_threshold": g.health_check.failure_threshold,
        },
        objectives=objectives(fleet),
        parameters=ctx.params.model_dump(),
        pre_weights=ctx.weights,
        pre_roles=roles_of(fleet),
        touches=touches,
        pre_config=pre_config,
        steps=steps,
        abort_conditions=abort,
        rollback=rollback,
        predicted=predicted_rto(ctx),
        roles=roles,
        communication=comms,
        window=window,
        title=ctx.drill.title,
        warnings=[*ctx.warnings, *warn],
        notes=ctx.notes,
        manifest_source=ctx.manifest_source,
        readiness_gate=readiness_gate,
        experiments=[e.id for e in running(g.experiments, datetime.now(UTC))],
    )
