"""N+1 GPU capacity: can the survivors of any single-region loss carry the traffic?

Pure functions over the fleet config (and benchmarked figures from a model manifest where given), used by
the invariants, the policy pack, the drills' guardrails and `python -m infra.capacity ENV`.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from infra.config import STACKS_DIR, ConfigError, Fleet, GpuPool, RegionConfig, load_fleet
from infra.config import Triton as TritonConfig


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
    gpus_required: int
    gpus_min: int
    gpus_max: int
    ok: bool

    @property
    def shortfall(self) -> int:
        return max(0, self.gpus_required - self.gpus_max)


def region_capacity(
    fleet: Fleet, region: RegionConfig, share: float, measured: dict[str, float] | None = None
) -> RegionCapacity:
    """GPUs `region` needs for `share` of peak traffic, at its own GPU mix's throughput."""
    gpus_max = sum(p.max * p.gpu.gpus for p in region.gpu_pools)
    gpus_min = sum(p.min * p.gpu.gpus for p in region.gpu_pools)
    qps_max = sum(p.max * p.gpu.gpus * qps_per_gpu(fleet, p.gpu.compute_capability, measured) for p in region.gpu_pools)
    qps = share * fleet.glob.capacity.peak_qps * (1 + fleet.glob.capacity.headroom)
    # Required GPUs at the region's blended per-GPU throughput when every pool is at max.
    required = math.ceil(qps / (qps_max / gpus_max) - 1e-9) if qps > 0 else 0
    return RegionCapacity(region.region, share, qps, required, gpus_min, gpus_max, required <= gpus_max)


@dataclass(frozen=True)
class Scenario:
    lost: str | None  # None: every region up
    regions: list[RegionCapacity]

    @property
    def ok(self) -> bool:
        return bool(self.regions) and all(r.ok for r in self.regions)


def n_plus_one(
    fleet: Fleet, measured: dict[str, float] | None = None, weights: dict[str, int] | None = None
) -> list[Scenario]:
    """The steady state and every single-region loss, with each survivor's GPU requirement."""
    weights = weights if weights is not None else fleet.glob.routing.weights()
    out = []
    for lost in [None, *sorted(fleet.regions)]:
        shares = shares_after_loss(weights, lost)
        out.append(
            Scenario(lost, [region_capacity(fleet, fleet.regions[r], s, measured) for r, s in sorted(shares.items())])
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
                msgs.append(
                    f"{when}, {r.region} needs {r.gpus_required} GPUs for {r.share:.0%} of peak "
                    f"but its pools reach {r.gpus_max}: short by {r.shortfall} GPUs"
                )
    return msgs


def _table(env: str, scenarios: list[Scenario]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"N+1 GPU capacity for {env}")
    for col in ("lost region", "region", "share", "QPS", "GPUs required", "GPUs min", "GPUs max", "N+1"):
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
                str(r.gpus_max),
                verdict,
            )
        t.add_section()
    console = Console()
    if not console.is_terminal:  # keep piped output readable, not squeezed to 80 columns
        console = Console(width=140)
    console.print(t)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m infra.capacity",
        description="N+1 GPU capacity table for an environment: every single-region loss, the survivors' share "
        "of peak QPS, the GPUs that needs and the GPUs their pools reach.",
    )
    ap.add_argument("env", help="environment, e.g. prod or staging")
    ap.add_argument(
        "--manifest",
        help="model manifest.json whose benchmarked qps_per_gpu overrides the configured figures "
        "(default: $RECO_DR_MANIFEST or build/model/manifest.json where one exists)",
    )
    ap.add_argument("--stacks-dir", type=Path, default=STACKS_DIR, help="directory of Pulumi.<stack>.yaml files")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
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
    scenarios = n_plus_one(fleet, measured)
    problems = findings(scenarios)
    if a.json:
        print(
            json.dumps(
                {
                    "env": a.env,
                    "ok": not problems,
                    "findings": problems,
                    "scenarios": [
                        {
                            "lost": s.lost,
                            "ok": s.ok,
                            "regions": [asdict(r) | {"shortfall": r.shortfall} for r in s.regions],
                        }
                        for s in scenarios
                    ],
                },
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
        for p in problems:
            print(f"N+1 FAILS: {p}")
        print("N+1 holds" if not problems else f"N+1 does not hold ({len(problems)} shortfall(s))")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
