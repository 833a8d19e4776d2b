"""Typed stack configuration: the one description of the fleet.

Every stack file `stacks/Pulumi.<stack>.yaml` holds keys in the `reco-dr:` namespace. The same pydantic
schema validates them inside the Pulumi program (`from_pulumi`) and from plain Python (`load_stack`,
`load_fleet`), so model_build, drills and tests read exactly what `pulumi up` reads. Nothing here declares
resources: a bad config raises `ConfigError` before the program touches a provider.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from infra.catalog import GPU_INSTANCES, REGIONS, SHORT_TO_REGION, TRITON_RELEASES, GpuInstance

PROJECT = "reco-dr"
ROOT = Path(__file__).resolve().parent.parent
STACKS_DIR = ROOT / "stacks"


_MISSING = object()  # marks a required key that is absent


class ConfigError(Exception):
    """A config value broke a rule. Carries what a user needs to fix it, never a traceback."""

    def __init__(self, stack: str, key: str, value: Any, rule: str):
        self.stack, self.key, self.value, self.rule = stack, key, value, rule
        shown = "is missing" if value is _MISSING else f"= {value!r}"
        super().__init__(f"stack {stack}: {PROJECT}:{key} {shown}: {rule}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- regional stack
class NodePool(_Strict):
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


class GpuPool(NodePool):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,30}$")
    ami_type: Literal["AL2023_x86_64_NVIDIA", "BOTTLEROCKET_x86_64_NVIDIA"] = "AL2023_x86_64_NVIDIA"
    capacity_type: Literal["ON_DEMAND", "SPOT"] = "ON_DEMAND"

    @field_validator("instance_type")
    @classmethod
    def _has_gpus(cls, v: str) -> str:
        if v not in GPU_INSTANCES:
            known = ", ".join(sorted({t.split(".")[0] for t in GPU_INSTANCES}))
            raise ValueError(f"rule: a GPU pool needs a GPU instance type from the catalog (families: {known})")
        return v

    @property
    def gpu(self) -> GpuInstance:
        return GPU_INSTANCES[self.instance_type]

    @property
    def device_plugin_needed(self) -> bool:
        # AL2023 NVIDIA AMIs ship the NVIDIA driver but not the Kubernetes device plugin;
        # Bottlerocket NVIDIA variants run the device plugin themselves.
        return self.ami_type.startswith("AL2023")


_IMAGE = re.compile(r"^(?P<repo>[a-z0-9.\-/:]+?)(?::(?P<tag>[\w.\-]+))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")


class Triton(_Strict):
    image: str
    tensorrt_version: str | None = None  # required when the image's release is not in the catalog
    min_replicas: int = Field(default=2, ge=1)
    max_replicas: int = Field(default=8, ge=1)
    max_batch_size: int = Field(default=4096, ge=1, le=65536)
    target_gpu_utilization: int = Field(default=70, ge=10, le=95)

    @field_validator("image")
    @classmethod
    def _pinned(cls, v: str) -> str:
        m = _IMAGE.match(v)
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


class Model(_Strict):
    name: str = Field(default="ranker", pattern=r"^[a-z][a-z0-9_]{0,40}$")
    # The stable version: what the region serves (and what every drill, capacity check and rollback reads).
    version: str = Field(pattern=_VERSION)
    # Compute capabilities served by the ONNX Runtime model instead of a TensorRT engine, on purpose.
    onnx_fallback_for: tuple[str, ...] = ()
    # Gray release: a second set of Triton Deployments serving `canary_version` beside the stable one, with
    # `canary_weight` percent of the region's traffic on the load balancer (weighted target groups). A release
    # step is a change of these two keys plus `pulumi up`; promotion sets `version` and clears them.
    canary_version: str | None = Field(default=None, pattern=_VERSION)
    canary_weight: int = Field(default=0, ge=0, le=100)

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
        return self


_CERT = re.compile(r"^arn:aws:acm:(?P<region>[a-z0-9-]+):\d{12}:certificate/[0-9a-f-]{36}$")


class LoadBalancer(_Strict):
    certificate_arn: str
    ssl_policy: str = "ELBSecurityPolicy-TLS13-1-2-2021-06"
    allowed_cidrs: tuple[str, ...] = ("0.0.0.0/0",)

    @field_validator("certificate_arn")
    @classmethod
    def _arn(cls, v: str) -> str:
        if not _CERT.match(v):
            raise ValueError("rule: an ACM certificate ARN (arn:aws:acm:<region>:<account>:certificate/<uuid>)")
        return v


class RegionConfig(_Strict):
    role: Literal["region"]
    env: str = Field(pattern=r"^[a-z][a-z0-9]{1,15}$")
    region: str
    vpc_cidr: str
    service_cidr: str = "172.20.0.0/16"
    kubernetes_version: str = Field(default="1.33", pattern=r"^1\.\d\d$")
    system_pool: NodePool
    gpu_pools: tuple[GpuPool, ...] = Field(min_length=1)
    triton: Triton
    model: Model
    load_balancer: LoadBalancer
    artifact_noncurrent_days: int = Field(default=30, ge=1, le=3650)

    @field_validator("region")
    @classmethod
    def _known_region(cls, v: str) -> str:
        if v not in REGIONS:
            raise ValueError(f"rule: one of the supported AWS regions {sorted(REGIONS)}")
        return v

    @field_validator("vpc_cidr", "service_cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        try:
            net = ipaddress.ip_network(v)
        except ValueError:
            raise ValueError("rule: an IPv4 CIDR block such as 10.10.0.0/16") from None
        if not (net.version == 4 and net.is_private and 16 <= net.prefixlen <= 20):
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

    @field_validator("load_balancer")
    @classmethod
    def _cert_in_region(cls, v: LoadBalancer, info: ValidationInfo) -> LoadBalancer:
        m = _CERT.match(v.certificate_arn)
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
class RegionRoute(_Strict):
    weight: int | None = Field(default=None, ge=0, le=255)  # Route 53's weight range
    failover: Literal["PRIMARY", "SECONDARY"] | None = None


class Routing(_Strict):
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


class HealthCheck(_Strict):
    path: str = "/v2/health/ready"
    port: int = 443
    request_interval: Literal[10, 30] = 10  # Route 53 accepts only these
    failure_threshold: int = Field(default=3, ge=1, le=10)


class Zone(_Strict):
    name: str = Field(pattern=r"^([a-z0-9-]+\.)+[a-z]{2,}$")
    zone_id: str | None = Field(default=None, pattern=r"^Z[A-Z0-9]{4,32}$")  # existing zone; else created


class Capacity(_Strict):
    peak_qps: int = Field(gt=0)
    # Ranking requests per second one GPU sustains, by compute capability. Used until the model
    # manifest carries benchmarked figures for that capability.
    qps_per_gpu: dict[str, float]
    headroom: float = Field(default=0.0, ge=0, le=1)


class Objectives(_Strict):
    rto_seconds: int = Field(default=120, gt=0)
    rpo_seconds: int = Field(default=900, gt=0)
    success_rate: float = Field(default=0.99, gt=0, le=1)
    p99_ms: float = Field(default=250, gt=0)


class ReleaseGates(_Strict):
    """Thresholds of a model release's gates (drills/release/gates.py): each gate's verdict is in the report."""

    error_rate_max: float = Field(default=0.01, ge=0, le=1)  # failed / all requests of the canary (Triton counters)
    p99_ms_max: float | None = Field(default=None, gt=0)  # default: objectives.p99_ms
    psi_max: float = Field(default=0.2, gt=0)  # population stability index, canary vs stable, same requests
    ks_max: float = Field(default=0.15, gt=0, le=1)  # two-sample Kolmogorov-Smirnov statistic, same requests
    auc_min: float = Field(default=0.7, ge=0, le=1)  # the candidate's offline AUC from its manifest
    ndcg_min: float = Field(default=0.55, ge=0, le=1)  # the candidate's offline NDCG@10 from its manifest
    min_requests: int = Field(default=200, ge=1)  # requests the canary must have answered before it is judged
    golden_rows: int = Field(default=2048, ge=100, le=65536)  # golden rows scored by both versions for PSI/KS


class Release(_Strict):
    canary_region: str | None = None  # default: the region with the smallest weight (smallest blast radius)
    canary_weight: int = Field(default=10, ge=1, le=100)  # percent of the canary region's traffic
    bake_seconds: int = Field(default=300, ge=0)  # traffic on the canary before its gates judge
    ready_timeout_seconds: int = Field(default=900, gt=0)  # canary/rolled pods ready (engines load from S3)
    gates: ReleaseGates = ReleaseGates()


class GlobalConfig(_Strict):
    role: Literal["global"]
    env: str = Field(pattern=r"^[a-z][a-z0-9]{1,15}$")
    control_region: str = "us-east-1"  # where Route 53 health-check metrics and their alarms live
    stack_org: str = "organization"
    zone: Zone
    record: str = Field(pattern=r"^[a-z0-9-]+$")  # label under the zone: <record>.<zone>
    ttl: int = Field(default=60, ge=1, le=86400)
    routing: Routing
    health_check: HealthCheck = HealthCheck()
    replication_rtc_minutes: Literal[15] = 15  # S3 RTC offers exactly 15 minutes
    replication_latency_alarm_seconds: int = Field(default=900, ge=60)
    alarm_email: str | None = None
    capacity: Capacity
    objectives: Objectives = Objectives()
    release: Release = Release()

    @property
    def fqdn(self) -> str:
        return f"{self.record}.{self.zone.name}"

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


def parse(stack: str, values: dict[str, Any]) -> RegionConfig | GlobalConfig:
    """Validate un-namespaced config values for `stack`; raise ConfigError naming key, value and rule."""
    if "role" not in values:
        raise ConfigError(stack, "role", None, "rule: required; 'region' or 'global'")
    try:
        cfg = _Envelope.model_validate({"stack": {**values}}).stack

    except ValidationError as e:
        err = e.errors()[0]
        rule = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "missing":
            raise ConfigError(stack, _key(err["loc"]), _MISSING, "rule: required key") from None
        elif err["type"] == "extra_forbidden":
            rule = "rule: unknown key (a typo?)"
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


def read_stack_file(stack: str, stacks_dir: Path = STACKS_DIR) -> dict[str, Any]:
    path = stacks_dir / f"Pulumi.{stack}.yaml"
    if not path.exists():
        known = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in stacks_dir.glob("Pulumi.*.yaml"))
        raise ConfigError(stack, "(file)", str(path), f"rule: the stack file must exist; known stacks: {known}")
    doc = yaml.safe_load(path.read_text()) or {}
    prefix = f"{PROJECT}:"
    return {k[len(prefix) :]: v for k, v in (doc.get("config") or {}).items() if k.startswith(prefix)}


def load_stack(stack: str, stacks_dir: Path = STACKS_DIR) -> RegionConfig | GlobalConfig:
    return parse(stack, read_stack_file(stack, stacks_dir))


def from_pulumi() -> RegionConfig | GlobalConfig:
    """Inside the Pulumi program: the engine's config for the current stack, through the same schema."""
    import pulumi

    cfg = pulumi.Config(PROJECT)
    values: dict[str, Any] = {}
    for key in {*RegionConfig.model_fields, *GlobalConfig.model_fields}:
        raw = cfg.get(key)
        if raw is None:
            continue
        # Structured values arrive JSON-encoded; scalars as strings, which pydantic coerces.
        values[key] = json.loads(raw) if raw[:1] in "{[" else raw
    return parse(pulumi.get_stack(), values)


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
    missing = [cc for cc in fleet.compute_capabilities if cc not in fleet.glob.capacity.qps_per_gpu]
    if missing:
        raise ConfigError(
            fleet.global_stack,
            "capacity.qps_per_gpu",
            fleet.glob.capacity.qps_per_gpu,
            f"rule: a throughput figure for every compute capability in the fleet; missing {missing}",
        )
