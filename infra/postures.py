"""Disaster-recovery postures of one environment: the GPUs each holds, what they cost a month, and its RTO.

`python -m infra.capacity ENV --postures` prints them. Every posture serves the same peak (the global stack's
`capacity`) with the environment's own GPU pools; they differ in what the other regions hold before a loss:

- active-active N+1 (as configured): the stacks as they are; held = guaranteed (per pool max(min, reserved)),
  running = each pool's min, so a survivor boots its reserved nodes after a loss.
- active-active N+1, hot: every region serves its weight and runs what its worst single-region loss needs.
- warm standby: the primary (largest weight) serves all of peak; the others run their pools' min and reserve
  nothing, so a failover scales them up on whatever EC2 has then.
- pilot light: the primary serves all of peak; the others hold no GPU node (cluster, images and artifacts only).

Cost is GPU instance-hours only (On-Demand, infra/catalog.py PRICES; a reservation bills whether used or not), not
the clusters, system nodes, load balancers or data transfer. The predicted RTO is detection (Route 53: request
interval x failure threshold, then the record's TTL) plus, where a survivor must add nodes, the capacity part
(infra/catalog.py CAPACITY_STARTUP: node boot, image pull, model fetch+verify, Triton load, warm-up).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from infra.capacity import guaranteed_instances, qps_per_gpu, shares_after_loss
from infra.catalog import CAPACITY_STARTUP, HOURS_PER_MONTH, PRICES, PRICES_SOURCE
from infra.config import Fleet, GpuPool, RegionConfig


@dataclass(frozen=True)
class Holding:
    """What one region holds in one posture: instances per pool, held (running or reserved) and running."""

    region: str
    role: str  # "serving" | "standby"
    held: dict[str, int]
    running: dict[str, int]


@dataclass(frozen=True)
class Posture:
    name: str
    holdings: tuple[Holding, ...]
    capacity_guaranteed: bool  # the survivors' failover capacity is held (running or reserved)
    capacity_part: bool  # a survivor must add nodes after a loss: the RTO includes CAPACITY_STARTUP


def instances_for(
    fleet: Fleet,
    region: RegionConfig,
    qps: float,
    measured: dict[str, float] | None,
    start: dict[str, int] | None = None,
) -> dict[str, int]:
    """Instances per pool that carry `qps`, from `start` (default each pool's min), adding the instance with the most
    throughput first (fewest nodes to boot), never past a pool's max; at max everywhere when `qps` is out of reach."""
    pools = region.gpu_pools
    count = {p.name: (start or {}).get(p.name, p.min) for p in pools}

    def per_instance(p: GpuPool) -> float:
        return p.gpu.gpus * qps_per_gpu(fleet, p.gpu.compute_capability, measured)

    while sum(count[p.name] * per_instance(p) for p in pools) < qps - 1e-6:
        grow = [p for p in pools if count[p.name] < p.max]
        if not grow:
            break
        best = max(grow, key=lambda p: (per_instance(p), p.name))
        count[best.name] += 1
    return count


def carries(fleet: Fleet, region: RegionConfig, counts: dict[str, int], measured: dict[str, float] | None) -> float:
    return sum(
        counts.get(p.name, 0) * p.gpu.gpus * qps_per_gpu(fleet, p.gpu.compute_capability, measured)
        for p in region.gpu_pools
    )


def primary_region(fleet: Fleet) -> str:
    """The region a standby posture serves from: the largest weight (the failover PRIMARY), ties by name."""
    weights = fleet.glob.routing.weights()
    return min(weights, key=lambda r: (-weights[r], r))


def _peak(fleet: Fleet) -> float:
    return fleet.glob.capacity.peak_qps * (1 + fleet.glob.capacity.headroom)


def postures(fleet: Fleet, measured: dict[str, float] | None = None, at: datetime | None = None) -> list[Posture]:
    at = at or datetime.now(UTC)
    weights = fleet.glob.routing.weights()
    regions = sorted(fleet.regions)
    out = []

    # As configured: running = min, held = guaranteed; a loss needs new nodes where running does not carry it.
    configured, needs_nodes, guaranteed = [], False, True
    for r in regions:
        cfg = fleet.regions[r]
        held = {p.name: guaranteed_instances(p, at) for p in cfg.gpu_pools}
        running = {p.name: p.min for p in cfg.gpu_pools}
        configured.append(Holding(r, "serving" if weights.get(r) else "standby", held, running))
        worst = max(shares_after_loss(weights, lost).get(r, 0.0) for lost in [None, *regions]) * _peak(fleet)
        needs_nodes |= carries(fleet, cfg, running, measured) < worst - 1e-6
        guaranteed &= carries(fleet, cfg, held, measured) >= worst - 1e-6
    out.append(Posture("active-active N+1 (as configured)", tuple(configured), guaranteed, needs_nodes))

    # Hot: each region runs what its worst single-region loss needs. Against reserving the same nodes this costs no
    # more EC2 (a reservation bills whether used or not) and takes the capacity part out of the RTO.
    hot = []
    for r in regions:
        cfg = fleet.regions[r]
        worst = max(shares_after_loss(weights, lost).get(r, 0.0) for lost in [None, *regions]) * _peak(fleet)
        held = instances_for(fleet, cfg, worst, measured)
        hot.append(Holding(r, "serving" if weights.get(r) else "standby", held, held))
    out.append(Posture("active-active N+1, hot", tuple(hot), True, False))

    primary = primary_region(fleet)
    full = instances_for(fleet, fleet.regions[primary], _peak(fleet), measured)
    for name, standby_nodes in (("warm standby", "min"), ("pilot light", "none")):
        holdings = [Holding(primary, "serving", full, full)]
        for r in regions:
            if r == primary:
                continue
            pools = fleet.regions[r].gpu_pools
            counts = {p.name: (p.min if standby_nodes == "min" else 0) for p in pools}
            holdings.append(Holding(r, "standby", counts, counts))
        out.append(Posture(name, tuple(holdings), False, True))
    return out


def _pools(fleet: Fleet) -> dict[str, GpuPool]:
    return {f"{r}/{p.name}": p for r, cfg in fleet.regions.items() for p in cfg.gpu_pools}


def gpus(fleet: Fleet, h: Holding, which: str) -> int:
    pools = {p.name: p for p in fleet.regions[h.region].gpu_pools}
    counts = h.held if which == "held" else h.running
    return sum(n * pools[name].gpu.gpus for name, n in counts.items())


def monthly_usd(fleet: Fleet, posture: Posture) -> tuple[float, list[str]]:
    """GPU instance cost a month of what the posture holds, and the instance types with no price."""
    pools = _pools(fleet)
    total, unpriced = 0.0, set()
    for h in posture.holdings:
        for name, n in h.held.items():
            itype = pools[f"{h.region}/{name}"].instance_type
            if n and itype not in PRICES:
                unpriced.add(itype)
            elif n:
                total += n * PRICES[itype].usd_per_hour * HOURS_PER_MONTH
    return total, sorted(unpriced)


def unchecked_prices(fleet: Fleet, posture: Posture) -> bool:
    pools = _pools(fleet)
    return any(
        n and not PRICES[pools[f"{h.region}/{name}"].instance_type].checked
        for h in posture.holdings
        for name, n in h.held.items()
        if pools[f"{h.region}/{name}"].instance_type in PRICES
    )


def rto_parts(fleet: Fleet, posture: Posture) -> dict[str, float]:
    """Seconds per part of the predicted RTO: detection, DNS TTL, then the capacity parts where nodes are added."""
    hc = fleet.glob.health_check
    parts = {
        "detection": float(hc.request_interval * hc.failure_threshold),
        "dns ttl": float(fleet.glob.ttl),
    }
    if posture.capacity_part:
        parts |= {s.name: float(s.seconds) for s in CAPACITY_STARTUP}
    return parts


def postures_json(fleet: Fleet, found: list[Posture]) -> dict:
    out = []
    for p in found:
        cost, unpriced = monthly_usd(fleet, p)
        parts = rto_parts(fleet, p)
        out.append(
            {
                "name": p.name,
                "regions": [
                    {
                        "region": h.region,
                        "role": h.role,
                        "held": h.held,
                        "running": h.running,
                        "gpus_held": gpus(fleet, h, "held"),
                        "gpus_running": gpus(fleet, h, "running"),
                    }
                    for h in p.holdings
                ],
                "gpus_held": sum(gpus(fleet, h, "held") for h in p.holdings),
                "gpus_running": sum(gpus(fleet, h, "running") for h in p.holdings),
                "monthly_usd": round(cost, 2),
                "unpriced": unpriced,
                "prices_unverified": unchecked_prices(fleet, p),
                "capacity_guaranteed": p.capacity_guaranteed,
                "rto_seconds": sum(parts.values()),
                "rto_parts": parts,
            }
        )
    return {
        "env": fleet.env,
        "primary": primary_region(fleet),
        "rto_objective_seconds": fleet.glob.objectives.rto_seconds,
        "prices_source": PRICES_SOURCE,
        "startup": [{"part": s.name, "seconds": s.seconds, "source": s.source} for s in CAPACITY_STARTUP],
        "postures": out,
    }


def print_postures(fleet: Fleet, found: list[Posture]) -> None:
    from rich.table import Table

    from infra.capacity import console

    doc = postures_json(fleet, found)
    t = Table(
        title=f"DR postures for {fleet.env} (peak {fleet.glob.capacity.peak_qps:,} QPS, primary {doc['primary']})"
    )
    for col in ("posture", "GPUs held", "GPUs running", "monthly cost", "failover capacity", "predicted RTO"):
        t.add_column(col, no_wrap=True)
    objective = doc["rto_objective_seconds"]
    for p in doc["postures"]:
        cost = f"{'~' if p['prices_unverified'] else ''}${p['monthly_usd']:,.0f}"
        if p["unpriced"]:
            cost += f" + unpriced {', '.join(p['unpriced'])}"
        rto = p["rto_seconds"]
        t.add_row(
            p["name"],
            str(p["gpus_held"]),
            str(p["gpus_running"]),
            cost,
            "guaranteed" if p["capacity_guaranteed"] else "[yellow]not guaranteed[/yellow]",
            f"{rto:,.0f} s" + ("" if rto <= objective else f" [red](objective {objective} s)[/red]"),
        )
    c = console()
    c.print(t)
    parts = ", ".join(f"{s['part']} {s['seconds']:g} s" for s in doc["startup"])
    print(
        f"RTO = detection (health check interval x threshold) + DNS TTL, plus where nodes are added: {parts} "
        "(stated figures: infra/catalog.py CAPACITY_STARTUP)"
    )
    print(f"prices: {doc['prices_source']}; GPU instances only, {HOURS_PER_MONTH} h a month")
