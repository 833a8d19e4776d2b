"""Resilience invariants: pure functions over the fleet config (and the model manifest once one exists).

ARCHITECTURE.md lists them; this module is their single implementation, used three ways:
  1. `refuse_global(stack, cfg)`: the global program refuses a stack that is wrong on its own before it
     declares anything (defence in depth behind infra.config's routing validation);
  2. `fleet_findings(env)`: `python -m infra.plan` reports fleet-level findings;
  3. `infra/policy/validators.py` calls `record_findings`, `capacity_findings`, ... at `pulumi preview`.

Every check returns `Finding`s rather than raising, so one run reports every problem at once.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from infra.capacity import n_plus_one
from infra.config import ROOT, STACKS_DIR, ConfigError, Fleet, GlobalConfig, load_fleet

ERROR: Literal["error"] = "error"
WARNING: Literal["warning"] = "warning"

# Where `python -m model_build` writes the manifest (README: `model_build verify build/model`).
DEFAULT_MANIFEST = ROOT / "build" / "model" / "manifest.json"
MANIFEST_ENV = "RECO_DR_MANIFEST"  # overrides the default path (CI points it at a downloaded manifest)

# Route 53 publishes health-check metrics only in us-east-1, whatever the control region.
ROUTE53_METRICS_REGION = "us-east-1"

RECORD_TYPE = "aws:route53/record:Record"


@dataclass(frozen=True)
class Finding:
    id: str  # stable invariant id, e.g. "capacity.n-plus-one"
    severity: Literal["error", "warning"]
    message: str  # names the stack/region/cc/shortfall: a user fixes it from this line alone
    stack: str | None = None
    region: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.severity.upper()} [{self.id}] {self.message}"


def errors(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == ERROR]


# ---------------------------------------------------------------- routing (one global stack on its own)
def routing_findings(stack: str, glob: GlobalConfig) -> list[Finding]:
    """At least one weighted region; exactly one PRIMARY in failover mode; metrics region sane."""
    out: list[Finding] = []
    routing = glob.routing
    if routing.mode == "weighted":
        weights = routing.weights()
        if not any(w > 0 for w in weights.values()):
            out.append(Finding("routing.weighted-region", ERROR,
                               f"stack {stack}: every region has weight 0 ({weights}): nothing would be served; give at least one region a weight > 0",
                               stack))
        for region, w in weights.items():
            if not 0 <= w <= 255:
                out.append(Finding("routing.weight-range", ERROR,
                                   f"stack {stack}: routing.regions.{region}.weight = {w}: Route 53 weights are 0..255", stack, region))
    else:
        roles = {r: v.failover for r, v in routing.regions.items()}
        primaries = sorted(r for r, role in roles.items() if role == "PRIMARY")
        if len(primaries) != 1:
            out.append(Finding("routing.one-primary", ERROR,
                               f"stack {stack}: failover mode needs exactly one PRIMARY region, got {primaries or 'none'}", stack))
        missing = sorted(r for r, role in roles.items() if role not in ("PRIMARY", "SECONDARY"))
        if missing:
            out.append(Finding("routing.one-primary", ERROR,
                               f"stack {stack}: failover mode needs PRIMARY or SECONDARY on every region; missing on {missing}", stack))
    if glob.control_region != ROUTE53_METRICS_REGION:
        out.append(Finding("alarms.metrics-region", WARNING,
                           f"stack {stack}: control_region = {glob.control_region}; Route 53 health-check metrics exist only in "
                           f"{ROUTE53_METRICS_REGION}, so their alarms are created there regardless", stack))
    return out


def refuse_global(stack: str, glob: GlobalConfig) -> None:
    """Raise ConfigError on the first stack-local error, before the program declares anything."""
    for f in errors(routing_findings(stack, glob)):
        raise ConfigError(stack, "routing", glob.routing.model_dump(exclude_none=True), f"rule: {f.message}")


# ---------------------------------------------------------------- declared records (plan output, policy)
def _get(props: Mapping, *keys: str) -> Any:
    """First present key: declared inputs are camelCase (engine names); tests may pass snake_case."""
    for k in keys:
        if k in props and props[k] is not None:
            return props[k]
    return None


def record_findings(resources: Iterable[Mapping], sets: bool = True) -> list[Finding]:
    """Over declared resources ({type, name, props|inputs}): every weighted/failover record carries a
    health check and a set_identifier; with `sets`, also across the records of one name: a weighted set has
    some weight > 0 and a failover set exactly one PRIMARY (off when checking one record on its own)."""
    out: list[Finding] = []
    groups: dict[tuple, list[tuple[str, Mapping]]] = {}
    for res in resources:
        if res.get("type") != RECORD_TYPE:
            continue
        name = str(res.get("name"))
        props = res.get("props") if res.get("props") is not None else res.get("inputs") or {}
        weighted = _get(props, "weightedRoutingPolicies", "weighted_routing_policies")
        failover = _get(props, "failoverRoutingPolicies", "failover_routing_policies")
        if not weighted and not failover:
            continue
        mode = "weighted" if weighted else "failover"
        if not _get(props, "healthCheckId", "health_check_id"):
            out.append(Finding("routing.health-check", ERROR, f"{mode} record {name} has no health_check_id: Route 53 would keep answering with it when its region is down"))
        if not _get(props, "setIdentifier", "set_identifier"):
            out.append(Finding("routing.set-identifier", ERROR, f"{mode} record {name} has no set_identifier"))
        for alias in _get(props, "aliases", "alias") or []:
            if _get(alias, "evaluateTargetHealth", "evaluate_target_health") is not True:
                out.append(Finding("routing.evaluate-target-health", ERROR, f"alias record {name} does not evaluate target health"))
        key = (_get(props, "zoneId", "zone_id"), _get(props, "name"), _get(props, "type"), mode)
        groups.setdefault(key, []).append((name, weighted[0] if weighted else failover[0]))
    for (zone, rname, _typ, mode), members in (groups.items() if sets else ()):
        names = sorted(n for n, _ in members)
        if mode == "weighted":
            weights = [_get(p, "weight") for _, p in members]
            if all(isinstance(w, (int, float)) for w in weights) and not any(w > 0 for w in weights):
                out.append(Finding("routing.weighted-region", ERROR, f"weighted record set {rname} ({names}) has every weight 0: nothing would be served"))
        else:
            prim = sorted(n for n, p in members if _get(p, "type") == "PRIMARY")
            if len(prim) != 1:
                out.append(Finding("routing.one-primary", ERROR, f"failover record set {rname} needs exactly one PRIMARY record, got {prim or 'none'}"))
    return out


# ---------------------------------------------------------------- model manifest
@dataclass(frozen=True)
class ManifestFacts:
    """What the invariants need from model_build's manifest.json, whatever its exact layout."""

    source: str
    model_version: str | None
    engine_ccs: frozenset[str]
    tensorrt_version: str | None
    qps_per_gpu: dict[str, float]


def read_manifest(manifest: Mapping | str | Path | None = None) -> ManifestFacts | None:
    """The manifest as facts, or None when no model has been built yet.

    Accepts a parsed dict or a path; with neither, $RECO_DR_MANIFEST or build/model/manifest.json.
    Tolerates `engines` as {cc: {...}} or [{"compute_capability": cc, ...}], and the TensorRT version at
    `tensorrt_version`, `versions.tensorrt` or `tensorrt.version` (the manifest's schema is model_build's).
    """
    if manifest is None:
        path = Path(os.environ.get(MANIFEST_ENV) or DEFAULT_MANIFEST)
        if not path.exists():
            return None
        manifest = path
    source = "manifest"
    if isinstance(manifest, (str, Path)):
        source = str(manifest)
        doc = json.loads(Path(manifest).read_text())
    else:
        doc = dict(manifest)
    engines = doc.get("engines") or {}
    if isinstance(engines, Mapping):
        ccs = {str(cc) for cc in engines}
    else:
        ccs = {str(e.get("compute_capability") or e.get("cc")) for e in engines if isinstance(e, Mapping)}
    versions = doc.get("versions") if isinstance(doc.get("versions"), Mapping) else {}
    trt = doc.get("tensorrt_version") or versions.get("tensorrt")
    if trt is None and isinstance(doc.get("tensorrt"), Mapping):
        trt = doc["tensorrt"].get("version")
    elif trt is None and isinstance(doc.get("tensorrt"), str):
        trt = doc["tensorrt"]
    bench = doc.get("benchmark") if isinstance(doc.get("benchmark"), Mapping) else {}
    qps = {str(k): float(v) for k, v in (bench.get("qps_per_gpu") or {}).items()}
    model = doc.get("model") if isinstance(doc.get("model"), Mapping) else {}
    version = doc.get("model_version") or doc.get("version") or model.get("version")
    return ManifestFacts(source, str(version) if version else None, frozenset(ccs), str(trt) if trt else None, qps)


def _same_trt(a: str, b: str) -> bool:
    # "10.8.0" and "10.8.0.43" name the same TensorRT release; an engine needs the same major.minor.patch.
    return a.split(".")[:3] == b.split(".")[:3]


def engine_findings(fleet: Fleet, facts: ManifestFacts | None) -> list[Finding]:
    """Every compute capability in the fleet has an engine, or the region's stack names it an ONNX fallback."""
    if facts is None:
        return [Finding("model.engines", WARNING, f"no manifest yet: engines for {fleet.compute_capabilities} cannot be checked (build the model first)")]
    out = []
    for region, rc in sorted(fleet.regions.items()):
        stack = fleet.stack_names[region]
        for cc in rc.compute_capabilities:
            if cc in facts.engine_ccs or cc in rc.model.onnx_fallback_for:
                continue
            pools = [p.name for p in rc.gpu_pools if p.gpu.compute_capability == cc]
            out.append(Finding("model.engines", ERROR,
                               f"stack {stack} ({region}): GPU pools {pools} have compute capability {cc} but the manifest "
                               f"({facts.source}) has engines only for {sorted(facts.engine_ccs)}; build one or list {cc} in model.onnx_fallback_for",
                               stack, region))
        if facts.model_version and facts.model_version != rc.model.version:
            out.append(Finding("model.version", WARNING,
                               f"stack {stack} ({region}): serves model {rc.model.version} but the manifest describes {facts.model_version}",
                               stack, region))
    return out


def tensorrt_findings(fleet: Fleet, facts: ManifestFacts | None) -> list[Finding]:
    """Triton's TensorRT equals the engines': a serialized engine only loads on the TensorRT that built it."""
    out = []
    by_version: dict[str, list[str]] = {}
    for region, rc in sorted(fleet.regions.items()):
        by_version.setdefault(rc.triton.tensorrt, []).append(region)
    if len(by_version) > 1:
        # Engines are built once per cc with one TensorRT: a mixed fleet cannot load one engine set everywhere.
        out.append(Finding("model.tensorrt", ERROR, f"{fleet.env}: regions run different TensorRT versions {by_version}; one engine set cannot load on all of them"))
    if facts is None:
        out.append(Finding("model.tensorrt", WARNING, f"no manifest yet: the engines' TensorRT version cannot be compared with Triton's {sorted(by_version)}"))
        return out
    if facts.tensorrt_version is None:
        out.append(Finding("model.tensorrt", ERROR, f"the manifest ({facts.source}) does not record the TensorRT version its engines were built with"))
        return out
    for region, rc in sorted(fleet.regions.items()):
        if not _same_trt(rc.triton.tensorrt, facts.tensorrt_version):
            stack = fleet.stack_names[region]
            out.append(Finding("model.tensorrt", ERROR,
                               f"stack {stack} ({region}): Triton image {rc.triton.image} ships TensorRT {rc.triton.tensorrt} but the engines "
                               f"were built with {facts.tensorrt_version}: they would fail to deserialize",
                               stack, region))
    return out


# ---------------------------------------------------------------- capacity
def capacity_findings(fleet: Fleet, facts: ManifestFacts | None = None, weights: dict[str, int] | None = None) -> list[Finding]:
    """N+1: with any one region lost and weights renormalised, every survivor's pools reach its new share."""
    measured = facts.qps_per_gpu if facts else None
    out = []
    for sc in n_plus_one(fleet, measured, weights):
        when = f"with {sc.lost} lost" if sc.lost else "with every region up"
        if not sc.regions:
            out.append(Finding("capacity.n-plus-one", ERROR, f"{fleet.env}: losing {sc.lost} leaves no region to serve", fleet.stack_names.get(sc.lost or ""), sc.lost))
        for r in sc.regions:
            if not r.ok:
                stack = fleet.stack_names[r.region]
                out.append(Finding("capacity.n-plus-one", ERROR,
                                   f"{when}, {r.region} ({stack}) needs {r.gpus_required} GPUs for {r.share:.0%} of peak "
                                   f"({r.qps:,.0f} QPS) but its GPU pools reach {r.gpus_max}: short by {r.shortfall} GPUs",
                                   stack, r.region))
    return out


# ---------------------------------------------------------------- the fleet
def check_fleet(fleet: Fleet, manifest: Mapping | str | Path | None = None) -> list[Finding]:
    """Every invariant over one environment. `manifest`: dict, path, or None for the default location."""
    facts = read_manifest(manifest)
    return [
        *routing_findings(fleet.global_stack, fleet.glob),
        *capacity_findings(fleet, facts),
        *engine_findings(fleet, facts),
        *tensorrt_findings(fleet, facts),
    ]


def fleet_findings(env: str, *, stacks_dir: Path = STACKS_DIR, manifest: Mapping | str | Path | None = None) -> list[Finding]:
    """Fleet-level findings for `python -m infra.plan`. Never raises for a bad config: a ConfigError is
    returned as one `config.invalid` error finding naming the stack, key and rule."""
    try:
        fleet = load_fleet(env, stacks_dir)
    except ConfigError as e:
        return [Finding("config.invalid", ERROR, str(e), e.stack)]
    return check_fleet(fleet, manifest)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m infra.invariants", description="Check an environment's resilience invariants.")
    ap.add_argument("env")
    ap.add_argument("--manifest", help="model manifest.json (default: $RECO_DR_MANIFEST or build/model/manifest.json)")
    ap.add_argument("--stacks-dir", type=Path, default=STACKS_DIR)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    found = fleet_findings(a.env, stacks_dir=a.stacks_dir, manifest=a.manifest)
    if a.json:
        print(json.dumps([f.to_dict() for f in found], indent=2))
    else:
        for f in found:
            print(f)
        print(f"{len(errors(found))} error(s), {len(found) - len(errors(found))} warning(s)")
    sys.stdout.flush()
    return 1 if errors(found) else 0


if __name__ == "__main__":
    raise SystemExit(main())
