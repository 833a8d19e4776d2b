"""Resilience invariants: pure functions over the fleet config (and the model manifest once one exists).

ARCHITECTURE.md lists them; this module is their single implementation, used three ways:
  1. `refuse_global(stack, cfg)`: the global program refuses a stack that is wrong on its own before it
     declares anything (defence in depth behind infra.config's routing validation);
  2. `fleet_findings(env)`: `python -m infra.plan` reports fleet-level findings;
  3. `infra/policy/validators.py` calls `record_findings`, `health_findings`, `capacity_findings`, ... at
     `pulumi preview`.

Every check returns `Finding`s rather than raising, so one run reports every problem at once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from infra.capacity import n_plus_one, shortfall_text
from infra.config import ROOT, STACKS_DIR, ConfigError, Fleet, GlobalConfig, load_fleet
from infra.engines import Available, coverage
from infra.health import (
    ALARM_KINDS,
    CALCULATED,
    CHECK_TAG,
    CHILD_HEALTH_THRESHOLD,
    CHILD_KINDS,
    DEEP,
    DEEP_HEALTH_OK,
    REGION_TAG,
    SHALLOW,
)
from model_build.manifest import MANIFEST, Manifest, ManifestError, parse_manifest

ERROR: Literal["error"] = "error"
WARNING: Literal["warning"] = "warning"

# Where `python -m model_build` writes the manifest (README: `model_build verify build/model`).
DEFAULT_MANIFEST = ROOT / "build" / "model" / "manifest.json"
MANIFEST_ENV = "RECO_DR_MANIFEST"  # overrides the default path (CI points it at a downloaded manifest)

# Route 53 publishes health-check metrics only in us-east-1, whatever the control region.
ROUTE53_METRICS_REGION = "us-east-1"

RECORD_TYPE = "aws:route53/record:Record"
HEALTH_CHECK_TYPE = "aws:route53/healthCheck:HealthCheck"
# The Route 53 type each child of a region's calculated check must have, by its `check` tag (infra/health.py).
CHILD_TYPES = {SHALLOW: "HTTPS", DEEP: "HTTPS_STR_MATCH", **dict.fromkeys(ALARM_KINDS, "CLOUDWATCH_METRIC")}


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
    """At least two regions; at least one weighted region; exactly one PRIMARY in failover mode; the
    control region is where Route 53 metrics are (else a warning: their alarms go to us-east-1 anyway)."""
    out: list[Finding] = []
    routing = glob.routing
    if len(routing.regions) < 2:
        # Nothing to fail over to and no bucket to replicate to: a global stack is a multi-region construct.
        out.append(
            Finding(
                "routing.two-regions",
                ERROR,
                f"stack {stack}: routing names {sorted(routing.regions)}; "
                "DNS failover and replication need at least two regions",
                stack,
            )
        )
    if routing.mode == "weighted":
        weights = routing.weights()
        if not any(w > 0 for w in weights.values()):
            out.append(
                Finding(
                    "routing.weighted-region",
                    ERROR,
                    f"stack {stack}: every region has weight 0 ({weights}): nothing would be served; "
                    "give at least one region a weight > 0",
                    stack,
                )
            )
        for region, w in weights.items():
            if not 0 <= w <= 255:
                out.append(
                    Finding(
                        "routing.weight-range",
                        ERROR,
                        f"stack {stack}: routing.regions.{region}.weight = {w}: Route 53 weights are 0..255",
                        stack,
                        region,
                    )
                )
    else:
        roles = {r: v.failover for r, v in routing.regions.items()}
        primaries = sorted(r for r, role in roles.items() if role == "PRIMARY")
        if len(primaries) != 1:
            out.append(
                Finding(
                    "routing.one-primary",
                    ERROR,
                    f"stack {stack}: failover mode needs exactly one PRIMARY region, got {primaries or 'none'}",
                    stack,
                )
            )
        missing = sorted(r for r, role in roles.items() if role not in ("PRIMARY", "SECONDARY"))
        if missing:
            out.append(
                Finding(
                    "routing.one-primary",
                    ERROR,
                    f"stack {stack}: failover mode needs PRIMARY or SECONDARY on every region; missing on {missing}",
                    stack,
                )
            )
    if glob.control_region != ROUTE53_METRICS_REGION:
        out.append(
            Finding(
                "alarms.metrics-region",
                WARNING,
                f"stack {stack}: control_region = {glob.control_region}; Route 53 health-check metrics exist only in "
                f"{ROUTE53_METRICS_REGION}, so their alarms are created there regardless",
                stack,
            )
        )
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
        props: Mapping = res["props"] if res.get("props") is not None else res.get("inputs") or {}
        weighted = _get(props, "weightedRoutingPolicies", "weighted_routing_policies")
        failover = _get(props, "failoverRoutingPolicies", "failover_routing_policies")
        if not weighted and not failover:
            continue
        mode = "weighted" if weighted else "failover"
        if not _get(props, "healthCheckId", "health_check_id"):
            out.append(
                Finding(
                    "routing.health-check",
                    ERROR,
                    f"{mode} record {name} has no health_check_id: "
                    "Route 53 would keep answering with it when its region is down",
                )
            )
        if not _get(props, "setIdentifier", "set_identifier"):
            out.append(Finding("routing.set-identifier", ERROR, f"{mode} record {name} has no set_identifier"))
        out.extend(
            Finding("routing.evaluate-target-health", ERROR, f"alias record {name} does not evaluate target health")
            for alias in _get(props, "aliases", "alias") or []
            if _get(alias, "evaluateTargetHealth", "evaluate_target_health") is not True
        )
        key = (_get(props, "zoneId", "zone_id"), _get(props, "name"), _get(props, "type"), mode)
        groups.setdefault(key, []).append((name, weighted[0] if weighted else failover[0]))
    for (_zone, rname, _typ, mode), members in groups.items() if sets else ():
        names = sorted(n for n, _ in members)
        if mode == "weighted":
            weights = [_get(p, "weight") for _, p in members]
            if all(isinstance(w, (int, float)) for w in weights) and not any(w > 0 for w in weights):
                out.append(
                    Finding(
                        "routing.weighted-region",
                        ERROR,
                        f"weighted record set {rname} ({names}) has every weight 0: nothing would be served",
                    )
                )
        else:
            prim = sorted(n for n, p in members if _get(p, "type") == "PRIMARY")
            if len(prim) != 1:
                out.append(
                    Finding(
                        "routing.one-primary",
                        ERROR,
                        f"failover record set {rname} needs exactly one PRIMARY record, got {prim or 'none'}",
                    )
                )
    return out


def health_findings(resources: Iterable[Mapping]) -> list[Finding]:
    """Over declared resources ({type, name, urn, props|inputs, property_dependencies}): every weighted/failover record
    carries its own region's CALCULATED check, which needs every child (child_health_threshold CHILD_HEALTH_THRESHOLD)
    and whose children are one check of each CHILD_KINDS of that region (by their `region` and `check` tags), each of
    its type (CHILD_TYPES; the deep one matching DEEP_HEALTH_OK). Checks are linked through the property
    dependencies (input name -> URNs), as the engine hands them to a policy pack and infra.mocks records them: during
    a preview the ids of new checks are unknown, their URNs never are."""
    res = list(resources)

    def props(r: Mapping) -> Mapping:
        return r["props"] if r.get("props") is not None else r.get("inputs") or {}

    def deps(r: Mapping, key: str) -> list[Mapping]:
        urns = (r.get("property_dependencies") or {}).get(key) or []
        return [c for c in res if c.get("type") == HEALTH_CHECK_TYPE and c.get("urn") in urns]

    def tag(check: Mapping, key: str) -> Any:
        return (check.get("tags") or {}).get(key)

    def fits(child: Mapping, region: Any) -> bool:
        kind = tag(child, CHECK_TAG)
        return (
            tag(child, REGION_TAG) == region
            and child.get("type") == CHILD_TYPES.get(kind)
            and (kind != DEEP or child.get("searchString") == DEEP_HEALTH_OK)
        )

    out: list[Finding] = []
    for rec in res:
        p = props(rec)
        if rec.get("type") != RECORD_TYPE or not _get(p, "weightedRoutingPolicies", "failoverRoutingPolicies"):
            continue
        name, region = str(rec.get("name")), _get(p, "setIdentifier")
        calcs = deps(rec, "healthCheckId")
        calc = props(calcs[0]) if len(calcs) == 1 else {}
        if calc.get("type") != "CALCULATED" or tag(calc, CHECK_TAG) != CALCULATED or tag(calc, REGION_TAG) != region:
            out.append(
                Finding(
                    "health.calculated",
                    ERROR,
                    f"record {name} does not carry the CALCULATED check of its region {region} declared in this stack "
                    "(a child or another region's check would leave the region's other evidence out)",
                )
            )
            continue
        if calc.get("childHealthThreshold") != CHILD_HEALTH_THRESHOLD:
            out.append(
                Finding(
                    "health.threshold",
                    ERROR,
                    f"record {name}: its check's child_health_threshold {calc.get('childHealthThreshold')} lets a "
                    f"failing child keep {region} in DNS (needs {CHILD_HEALTH_THRESHOLD}: every child)",
                )
            )
        kids = [props(k) for k in deps(calcs[0], "childHealthchecks")]
        kinds = sorted(str(tag(k, CHECK_TAG)) for k in kids)
        wrong = sorted(str(tag(k, CHECK_TAG)) for k in kids if not fits(k, region))
        if kinds != sorted(CHILD_KINDS) or wrong:
            out.append(
                Finding(
                    "health.children",
                    ERROR,
                    f"record {name}: its check's children must be one check of {region} per kind, of its type "
                    f"{CHILD_TYPES} (the deep one matching {DEEP_HEALTH_OK!r}); got kinds {kinds}"
                    + (f", wrong: {wrong}" if wrong else ""),
                )
            )
    return out


# ---------------------------------------------------------------- model manifest
@dataclass(frozen=True)
class ManifestFacts:
    """What the invariants, the capacity table and the drills need from a model manifest, derived by `of` from
    model_build's typed `Manifest` (the schema: model_build/manifest.py)."""

    source: str  # where the manifest was read: its path, or e.g. "the manifest in us-east-1's bucket"
    model_version: str | None
    tensorrt_version: str | None  # the build's TensorRT
    qps_per_gpu: dict[str, float]  # benchmarked, only for GPUs actually measured
    engine_status: dict[str, str]  # served cc -> "built" | "not-built" (a built engine wins over a planned one)
    engine_tensorrt: dict[str, str]  # served cc -> TensorRT of that engine
    onnx_fallback_for: frozenset[str]  # served by the ONNX Runtime model on purpose

    @classmethod
    def of(cls, m: Manifest, source: str) -> ManifestFacts:
        status: dict[str, str] = {}
        engine_trt: dict[str, str] = {}
        for e in m.engines.values():
            for cc in e.serves:
                if status.get(cc) != "built":
                    status[cc], engine_trt[cc] = e.status, e.tensorrt_version
        return cls(
            source,
            m.model.get("version"),
            m.tensorrt_version or None,
            dict(m.benchmark.qps_per_gpu),
            status,
            engine_trt,
            frozenset(m.onnx_fallback_for),
        )

    @property
    def engine_ccs(self) -> frozenset[str]:
        """Compute capabilities some engine entry serves, built or not."""
        return frozenset(self.engine_status)

    @property
    def built(self) -> frozenset[str]:
        """Compute capabilities with a built engine."""
        return frozenset(cc for cc, s in self.engine_status.items() if s == "built")

    @property
    def available(self) -> dict[str, Available]:
        """What the manifest offers per compute capability, as infra.engines.coverage reads it: a built engine, a
        planned one (listed, not built where the manifest was written) or the manifest's own ONNX fallback."""
        out: dict[str, Available] = dict.fromkeys(self.onnx_fallback_for, "onnx-fallback")
        for cc, s in self.engine_status.items():
            out[cc] = "built" if s == "built" else "planned"
        return out


def manifest_facts(manifest: Manifest | Mapping | str | Path, source: str = "manifest") -> ManifestFacts:
    """The facts of a `Manifest`, a parsed dict, a manifest.json path or a model repository directory.

    A dict or a file is validated against model_build's schema: one that is not JSON or does not match it, or a
    path that cannot be read, raises ManifestError naming it (`source` for a dict, else the path) and the first
    problem.
    """
    if isinstance(manifest, Manifest):
        return ManifestFacts.of(manifest, source)
    if isinstance(manifest, Mapping):
        return ManifestFacts.of(parse_manifest(manifest, source), source)
    path = Path(manifest)
    path = path / MANIFEST if path.is_dir() else path
    try:
        text = path.read_bytes()
    except OSError as e:
        raise ManifestError(f"{path}: cannot read the manifest: {e.strerror or e}") from None
    return ManifestFacts.of(parse_manifest(text, str(path)), str(path))


def read_manifest(manifest: Manifest | Mapping | str | Path | None = None) -> ManifestFacts | None:
    """`manifest_facts` of the manifest given, or with none of $RECO_DR_MANIFEST or build/model/manifest.json; None
    when that file does not exist (no model has been built yet). ManifestError as `manifest_facts` raises it."""
    if manifest is None:
        path = Path(os.environ.get(MANIFEST_ENV) or DEFAULT_MANIFEST)
        if not path.exists():
            return None
        manifest = path
    return manifest_facts(manifest)


def _same_trt(a: str, b: str) -> bool:
    # "10.8.0" and "10.8.0.43" name the same TensorRT release; an engine needs the same major.minor.patch.
    return a.split(".")[:3] == b.split(".")[:3]


def engine_findings(fleet: Fleet, facts: ManifestFacts | None) -> list[Finding]:
    """Every compute capability in the fleet has an engine, or the region's stack names it an ONNX fallback."""
    if facts is None:
        return [
            Finding(
                "model.engines",
                WARNING,
                f"no manifest yet: engines for {fleet.compute_capabilities} cannot be checked (build the model first)",
            )
        ]
    out: list[Finding] = []
    for region, rc in sorted(fleet.regions.items()):
        stack = fleet.stack_names[region]
        cov = coverage(rc.compute_capabilities, facts.available, rc.model.onnx_fallback_for)
        # Planned, to be built by the Job on this region's GPU pool (which needs the stack to exist first):
        # blocking the stack on it would deadlock, so it is a warning until the Job has run.
        out.extend(
            Finding(
                "model.engine-not-built",
                WARNING,
                f"stack {stack} ({region}): the engine for compute capability {cc} is planned in "
                f"{facts.source} but not built yet; run its build Job before sending traffic to this region",
                stack,
                region,
            )
            for cc in cov.planned
        )
        for cc in cov.missing:
            pools = [p.name for p in rc.gpu_pools if p.gpu.compute_capability == cc]
            out.append(
                Finding(
                    "model.engines",
                    ERROR,
                    f"stack {stack} ({region}): GPU pools {pools} have compute capability {cc} but the manifest "
                    f"({facts.source}) has engines only for {sorted(facts.engine_ccs)}; "
                    f"build one or list {cc} in model.onnx_fallback_for",
                    stack,
                    region,
                )
            )
        if facts.model_version and facts.model_version != rc.model.version:
            out.append(
                Finding(
                    "model.version",
                    WARNING,
                    f"stack {stack} ({region}): serves model {rc.model.version} "
                    f"but the manifest describes {facts.model_version}",
                    stack,
                    region,
                )
            )
    return out


def tensorrt_findings(fleet: Fleet, facts: ManifestFacts | None) -> list[Finding]:
    """Triton's TensorRT equals the engines': a serialized engine only loads on the TensorRT that built it."""
    out = []
    by_version: dict[str, list[str]] = {}
    for region, rc in sorted(fleet.regions.items()):
        by_version.setdefault(rc.triton.tensorrt, []).append(region)
    if len(by_version) > 1:
        # Engines are built once per cc with one TensorRT: a mixed fleet cannot load one engine set everywhere.
        out.append(
            Finding(
                "model.tensorrt",
                ERROR,
                f"{fleet.env}: regions run different TensorRT versions {by_version}; "
                "one engine set cannot load on all of them",
            )
        )
    if facts is None:
        out.append(
            Finding(
                "model.tensorrt",
                WARNING,
                f"no manifest yet: the engines' TensorRT version cannot be compared with Triton's {sorted(by_version)}",
            )
        )
        return out
    if facts.tensorrt_version is None:
        out.append(
            Finding(
                "model.tensorrt",
                ERROR,
                f"the manifest ({facts.source}) does not record the TensorRT version its engines were built with",
            )
        )
        return out
    for region, rc in sorted(fleet.regions.items()):
        stack = fleet.stack_names[region]
        if not _same_trt(rc.triton.tensorrt, facts.tensorrt_version):
            out.append(
                Finding(
                    "model.tensorrt",
                    ERROR,
                    f"stack {stack} ({region}): Triton image {rc.triton.image} ships TensorRT {rc.triton.tensorrt} "
                    f"but the engines were built with {facts.tensorrt_version}: they would fail to deserialize",
                    stack,
                    region,
                )
            )
            continue
        for cc in rc.compute_capabilities:
            built_with = facts.engine_tensorrt.get(cc)
            if built_with and not _same_trt(rc.triton.tensorrt, built_with):
                out.append(
                    Finding(
                        "model.tensorrt",
                        ERROR,
                        f"stack {stack} ({region}): the engine for compute capability {cc} "
                        f"was built with TensorRT {built_with}, "
                        f"Triton image {rc.triton.image} ships {rc.triton.tensorrt}",
                        stack,
                        region,
                    )
                )
    return out


# ---------------------------------------------------------------- capacity
def capacity_findings(
    fleet: Fleet, facts: ManifestFacts | None = None, weights: dict[str, int] | None = None
) -> list[Finding]:
    """N+1: with any one region lost and weights renormalised, every survivor's guaranteed GPUs (running or
    reserved, infra/capacity.py) carry its new share; reaching it only at max is not enough."""
    measured = facts.qps_per_gpu if facts else None
    out = []
    for sc in n_plus_one(fleet, measured, weights):
        when = f"with {sc.lost} lost" if sc.lost else "with every region up"
        if not sc.regions:
            out.append(
                Finding(
                    "capacity.n-plus-one",
                    ERROR,
                    f"{fleet.env}: losing {sc.lost} leaves no region to serve",
                    fleet.stack_names.get(sc.lost or ""),
                    sc.lost,
                )
            )
        for r in sc.regions:
            if not r.ok:
                stack = fleet.stack_names[r.region]
                out.append(
                    Finding(
                        "capacity.n-plus-one",
                        ERROR,
                        f"{when}, {r.region} ({stack}) {shortfall_text(r)}",
                        stack,
                        r.region,
                    )
                )
    return out


# ---------------------------------------------------------------- the fleet
def check_fleet(fleet: Fleet, manifest: Manifest | Mapping | str | Path | None = None) -> list[Finding]:
    """Every invariant over one environment. `manifest`: as `read_manifest` takes it (None: the default location).
    A manifest that cannot be read or does not match the schema is one `model.manifest` error; capacity is then
    judged on the configured throughput figures and the engine checks wait for a readable manifest."""
    try:
        facts = read_manifest(manifest)
    except ManifestError as e:
        return [
            *routing_findings(fleet.global_stack, fleet.glob),
            *capacity_findings(fleet),
            Finding("model.manifest", ERROR, f"{e}; rebuild the model (`python -m model_build`) or fix the path"),
        ]
    return [
        *routing_findings(fleet.global_stack, fleet.glob),
        *capacity_findings(fleet, facts),
        *engine_findings(fleet, facts),
        *tensorrt_findings(fleet, facts),
    ]


def fleet_findings(
    env: str, *, stacks_dir: Path = STACKS_DIR, manifest: Manifest | Mapping | str | Path | None = None
) -> list[Finding]:
    """Fleet-level findings for `python -m infra.plan`. Never raises for a bad config: a ConfigError is
    returned as one `config.invalid` error finding naming the stack, key and rule (and an unreadable manifest as
    a `model.manifest` error, see `check_fleet`)."""
    try:
        fleet = load_fleet(env, stacks_dir)
    except ConfigError as e:
        return [Finding("config.invalid", ERROR, str(e), e.stack)]
    return check_fleet(fleet, manifest)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    ap = argparse.ArgumentParser(
        prog="python -m infra.invariants", description="Check an environment's resilience invariants."
    )
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
