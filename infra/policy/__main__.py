"""Wires infra/policy/validators.py into a Pulumi policy pack.

    pulumi preview --stack prod-global --policy-pack infra/policy

Every policy is mandatory: a violation fails the preview (and the PR workflow that runs it). The pack runs
from a checkout (`--policy-pack <dir>`), not published: the fleet policies import `infra.*` and read `stacks/`
two levels up, so a published pack would carry neither. The Pulumi CLI
runs this file with run_name "__main__"; importing it under another name builds `POLICIES` without
starting the analyzer server, which is how tests/policy checks the wiring.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The pack directory is infra/policy; `infra.*` lives two levels up.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pulumi_policy import (  # noqa: E402 - after the sys.path setup for the pack directory
    EnforcementLevel,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy import proxy as _proxy  # noqa: E402 - after the sys.path setup for the pack directory

from infra.config import STACKS_DIR  # noqa: E402 - after the sys.path setup for the pack directory
from infra.policy import validators as v  # noqa: E402 - after the sys.path setup for the pack directory

MANDATORY = EnforcementLevel.MANDATORY


def plain(value):
    """pulumi_policy's unknown-checking proxies -> plain dicts/lists, preview unknowns -> validators.UNKNOWN.
    The proxies raise on reading an unknown; the validators decide per check what an unknown means instead."""
    if isinstance(value, (_proxy._DictProxy, _proxy._ListProxy)):
        value = value["__target"]
    if isinstance(value, dict):
        return {k: plain(x) for k, x in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(x) for x in value]
    if _proxy._is_unknown(value):
        return v.UNKNOWN
    return value


def _stack(args: StackValidationArgs) -> str | None:
    for r in args.resources:
        stack = v.stack_from_urn(r.urn)
        if stack:
            return stack
    return os.environ.get("PULUMI_STACK")


def resource_policy(name: str, description: str, resource_type: str) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if args.resource_type == resource_type:
            for msg in v.validate_resource(resource_type, args.name, plain(args.props)):
                report_violation(msg, args.urn)

    return ResourceValidationPolicy(name=name, description=description, validate=validate, enforcement_level=MANDATORY)


def stack_policy(name: str, description: str, check) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = [
            v.Res(
                r.resource_type,
                r.name,
                plain(r.props),
                r.urn,
                {k: [d.urn for d in deps] for k, deps in (r.property_dependencies or {}).items()},
            )
            for r in args.resources
        ]
        for msg in check(resources, _stack(args)):
            report_violation(msg)

    return StackValidationPolicy(name=name, description=description, validate=validate, enforcement_level=MANDATORY)


def _fleet_check(fn):
    # Fleet-level invariants read the stack files of the checkout being previewed.
    return lambda resources, stack: fn(stack, STACKS_DIR) if stack else []


POLICIES = [
    resource_policy(
        "route53-record-health-check",
        "Every weighted or failover Route 53 record has a health check, a set identifier and evaluates target health.",
        v.RECORD,
    ),
    resource_policy(
        "route53-health-check-https",
        "Endpoint health checks probe HTTPS with a path and measure latency; a calculated check needs every child; a "
        "metric check reads insufficient data as healthy.",
        v.HEALTH_CHECK,
    ),
    resource_policy(
        "s3-replication-rtc",
        "Replication rules: enabled, delete-marker replication, RTC and metrics at 15 minutes, SSE-KMS objects "
        "re-encrypted with a destination key, distinct priorities.",
        v.REPLICATION,
    ),
    resource_policy(
        "eks-gpu-node-taint", "GPU node groups carry the nvidia.com/gpu=true:NoSchedule taint.", v.NODE_GROUP
    ),
    stack_policy(
        "route53-record-sets",
        "A weighted record set has a weight > 0; a failover record set has exactly one PRIMARY.",
        lambda resources, stack: v.record_set_violations(resources),
    ),
    stack_policy(
        "route53-region-health",
        "Every weighted or failover record carries its region's CALCULATED check over the shallow, deep, 5xx and "
        "latency checks of that region.",
        lambda resources, stack: v.region_health_violations(resources),
    ),
    stack_policy(
        "s3-bucket-controls",
        "Every S3 bucket is versioned, SSE-KMS encrypted and blocks public access.",
        lambda resources, stack: v.bucket_violations(resources),
    ),
    stack_policy(
        "s3-replication-mesh",
        "Every regional bucket replicates to every other region's bucket, one configuration per bucket.",
        lambda resources, stack: v.replication_mesh_violations(resources),
    ),
    stack_policy(
        "n-plus-one-capacity",
        "With any one region lost, the survivors' GPU pools carry peak QPS.",
        _fleet_check(v.capacity_violations),
    ),
    stack_policy(
        "model-engines",
        "Every compute capability has an engine (or an explicit ONNX fallback) built with Triton's TensorRT.",
        _fleet_check(v.model_violations),
    ),
]


if __name__ == "__main__":
    PolicyPack(name="reco-dr", enforcement_level=MANDATORY, policies=POLICIES)
