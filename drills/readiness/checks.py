"""Readiness checks: each takes plain data and returns one CheckResult; no I/O, no clock.

The live side is a FleetSnapshot (drills/readiness/view.py builds it from AWS; a rehearsal builds it from its
world), the declared side a Declared derived from the stack files (`declared_from`). Capacity is judged the way
infra/capacity.py judges it (guaranteed = per pool max(running min, reserved), capped at max), but on the live
node groups and reservations: a drill that left a pool's min raised, or a reservation that was released, shows here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from infra.capacity import shares_after_loss
from infra.monitoring import READINESS_METRIC

# engines_available states that serve the compute capability (model_build/manifest.py); "onnx-fallback" only
# appears where the model declares the fallback for that capability.
SERVING_ENGINE_STATES = frozenset({"built", "added-by-job", "onnx-fallback"})


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class PoolLive:
    """One GPU node group as it is now."""

    pool: str
    gpus_per_instance: int
    compute_capability: str
    min: int
    desired: int
    max: int
    reserved_instances: int = 0  # instances an active reservation holds for the pool now


@dataclass(frozen=True)
class RegionLive:
    """One region as it is now. None where the value could not be read (the check fails naming it)."""

    region: str
    pools: tuple[PoolLive, ...]
    served_version: str | None
    manifest_digest: str | None  # sha256 of the served version's manifest.json bytes
    engines: Mapping[str, str] = field(default_factory=dict)  # compute capability -> engines_available state
    engine_tensorrt: Mapping[str, str] = field(default_factory=dict)  # compute capability -> TensorRT it was built on
    image_tensorrt: str | None = None  # TensorRT of the Triton image the pods run
    replication_backlog: int | None = None  # objects pending replication out of this region's bucket
    replication_lag_seconds: float | None = None  # worst replication latency out of this region's bucket
    config: Mapping[str, Any] = field(default_factory=dict)  # live values of the keys Declared.config names
    health_check: Mapping[str, Any] = field(default_factory=dict)  # the region's Route 53 health check, as live


@dataclass(frozen=True)
class FleetSnapshot:
    env: str
    regions: Mapping[str, RegionLive]


@dataclass(frozen=True)
class Declared:
    """What the stack files declare, as plain data."""

    weights: Mapping[str, int]
    peak_qps: float  # with headroom
    qps_per_gpu: Mapping[str, float]  # compute capability -> QPS
    rpo_seconds: float
    max_backlog: int
    config: Mapping[str, Mapping[str, Any]]  # region -> key -> declared value
    health_check: Mapping[str, Any]  # the fields every region's health check declares


def declared_from(fleet: Any, measured: Mapping[str, float] | None = None, max_backlog: int = 0) -> Declared:
    """Declared for an infra.config.Fleet. `max_backlog`: objects pending replication tolerated (default none
    beyond what the lag bound allows: replication keeps up)."""
    from infra.capacity import qps_per_gpu

    g = fleet.glob
    ccs = {p.gpu.compute_capability for r in fleet.regions.values() for p in r.gpu_pools}
    hc = g.health_check
    return Declared(
        weights=g.routing.weights(),
        peak_qps=g.capacity.peak_qps * (1 + g.capacity.headroom),
        qps_per_gpu={cc: qps_per_gpu(fleet, cc, dict(measured) if measured else None) for cc in sorted(ccs)},
        rpo_seconds=float(g.objectives.rpo_seconds),
        max_backlog=max_backlog,
        config={r: declared_config(cfg) for r, cfg in fleet.regions.items()},
        health_check={
            "type": "HTTPS",
            "path": hc.path,
            "port": hc.port,
            "request_interval": hc.request_interval,
            "failure_threshold": hc.failure_threshold,
        },
    )


def declared_config(cfg: Any) -> dict[str, Any]:
    """The keys of a regional stack whose live value readiness compares (`<key>` as Pulumi's --path spells it)."""
    out: dict[str, Any] = {
        "model.version": cfg.model.version,
        "model.canary_version": cfg.model.canary_version,
        "model.canary_weight": cfg.model.canary_weight,
        "triton.image": cfg.triton.image,
    }
    for p in cfg.gpu_pools:
        out[f"gpu_pools.{p.name}.min"] = p.min
        out[f"gpu_pools.{p.name}.max"] = p.max
        out[f"gpu_pools.{p.name}.reserved_instances"] = p.capacity.instances
    return out


def _guaranteed_qps(region: RegionLive, qps_per_gpu: Mapping[str, float]) -> float:
    return sum(
        min(p.max, max(p.min, p.reserved_instances)) * p.gpus_per_instance * qps_per_gpu.get(p.compute_capability, 0)
        for p in region.pools
    )


def capacity_n_plus_one(live: FleetSnapshot, declared: Declared) -> CheckResult:
    """Every single-region loss: each survivor's live guaranteed GPUs carry its renormalised share of peak."""
    short = []
    for lost in sorted(declared.weights):
        for r, share in sorted(shares_after_loss(dict(declared.weights), lost).items()):
            region = live.regions.get(r)
            need = share * declared.peak_qps
            have = _guaranteed_qps(region, declared.qps_per_gpu) if region else 0.0
            if have < need - 1e-6:
                short.append(f"with {lost} lost, {r} has {have:,.0f} QPS guaranteed of {need:,.0f} needed")
    if not declared.weights:
        short.append("no region is routed")
    return CheckResult("capacity", not short, "; ".join(short) or "every single-region loss is covered")


def engine_coverage(live: FleetSnapshot) -> CheckResult:
    """An engine for every compute capability of the version each region serves."""
    bad = []
    for r, region in sorted(live.regions.items()):
        for cc in sorted({p.compute_capability for p in region.pools}):
            state = region.engines.get(cc, "missing")
            if state not in SERVING_ENGINE_STATES:
                bad.append(f"{r} serves {region.served_version} with no engine for compute capability {cc} ({state})")
    return CheckResult("engines", not bad, "; ".join(bad) or "every compute capability has an engine")


def tensorrt_match(live: FleetSnapshot) -> CheckResult:
    """Each engine was built with the TensorRT of the Triton image the region runs (else it does not load)."""
    bad = []
    for r, region in sorted(live.regions.items()):
        if region.image_tensorrt is None:
            bad.append(f"{r}: the running Triton image's TensorRT version is unknown")
            continue
        for cc, built in sorted(region.engine_tensorrt.items()):
            if built != region.image_tensorrt:
                bad.append(
                    f"{r}: the {cc} engine was built with TensorRT {built}, the image runs {region.image_tensorrt}"
                )
    return CheckResult("tensorrt", not bad, "; ".join(bad) or "engines match the running TensorRT")


def digest_parity(live: FleetSnapshot) -> CheckResult:
    """Every region serves the same manifest, byte for byte."""
    digests = {r: region.manifest_digest for r, region in sorted(live.regions.items())}
    unread = [r for r, d in digests.items() if d is None]
    distinct = {d for d in digests.values() if d is not None}
    if unread or len(distinct) > 1:
        parts = [f"{r} none readable" for r in unread]
        if len(distinct) > 1:
            parts.append("digests differ: " + ", ".join(f"{r} {d[:12]}" for r, d in digests.items() if d))
        return CheckResult("digest", False, "; ".join(parts))
    return CheckResult("digest", True, f"every region serves manifest {next(iter(distinct), '')[:12]}")


def replication(live: FleetSnapshot, declared: Declared) -> CheckResult:
    """Replication out of every bucket keeps within the RPO and its backlog within bounds."""
    bad = []
    for r, region in sorted(live.regions.items()):
        lag, backlog = region.replication_lag_seconds, region.replication_backlog
        if lag is None or backlog is None:
            bad.append(f"{r}: replication metrics unreadable")
            continue
        if not math.isfinite(lag) or lag > declared.rpo_seconds:
            bad.append(f"{r}: replication lag {lag:g} s > RPO {declared.rpo_seconds:g} s")
        if backlog > declared.max_backlog:
            bad.append(f"{r}: {backlog} objects pending replication > {declared.max_backlog}")
    return CheckResult("replication", not bad, "; ".join(bad) or "replication within RPO, no backlog")


def _diff(kind: str, declared: Mapping[str, Mapping[str, Any]], live: Callable[[str], Mapping[str, Any]]) -> list[str]:
    out = []
    for r, keys in sorted(declared.items()):
        got = live(r)
        for k, want in sorted(keys.items()):
            if got.get(k) != want:
                out.append(f"{r} {kind} {k} = {got.get(k)!r}, declared {want!r}")
    return out


def config_drift(live: FleetSnapshot, declared: Declared) -> CheckResult:
    """The live value of every compared key equals the stack file's."""
    bad = _diff(
        "config",
        declared.config,
        lambda r: live.regions[r].config if r in live.regions else {},
    )
    return CheckResult("config", not bad, "; ".join(bad) or "live config equals declared")


def health_checks(live: FleetSnapshot, declared: Declared) -> CheckResult:
    """Each region's Route 53 health check is configured as the global stack declares."""
    want = dict.fromkeys(sorted(live.regions), declared.health_check)
    bad = _diff("health check", want, lambda r: live.regions[r].health_check)
    return CheckResult("health_checks", not bad, "; ".join(bad) or "health checks as declared")


def evaluate(live: FleetSnapshot, declared: Declared) -> list[CheckResult]:
    """Every check, in a fixed order (the gauges and the report list them so)."""
    return [
        capacity_n_plus_one(live, declared),
        engine_coverage(live),
        tensorrt_match(live),
        digest_parity(live),
        replication(live, declared),
        config_drift(live, declared),
        health_checks(live, declared),
    ]


def prometheus_text(results: list[CheckResult], env: str) -> str:
    """Prometheus text exposition: one gauge per check, 1 ready, 0 not (for node_exporter's textfile collector
    or a Pushgateway)."""
    lines = [
        f"# HELP {READINESS_METRIC} 1 when the readiness check passes, 0 when it fails (python -m drills readiness).",
        f"# TYPE {READINESS_METRIC} gauge",
    ]
    lines += [f'{READINESS_METRIC}{{check="{r.name}",env="{env}"}} {int(r.ok)}' for r in results]
    return "\n".join(lines) + "\n"
