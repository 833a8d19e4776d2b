"""The policy pack's checks as pure functions: no pulumi_policy import, so the main test venv calls them directly.

Inputs are plain dicts of *engine* property names (camelCase), exactly what `pulumi preview` hands a policy
pack and what Pulumi mocks record. `infra/policy/__main__.py` unwraps pulumi_policy's proxies into such
dicts, replacing values that are unknown during preview with `UNKNOWN`; a check treats UNKNOWN as "set"
for presence (a health check id computed by the provider is there, just not yet known) and skips it for
value comparisons.

Each function returns a list of violation messages; empty means compliant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.catalog import GPU_INSTANCES
from infra.config import STACKS_DIR, ConfigError, load_fleet
from infra.health import INSUFFICIENT_DATA_HEALTH_STATUS
from infra.invariants import (
    ERROR,
    capacity_findings,
    engine_findings,
    health_findings,
    read_manifest,
    record_findings,
    tensorrt_findings,
)
from model_build.manifest import ManifestError


class _Unknown:
    def __repr__(self) -> str:
        return "<unknown during preview>"


UNKNOWN: Any = _Unknown()

BUCKET = "aws:s3/bucket:Bucket"
VERSIONING = "aws:s3/bucketVersioning:BucketVersioning"
SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
REPLICATION = "aws:s3/bucketReplicationConfig:BucketReplicationConfig"
RECORD = "aws:route53/record:Record"
HEALTH_CHECK = "aws:route53/healthCheck:HealthCheck"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}
RTC_MINUTES = 15
PUBLIC_ACCESS_FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")


@dataclass(frozen=True)
class Res:
    """One declared resource, as a stack policy sees it."""

    type: str
    name: str
    props: Mapping[str, Any]
    urn: str = ""
    # engine property name -> URNs the value came from; lets a check tie BucketVersioning to its Bucket
    # during preview, when the bucket's name is not known yet.
    property_dependencies: Mapping[str, Sequence[str]] = field(default_factory=dict)


def _g(obj: Any, *path: str | int) -> Any:
    """Nested get; None when any step is missing (UNKNOWN is returned as is)."""
    for p in path:
        if obj is UNKNOWN or obj is None:
            return obj
        if isinstance(p, int):
            obj = obj[p] if isinstance(obj, Sequence) and not isinstance(obj, str) and len(obj) > p else None
        else:
            obj = obj.get(p) if isinstance(obj, Mapping) else None
    return obj


def _is(value: Any, expected: Any) -> bool:
    return value is UNKNOWN or value == expected


def _set(value: Any) -> bool:
    return value is UNKNOWN or (value is not None and value != "")


# ---------------------------------------------------------------- resource-level
def record_violations(name: str, props: Mapping) -> list[str]:
    """A weighted/failover record has a health check, a set_identifier and evaluates target health."""
    return [f.message for f in record_findings([{"type": RECORD, "name": name, "props": props}], sets=False)]


def calculated_check_violations(name: str, props: Mapping) -> list[str]:
    """A CALCULATED check is healthy only while every child is: a lower threshold lets a failing child keep the
    region in DNS."""
    children, threshold = _g(props, "childHealthchecks"), _g(props, "childHealthThreshold")
    if children is UNKNOWN or threshold is UNKNOWN:
        return []
    if not children:
        return [f"calculated health check {name} has no child checks: it would always be healthy"]
    if threshold != len(children):
        return [
            f"calculated health check {name} needs {threshold} of its {len(children)} children healthy: a failing "
            "child would keep the region in DNS (child_health_threshold = the number of children)"
        ]
    return []


def metric_check_violations(name: str, props: Mapping) -> list[str]:
    """A CLOUDWATCH_METRIC check names its alarm and its region, and reads too little data as healthy (infra/health.py
    INSUFFICIENT_DATA_HEALTH_STATUS: a CloudWatch problem must not move traffic)."""
    out = [
        f"metric health check {name} has no {key}"
        for key in ("cloudwatchAlarmName", "cloudwatchAlarmRegion")
        if not _set(_g(props, key))
    ]
    if not _is(_g(props, "insufficientDataHealthStatus"), INSUFFICIENT_DATA_HEALTH_STATUS):
        out.append(
            f"metric health check {name} reads insufficient data as {_g(props, 'insufficientDataHealthStatus')}, "
            f"not {INSUFFICIENT_DATA_HEALTH_STATUS}: a CloudWatch outage would move traffic"
        )
    return out


def health_check_violations(name: str, props: Mapping) -> list[str]:
    """By type: a CALCULATED or CLOUDWATCH_METRIC check (above) probes nothing itself; every other check probes the
    load balancer over HTTPS with a path and measures latency, and a string-matching one names its string."""
    if _g(props, "type") == "CALCULATED":
        return calculated_check_violations(name, props)
    if _g(props, "type") == "CLOUDWATCH_METRIC":
        return metric_check_violations(name, props)
    out = []
    if _g(props, "type") == "HTTPS_STR_MATCH" and not _set(_g(props, "searchString")):
        out.append(f"health check {name} is HTTPS_STR_MATCH without a search string")
    if not (_g(props, "type") is UNKNOWN or str(_g(props, "type")).startswith("HTTPS")):
        out.append(f"health check {name} is {_g(props, 'type')}: the load balancers listen on HTTPS only")
    if not _set(_g(props, "resourcePath")):
        out.append(f"health check {name} has no resource path: it would probe '/' instead of Triton's readiness")
    if not _is(_g(props, "measureLatency"), True):
        out.append(f"health check {name} does not measure latency")
    return out


def replication_config_violations(name: str, props: Mapping) -> list[str]:
    """Every rule: enabled, V2 (filter), delete markers NOT replicated (a delete hiding a published file in one region
    must not spread to every region), RTC + metrics at 15 min, SSE-KMS objects selected and re-encrypted with a
    destination key; priorities unique."""
    out: list[str] = []
    rules = _g(props, "rules")
    if rules is UNKNOWN:
        return out
    if not rules:
        return [f"replication configuration {name} has no rules"]
    priorities = []
    for i, rule in enumerate(rules):
        rid = _g(rule, "id") or f"rules[{i}]"
        where = f"replication configuration {name} rule {rid}"
        if not _is(_g(rule, "status"), "Enabled"):
            out.append(f"{where} is not Enabled")
        if _g(rule, "filter") is None:
            out.append(f"{where} has no filter: a V1 rule cannot carry a priority")
        if not _is(_g(rule, "deleteMarkerReplication", "status"), "Disabled"):
            out.append(f"{where} replicates delete markers: a delete in one region would hide the file in every region")
        rt = _g(rule, "destination", "replicationTime")
        if not (_is(_g(rt, "status"), "Enabled") and _is(_g(rt, "time", "minutes"), RTC_MINUTES)):
            out.append(f"{where} lacks Replication Time Control at {RTC_MINUTES} minutes")
        m = _g(rule, "destination", "metrics")
        if not (_is(_g(m, "status"), "Enabled") and _is(_g(m, "eventThreshold", "minutes"), RTC_MINUTES)):
            out.append(f"{where} lacks replication metrics at {RTC_MINUTES} minutes")
        if not _is(_g(rule, "sourceSelectionCriteria", "sseKmsEncryptedObjects", "status"), "Enabled"):
            out.append(f"{where} skips SSE-KMS encrypted objects (sourceSelectionCriteria.sseKmsEncryptedObjects)")
        if not _set(_g(rule, "destination", "encryptionConfiguration", "replicaKmsKeyId")):
            out.append(f"{where} names no replica KMS key for the destination region")
        priorities.append(_g(rule, "priority"))
    known = [p for p in priorities if p is not UNKNOWN]
    if None in known or len(set(known)) != len(known):
        out.append(f"replication configuration {name} needs a distinct priority on every rule, got {priorities}")
    return out


def is_gpu_node_group(props: Mapping) -> bool:
    ami = _g(props, "amiType")
    if isinstance(ami, str) and ("NVIDIA" in ami or "GPU" in ami):
        return True
    types = _g(props, "instanceTypes")
    return isinstance(types, Sequence) and any(t in GPU_INSTANCES for t in types if isinstance(t, str))


def gpu_node_group_violations(name: str, props: Mapping) -> list[str]:
    """GPU nodes are tainted so only pods tolerating nvidia.com/gpu (Triton) land on them."""
    if not is_gpu_node_group(props):
        return []
    taints = _g(props, "taints")
    if taints is UNKNOWN:
        return []
    for t in taints or []:
        if all(_is(_g(t, k), v) for k, v in GPU_TAINT.items()):
            return []
    return [f"GPU node group {name} lacks the taint nvidia.com/gpu=true:NoSchedule (got {list(taints or [])})"]


RESOURCE_VALIDATORS: dict[str, Callable[[str, Mapping], list[str]]] = {
    RECORD: record_violations,
    HEALTH_CHECK: health_check_violations,
    REPLICATION: replication_config_violations,
    NODE_GROUP: gpu_node_group_violations,
}


def validate_resource(type_: str, name: str, props: Mapping) -> list[str]:
    fn = RESOURCE_VALIDATORS.get(type_)
    return fn(name, props) if fn else []


# ---------------------------------------------------------------- stack-level
def record_set_violations(resources: Iterable[Res]) -> list[str]:
    """Across records of one name: some weight > 0 (weighted), exactly one PRIMARY (failover)."""
    recs = [{"type": r.type, "name": r.name, "props": r.props} for r in resources if r.type == RECORD]
    return [f.message for f in record_findings(recs) if f.id in ("routing.weighted-region", "routing.one-primary")]


def region_health_violations(resources: Iterable[Res]) -> list[str]:
    """Every routed record carries its region's CALCULATED check over the four children (infra.invariants
    health_findings), linked through the property dependencies the engine reports."""
    declared = [
        {
            "type": r.type,
            "name": r.name,
            "urn": r.urn,
            "props": r.props,
            "property_dependencies": r.property_dependencies,
        }
        for r in resources
        if r.type in (RECORD, HEALTH_CHECK)
    ]
    return [f.message for f in health_findings(declared)]


def _targets(rel: Res, bucket: Res) -> bool:
    if bucket.urn and bucket.urn in (rel.property_dependencies.get("bucket") or ()):
        return True
    name = _g(bucket.props, "bucket")
    return _set(name) and name is not UNKNOWN and _g(rel.props, "bucket") == name


def _related(resources: list[Res], bucket: Res, typ: str) -> list[Res]:
    """The resources of type `typ` that target `bucket`."""
    return [r for r in resources if r.type == typ and _targets(r, bucket)]


def bucket_violations(resources: Iterable[Res]) -> list[str]:
    """Every bucket: versioning Enabled, default encryption SSE-KMS, all four public-access blocks on."""
    resources = list(resources)
    out = []
    for b in (r for r in resources if r.type == BUCKET):
        vers = _related(resources, b, VERSIONING)
        if not any(_is(_g(v.props, "versioningConfiguration", "status"), "Enabled") for v in vers):
            out.append(
                f"bucket {b.name} is not versioned (no BucketVersioning with status Enabled): "
                "replication and rollback need versions"
            )
        sse = _related(resources, b, SSE)
        algos = [
            _g(rule, "applyServerSideEncryptionByDefault", "sseAlgorithm")
            for s in sse
            for rule in (_g(s.props, "rules") or [])
        ]
        if not any(a is UNKNOWN or a in ("aws:kms", "aws:kms:dsse") for a in algos):
            out.append(f"bucket {b.name} has no SSE-KMS default encryption (got {algos or 'none'})")
        pab = _related(resources, b, PUBLIC_ACCESS_BLOCK)
        if not any(all(_is(_g(p.props, f), True) for f in PUBLIC_ACCESS_FLAGS) for p in pab):
            out.append(f"bucket {b.name} lacks a public access block with {', '.join(PUBLIC_ACCESS_FLAGS)} all true")
    return out


def replication_mesh_violations(resources: Iterable[Res]) -> list[str]:
    """Where a stack declares replication, every source bucket replicates to every other one, once."""
    configs = [r for r in resources if r.type == REPLICATION]
    sources = {_g(c.props, "bucket"): c for c in configs}
    if not configs or any(s is UNKNOWN for s in sources):
        return []
    out = []
    if len(sources) != len(configs):
        out.append(
            "more than one replication configuration for one bucket: S3 keeps only the last "
            f"({sorted(c.name for c in configs)})"
        )
    for src, c in sources.items():
        dests = [_g(rule, "destination", "bucket") for rule in (_g(c.props, "rules") or [])]
        if any(d is UNKNOWN for d in dests):
            continue
        names = [str(d).removeprefix("arn:aws:s3:::") for d in dests]
        missing = sorted(set(sources) - {src} - set(names))
        if missing:
            out.append(f"replication configuration {c.name} ({src}) does not replicate to {missing}")
        if src in names:
            out.append(f"replication configuration {c.name} replicates {src} to itself")
        if len(set(names)) != len(names):
            out.append(f"replication configuration {c.name} has two rules for one destination: {names}")
    return out


def stack_from_urn(urn: str) -> str | None:
    # urn:pulumi:<stack>::<project>::<type>::<name>
    parts = urn.split(":", 3)
    return parts[2].split("::")[0] if len(parts) > 3 and parts[0] == "urn" else None


def capacity_violations(stack: str, stacks_dir: Path = STACKS_DIR, manifest: Any = None) -> list[str]:
    """N+1 over the stack's environment as its stack files declare it (the checkout being previewed):
    with any one region lost, every survivor's GPU pools reach its renormalised share of peak. A manifest that
    does not validate leaves the configured throughput figures in force here (`model_violations` reports it)."""
    env = stack.rsplit("-", 1)[0]
    try:
        fleet = load_fleet(env, stacks_dir)
    except ConfigError as e:
        return [str(e)]
    try:
        facts = read_manifest(manifest)
    except ManifestError:
        facts = None
    return [f.message for f in capacity_findings(fleet, facts) if f.severity == ERROR]


def model_violations(stack: str, stacks_dir: Path = STACKS_DIR, manifest: Any = None) -> list[str]:
    """Engines for every compute capability and matching TensorRT. Warnings ("no manifest yet") are not
    violations: a preview before the first model build must not be blocked; a manifest that does not validate
    against model_build's schema is one, naming the file and its first problem."""
    env = stack.rsplit("-", 1)[0]
    try:
        fleet = load_fleet(env, stacks_dir)
    except ConfigError as e:
        return [str(e)]
    try:
        facts = read_manifest(manifest)
    except ManifestError as e:
        return [str(e)]
    return [
        f.message for f in [*engine_findings(fleet, facts), *tensorrt_findings(fleet, facts)] if f.severity == ERROR
    ]
