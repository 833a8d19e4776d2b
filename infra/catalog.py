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


# ---------------------------------------------------------------- prices and start-up times (infra.postures)
@dataclass(frozen=True)
class OnDemandPrice:
    usd_per_hour: float
    checked: bool  # True: cross-checked against a published source when this table was written (PRICES_SOURCE)


# EC2 On-Demand, Linux, us-east-1, USD per instance-hour, as published on AWS's EC2 On-Demand pricing page
# (aws.amazon.com/ec2/pricing/on-demand/), P4d/P5 after AWS's June 2025 price reduction. Written on 2026-12-05 from
# the figures as last published to the author's knowledge, NOT re-read from AWS on that date: the search available
# then confirmed only g5.xlarge ($1.006/h, a June 2026 page quoting AWS); every other figure is unverified and
# marked so (`checked`), and p4de/p5e/p5en are left out rather than guessed. Other regions cost more (eu-west-1
# about 10-15%); an ODCR bills at these rates whether used or not. Re-check before budgeting:
# `aws pricing get-products --service-code AmazonEC2 --region us-east-1`.
PRICES_SOURCE = (
    "AWS EC2 On-Demand, Linux, us-east-1 (aws.amazon.com/ec2/pricing/on-demand/), as published to the best of our "
    "knowledge on 2026-12-05; only g5.xlarge cross-checked, the rest unverified (~)"
)
PRICES: dict[str, OnDemandPrice] = {
    "p5.48xlarge": OnDemandPrice(55.04, False),
    "p4d.24xlarge": OnDemandPrice(21.96, False),
    "g5.xlarge": OnDemandPrice(1.006, True),
    "g5.2xlarge": OnDemandPrice(1.212, False),
    "g5.4xlarge": OnDemandPrice(1.624, False),
    "g5.8xlarge": OnDemandPrice(2.448, False),
    "g5.12xlarge": OnDemandPrice(5.672, False),
    "g5.16xlarge": OnDemandPrice(4.096, False),
    "g5.24xlarge": OnDemandPrice(8.144, False),
    "g5.48xlarge": OnDemandPrice(16.288, False),
    "g6.xlarge": OnDemandPrice(0.8048, False),
    "g6.2xlarge": OnDemandPrice(0.9776, False),
    "g6.4xlarge": OnDemandPrice(1.3232, False),
    "g6.8xlarge": OnDemandPrice(2.0144, False),
    "g6.12xlarge": OnDemandPrice(4.6016, False),
    "g6.16xlarge": OnDemandPrice(3.3968, False),
    "g6.24xlarge": OnDemandPrice(6.6752, False),
    "g6.48xlarge": OnDemandPrice(13.3504, False),
    "g6e.xlarge": OnDemandPrice(1.861, False),
    "g6e.2xlarge": OnDemandPrice(2.24208, False),
    "g6e.4xlarge": OnDemandPrice(3.00424, False),
    "g6e.8xlarge": OnDemandPrice(4.52856, False),
    "g6e.12xlarge": OnDemandPrice(10.49264, False),
    "g6e.16xlarge": OnDemandPrice(7.57719, False),
    "g6e.24xlarge": OnDemandPrice(15.06559, False),
    "g6e.48xlarge": OnDemandPrice(30.13118, False),
}
HOURS_PER_MONTH = 730  # AWS's own monthly figure (8,760 h / 12)


@dataclass(frozen=True)
class StartupPart:
    name: str
    seconds: float
    source: str  # where the figure comes from, or the assumption it is


# The capacity part of RTO: from "the autoscaler asks for a node" to "a new pod answers a good inference". Stated
# figures, not measurements of this fleet: the rehearsal and the drills measure the real ones (issue 18's
# time-to-first-inference parts). Replace a figure with a measured one once a drill has it.
CAPACITY_STARTUP: tuple[StartupPart, ...] = (
    StartupPart(
        "node boot",
        150,
        "assumption: EC2 launch + AL2023 NVIDIA AMI boot + kubelet join + device plugin advertising GPUs; "
        "EKS documents no figure, 2-3 min is typical for GPU instances",
    ),
    StartupPart(
        "image pull",
        180,
        "assumption: the Triton image (~15 GiB unpacked, infra/components/gpu_pools.py GPU_DISK_GIB) at ~50-100 MB/s "
        "from the registry to a gp3 root volume; 0 where the image is pre-pulled",
    ),
    StartupPart(
        "model fetch+verify",
        30,
        "assumption: model repository (ONNX + engines, a few hundred MB) from the region's S3 bucket, sha256 checked",
    ),
    StartupPart("Triton load", 30, "assumption: TensorRT engine deserialisation and model load, per Triton's log"),
    StartupPart("warm-up", 20, "assumption: Triton model_warmup samples before /v2/health/ready turns ready"),
)

# What a node beyond the pool's guaranteed capacity (no reservation covers it) waits before EC2 has one, during a
# regional event, when every tenant of the lost region asks the survivors for the same GPUs. AWS states no bound: an
# On-Demand launch fails with InsufficientInstanceCapacity until capacity frees up, and the autoscaler retries.
# A figure for the rehearsal and the postures, to show what a reservation takes out of the RTO; not a measurement.
INSUFFICIENT_CAPACITY_WAIT = StartupPart(
    "EC2 capacity",
    600,
    "assumption: InsufficientInstanceCapacity retries until EC2 has the GPU instance; AWS states no bound "
    "(0 for a node a reservation or Capacity Block covers)",
)
# How often the autoscaler looks at the load: the HPA's sync period (kube-controller-manager
# --horizontal-pod-autoscaler-sync-period, default 15 s); its pending pods then ask for nodes at once.
AUTOSCALER_SYNC_S = 15.0
