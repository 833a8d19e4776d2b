"""Static facts the config is validated against: AWS regions, GPU instances, Triton releases.

Pure data, no Pulumi: model_build, drills and tests import it as freely as the program does.
"""

from __future__ import annotations

from dataclasses import dataclass

# Region name -> the short code used in stack names (`prod-use1`).
REGIONS: dict[str, str] = {
    "us-east-1": "use1",
    "us-east-2": "use2",
    "us-west-1": "usw1",
    "us-west-2": "usw2",
    "ca-central-1": "cac1",
    "eu-west-1": "euw1",
    "eu-west-2": "euw2",
    "eu-central-1": "euc1",
    "eu-north-1": "eun1",
    "ap-northeast-1": "apne1",
    "ap-southeast-1": "apse1",
    "ap-southeast-2": "apse2",
    "ap-south-1": "aps1",
    "sa-east-1": "sae1",
}
SHORT_TO_REGION: dict[str, str] = {v: k for k, v in REGIONS.items()}


@dataclass(frozen=True)
class GpuInstance:
    instance_type: str
    gpu_model: str
    gpus: int
    gpu_memory_gib: int  # per GPU
    compute_capability: str  # "major.minor", the key engines are built for


def _family(prefix: str, model: str, mem: int, cc: str, sizes: dict[str, int]) -> dict[str, GpuInstance]:
    return {f"{prefix}.{size}": GpuInstance(f"{prefix}.{size}", model, gpus, mem, cc) for size, gpus in sizes.items()}


_SINGLE_TO_OCTO = {
    "xlarge": 1,
    "2xlarge": 1,
    "4xlarge": 1,
    "8xlarge": 1,
    "16xlarge": 1,
    "12xlarge": 4,
    "24xlarge": 4,
    "48xlarge": 8,
}

# Published AWS instance specs (GPU model, count, memory per GPU) and NVIDIA compute capabilities.
GPU_INSTANCES: dict[str, GpuInstance] = {
    **_family("p5", "H100", 80, "9.0", {"48xlarge": 8}),
    **_family("p5e", "H200", 141, "9.0", {"48xlarge": 8}),
    **_family("p5en", "H200", 141, "9.0", {"48xlarge": 8}),
    **_family("p4d", "A100", 40, "8.0", {"24xlarge": 8}),
    **_family("p4de", "A100", 80, "8.0", {"24xlarge": 8}),
    **_family("g5", "A10G", 24, "8.6", _SINGLE_TO_OCTO),
    **_family("g6", "L4", 24, "8.9", _SINGLE_TO_OCTO),
    **_family("g6e", "L40S", 48, "8.9", _SINGLE_TO_OCTO),
}

# Instance types of the CPU system node group (CoreDNS, the cluster autoscaler, the load balancer controller, the
# Prometheus stack). Its nodes run the AL2023_x86_64_STANDARD AMI (infra/components/cluster.py), so x86_64 only:
# current general-purpose (m), compute (c) and memory (r) families, large to 4xlarge.
SYSTEM_INSTANCE_TYPES: frozenset[str] = frozenset(
    f"{family}.{size}"
    for family in ("m5", "m6i", "m6a", "m7i", "m7a", "c6i", "c7i", "r6i", "r7i")
    for size in ("large", "xlarge", "2xlarge", "4xlarge")
)

# Kubernetes versions EKS offers in standard support that this program is tested with (the cluster autoscaler's
# image tag follows the version: infra/components/addons.py). A version leaves this set when EKS ends its
# standard support; one enters it when the program has been planned and rehearsed with it.
KUBERNETES_VERSIONS: tuple[str, ...] = ("1.31", "1.32", "1.33")

# Triton container release -> the TensorRT version it ships (NVIDIA framework support matrix).
# An engine only deserialises on the TensorRT version that built it, so this pairing is an invariant.
TRITON_RELEASES: dict[str, dict[str, str]] = {
    "24.10": {"triton": "2.51.0", "tensorrt": "10.5.0"},
    "24.12": {"triton": "2.53.0", "tensorrt": "10.7.0"},
    "25.01": {"triton": "2.54.0", "tensorrt": "10.8.0"},
}
