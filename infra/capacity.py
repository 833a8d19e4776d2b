"""N+1 GPU capacity: can the survivors of any single-region loss carry the traffic on capacity they can count on?

Guaranteed capacity, per pool, is the larger of what runs (its `min`: the floor the cluster autoscaler never
goes below; `desired` is not counted, the autoscaler may shrink it to `min` at any moment) and what is reserved
(an On-Demand Capacity Reservation or a Capacity Block for ML, `capacity` in the pool's config; a block counts
until its end date). Not their sum: nodes launched through the pool's launch template land in its reservation,
so running nodes use the reserved capacity. N+1 is judged on guaranteed GPUs; what the pools reach at `max` is
reported beside it as "reachable at max", which depends on EC2 having the instances when the region is lost.

Pure functions over the fleet config (and benchmarked figures from a model manifest where given), used by
the invariants, the policy pack, the drills' guardrails and `python -m infra.capacity ENV`.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from infra.config import STACKS_DIR, ConfigError, Fleet, GpuPool, RegionConfig, load_fleet
from infra.config import Triton as TritonConfig


def reserved_instances(pool: GpuPool, at: datetime) -> int:
    """Instances the pool's reservation holds at `at`: a Capacity Block holds nothing once it has ended."""
    c = pool.capacity
    ended = c.end_date is not None and datetime.strptime(c.end_date, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) <= at
    if c.kind == "capacity-block" and ended:
        return 0
    return c.instances


def guaranteed_instances(pool: GpuPool, at: datetime) -> int:
    """Running (min) or reserved, whichever is larger, never past max (the pool launches no more)."""
    return min(pool.max, max(pool.min, reserved_instances(pool, at)))


def replica_bounds(pool: GpuPool, triton: TritonConfig) -> tuple[int, int]:
    """HPA bounds for one pool: the configured bounds, capped by the GPUs the pool has at max size (one GPU
    per pod), so the HPA never asks for pods no node can hold; at least one pod per pool."""
    gpus_at_max = pool.max * pool.gpu.gpus
    hi = max(1, min(triton.max_replicas, gpus_at_max))
    lo = max(1, min(triton.min_replicas, hi))
    return lo, hi


def shares_after_loss(weights: dict[str, int], lost: str | None) -> dict[str, float]:
    """Traffic share per region once `lost` stops answering, the way Route 53 renormalises.

    Healthy records share traffic by weight; when every healthy record has weight 0, Route 53 answers
    with the zero-weight records equally (and the failover SECONDARY takes all of a failed PRIMARY).
    """
    alive = {r: w for r, w in weights.items() if r != lost}
    if not alive:
        return {}
    total = sum(alive.values())
    if total == 0:
        return {r: 1 / len(alive) for r in alive}
    return {r: w / total for r, w in alive.items()}


def qps_per_gpu(fleet: Fleet, cc: str, measured: dict[str, float] | None = None) -> float:
    """Benchmarked figure for a compute capability where the manifest has one, else the configured one."""
    if measured and cc in measured:
        return float(measured[cc])
    return float(fleet.glob.capacity.qps_per_gpu[cc])


@dataclass(frozen=True)
class RegionCapacity:
    region: str
    share: float
    qps: float
    gpus_required: int  # at the blended throughput of the region's pools at max
    gpus_min: int  # running: every pool at its min
    gpus_reserved: int  # in reservations active at the time judged
    gpus_guaranteed: int  # per pool max(running, reserved)
    gpus_max: int
    qps_guaranteed: float
    qps_max: float
    ok: bool  # the guaranteed GPUs carry the share
    reachable_at_max: bool  # the pools at max would carry it (not guaranteed)

    @property
    def shortfall(self) -> int:
        """GPUs missing from guaranteed capacity (at the blended per-GPU throughput at max); 0 when ok."""
        if self.ok:
            return 0
        per_gpu = self.qps_max / self.gpus_max if self.gpus_max else 0.0
        return max(1, math.ceil((self.qps - self.qps_guaranteed) / per_gpu - 1e-9)) if per_gpu else self.gpus_required

    @property
    def shortfall_at_max(self) -> int:
        return max(0, self.gpus_required - self.gpus_max)


def region_capacity(
    fleet: Fleet,
    region: RegionConfig,
    share: float,
    measured: dict[str, float] | None = None,
    at: datetime | None = None,
) -> RegionCapacity:
    """GPUs `region` needs for `share` of peak traffic, at its own GPU mix's throughput, against what it has
    guaranteed at `at` (default: now) and what its pools reach at max."""
    at = at or datetime.now(UTC)

    def qps_of(p: GpuPool) -> float:
        return p.gpu.gpus * qps_per_gpu(fleet, p.gpu.compute_capability, measured)

    pools = region.gpu_pools
    gpus_max = sum(p.max * p.gpu.gpus for p in pools)
    gpus_min = sum(p.min * p.gpu.gpus for p in pools)
    gpus_reserved = sum(reserved_instances(p, at) * p.gpu.gpus for p in pools)
    gpus_guaranteed = sum(guaranteed_instances(p, at) * p.gpu.gpus for p in pools)
    qps_max = sum(p.max * qps_of(p) for p in pools)
    qps_guaranteed = sum(guaranteed_instances(p, at) * qps_of(p) for p in pools)
    qps = share * fleet.glob.capacity.peak_qps * (1 + fleet.glob.capacity.headroom)
    # Required GPUs at the region's blended per-GPU throughput when every pool is at max.
    required = math.ceil(qps / (qps_max / gpus_max) - 1e-9) if qps > 0 else 0
    return RegionCapacity(
        region.region,
        share,
        qps,
        required,
        gpus_min,
        gpus_reserved,
        gpus_guaranteed,
        gpus_max,
        qps_guaranteed,
        qps_max,
        ok=qps_guaranteed >= qps - 1e-6,
        reachable_at_max=required <= gpus_max,
    )


@dataclass(frozen=True)
class Scenario:
    lost: str | None  # None: every region up
    regions: list[RegionCapacity]

    @property
    def ok(self) -> bool:
        return bool(self.regions) and all(r.ok for r in self.regions)


def n_plus_one(
    fleet: Fleet,
    measured: dict[str, float] | None = None,
    weights: dict[str, int] | None = None,
    at: datetime | None = None,
) -> list[Scenario]:
    """The steady state and every single-region loss, with each survivor's GPU requirement."""
    weights = weights if weights is not None else fleet.glob.routing.weights()
    at = at or datetime.now(UTC)
    out = []
    for lost in [None, *sorted(fleet.regions)]:
        shares = shares_after_loss(weights, lost)
        out.append(
            Scenario(
                lost, [region_capacity(fleet, fleet.regions[r], s, measured, at) for r, s in sorted(shares.items())]
            )
        )
    return out


def findings(scenarios: list[Scenario]) -> list[str]:
    """One line per shortfall, naming the lost region, the survivor and the missing GPUs."""
    msgs = []
    for sc in scenarios:
        if not sc.regions:
            msgs.append(f"losing {sc.lost} leaves no region to serve")
        for r in sc.regions:
            if not r.ok:
                when = f"with {sc.lost} lost" if sc.lost else "with every region up"
                msgs.append(f"{when}, {r.region} {shortfall_text(r)}")
    return msgs


def shortfall_text(r: RegionCapacity) -> str:
    """What a survivor lacks, guaranteed first, then whether its pools would reach the share at max."""
    at_max = (
        f"its pools reach {r.gpus_max} at max (not guaranteed)"
        if r.reachable_at_max
        else f"its pools reach {r.gpus_max} at max, short even then"
    )
    return (
        f"needs {r.gpus_required} GPUs for {r.share:.0%} of peak ({r.qps:,.0f} QPS) but has {r.gpus_guaranteed} "
        f"guaranteed (running {r.gpus_min}, reserved {r.gpus_reserved}): short by {r.shortfall} GPUs; {at_max}"
    )


def _table(env: str, scenarios: list[Scenario]) -> None:
    from rich.table import Table

    t = Table(title=f"N+1 GPU capacity for {env} (judged on guaranteed GPUs)")
    cols = ("lost region", "region", "share", "QPS", "GPUs required", "running", "reserved", "guaranteed", "max")
    for col in (*cols, "N+1 (guaranteed)", "reachable at max"):
        t.add_column(col, no_wrap=True)
    for sc in scenarios:
        for r in sc.regions:
            verdict = "ok" if r.ok else f"[red]FAIL: short {r.shortfall} GPUs[/red]"
            t.add_row(
                sc.lost or "(none)",
                r.region,
                f"{r.share:.1%}",
                f"{r.qps:,.0f}",
                str(r.gpus_required),
                str(r.gpus_min),
                str(r.gpus_reserved),
                str(r.gpus_guaranteed),
                str(r.gpus_max),
                verdict,
                "yes (not guaranteed)" if r.reachable_at_max else f"[red]no: short {r.shortfall_at_max}[/red]",
            )
        t.add_section()
    console().print(t)


def console():
    from rich.console import Console

    c = Console()
    # Keep piped output readable, not squeezed to 80 columns.
    return c if c.is_terminal else Console(width=160)


def scenarios_json(scenarios: list[Scenario]) -> list[dict]:
    return [
        {
            "lost": s.lost,
            "ok": s.ok,
            "regions": [
                asdict(r) | {"shortfall": r.shortfall, "shortfall_at_max": r.shortfall_at_max} for r in s.regions
            ],
        }
        for s in scenarios
    ]


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m infra.capacity",
        description="N+1 GPU capacity table for an environment: every single-region loss, the survivors' share "
        "of peak QPS, the GPUs that needs, the GPUs they have guaranteed (running min or reserved, per pool) and "
        "whether their pools would reach it at max (not guaranteed). Exit 1 when N+1 fails on guaranteed GPUs. "
        "With --postures: GPUs held, monthly cost and predicted RTO of active-active N+1, warm standby and "
        "pilot light (exit 0).",
    )
    ap.add_argument("env", help="environment, e.g. prod or staging")
    ap.add_argument(
        "--manifest",
        help="model manifest.json whose benchmarked qps_per_gpu overrides the configured figures "
        "(default: $RECO_DR_MANIFEST or build/model/manifest.json where one exists)",
    )
    ap.add_argument("--stacks-dir", type=Path, default=STACKS_DIR, help="directory of Pulumi.<stack>.yaml files")
    ap.add_argument(
        "--postures",
        action="store_true",
        help="compare DR postures (active-active N+1, warm standby, pilot light): GPUs held, monthly cost from "
        "infra/catalog.py PRICES, predicted RTO with its capacity part (CAPACITY_STARTUP)",
    )
    ap.add_argument(
        "--json",
        action="store_true",
        help="print JSON instead of a table: {env, ok, findings, scenarios}; with --postures "
        "{env, primary, prices_source, startup, postures: [{name, regions, gpus_held, gpus_running, "
        "monthly_usd, unpriced, capacity_guaranteed, rto_seconds, rto_parts}]}",
    )
    a = ap.parse_args(argv)
    try:
        fleet = load_fleet(a.env, a.stacks_dir)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # Imported here: infra.invariants imports this module at load time.
    from infra.invariants import read_manifest
    from model_build.manifest import ManifestError

    try:
        facts = read_manifest(a.manifest)
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    measured = facts.qps_per_gpu if facts else None
    if a.postures:
        from infra.postures import postures, postures_json, print_postures

        found = postures(fleet, measured)
        if a.json:
            print(json.dumps(postures_json(fleet, found), indent=2))
        else:
            print_postures(fleet, found)
        return 0
    scenarios = n_plus_one(fleet, measured)
    problems = findings(scenarios)
    if a.json:
        print(
            json.dumps(
                {"env": a.env, "ok": not problems, "findings": problems, "scenarios": scenarios_json(scenarios)},
                indent=2,
            )
        )
    else:
        _table(a.env, scenarios)
        source = (
            f"benchmarked in {facts.source}"
            if facts is not None and measured
            else f"configured in {fleet.global_stack} capacity.qps_per_gpu"
        )
        print(
            f"QPS per GPU: {source}; peak {fleet.glob.capacity.peak_qps:,} QPS, "
            f"headroom {fleet.glob.capacity.headroom:.0%}"
        )
        print(
            "guaranteed = per pool max(running min, reserved); reachable at max depends on EC2 having the "
            "instances when a region is lost"
        )
        for p in problems:
            print(f"N+1 FAILS: {p}")
        print(
            "N+1 holds on guaranteed capacity"
            if not problems
            else f"N+1 does not hold on guaranteed capacity ({len(problems)} shortfall(s))"
        )
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
