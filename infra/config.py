"""Typed stack configuration: the one description of the fleet.

Every stack file `stacks/Pulumi.<stack>.yaml` holds keys in the `reco-dr:` namespace. The same pydantic
schema validates them inside the Pulumi program (`from_pulumi`) and from plain Python (`load_stack`,
`load_fleet`), so model_build, drills and tests read exactly what `pulumi up` reads. Nothing here declares
resources: a bad config raises `ConfigError` before the program touches a provider.

Validation is strict throughout: no value is coerced (a string or a boolean is not a number, `"40"` and `true`
are refused where an integer is expected), NaN and infinity are refused in every float, and a YAML list is the
only input a tuple field accepts. Stack files are read with a YAML loader that refuses anchors, aliases and
repeated keys while composing, before anything is constructed (`read_stack_file`).

Patterns: `Field(pattern=...)` runs in pydantic-core's Rust regex engine, where `$` is the end of the text (a
trailing newline does not match); the Python `re` patterns below are applied with `fullmatch`, never `match` with
`$` (which accepts a trailing newline). tests/infra/test_config_refusals.py holds every one of them to that.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from infra.catalog import (
    GPU_INSTANCES,
    KUBERNETES_VERSIONS,
    REGIONS,
    SHORT_TO_REGION,
    SYSTEM_INSTANCE_TYPES,
    TRITON_RELEASES,
    GpuInstance,
)
from infra.experiments import Experiment, ExperimentConfigError, parse_experiments
from infra.names import EDGE_MODEL_KINDS, GITHUB_OIDC_ISSUER, edge_routes
from infra.schema import Items, Strict

PROJECT = "reco-dr"
ROOT = Path(__file__).resolve().parent.parent
STACKS_DIR = ROOT / "stacks"

# The namespaces a key under a stack file's `config:` may use (`<namespace>:<name>`). A key in any other namespace
# would reach no code: a typo such as `reco_dr:vpc_cidr` is silently ignored by the engine, and so is a provider
# namespace such as `aws:region`, because no resource uses a default provider (`pulumi:disable-default-providers`)
# and explicit providers do not read stack config: regions come from `reco-dr:region` / `reco-dr:control_region`.
# These are exactly the namespaces the shipped stacks use; a new one is added here, with its reason.
#
#   namespace   what reads it
#   reco-dr     this program: every key is validated by the schema below (an unknown name is a typo, refused)
#   pulumi      the Pulumi engine's own settings (`pulumi:disable-default-providers` in every stack)
NAMESPACES: dict[str, str] = {
    PROJECT: "this program's keys, validated by infra/config.py",
    "pulumi": "the Pulumi engine's own settings",
}

# The most nodes one GPU pool may scale to. A pool's max is the spend the cluster autoscaler may reach unattended
# (a p5.48xlarge node is 8 H100s); the largest shipped pool has max 6, so a max above this bound is far more
# likely a typo (60 for 6) than a plan. Raising it is a reviewed change of this constant, not a stack edit.
MAX_GPU_POOL_NODES = 32

# An ALB listener rule holds at most five match evaluations (the values of all its conditions together). A header pin
# (infra/components/load_balancer.py) holds the header's value, one inference path per served model
# (infra.names.pin_paths) and the release tooling's source blocks: what is left bounds release_tooling_cidrs.
ALB_RULE_EVALUATIONS = 5
MAX_RELEASE_TOOLING_CIDRS = ALB_RULE_EVALUATIONS - 1 - len(EDGE_MODEL_KINDS)
# EKS accepts at most 40 CIDR blocks in a cluster's publicAccessCidrs (service quota, not adjustable).
MAX_PUBLIC_ACCESS_CIDRS = 40

_MISSING = object()  # marks a required key that is absent


class ConfigError(Exception):
    """A config value broke a rule. Carries what a user needs to fix it, never a traceback.

    `key` is a path under the `reco-dr:` namespace (`gpu_pools[0].max`), shown with the namespace; with
    `as_written` it is shown as the stack file spells it (a key in another namespace, a YAML path, `(file)`)."""

    def __init__(self, stack: str, key: str, value: Any, rule: str, *, as_written: bool = False):
        self.stack, self.key, self.value, self.rule = stack, key, value, rule
        shown = "is missing" if value is _MISSING else f"= {value!r}"
        super().__init__(f"stack {stack}: {key if as_written else f'{PROJECT}:{key}'} {shown}: {rule}")


class _SubKeyRule(ValueError):
    """A rule that spans fields, broken by `key` below the field being validated: `parse` reports that key and its
    value (`health_alarms.latency_ms = 300`) instead of the whole block the validator was given."""

    def __init__(self, key: str, value: Any, rule: str):
        self.key, self.value, self.rule = key, value, rule
        super().__init__(rule)


def _supported_region(v: str) -> str:
    if v not in REGIONS:
        raise ValueError(f"rule: one of the supported AWS regions {sorted(REGIONS)}")
    return v


# A region the catalog supports: a regional stack's, the global stack's control_region, the CI identity's.
AwsRegion = Annotated[str, AfterValidator(_supported_region)]


def _ipv4_cidr(v: str) -> ipaddress.IPv4Network:
    """`v` as an IPv4 network, or ValueError with the rule: a CIDR block without host bits, IPv4."""
    try:
        net = ipaddress.ip_network(v)
    except ValueError:
        raise ValueError(
            f"rule: an IPv4 CIDR block such as 10.10.0.0/16 (address/prefix, no host bits set); {v!r} is not one"
        ) from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise ValueError(f"rule: an IPv4 CIDR block; {v} is an IPv6 range (this field is IPv4 only)")
    return net


# ---------------------------------------------------------------- regional stack
class NodePool(Strict):
    instance_type: str
    min: int = Field(ge=0)
    desired: int = Field(ge=0)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> NodePool:
        if not self.min <= self.desired <= self.max:
            raise ValueError(
                f"rule: min <= desired <= max (got min {self.min}, desired {self.desired}, max {self.max})"
            )
        return self


class SystemPool(NodePool):
    """The CPU node group of cluster services (AL2023_x86_64_STANDARD AMI)."""

    @field_validator("instance_type")
    @classmethod
    def _in_catalog(cls, v: str) -> str:
        if v not in SYSTEM_INSTANCE_TYPES:
            families = ", ".join(sorted({t.split(".")[0] for t in SYSTEM_INSTANCE_TYPES}))
            raise ValueError(
                "rule: a system pool instance type from infra/catalog.py SYSTEM_INSTANCE_TYPES "
                f"(x86_64 families {families}; sizes large to 4xlarge)"
            )
        return v


_RESERVATION_ID = re.compile(r"cr-[0-9a-f]{17}")
_RESERVATION_GROUP = re.compile(r"arn:aws:resource-groups:[a-z0-9-]+:\d{12}:group/[A-Za-z0-9._-]{1,128}")
_AZ = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d[a-z]")
_END_DATE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


class CapacityGuarantee(Strict):
    """EC2 capacity a GPU pool can count on beyond its running nodes (infra/capacity.py counts it as guaranteed).

    kind `none`: nothing reserved. `odcr`: an On-Demand Capacity Reservation of `instances` nodes, either an
    existing one (`reservation_id` cr-..., or `reservation_group_arn`, a resource group of reservations) or one the
    stack creates in `availability_zone`. `capacity-block`: an EC2 Capacity Block for ML (`reservation_id`,
    `instances`, `end_date` in UTC); it guarantees nothing after its end. The pool's launch template targets the
    reservation (infra/components/gpu_pools.py)."""

    kind: Literal["none", "odcr", "capacity-block"] = "none"
    reservation_id: str | None = None
    reservation_group_arn: str | None = None
    availability_zone: str | None = None
    instances: int = Field(default=0, ge=0)
    end_date: str | None = None

    @field_validator("reservation_id")
    @classmethod
    def _reservation_id(cls, v: str | None) -> str | None:
        if v is not None and not _RESERVATION_ID.fullmatch(v):
            raise ValueError("rule: a capacity reservation id, cr- and 17 hex digits")
        return v

    @field_validator("reservation_group_arn")
    @classmethod
    def _group_arn(cls, v: str | None) -> str | None:
        if v is not None and not _RESERVATION_GROUP.fullmatch(v):
            raise ValueError(
                "rule: a resource group ARN holding capacity reservations "
                "(arn:aws:resource-groups:<region>:<account>:group/<name>)"
            )
        return v

    @field_validator("availability_zone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None and not _AZ.fullmatch(v):
            raise ValueError("rule: an availability zone name such as us-east-1a")
        return v

    @field_validator("end_date")
    @classmethod
    def _end(cls, v: str | None) -> str | None:
        if v is not None and not _END_DATE.fullmatch(v):
            raise ValueError('rule: a UTC time written YYYY-MM-DDTHH:MM:SSZ, quoted ("2026-03-01T11:30:00Z")')
        return v

    @model_validator(mode="after")
    def _complete(self) -> CapacityGuarantee:
        targets = {
            k: v
            for k, v in (
                ("reservation_id", self.reservation_id),
                ("reservation_group_arn", self.reservation_group_arn),
                ("availability_zone", self.availability_zone),
            )
            if v is not None
        }
        if self.kind == "none":
            extra = [*targets, *(["instances"] if self.instances else []), *(["end_date"] if self.end_date else [])]
            if extra:
                raise ValueError(f"rule: capacity.kind none takes no other key (got {sorted(extra)})")
            return self
        if self.instances < 1:
            raise ValueError(f"rule: capacity.kind {self.kind} needs instances >= 1 (the nodes it guarantees)")
        if self.kind == "odcr":
            if len(targets) != 1:
                raise ValueError(
                    "rule: capacity.kind odcr needs exactly one of reservation_id, reservation_group_arn or "
                    f"availability_zone (the stack creates the reservation there); got {sorted(targets) or 'none'}"
                )
            if self.end_date is not None:
                raise ValueError("rule: end_date is for capacity-block; a reservation the stack holds has no end")
        elif set(targets) != {"reservation_id"} or self.end_date is None:
            raise ValueError(
                "rule: capacity.kind capacity-block needs reservation_id and end_date (and no "
                "reservation_group_arn or availability_zone: a Capacity Block is bought, not created by the stack)"
            )
        return self

    @property
    def creates(self) -> bool:
        """The stack declares the reservation itself (aws.ec2.CapacityReservation)."""
        return self.kind == "odcr" and self.availability_zone is not None


class GpuPool(NodePool):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,30}$")
    ami_type: Literal["AL2023_x86_64_NVIDIA", "BOTTLEROCKET_x86_64_NVIDIA"] = "AL2023_x86_64_NVIDIA"
    capacity_type: Literal["ON_DEMAND", "SPOT"] = "ON_DEMAND"
    capacity: CapacityGuarantee = CapacityGuarantee()

    @model_validator(mode="after")
    def _reservation_fits(self) -> GpuPool:
        c = self.capacity
        if c.kind != "none" and self.capacity_type != "ON_DEMAND":
            raise ValueError(
                f"rule: capacity.kind {c.kind} reserves On-Demand capacity; a SPOT pool cannot use it "
                "(capacity_type ON_DEMAND)"
            )
        if c.instances > self.max:
            raise ValueError(
                f"rule: capacity.instances {c.instances} <= max {self.max}: the pool never launches the rest, "
                "which would be paid for and unused"
            )
        return self

    @field_validator("instance_type")
    @classmethod
    def _has_gpus(cls, v: str) -> str:
        if v not in GPU_INSTANCES:
            known = ", ".join(sorted({t.split(".")[0] for t in GPU_INSTANCES}))
            raise ValueError(f"rule: a GPU pool needs a GPU instance type from the catalog (families: {known})")
        return v

    @field_validator("max")
    @classmethod
    def _bounded(cls, v: int) -> int:
        if v > MAX_GPU_POOL_NODES:
            raise ValueError(
                f"rule: a GPU pool scales to at most MAX_GPU_POOL_NODES = {MAX_GPU_POOL_NODES} nodes "
                "(infra/config.py: the spend the autoscaler may reach unattended)"
            )
        return v

    @property
    def gpu(self) -> GpuInstance:
        return GPU_INSTANCES[self.instance_type]

    @property
    def device_plugin_needed(self) -> bool:
        # AL2023 NVIDIA AMIs ship the NVIDIA driver but not the Kubernetes device plugin;
        # Bottlerocket NVIDIA variants run the device plugin themselves.
        return self.ami_type.startswith("AL2023")


_IMAGE = re.compile(r"(?P<repo>[a-z0-9.\-/:]+?)(?::(?P<tag>[\w.\-]+))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?")


class Triton(Strict):
    image: str
    tensorrt_version: str | None = None  # required when the image's release is not in the catalog
    min_replicas: int = Field(default=2, ge=1)
    max_replicas: int = Field(default=8, ge=1)
    max_batch_size: int = Field(default=4096, ge=1, le=65536)
    target_gpu_utilization: int = Field(default=70, ge=10, le=95)

    @field_validator("image")
    @classmethod
    def _pinned(cls, v: str) -> str:
        m = _IMAGE.fullmatch(v)
        if not m or not (m["digest"] or (m["tag"] and m["tag"] != "latest")):
            raise ValueError("rule: the Triton image must be pinned by a version tag (not 'latest') or a sha256 digest")
        return v

    @property
    def release(self) -> str | None:
        m = re.search(r":(\d\d\.\d\d)", self.image)
        return m[1] if m else None

    @property
    def tensorrt(self) -> str:
        if self.tensorrt_version:
            return self.tensorrt_version
        return TRITON_RELEASES[self.release]["tensorrt"]  # type: ignore[index]  # _trt_known: release is known here

    @model_validator(mode="after")
    def _trt_known(self) -> Triton:
        if self.tensorrt_version is None and self.release not in TRITON_RELEASES:
            raise ValueError(
                f"rule: set triton.tensorrt_version, the image's release is not one of {sorted(TRITON_RELEASES)}"
            )
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"rule: min_replicas <= max_replicas (got {self.min_replicas} > {self.max_replicas})")
        return self


_VERSION = r"^[0-9A-Za-z][0-9A-Za-z.\-]{0,40}$"
MODEL_VERSION = _VERSION  # what a model version may be: stack config and the release tooling check the same rule
_PEM_PUBLIC = re.compile(r"-----BEGIN PUBLIC KEY-----\n[A-Za-z0-9+/=\n]+-----END PUBLIC KEY-----\n?")


class KeySigner(Strict):
    """Releases signed with one key (model_build's offline signing): its public half, PEM (public, so safe here)."""

    kind: Literal["key"]
    public_key: str

    @field_validator("public_key")
    @classmethod
    def _pem(cls, v: str) -> str:
        if not _PEM_PUBLIC.fullmatch(v.strip() + "\n"):
            raise ValueError("rule: a PEM public key (-----BEGIN PUBLIC KEY----- ... -----END PUBLIC KEY-----)")
        return v


class SigstoreSigner(Strict):
    """Keyless Sigstore signing, bound to the build workflow's OIDC identity: the AWS path (no key to keep)."""

    kind: Literal["sigstore"]
    # The certificate's subject: for GitHub Actions the workflow file at a ref.
    identity: str = Field(pattern=r"^https://\S+$")
    issuer: str = Field(default=GITHUB_OIDC_ISSUER, pattern=r"^https://\S+$")


Signer = Annotated[KeySigner | SigstoreSigner, Field(discriminator="kind")]


class Model(Strict):
    name: str = Field(default="ranker", pattern=r"^[a-z][a-z0-9_]{0,40}$")
    # The stable version: what the region serves (and what every drill, capacity check and rollback reads).
    version: str = Field(pattern=_VERSION)
    # Compute capabilities served by the ONNX Runtime model instead of a TensorRT engine, on purpose.
    onnx_fallback_for: Items[str] = ()
    # Gray release: a second set of Triton Deployments serving `canary_version` beside the stable one, with
    # `canary_weight` percent of the region's traffic on the load balancer (weighted target groups). A release
    # step is a change of these two keys plus `pulumi up`; promotion sets `version` and clears them.
    canary_version: str | None = Field(default=None, pattern=_VERSION)
    canary_weight: int = Field(default=0, ge=0, le=100)
    # Supply chain: who must have signed a release (model_build.signing) and, per version, the sha256 of its
    # manifest.json. A pod serves a version only when its manifest has this digest, and the manifest lists every
    # file's sha256: a writer of the bucket cannot swap model and manifest together.
    signer: Signer
    digests: dict[Annotated[str, Field(pattern=_VERSION)], Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]]

    @field_validator("canary_version", mode="before")
    @classmethod
    def _no_canary(cls, v: Any) -> Any:
        # "" is how stack config says "no canary": `pulumi config set --path` cannot store a null, and a release's
        # rollback must write back exactly what it read.
        return None if v in ("", None) else v

    @model_validator(mode="after")
    def _canary(self) -> Model:
        if self.canary_weight and self.canary_version is None:
            raise ValueError(
                f"rule: canary_weight {self.canary_weight} needs canary_version (the version the canary serves)"
            )
        if self.canary_version is not None and self.canary_version == self.version:
            raise ValueError(f"rule: canary_version must differ from version {self.version!r} (the stable version)")
        unpinned = [v for v in (self.version, self.canary_version) if v is not None and v not in self.digests]
        if unpinned:
            raise ValueError(
                f"rule: digests must pin the manifest sha256 of every served version; {unpinned} not in "
                f"{sorted(self.digests)} (`python -m model_build verify DIR` prints a release's digest)"
            )
        return self

    def digest(self, version: str) -> str | None:
        return self.digests.get(version)


_CERT = re.compile(r"arn:aws:acm:(?P<region>[a-z0-9-]+):\d{12}:certificate/[0-9a-f-]{36}")


def _unique_blocks(v: tuple[str, ...]) -> list[ipaddress.IPv4Network]:
    """`v` as IPv4 networks (each a CIDR block without host bits), each block once."""
    nets: list[ipaddress.IPv4Network] = []
    for cidr in v:
        net = _ipv4_cidr(cidr)
        if net in nets:
            raise ValueError(f"rule: each CIDR block once; {cidr} is listed twice")
        nets.append(net)
    return nets


class Waf(Strict):
    """AWS WAF on the region's load balancer: AWS managed rule groups and a rate-based rule per client address.
    Off unless a stack turns it on: WAF charges per request, at the ranker's request rate (prod peaks at 150,000
    per second) that is a budget decision, and a per-address limit must be sized for callers behind one NAT."""

    enabled: bool = False
    # Requests one client address may send in any 5 minutes before WAF blocks it. No default: a backend calling the
    # ranker from one NAT address carries many users' requests, so only the stack knows its callers' rate.
    rate_limit_per_5min: int | None = Field(default=None, ge=10, le=2_000_000_000)  # AWS WAF's bounds

    @model_validator(mode="after")
    def _limit(self) -> Waf:
        if self.enabled and self.rate_limit_per_5min is None:
            raise ValueError(
                "rule: waf.enabled needs rate_limit_per_5min (requests one client address may send in 5 minutes "
                "before WAF blocks it; size it above your busiest caller's rate, a backend's NAT address included)"
            )
        return self


class LoadBalancer(Strict):
    certificate_arn: str
    ssl_policy: str = "ELBSecurityPolicy-TLS13-1-2-2021-06"
    # Sources of the HTTPS listener's ingress rules (security group `cidrIpv4`): IPv4 only. Required, no default: a
    # stack says who its clients are (0.0.0.0/0 for a public endpoint, written out). The Route 53 health checkers
    # reach the listener too, from AWS's published ranges: a narrowed list must keep them, or every check fails.
    allowed_cidrs: Items[str]
    # Where the release tooling's requests come from (its runner's or VPN's egress): the only sources whose
    # X-Reco-Track header pins a version. Empty (the default): no pins; the header is refused from everyone.
    release_tooling_cidrs: Items[str] = ()
    waf: Waf = Waf()

    @field_validator("certificate_arn")
    @classmethod
    def _arn(cls, v: str) -> str:
        if not _CERT.fullmatch(v):
            raise ValueError("rule: an ACM certificate ARN (arn:aws:acm:<region>:<account>:certificate/<uuid>)")
        return v

    @field_validator("allowed_cidrs")
    @classmethod
    def _cidrs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError(
                "rule: at least one IPv4 CIDR block; an empty list closes the listener to every client "
                "(0.0.0.0/0 opens it to all)"
            )
        for cidr in v:
            _ipv4_cidr(cidr)
        return v

    @field_validator("release_tooling_cidrs")
    @classmethod
    def _tooling(cls, v: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if len(v) > MAX_RELEASE_TOOLING_CIDRS:
            raise ValueError(
                f"rule: at most {MAX_RELEASE_TOOLING_CIDRS} CIDR blocks (an ALB listener rule holds "
                f"{ALB_RULE_EVALUATIONS} match evaluations: a pin spends one on the header and "
                f"{len(EDGE_MODEL_KINDS)} on the inference paths)"
            )
        nets = _unique_blocks(v)
        for net in nets:
            if net.prefixlen < 16:
                raise ValueError(
                    f"rule: the release tooling's egress addresses, a /16 or narrower; {net} would let a large part "
                    "of the internet pin a model version"
                )
        allowed = info.data.get("allowed_cidrs")
        if allowed is not None:
            outside = [str(n) for n in nets if not any(n.subnet_of(_ipv4_cidr(a)) for a in allowed)]
            if outside:
                raise ValueError(
                    f"rule: inside allowed_cidrs {list(allowed)}: the load balancer's security group drops "
                    f"{', '.join(outside)} before any listener rule sees it"
                )
        return v


class ClusterAccess(Strict):
    """Who reaches the EKS API server. The private endpoint is always on (nodes, and anything inside the VPC); the
    public one only for the blocks listed here. Empty (the default): no public endpoint at all."""

    # `pulumi up` (its Kubernetes provider) and the drills (drills/adapters/kube.py) call the API server from
    # wherever they run: outside the VPC, their egress must be listed here.
    endpoint_public_access_cidrs: Items[str] = ()

    @field_validator("endpoint_public_access_cidrs")
    @classmethod
    def _public(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(v) > MAX_PUBLIC_ACCESS_CIDRS:
            raise ValueError(f"rule: at most {MAX_PUBLIC_ACCESS_CIDRS} CIDR blocks (the EKS quota per cluster)")
        for net in _unique_blocks(v):
            if net.prefixlen and not net.is_global:
                raise ValueError(
                    f"rule: public IPv4 blocks; {net} is a private or reserved range, which EKS refuses in "
                    "publicAccessCidrs (clients inside the VPC reach the private endpoint without being listed)"
                )
        return v


class RegionConfig(Strict):
    role: Literal["region"]
    env: str = Field(pattern=r"^[a-z][a-z0-9]{1,15}$")
    region: AwsRegion
    vpc_cidr: str
    service_cidr: str = "172.20.0.0/16"
    kubernetes_version: str = "1.33"
    system_pool: SystemPool
    gpu_pools: Items[GpuPool] = Field(min_length=1)
    triton: Triton
    model: Model
    load_balancer: LoadBalancer
    cluster: ClusterAccess = ClusterAccess()
    artifact_noncurrent_days: int = Field(default=30, ge=1, le=3650)

    @field_validator("kubernetes_version")
    @classmethod
    def _supported_version(cls, v: str) -> str:
        if v not in KUBERNETES_VERSIONS:
            raise ValueError(
                f"rule: one of the supported EKS versions {list(KUBERNETES_VERSIONS)} (infra/catalog.py, quoted)"
            )
        return v

    @field_validator("vpc_cidr", "service_cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        net = _ipv4_cidr(v)
        if not (net.is_private and 16 <= net.prefixlen <= 20):
            raise ValueError("rule: a private IPv4 block from /16 to /20")
        return v

    @field_validator("service_cidr")
    @classmethod
    def _no_overlap(cls, v: str, info: ValidationInfo) -> str:
        vpc = info.data.get("vpc_cidr")
        if vpc and ipaddress.ip_network(vpc).overlaps(ipaddress.ip_network(v)):
            raise ValueError(f"rule: the Kubernetes service CIDR must not overlap vpc_cidr {vpc}")
        return v

    @field_validator("gpu_pools")
    @classmethod
    def _unique_pools(cls, v: tuple[GpuPool, ...]) -> tuple[GpuPool, ...]:
        names = [p.name for p in v]
        if len(set(names)) != len(names):
            raise ValueError(f"rule: GPU pool names must be unique (got {names})")
        return v

    @field_validator("gpu_pools")
    @classmethod
    def _reservations_in_region(cls, v: tuple[GpuPool, ...], info: ValidationInfo) -> tuple[GpuPool, ...]:
        region = info.data.get("region")
        for p in v:
            az = p.capacity.availability_zone
            if region and az is not None and not (az.startswith(region) and len(az) == len(region) + 1):
                raise ValueError(f"rule: {p.name}.capacity.availability_zone {az} must be a zone of {region}")
        return v

    @field_validator("load_balancer")
    @classmethod
    def _cert_in_region(cls, v: LoadBalancer, info: ValidationInfo) -> LoadBalancer:
        m = _CERT.fullmatch(v.certificate_arn)
        assert m is not None, "LoadBalancer._arn already checked certificate_arn"
        cert_region = m["region"]
        if info.data.get("region") and cert_region != info.data["region"]:
            raise ValueError(
                f"rule: certificate_arn must be an ACM certificate in {info.data['region']}, not {cert_region}"
            )
        return v

    @property
    def short(self) -> str:
        return REGIONS[self.region]

    @property
    def compute_capabilities(self) -> list[str]:
        return sorted({p.gpu.compute_capability for p in self.gpu_pools})


# ---------------------------------------------------------------- global stack
class RegionRoute(Strict):
    weight: int | None = Field(default=None, ge=0, le=255)  # Route 53's weight range
    failover: Literal["PRIMARY", "SECONDARY"] | None = None


class Routing(Strict):
    mode: Literal["weighted", "failover"]
    regions: dict[str, RegionRoute] = Field(min_length=1)

    @model_validator(mode="after")
    def _mode_rules(self) -> Routing:
        for name in self.regions:
            if name not in REGIONS:
                raise ValueError(
                    f"rule: routing.regions keys are AWS regions; {name!r} is not one of {sorted(REGIONS)}"
                )
        if self.mode == "weighted":
            missing = [r for r, v in self.regions.items() if v.weight is None or v.failover is not None]
            if missing:
                raise ValueError(
                    f"rule: weighted mode needs a weight (and no failover role) on every region; see {missing}"
                )
            if not any(v.weight for v in self.regions.values()):
                raise ValueError("rule: at least one region must have a weight > 0, or nothing is served")
        else:
            bad = [r for r, v in self.regions.items() if v.failover is None or v.weight is not None]
            if bad:
                raise ValueError(
                    "rule: failover mode needs failover PRIMARY or SECONDARY (and no weight) on every region; "
                    f"see {bad}"
                )
            roles = [v.failover for v in self.regions.values()]
            if roles.count("PRIMARY") != 1:
                prim = [r for r, v in self.regions.items() if v.failover == "PRIMARY"]
                raise ValueError(f"rule: failover mode needs exactly one PRIMARY region (got {prim or 'none'})")
            if roles.count("SECONDARY") != 1:
                raise ValueError("rule: Route 53 allows exactly one SECONDARY record per name in failover mode")
        return self

    def weights(self) -> dict[str, int]:
        """Effective share weights: in failover mode the primary carries everything while healthy."""
        if self.mode == "weighted":
            return {r: v.weight or 0 for r, v in self.regions.items()}
        return {r: (1 if v.failover == "PRIMARY" else 0) for r, v in self.regions.items()}


class HealthCheck(Strict):
    path: str = "/v2/health/ready"
    port: int = 443
    request_interval: Literal[10, 30] = 10  # Route 53 accepts only these
    failure_threshold: int = Field(default=3, ge=1, le=10)

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not re.fullmatch(r"/\S{0,254}", v):
            raise ValueError("rule: an HTTP path starting with / (Route 53 ResourcePath: no spaces, 255 characters)")
        return v

    @field_validator("port")
    @classmethod
    def _port(cls, v: int) -> int:
        if not 1 <= v <= 65535:
            raise ValueError("rule: a TCP port from 1 to 65535")
        return v


# CloudWatch evaluates an alarm over at most one day of periods (period x evaluation periods).
CLOUDWATCH_EVALUATION_SECONDS = 86_400


class HealthAlarms(Strict):
    """The CloudWatch alarms on each region's load balancer that its Route 53 metric checks follow (infra/health.py):
    the 5xx ratio above `error_ratio`, and the mean target response time above `latency_ms`.

    M of N, with hysteresis: an alarm goes to ALARM when `datapoints_to_alarm` of the last `evaluation_periods`
    periods breach, and back to OK only when none of them does. With the defaults (1 of 2 one-minute periods) the
    first bad minute takes the region out of DNS, and it returns only after two clean minutes in a row: quick to drain,
    slow to come back, so a fault that comes and goes holds the region out instead of flapping it in and out of DNS.
    One bad minute plus the record's TTL fits the RTO objective (120 s in prod). False alarms are kept off by
    thresholds far from normal operation (errors near 0, a mean well under the p99 objective), not by waiting longer."""

    period_seconds: int = Field(default=60, ge=60)
    evaluation_periods: int = Field(default=2, ge=1)
    datapoints_to_alarm: int = Field(default=1, ge=1)
    # 5xx answers (the targets' and the load balancer's own) over requests, in one period.
    error_ratio: float = Field(default=0.01, gt=0)
    # The mean TargetResponseTime of the stable Triton target group, in one period; below objectives.p99_ms
    # (GlobalConfig checks it): Route 53 cannot follow a p99 alarm, so the mean stands in for it.
    latency_ms: float = Field(default=100, gt=0)

    @field_validator("period_seconds")
    @classmethod
    def _whole_minutes(cls, v: int) -> int:
        if v % 60:
            raise ValueError("rule: a multiple of 60 (the load balancer publishes its metrics once a minute)")
        return v

    @field_validator("error_ratio")
    @classmethod
    def _ratio(cls, v: float) -> float:
        if v >= 1:
            raise ValueError(f"rule: error_ratio < 1 (a ratio is at most 1: a threshold of {v:g} never alarms)")
        return v

    @model_validator(mode="after")
    def _m_of_n(self) -> HealthAlarms:
        if self.datapoints_to_alarm > self.evaluation_periods:
            raise _SubKeyRule(
                "datapoints_to_alarm",
                self.datapoints_to_alarm,
                f"rule: at most evaluation_periods ({self.evaluation_periods}): CloudWatch refuses M of N with M > N",
            )
        if self.period_seconds * self.evaluation_periods > CLOUDWATCH_EVALUATION_SECONDS:
            raise _SubKeyRule(
                "evaluation_periods",
                self.evaluation_periods,
                f"rule: evaluation_periods x period_seconds ({self.period_seconds}) at most "
                f"{CLOUDWATCH_EVALUATION_SECONDS} s (CloudWatch evaluates an alarm over one day at most)",
            )
        return self


class Zone(Strict):
    name: str = Field(pattern=r"^([a-z0-9-]+\.)+[a-z]{2,}$")
    zone_id: str | None = Field(default=None, pattern=r"^Z[A-Z0-9]{4,32}$")  # existing zone; else created


class Capacity(Strict):
    peak_qps: int = Field(gt=0)
    # Ranking requests per second one GPU sustains, by compute capability. Used until the model
    # manifest carries benchmarked figures for that capability.
    qps_per_gpu: dict[str, Annotated[float, Field(gt=0)]]  # finite (allow_inf_nan=False) and > 0
    headroom: float = Field(default=0.0, ge=0, le=1)


class Objectives(Strict):
    rto_seconds: int = Field(default=120, gt=0)
    rpo_seconds: int = Field(default=900, gt=0)
    success_rate: float = Field(default=0.99, gt=0, le=1)
    p99_ms: float = Field(default=250, gt=0)


class ReleaseGates(Strict):
    """Thresholds of a model release's gates (drills/release/gates.py): each gate's verdict is in the report."""

    # No threshold may switch its gate off: every float is finite (allow_inf_nan=False: an infinite PSI or p99
    # bound never fails), a fraction's maximum is below 1 (an error rate or a KS statistic is at most 1, so a
    # maximum of 1 never fails) and a minimum is above 0 (an AUC or NDCG is at least 0).
    error_rate_max: float = Field(default=0.01, ge=0)  # failed / all requests of the canary (Triton counters)
    p99_ms_max: float | None = Field(default=None, gt=0)  # default: objectives.p99_ms
    psi_max: float = Field(default=0.2, gt=0)  # population stability index, canary vs stable, same requests
    ks_max: float = Field(default=0.15, gt=0)  # two-sample Kolmogorov-Smirnov statistic, same requests
    auc_min: float = Field(default=0.7, le=1)  # the candidate's offline AUC from its manifest
    ndcg_min: float = Field(default=0.55, le=1)  # the candidate's offline NDCG@10 from its manifest
    min_requests: int = Field(default=200, ge=1)  # requests the canary must have answered before it is judged
    golden_rows: int = Field(default=2048, ge=100, le=65536)  # golden rows scored by both versions for PSI/KS

    @field_validator("error_rate_max", "ks_max")
    @classmethod
    def _max_below_one(cls, v: float, info: ValidationInfo) -> float:
        if v >= 1:
            raise ValueError(
                f"rule: {info.field_name} < 1 (the statistic is at most 1: a maximum of {v:g} switches the gate off)"
            )
        return v

    @field_validator("auc_min", "ndcg_min")
    @classmethod
    def _min_above_zero(cls, v: float, info: ValidationInfo) -> float:
        if v <= 0:
            raise ValueError(
                f"rule: {info.field_name} > 0 (the metric is at least 0: a minimum of {v:g} switches the gate off)"
            )
        return v


class Release(Strict):
    canary_region: str | None = None  # default: the region with the smallest weight (smallest blast radius)
    canary_weight: int = Field(default=10, ge=1, le=100)  # percent of the canary region's traffic
    bake_seconds: int = Field(default=300, ge=0)  # traffic on the canary before its gates judge
    ready_timeout_seconds: int = Field(default=900, gt=0)  # canary/rolled pods ready (engines load from S3)
    # How long after a release its undo (`drills rollback ID`: the previous last-known-good pointer) and a `restore`
    # (the S3 versions the pointer pins, made noncurrent by an overwrite) must still find the versions they copy
    # back. Every region's artifact_noncurrent_days must cover it (check_fleet): S3 expires noncurrent versions then.
    rollback_window_days: int = Field(default=14, ge=1, le=3650)
    gates: ReleaseGates = ReleaseGates()


_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[a-zA-Z]{2,}")


class GlobalConfig(Strict):
    role: Literal["global"]
    env: str = Field(pattern=r"^[a-z][a-z0-9]{1,15}$")
    control_region: AwsRegion = "us-east-1"  # where Route 53 health-check metrics and their alarms live
    stack_org: str = "organization"
    zone: Zone
    record: str = Field(pattern=r"^[a-z0-9-]+$")  # label under the zone: <record>.<zone>
    ttl: int = Field(default=60, ge=1, le=86400)
    routing: Routing
    health_check: HealthCheck = HealthCheck()
    replication_rtc_minutes: Literal[15] = 15  # S3 RTC offers exactly 15 minutes
    replication_latency_alarm_seconds: int = Field(default=900, ge=60)
    alarm_email: str | None = None  # absent: no email subscription; present: an address (null and "" are refused)
    capacity: Capacity
    objectives: Objectives = Objectives()
    # After `objectives`: its validator reads objectives.p99_ms, and runs on the default too (a lowered objective).
    health_alarms: HealthAlarms = Field(default=HealthAlarms(), validate_default=True)
    release: Release = Release()
    # A/B experiments of ranker versions (infra/experiments.py: arms, split, window, guardrails); none by default.
    experiments: tuple[Experiment, ...] = ()

    @field_validator("experiments", mode="before")
    @classmethod
    def _experiments(cls, v: Any) -> tuple[Experiment, ...]:
        try:
            return parse_experiments(v)
        except ExperimentConfigError as e:
            raise _SubKeyRule(e.key.removeprefix("experiments"), e.value, e.rule) from None

    @property
    def fqdn(self) -> str:
        return f"{self.record}.{self.zone.name}"

    @field_validator("alarm_email")
    @classmethod
    def _email(cls, v: str | None) -> str:
        # Runs only when the key is given: absent, the default None means no subscription.
        if v is None or not _EMAIL.fullmatch(v):
            raise ValueError("rule: an email address (name@domain.tld) for the alarm topic; leave the key out for none")
        return v

    @field_validator("health_alarms")
    @classmethod
    def _latency_below_the_objective(cls, v: HealthAlarms, info: ValidationInfo) -> HealthAlarms:
        objectives = info.data.get("objectives")
        if objectives is not None and v.latency_ms >= objectives.p99_ms:
            raise _SubKeyRule(
                "latency_ms",
                v.latency_ms,
                f"rule: below objectives.p99_ms ({objectives.p99_ms:g} ms): the mean that drains a region must sit "
                "under the p99 users are promised, or most requests are slower than the objective before DNS moves",
            )
        return v

    @field_validator("release")
    @classmethod
    def _canary_region(cls, v: Release, info: ValidationInfo) -> Release:
        routing = info.data.get("routing")
        if v.canary_region is not None and routing is not None and v.canary_region not in routing.regions:
            raise ValueError(f"rule: release.canary_region must be one of routing.regions {sorted(routing.regions)}")
        return v

    @property
    def release_p99_ms(self) -> float:
        return self.release.gates.p99_ms_max if self.release.gates.p99_ms_max is not None else self.objectives.p99_ms


StackConfig = Annotated[RegionConfig | GlobalConfig, Field(discriminator="role")]


class _Envelope(BaseModel):
    stack: StackConfig


# ---------------------------------------------------------------- loading
def _key(loc: tuple) -> str:
    # loc = ("stack", <discriminator tag>, field, index, ...)
    parts = [f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[2:]]
    return "".join(parts).lstrip(".") or "(stack)"


# Type errors of strict validation, with what the stack file must write instead.
_STRICT_TYPES = {
    "int_type": "strict: a string, a boolean or a float is not an integer",
    "float_type": "strict: a string or a boolean is not a number",
    "string_type": 'strict: a number is not a string; quote it in YAML ("1.33")',
}


def parse(stack: str, values: dict[str, Any]) -> RegionConfig | GlobalConfig:
    """Validate un-namespaced config values for `stack`; raise ConfigError naming key, value and rule."""
    if "role" not in values:
        raise ConfigError(stack, "role", None, "rule: required; 'region' or 'global'")
    try:
        cfg = _Envelope.model_validate({"stack": {**values}}).stack

    except ValidationError as e:
        err = e.errors()[0]
        rule = str(err["msg"]).removeprefix("Value error, ")
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, _SubKeyRule):
            given = err.get("input")  # the value as the stack file writes it (300, not the validated 300.0)
            value = given.get(cause.key, cause.value) if isinstance(given, Mapping) else cause.value
            sep = "" if cause.key.startswith("[") else "."  # a list item's key: experiments[0].arms
            raise ConfigError(stack, f"{_key(err['loc'])}{sep}{cause.key}", value, cause.rule) from None
        if err["type"] == "missing":
            raise ConfigError(stack, _key(err["loc"]), _MISSING, "rule: required key") from None
        elif err["type"] == "extra_forbidden":
            rule = "rule: unknown key (a typo?)"
        elif err["type"] in _STRICT_TYPES:
            rule = f"rule: {rule} ({_STRICT_TYPES[err['type']]})"
        elif not rule.startswith("rule:"):
            rule = f"rule: {rule}"
        raise ConfigError(stack, _key(err["loc"]), err.get("input"), rule) from None
    _check_name(stack, cfg)
    return cfg


def _check_name(stack: str, cfg: RegionConfig | GlobalConfig) -> None:
    m = re.fullmatch(r"(?P<env>[a-z][a-z0-9]*)-(?P<suffix>[a-z0-9]+)", stack)
    if not m or m["env"] != cfg.env:
        raise ConfigError(
            stack,
            "env",
            cfg.env,
            f"rule: stack names are <env>-<region short|global>; {stack!r} does not start with {cfg.env}-",
        )
    if isinstance(cfg, GlobalConfig) and m["suffix"] != "global":
        raise ConfigError(stack, "role", "global", "rule: a global stack is named <env>-global")
    if isinstance(cfg, RegionConfig) and SHORT_TO_REGION.get(m["suffix"]) != cfg.region:
        raise ConfigError(
            stack,
            "region",
            cfg.region,
            f"rule: stack {stack} must be in region {SHORT_TO_REGION.get(m['suffix'], '?')} (short {m['suffix']})",
        )


# ---------------------------------------------------------------- reading stack files
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _yaml_key(path: list[str | int]) -> str:
    """A node's path as the stack file spells it: `reco-dr:gpu_pools[0].max` (under `config:`), `(file)` at the top."""
    parts = path[1:] if len(path) > 1 and path[0] == "config" else path
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(file)"


def _at(mark: Any) -> str:  # a yaml Mark (the pure-Python or the libyaml one) or None
    return f"line {mark.line + 1}" if mark is not None else "line unknown"


class _StackFileLoader(yaml.SafeLoader):
    """yaml.SafeLoader refusing, while the document is composed and before anything is constructed, anchors and
    aliases (a value is written where it applies; an alias bomb, "billion laughs", is refused at its first anchor
    instead of expanding) and a key repeated in one mapping (YAML would keep the last one silently). Each refusal
    is a ConfigError naming the node's path, its value and the rule with the line."""

    def __init__(self, text: str, stack: str) -> None:
        super().__init__(text)
        self.stack = stack
        self.path: list[str | int] = []  # of the node being composed

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        # index: the key node of a mapping value, the position of a sequence item, None for the root and for keys.
        step = index.value if isinstance(index, yaml.ScalarNode) else index if isinstance(index, int) else None
        if step is not None:
            self.path.append(step)
        try:
            event = self.peek_event()
            if isinstance(event, yaml.NodeEvent) and event.anchor is not None:
                sigil = "*" if isinstance(event, yaml.AliasEvent) else "&"
                raise ConfigError(
                    self.stack,
                    _yaml_key(self.path),
                    f"{sigil}{event.anchor}",
                    "rule: no YAML anchors (&) or aliases (*): write each value where it applies "
                    f"({_at(event.start_mark)})",
                    as_written=True,
                )
            return super().compose_node(parent, index)
        finally:
            if step is not None:
                self.path.pop()

    def compose_mapping_node(self, anchor: Any) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        seen: dict[Any, str] = {}
        for key_node, value_node in node.value:
            line = _at(key_node.start_mark)
            if key_node.tag == _MERGE_TAG:
                raise ConfigError(
                    self.stack,
                    _yaml_key(self.path),
                    "<<",
                    f"rule: no YAML merge keys (<<): write each key where it applies ({line})",
                    as_written=True,
                )
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # a collection as a key: construction refuses it (unhashable), a YAML error
            key = self.construct_object(key_node)
            if key in seen:
                raise ConfigError(
                    self.stack,
                    _yaml_key([*self.path, key_node.value]),
                    self.construct_object(value_node, deep=True),
                    f"rule: a key appears once in a mapping ({line} repeats {seen[key]}; "
                    "YAML would keep the last one silently)",
                    as_written=True,
                )
            seen[key] = line
        return node


def _read_yaml(stack: str, path: Path) -> Any:
    loader = _StackFileLoader(path.read_text(), stack)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        raise ConfigError(
            stack, "(file)", str(path), f"rule: valid YAML ({e.problem}, {_at(e.problem_mark)})", as_written=True
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(stack, "(file)", str(path), f"rule: valid YAML ({e})", as_written=True) from None
    finally:
        loader.dispose()


def _check_namespaces(stack: str, config: Mapping[Any, Any]) -> None:
    for key, value in config.items():
        ns, sep, name = str(key).partition(":")
        if sep and name and ns in NAMESPACES:
            continue
        near = difflib.get_close_matches(ns, NAMESPACES, n=1)
        hint = f"; {ns!r} looks like a typo of {near[0]!r}" if sep and near else ""
        raise ConfigError(
            stack,
            str(key),
            value,
            f"rule: config keys are <namespace>:<name> with a namespace from {sorted(NAMESPACES)} "
            f"(infra/config.py NAMESPACES){hint}",
            as_written=True,
        )


def read_stack_file(stack: str, stacks_dir: Path = STACKS_DIR) -> dict[str, Any]:
    """The un-namespaced `reco-dr:` values of `stacks_dir/Pulumi.<stack>.yaml`, once the file is valid YAML without
    anchors, aliases or repeated keys, and every key under `config:` is in a namespace of NAMESPACES."""
    path = stacks_dir / f"Pulumi.{stack}.yaml"
    if not path.exists():
        known = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in stacks_dir.glob("Pulumi.*.yaml"))
        raise ConfigError(
            stack, "(file)", str(path), f"rule: the stack file must exist; known stacks: {known}", as_written=True
        )
    doc = _read_yaml(stack, path)
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(stack, "(file)", str(path), "rule: a stack file is a YAML mapping", as_written=True)
    config = doc.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError(
            stack, "config", config, "rule: a mapping of <namespace>:<name> keys to values", as_written=True
        )
    _check_namespaces(stack, config)
    prefix = f"{PROJECT}:"
    return {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)}


def load_stack(stack: str, stacks_dir: Path = STACKS_DIR) -> RegionConfig | GlobalConfig:
    return parse(stack, read_stack_file(stack, stacks_dir))


# ---------------------------------------------------------------- inside the Pulumi program
def _takes_text(tp: Any) -> bool:
    if typing.get_origin(tp) is Literal:
        return all(isinstance(a, str) for a in typing.get_args(tp))
    return tp is str or any(_takes_text(a) for a in typing.get_args(tp))


# Top-level keys whose field takes a string: the engine's text is their value as is (`kubernetes_version` "1.33").
_TEXT_KEYS = frozenset(
    k for m in (RegionConfig, GlobalConfig) for k, f in m.model_fields.items() if _takes_text(f.annotation)
)


def _unique_keys(stack: str, key: str, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ConfigError(stack, key, k, "rule: a key appears once in a mapping (the engine's JSON repeats it)")
        out[k] = v
    return out


def _engine_value(stack: str, key: str, raw: str) -> Any:
    """A value as the engine hands it to a program: structured values JSON-encoded, scalars as text. Text is decoded
    as JSON (`60` -> 60, `true` -> True) unless the key's field takes a string, so that strict validation judges
    the value the stack file holds; text that is no JSON stays text, for the schema to refuse with its rule."""
    if raw[:1] not in ("{", "[") and key in _TEXT_KEYS:
        return raw
    try:
        return json.loads(raw, object_pairs_hook=lambda pairs: _unique_keys(stack, key, pairs))
    except json.JSONDecodeError:
        return raw


def from_pulumi() -> RegionConfig | GlobalConfig:
    """Inside the Pulumi program: the engine's config for the current stack, through the same schema."""
    import pulumi

    stack = pulumi.get_stack()
    cfg = pulumi.Config(PROJECT)
    prefix = f"{PROJECT}:"
    # The engine hands the program its whole config (PULUMI_CONFIG): a key of ours outside the schema (a typo) is
    # read as well, so that parse refuses it rather than the program never looking at it.
    given = {k[len(prefix) :] for k in pulumi.runtime.get_config_env() if k.startswith(prefix)}
    values: dict[str, Any] = {}
    for key in sorted({*RegionConfig.model_fields, *GlobalConfig.model_fields, *given}):
        raw = cfg.get(key)
        if raw is not None:
            values[key] = _engine_value(stack, key, raw)
    return parse(stack, values)


# ---------------------------------------------------------------- fleet
class Fleet(BaseModel):
    """An environment: its global stack and its regional stacks, keyed by region name."""

    model_config = ConfigDict(frozen=True)
    env: str
    global_stack: str
    glob: GlobalConfig
    regions: dict[str, RegionConfig]
    stack_names: dict[str, str]  # region -> stack name

    @property
    def compute_capabilities(self) -> list[str]:
        return sorted({cc for r in self.regions.values() for cc in r.compute_capabilities})


def list_stacks(stacks_dir: Path = STACKS_DIR) -> list[str]:
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in stacks_dir.glob("Pulumi.*.yaml"))


def envs(stacks_dir: Path = STACKS_DIR) -> list[str]:
    return sorted({s.rsplit("-", 1)[0] for s in list_stacks(stacks_dir) if s.endswith("-global")})


def load_fleet(env: str, stacks_dir: Path = STACKS_DIR) -> Fleet:
    gname = f"{env}-global"
    if env not in envs(stacks_dir):
        raise ConfigError(gname, "env", env, f"rule: an environment with a global stack; known: {envs(stacks_dir)}")
    glob = load_stack(gname, stacks_dir)
    assert isinstance(glob, GlobalConfig)
    regions: dict[str, RegionConfig] = {}
    names: dict[str, str] = {}
    for s in list_stacks(stacks_dir):
        if s.startswith(f"{env}-") and s != gname:
            cfg = load_stack(s, stacks_dir)
            if isinstance(cfg, RegionConfig):
                regions[cfg.region], names[cfg.region] = cfg, s
    fleet = Fleet(env=env, global_stack=gname, glob=glob, regions=regions, stack_names=names)
    check_fleet(fleet)
    return fleet


def check_fleet(fleet: Fleet) -> None:
    """Rules that span stacks of one environment."""
    routed, declared = set(fleet.glob.routing.regions), set(fleet.regions)
    if routed != declared:
        raise ConfigError(
            fleet.global_stack,
            "routing.regions",
            sorted(routed),
            f"rule: must name exactly the regions with a regional stack in {fleet.env}: {sorted(declared)}",
        )
    items = sorted(fleet.regions.items())
    for i, (ra, a) in enumerate(items):
        for rb, b in items[i + 1 :]:
            if ipaddress.ip_network(a.vpc_cidr).overlaps(ipaddress.ip_network(b.vpc_cidr)):
                raise ConfigError(
                    fleet.stack_names[rb],
                    "vpc_cidr",
                    b.vpc_cidr,
                    f"rule: VPC CIDRs in one environment must not overlap ({a.vpc_cidr} in {fleet.stack_names[ra]})",
                )
    path = fleet.glob.health_check.path
    for region, cfg in sorted(fleet.regions.items()):
        public = edge_routes(cfg.model.name)["health"].paths
        if path not in public:
            raise ConfigError(
                fleet.global_stack,
                "health_check.path",
                path,
                f"rule: a path the regional load balancers forward to Triton ({', '.join(public)}); every other "
                f"path is answered 404 at the edge, so the health check of {region} would always fail",
            )
    window = fleet.glob.release.rollback_window_days
    for region, cfg in sorted(fleet.regions.items()):
        if cfg.artifact_noncurrent_days < window:
            raise ConfigError(
                fleet.stack_names[region],
                "artifact_noncurrent_days",
                cfg.artifact_noncurrent_days,
                f"rule: at least release.rollback_window_days of {fleet.global_stack} "
                f"({cfg.artifact_noncurrent_days} < {window}): a rollback or restore within that window copies back "
                "noncurrent S3 versions, and S3 expires them after artifact_noncurrent_days",
            )
    missing = [cc for cc in fleet.compute_capabilities if cc not in fleet.glob.capacity.qps_per_gpu]
    if missing:
        raise ConfigError(
            fleet.global_stack,
            "capacity.qps_per_gpu",
            fleet.glob.capacity.qps_per_gpu,
            f"rule: a throughput figure for every compute capability in the fleet; missing {missing}",
        )
    # Every region serves every arm (a failover must not change which ranker a user gets): each arm's version is
    # pinned (model.digests) in every regional stack, so each region may fetch, verify and serve it.
    for i, e in enumerate(fleet.glob.experiments):
        for j, arm in enumerate(e.arms):
            unpinned = sorted(r for r, cfg in fleet.regions.items() if arm.version not in cfg.model.digests)
            if unpinned:
                raise ConfigError(
                    fleet.global_stack,
                    f"experiments[{i}].arms[{j}].version",
                    arm.version,
                    f"rule: a version every region pins in model.digests (a published, signed release); not pinned in "
                    f"{', '.join(fleet.stack_names[r] for r in unpinned)}",
                )


# ---------------------------------------------------------------- CI identity (infra/ci/: a Pulumi project of its own)
# The CI identity program (GitHub OIDC provider, preview and deploy roles: infra/components/ci_identity.py) is not a
# fleet stack: its stack file is infra/ci/Pulumi.<stack>.yaml with keys in the `reco-dr-ci:` namespace, applied by
# an administrator. Kept apart from the fleet's schema above: nothing in stacks/ reads or writes these keys.
CI_PROJECT = "reco-dr-ci"
CI_DIR = ROOT / "infra" / "ci"
CI_NAMESPACES: dict[str, str] = {
    CI_PROJECT: "the CI identity program's keys, validated by infra/config.py CiConfig",
    "pulumi": "the Pulumi engine's own settings",
}

# A GitHub repository as the OIDC `sub` claim spells it: `<owner>/<repo>`, or the immutable form
# `<owner>@<owner id>/<repo>@<repo id>` that repositories created from 15 July 2026 (or opted in) emit. Owner: 1 to
# 39 letters, digits or hyphens, not starting or ending with a hyphen; repository: 1 to 100 letters, digits, `.`,
# `_` or `-`. No `*`, `?` or `:` can pass, so a subject built from it matches one repository only.
_GITHUB_REPOSITORY = re.compile(
    r"(?P<owner>[A-Za-z0-9](?:[A-Za-z0-9-]{0,37}[A-Za-z0-9])?)(?:@[1-9][0-9]{0,19})?"
    r"/(?P<repo>[A-Za-z0-9._-]{1,100})(?:@[1-9][0-9]{0,19})?"
)
_GITHUB_OIDC_PROVIDER_ARN = re.compile(r"arn:aws:iam::\d{12}:oidc-provider/token\.actions\.githubusercontent\.com")


class CiConfig(Strict):
    # The one repository whose workflows may assume the CI roles (exact OIDC subjects are built from it).
    github_repository: str
    # Region of the program's AWS provider (IAM itself is global).
    region: AwsRegion = "us-east-1"
    # The account's existing GitHub OIDC provider (one per account and URL); absent: the program declares it.
    github_oidc_provider_arn: str | None = None

    @field_validator("github_repository")
    @classmethod
    def _repository(cls, v: str) -> str:
        m = _GITHUB_REPOSITORY.fullmatch(v)
        if not m or m["repo"] in (".", ".."):
            raise ValueError(
                "rule: a GitHub repository <owner>/<repo> as the OIDC sub claim spells it (or the immutable "
                "<owner>@<id>/<repo>@<id>): letters, digits, '-' in the owner; letters, digits, '.', '_', '-' in "
                "the name; no wildcard"
            )
        return v

    @field_validator("github_oidc_provider_arn")
    @classmethod
    def _provider_arn(cls, v: str | None) -> str:
        # Runs only when the key is given: absent, the default None means the program declares the provider.
        if v is None or not _GITHUB_OIDC_PROVIDER_ARN.fullmatch(v):
            raise ValueError(
                "rule: the ARN of the account's GitHub OIDC provider, "
                "arn:aws:iam::<account>:oidc-provider/token.actions.githubusercontent.com; leave the key out to "
                "declare it"
            )
        return v


def parse_ci(stack: str, values: dict[str, Any]) -> CiConfig:
    """Validate un-namespaced `reco-dr-ci:` values; raise ConfigError naming stack, key, value and rule."""
    try:
        return CiConfig.model_validate(values)
    except ValidationError as e:
        err = e.errors()[0]
        key = f"{CI_PROJECT}:" + ".".join(str(p) for p in err["loc"])
        rule = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "missing":
            raise ConfigError(stack, key, _MISSING, "rule: required key", as_written=True) from None
        if err["type"] == "extra_forbidden":
            rule = "rule: unknown key (a typo?)"
        elif err["type"] in _STRICT_TYPES:
            rule = f"rule: {rule} ({_STRICT_TYPES[err['type']]})"
        elif not rule.startswith("rule:"):
            rule = f"rule: {rule}"
        raise ConfigError(stack, key, err.get("input"), rule, as_written=True) from None


def read_ci_stack_file(stack: str, ci_dir: Path = CI_DIR) -> dict[str, Any]:
    """The un-namespaced `reco-dr-ci:` values of `ci_dir/Pulumi.<stack>.yaml` (same YAML rules as the fleet's)."""
    path = ci_dir / f"Pulumi.{stack}.yaml"
    if not path.exists():
        raise ConfigError(stack, "(file)", str(path), "rule: the CI identity's stack file must exist", as_written=True)
    doc = _read_yaml(stack, path) or {}
    if not isinstance(doc, dict):
        raise ConfigError(stack, "(file)", str(path), "rule: a stack file is a YAML mapping", as_written=True)
    config = doc.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError(stack, "config", config, "rule: a mapping of <namespace>:<name> keys", as_written=True)
    for key, value in config.items():
        ns, sep, name = str(key).partition(":")
        if not (sep and name and ns in CI_NAMESPACES):
            raise ConfigError(
                stack,
                str(key),
                value,
                f"rule: config keys are <namespace>:<name> with a namespace from {sorted(CI_NAMESPACES)}",
                as_written=True,
            )
    prefix = f"{CI_PROJECT}:"
    return {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)}


def ci_from_pulumi() -> CiConfig:
    """Inside the CI identity program: the engine's `reco-dr-ci:` config, every key of ours (typos included)."""
    import pulumi

    prefix = f"{CI_PROJECT}:"
    cfg = pulumi.Config(CI_PROJECT)
    given = {k[len(prefix) :] for k in pulumi.runtime.get_config_env() if k.startswith(prefix)}
    values = {k: raw for k in sorted({*CiConfig.model_fields, *given}) if (raw := cfg.get(k)) is not None}
    return parse_ci(pulumi.get_stack(), values)
