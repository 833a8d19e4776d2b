"""Names, labels, headers, ports and counts that the Pulumi components declare and the drills address, in one
Pulumi-free module: drills import these, never a component (which would pull in the Pulumi SDK and providers)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import NamedTuple

from infra.catalog import REGIONS

# ---------------------------------------------------------------- Triton on Kubernetes
NAMESPACE = "triton"
SERVICE_ACCOUNT = "triton"
APP = "triton"
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
LIVE_PATH = "/v2/health/live"
READY_PATH = "/v2/health/ready"
STABLE, CANARY = "stable", "canary"
# The Triton pod's containers, in start order: the model's init containers, then Triton (the deep-health sidecar's
# name is infra.health.DEEP_HEALTH_CONTAINER). Drills read each one's times to split a new pod's start-up.
FETCH_CONTAINER, VERIFY_CONTAINER, TRITON_CONTAINER = "fetch-model", "verify-model", "triton"


# ---------------------------------------------------------------- DNS names clients use
def regional_fqdn(record: str, region: str, zone: str) -> str:
    """The plain per-region name the global stack declares beside the weighted `<record>.<zone>`:
    `<record>-<region short>.<zone>` (ranker-use1.shop.example.com), an alias of the region's load balancer with no
    weight and no failover. Clients that choose the region themselves (drills.client.RankerClient) use these: a
    region they eject is still resolvable, and a retry goes where they send it, not where DNS answered."""
    return f"{record}-{REGIONS[region]}.{zone}"


# ---------------------------------------------------------------- identities the stacks name
# GitHub Actions' OIDC issuer: what keyless release signatures (model.signer) and the CI roles' trust name.
GITHUB_OIDC_ISSUER = "https://token.actions.githubusercontent.com"

ROLE_PREFIX = "reco-dr-ci-"  # the CI roles (infra/components/ci_identity.py declares them)
PREVIEW_ROLE = f"{ROLE_PREFIX}preview"  # read-only: previews, the drift check, readiness


def deploy_role_name(environment: str) -> str:
    """The env's deploy role: `pulumi up` in CI, and the release tooling's identity (the LKG pointers' writer)."""
    return f"{ROLE_PREFIX}deploy-{environment}"


def role_arn(account_id: str, name: str) -> str:
    return f"arn:aws:iam::{account_id}:role/{name}"


# ---------------------------------------------------------------- the artifact bucket
# The one IAM role that may overwrite or delete published model files (artifact bucket policy): made outside these
# stacks, assumed only with MFA during an incident, and audited in CloudTrail.
BREAK_GLASS_ROLE = "reco-dr-break-glass"
# Last-known-good pointers live under their own prefix, `_lkg/<model>/<region>.json`, apart from the immutable
# version prefixes `<model>/<version>/`: they move (by the release tooling only); versions never do.
LKG_PREFIX = "_lkg"


def lkg_key(model: str, region: str) -> str:
    # One key per region: replication copies every region's pointer into every bucket, and a shared key would
    # let another region's promotion overwrite this region's pointer.
    return f"{LKG_PREFIX}/{model}/{region}.json"


def pins_key(model: str, region: str) -> str:
    """The fetch pins a restore writes beside the pointer: plain text the pods' fetch script reads with the shell
    alone (the AWS CLI image has no JSON tool). First line `<version> <manifest sha256>`, then `<S3 version id>
    <path>` per file: when the version matches, each file is fetched at its pinned S3 version, not the current one."""
    return f"{LKG_PREFIX}/{model}/{region}.pins"


TRACK_LABEL = "reco-dr/track"
# Resources that exist only while a canary is configured, per GPU pool (Deployment, PDB, HPA) and per region
# (Service, TargetGroupBinding): a promotion or rollback deletes exactly these (see canary_resource_count).
CANARY_PER_POOL = 3
CANARY_PER_REGION = 2


# What model_build publishes, by Triton model name (its directories in the version's repository): the TensorRT
# engines, the ONNX Runtime fallback, and the python-backend model the CPU rehearsal runs the ONNX file with.
def triton_models(model_name: str) -> dict[str, str]:
    return {"tensorrt": f"{model_name}_trt", "onnx": f"{model_name}_onnx", "python": f"{model_name}_py"}


def served_models(model_name: str, compute_capability: str, onnx_fallback_for: Sequence[str]) -> list[str]:
    """The Triton models a pod on a GPU of `compute_capability` loads: the TensorRT model, or the ONNX Runtime
    fallback where the stack declares that capability in `model.onnx_fallback_for` (an engine for it does not exist,
    so loading the TensorRT model there would fail the pod). Never the python-backend model."""
    names = triton_models(model_name)
    return [names["onnx"] if compute_capability in onnx_fallback_for else names["tensorrt"]]


def app_name(track: str = STABLE) -> str:
    """The track's pods' `app.kubernetes.io/name` and their Service's name: `triton`, `triton-canary`, or
    `triton-arm-<hash>` for an experiment arm's track (infra.arms.arm_track)."""
    return APP if track == STABLE else f"{APP}-{track}"


def canary_resource_count(pools: int) -> int:
    """Kubernetes objects a canary adds (and its removal deletes) in a region with `pools` GPU pools."""
    return CANARY_PER_POOL * pools + CANARY_PER_REGION


# ---------------------------------------------------------------- the load balancer
TRACK_HEADER = "X-Reco-Track"
# The drills' service probes name themselves (User-Agent), so load-balancer logs tell them from users' requests.
PROBE_USER_AGENT = "reco-dr-drill-probe"
# Listener rules of the HTTPS listener, by priority (lower is evaluated first; a request no rule matches gets the
# listener's default action, a fixed 404). The header pins, present only while a canary runs and only where the
# stack names the release tooling's addresses (`load_balancer.release_tooling_cidrs`), come first.
PIN_PRIORITY = {"canary": 10, "stable": 11}
# Any other request carrying TRACK_HEADER is refused (403): a public client cannot pick a version, and the release
# gates' pinned scoring fails loudly from an address that may not pin instead of scoring a weighted mix.
TRACK_GUARD_PRIORITY = 20
# A/B experiments (infra/experiments.py): the client library sets ARM_HEADER to `<experiment id>.<arm>` (the user's
# cell, `arm_header_value`); one listener rule per cell of a declared, not yet ended experiment forwards that
# header value on the inference paths to the target group of the cell's version, at ARM_PRIORITY_BASE + i (after
# the track pins and guard, before the deep-health rule and the edge routes). Unlike the track header it is not
# restricted to the release tooling: a client may only pick among the versions the experiment serves, and a value no
# rule names falls through to the ordinary routes (the stable version): a stale client is served, never refused.
ARM_HEADER = "X-Reco-Arm"
ARM_PRIORITY_BASE = 30
MAX_ARM_RULES = 50  # priorities 30..79, below the deep-health rule's 90


def arm_header_value(experiment_id: str, arm: str) -> str:
    return f"{experiment_id}.{arm}"


def arm_target_group_name(stack: str, version: str) -> str:
    """The target group of an arm's version other than the stable one: named by a hash of the version, as ELB names
    are at most 32 characters and a version up to 41."""
    return f"reco-dr-{stack}"[:23] + "-" + hashlib.sha256(version.encode()).hexdigest()[:8]


# AWS resources that exist only while a canary is configured, at most: its target group and the two header pins
# (canary_aws_resources: the pins only where release_tooling_cidrs is set).
CANARY_AWS_RESOURCES = 3
# The Triton models the load balancer forwards requests for (infra.names.triton_models kinds): the TensorRT model and
# the ONNX Runtime fallback. Never the python-backend model (the CPU rehearsal's), nor any other Triton endpoint.
EDGE_MODEL_KINDS = ("tensorrt", "onnx")


class EdgeRoute(NamedTuple):
    """One listener rule forwarding to Triton: requests with this method on one of these paths (ALB path patterns:
    case-sensitive, `*` is any run of characters) go to the target groups; everything else is answered 404."""

    priority: int
    method: str
    paths: tuple[str, ...]


def edge_routes(model_name: str) -> dict[str, EdgeRoute]:
    """The whole public surface of a region: Triton's readiness and liveness (GET, the Route 53 health check path
    among them), and for each served model of `model_name` its V2 inference (POST, with or without a version) and its
    metadata and readiness (GET: the signature a client builds its request from). Not the model configuration, the
    repository index or its load/unload, statistics, trace or logging settings, shared memory, nor gRPC."""
    models = triton_models(model_name)
    routes = {"health": EdgeRoute(100, "GET", (READY_PATH, LIVE_PATH))}
    for i, kind in enumerate(EDGE_MODEL_KINDS):
        m = models[kind]
        routes[f"infer-{kind}"] = EdgeRoute(
            110 + i, "POST", (f"/v2/models/{m}/infer", f"/v2/models/{m}/versions/*/infer")
        )
        routes[f"model-{kind}"] = EdgeRoute(120 + i, "GET", (f"/v2/models/{m}", f"/v2/models/{m}/ready"))
    return routes


def pin_paths(model_name: str) -> tuple[str, ...]:
    """The paths a header pin forwards: inference on each served model (what the release gates' scoring posts)."""
    models = triton_models(model_name)
    return tuple(f"/v2/models/{models[kind]}/infer" for kind in EDGE_MODEL_KINDS)


def canary_aws_resources(pins: bool) -> int:
    """AWS resources a canary adds (and its removal deletes): its target group, and the two pins if `pins`."""
    return 1 + (len(PIN_PRIORITY) if pins else 0)


def lb_name(stack: str) -> str:
    return f"reco-dr-{stack}"[:32]  # ELB names are at most 32 characters


def target_group_name(stack: str, track: str = STABLE) -> str:
    return f"reco-dr-{stack}-triton"[:32] if track == STABLE else f"reco-dr-{stack}-canary"[:32]
