"""The TensorRT build plan: which engines, for which GPUs, with which profile, names and timing caches.

Pure and deterministic (no TensorRT, no GPU): it reads the fleet config through `infra.config` and decides

- one engine per compute capability in the fleet (or one hardware-compatible engine for every Ampere+
  capability, when asked), skipping capabilities that every region serving them declares as an explicit
  ONNX Runtime fallback (`model.onnx_fallback_for`);
- the engine's file name `model.sm<cc>.plan` under `<model>_trt/1/`, which `config.pbtxt` lists in
  `cc_model_filenames` (and nothing else: no default file, so an unknown GPU fails to load instead of
  silently loading an engine built for another GPU);
- one optimisation profile per engine whose max batch equals Triton's `max_batch_size` from the stack
  config (min 1, opt the build's opt batch), the shape on every input's batch dimension;
- precision the way TensorRT 10.x+ wants it: a strongly typed network, FP16 carried by the ONNX graph itself
  (`<model>_trt/model.fp16.onnx`), never a builder precision flag;
- a timing-cache key per (compute capability, TensorRT version): the cache is only valid for one GPU
  architecture and one TensorRT build, so the key carries both;
- the TensorRT container image matching the Triton image's release (an engine only deserialises on the
  TensorRT version that built it; `infra.catalog.TRITON_RELEASES` pairs them), and for every environment
  the region and GPU pool where a Kubernetes Job builds each engine on a GPU of that capability.

Everything the fleet must agree on for one model repository is checked here and raised as `PlanError`:
one model name and version, one TensorRT version, one Triton max batch size.
"""

from __future__ import annotations

import re
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from infra.catalog import TRITON_RELEASES
from infra.config import Fleet, RegionConfig
from infra.names import triton_models

_T = TypeVar("_T")

TENSORRT_IMAGE = "nvcr.io/nvidia/tensorrt:{release}-py3"
JOB_NAMESPACE = "model-build"
JOB_SERVICE_ACCOUNT = "engine-builder"
NODE_LABEL_CC = "reco-dr/compute-capability"
HardwareCompat = Literal["NONE", "AMPERE_PLUS"]
Precision = Literal["fp16", "fp32"]


class PlanError(Exception):
    """The fleet cannot be served by one model repository as configured."""


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def sm(cc: str) -> str:
    """'9.0' -> 'sm90', the usual short name of a compute capability."""
    if not re.fullmatch(r"\d+\.\d+", cc):
        raise PlanError(f"compute capability must look like '9.0', got {cc!r}")
    return "sm" + cc.replace(".", "")


def cc_key(cc: str) -> tuple[int, int]:
    major, minor = cc.split(".")
    return int(major), int(minor)


class Profile(_M):
    """Batch dimension of one TensorRT optimisation profile; other dimensions are static."""

    min: int = Field(ge=1)
    opt: int = Field(ge=1)
    max: int = Field(ge=1)

    def shapes(self, inputs: dict[str, list[int]]) -> dict[str, tuple[list[int], list[int], list[int]]]:
        """{input: (min, opt, max) full shapes} for `inputs` = {name: non-batch dims}."""
        return {n: ([self.min, *d], [self.opt, *d], [self.max, *d]) for n, d in inputs.items()}


class PoolRef(_M):
    env: str
    region: str
    stack: str
    pool: str
    instance_type: str
    gpu_model: str


class EnginePlan(_M):
    compute_capability: str  # the GPU it must be built on
    serves: list[str]  # the capabilities whose cc_model_filenames entry names this engine
    file: str  # file name inside <model>_trt/1/
    path: str  # repository-relative path
    onnx: str  # repository-relative path of the graph it is built from
    precision: Precision
    strongly_typed: bool = True
    profile: Profile
    tensorrt_version: str
    tensorrt_image: str
    timing_cache_key: str
    hardware_compatibility: HardwareCompat
    version_compatible: bool
    pools: list[PoolRef]  # where this engine is served
    record: str  # repository-relative path of the record a Job writes next to the engine


class JobPlan(_M):
    env: str
    compute_capability: str
    region: str
    stack: str
    pool: str
    instance_type: str
    name: str  # Kubernetes object name
    namespace: str = JOB_NAMESPACE
    service_account: str = JOB_SERVICE_ACCOUNT
    file: str  # repository-relative path of the manifest


class BuildPlan(_M):
    model: str
    version: str
    envs: list[str]
    triton_release: str | None
    triton_version: str | None
    triton_images: list[str]
    tensorrt_version: str
    tensorrt_image: str
    max_batch_size: int
    opt_batch_size: int
    compute_capabilities: list[str]
    onnx_fallback_for: list[str]
    engines: list[EnginePlan]
    jobs: list[JobPlan]

    def engine_for(self, cc: str) -> EnginePlan | None:
        """The engine that serves `cc` (None where the ONNX Runtime fallback serves it)."""
        return next((e for e in self.engines if cc in e.serves), None)

    def cc_model_filenames(self) -> dict[str, str]:
        return {cc: e.file for e in self.engines for cc in e.serves}


def model_dirs(model: str) -> dict[str, str]:
    """Triton model names in the repository: TensorRT, the explicit ONNX Runtime fallback, the CPU rehearsal (the
    names the regional stack's pods load: infra.names)."""
    return triton_models(model)


def timing_cache_key(cc: str, tensorrt_version: str, hardware_compatibility: HardwareCompat = "NONE") -> str:
    """Bucket key of the timing cache for (GPU, TensorRT version); outside the immutable version prefix,
    because it is a cache shared by every model version built with that TensorRT on that GPU."""
    hw = "" if hardware_compatibility == "NONE" else f"{hardware_compatibility.lower()}-"
    return f"timing-cache/tensorrt-{tensorrt_version}/{hw}{sm(cc)}.cache"


def engine_file(cc: str, hardware_compatibility: HardwareCompat = "NONE") -> str:
    return "model.ampere_plus.plan" if hardware_compatibility == "AMPERE_PLUS" else f"model.{sm(cc)}.plan"


def _k8s_name(*parts: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    return name[:63].rstrip("-")


def make_plan(
    fleets: list[Fleet],
    *,
    opt_batch: int = 256,
    precision: Precision = "fp16",
    hardware_compatibility: HardwareCompat = "NONE",
    version_compatible: bool = False,
    version: str | None = None,
) -> BuildPlan:
    """The engines, profiles, file names, timing caches and Jobs for serving `fleets` from one repository."""
    if not fleets:
        raise PlanError("no environment to build for")
    regions = [(f, r) for f in fleets for r in f.regions.values()]
    if not regions:
        raise PlanError("the fleet has no regional stacks")

    def one(what: str, values: dict[str, _T]) -> _T:
        distinct = sorted({str(v) for v in values.values()})
        if len(distinct) != 1:
            raise PlanError(f"one model repository needs one {what} across the fleet; stacks disagree: {values}")
        return next(iter(values.values()))

    def name(f: Fleet, r: RegionConfig) -> str:
        return f.stack_names[r.region]

    model = str(one("model name", {name(f, r): r.model.name for f, r in regions}))
    if version is not None:
        # A candidate built ahead of the stack config (e.g. the bad release of a rollback drill).
        if not re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z.\-]{0,40}", version):
            raise PlanError(f"model version {version!r} is not a valid version (letters, digits, '.', '-')")
    else:
        version = str(one("model version", {name(f, r): r.model.version for f, r in regions}))
    trt = str(one("TensorRT version (Triton image)", {name(f, r): r.triton.tensorrt for f, r in regions}))
    max_batch = int(one("Triton max_batch_size", {name(f, r): r.triton.max_batch_size for f, r in regions}))
    releases = sorted({r.triton.release for _, r in regions if r.triton.release})
    release = releases[0] if len(releases) == 1 else None
    if release is None:
        raise PlanError(
            f"the TensorRT container must match the Triton image's release; stacks use {releases or 'no release tag'}"
        )
    triton_version = TRITON_RELEASES.get(release, {}).get("triton")
    image = TENSORRT_IMAGE.format(release=release)
    opt = max(1, min(opt_batch, max_batch))
    profile = Profile(min=1, opt=opt, max=max_batch)
    dirs = model_dirs(model)

    # Where each capability is served, and whether every region serving it opted for the ONNX fallback.
    pools: dict[str, list[PoolRef]] = {}
    fallback_votes: dict[str, list[bool]] = {}
    for f, r in regions:
        for p in r.gpu_pools:
            cc = p.gpu.compute_capability
            pools.setdefault(cc, []).append(
                PoolRef(
                    env=f.env,
                    region=r.region,
                    stack=name(f, r),
                    pool=p.name,
                    instance_type=p.instance_type,
                    gpu_model=p.gpu.gpu_model,
                )
            )
            fallback_votes.setdefault(cc, []).append(cc in r.model.onnx_fallback_for)
    ccs = sorted(pools, key=cc_key)
    fallback = [cc for cc in ccs if all(fallback_votes[cc])]
    need = [cc for cc in ccs if cc not in fallback]
    # FP16 engines get their own half-precision graph; FP32 engines build from the served FP32 graph.
    onnx_path = f"{dirs['tensorrt']}/model.fp16.onnx" if precision == "fp16" else f"{dirs['onnx']}/1/model.onnx"

    engines: list[EnginePlan] = []
    if hardware_compatibility == "AMPERE_PLUS":
        old = [cc for cc in need if cc_key(cc) < (8, 0)]
        if old:
            raise PlanError(
                f"hardware compatibility AMPERE_PLUS cannot serve pre-Ampere GPUs {old}; build per capability"
            )
        groups = [(need[0], need)] if need else []  # built on the oldest Ampere+ GPU in the fleet
    else:
        groups = [(cc, [cc]) for cc in need]
    for build_cc, serves in groups:
        file = engine_file(build_cc, hardware_compatibility)
        engines.append(
            EnginePlan(
                compute_capability=build_cc,
                serves=serves,
                file=file,
                path=f"{dirs['tensorrt']}/1/{file}",
                onnx=onnx_path,
                precision=precision,
                profile=profile,
                tensorrt_version=trt,
                tensorrt_image=image,
                timing_cache_key=timing_cache_key(build_cc, trt, hardware_compatibility),
                hardware_compatibility=hardware_compatibility,
                version_compatible=version_compatible,
                pools=[p for cc in serves for p in pools[cc]],
                record=f"engine_records/{file.removesuffix('.plan')}.json",
            )
        )

    # One Job per environment and engine, on the first region (by name) with a pool of that capability:
    # the engine lands in that region's bucket and replication carries it to the others.
    jobs: list[JobPlan] = []
    for f in fleets:
        for e in engines:
            here = sorted((p for p in pools[e.compute_capability] if p.env == f.env), key=lambda p: (p.region, p.pool))
            if not here:
                continue
            first = here[0]
            jobs.append(
                JobPlan(
                    env=f.env,
                    compute_capability=e.compute_capability,
                    region=first.region,
                    stack=first.stack,
                    pool=first.pool,
                    instance_type=first.instance_type,
                    name=_k8s_name(model, "engine", sm(e.compute_capability), version),
                    file=f"jobs/{f.env}-engine-{sm(e.compute_capability)}.yaml",
                )
            )
    return BuildPlan(
        model=model,
        version=version,
        envs=sorted(f.env for f in fleets),
        triton_release=release,
        triton_version=triton_version,
        triton_images=sorted({r.triton.image for _, r in regions}),
        tensorrt_version=trt,
        tensorrt_image=image,
        max_batch_size=max_batch,
        opt_batch_size=opt,
        compute_capabilities=ccs,
        onnx_fallback_for=fallback,
        engines=engines,
        jobs=jobs,
    )
