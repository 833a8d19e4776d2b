"""Names, labels, headers, ports and counts that the Pulumi components declare and the drills address, in one
Pulumi-free module: drills import these, never a component (which would pull in the Pulumi SDK and providers)."""

from __future__ import annotations

# ---------------------------------------------------------------- Triton on Kubernetes
NAMESPACE = "triton"
SERVICE_ACCOUNT = "triton"
APP = "triton"
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
LIVE_PATH = "/v2/health/live"
READY_PATH = "/v2/health/ready"
STABLE, CANARY = "stable", "canary"
TRACK_LABEL = "reco-dr/track"
# Resources that exist only while a canary is configured, per GPU pool (Deployment, PDB, HPA) and per region
# (Service, TargetGroupBinding): a promotion or rollback deletes exactly these (see canary_resource_count).
CANARY_PER_POOL = 3
CANARY_PER_REGION = 2


def app_name(track: str = STABLE) -> str:
    return APP if track == STABLE else f"{APP}-{CANARY}"


def canary_resource_count(pools: int) -> int:
    """Kubernetes objects a canary adds (and its removal deletes) in a region with `pools` GPU pools."""
    return CANARY_PER_POOL * pools + CANARY_PER_REGION


# ---------------------------------------------------------------- the load balancer
TRACK_HEADER = "X-Reco-Track"
# Listener rule priorities of the header pins (lower is evaluated first; nothing else uses rules here).
PIN_PRIORITY = {"canary": 10, "stable": 11}
# AWS resources that exist only while a canary is configured: its target group and the two header pins.
CANARY_AWS_RESOURCES = 3


def lb_name(stack: str) -> str:
    return f"reco-dr-{stack}"[:32]  # ELB names are at most 32 characters


def target_group_name(stack: str, track: str = STABLE) -> str:
    return f"reco-dr-{stack}-triton"[:32] if track == STABLE else f"reco-dr-{stack}-canary"[:32]
