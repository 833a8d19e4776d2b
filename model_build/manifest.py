"""The model manifest: what a build produced, and the check that a repository still is that build.

`manifest.json` sits at the root of the model repository (the build's output directory, and the
`<model>/<version>/` prefix in the bucket). Every path in it is relative to that root. It is written last,
by an atomic rename, so a repository without one is an unfinished build.

Public API (kept small; the drills and the rehearsal import it):

- `Manifest`: the pydantic schema. The fields other parts read:
  `model.name`, `model.version`; `files[]` (`path`, `sha256`, `size`, `role`); `signature` (inputs,
  outputs, `max_batch_size`); `compute_capabilities`; `engines[cc]` (`status` "built" | "not-built",
  `file`, `tensorrt_version`, `hardware_compatibility`, `version_compatible`); `onnx_fallback_for`;
  `tensorrt_version`; `triton` (`release`, `version`, `images`); `serving` (the Triton model names);
  `metrics` (`validation_auc`, parity figures); `benchmark.qps_per_gpu` ({compute capability: ranking
  requests/s per GPU}, only for GPUs actually measured; CPU figures live under `benchmark.cpu`).
- `load_manifest(path) -> Manifest`: `path` is a manifest file or a repository directory.
- `parse_manifest(doc, source) -> Manifest`: a parsed manifest (a mapping) or its JSON text, validated; a document
  that is not JSON or not of this schema raises `ManifestError`, one line naming `source` and the first problem
  (what the other readers of a manifest, infra.invariants and the drills, report).
- `verify(directory) -> list[str]`: every problem found, each naming the offending file (hash, size,
  missing file, unexpected file, ONNX or config.pbtxt signature mismatch, engine without a valid record);
  an empty list means the directory is exactly the build the manifest describes.
- `sha256_file(path)`, `write_manifest(directory, manifest)` (atomic), `MANIFEST` and `SIGNATURE` (file names).
- `EngineRecord`: what an engine-build Job writes next to an engine it adds to a published version
  (`engine_records/<engine>.json`); `verify` accepts an engine file that the manifest lists as
  "not-built" only when such a record matches it.
- `engines_available(manifest, read) -> {cc: state}`: for every compute capability in the manifest, one of
  "built" (in the manifest), "added-by-job" (a valid record for this version's graph and TensorRT version
  exists), "onnx-fallback" (served by the ONNX Runtime model on purpose) or "missing". `read(rel_path)`
  returns a repository file's bytes or None, so the same check runs on a directory or on a bucket prefix.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MANIFEST = "manifest.json"
# The release signature beside the manifest (model_build.signing): the one file a signature cannot list.
SIGNATURE = "model.sig"
SCHEMA_VERSION = 1
Role = Literal[
    "onnx", "onnx-trt-source", "triton-config", "python-model", "k8s-job", "checkpoint", "golden", "engine", "fallback"
]


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _safe_rel(p: str) -> str:
    pp = PurePosixPath(p)
    if pp.is_absolute() or ".." in pp.parts or p != pp.as_posix() or not p:
        raise ValueError(f"must be a relative POSIX path inside the repository, got {p!r}")
    return p


class FileEntry(_M):
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    role: Role

    @field_validator("path")
    @classmethod
    def _rel(cls, v: str) -> str:
        return _safe_rel(v)


class TensorSpec(_M):
    name: str
    dtype: Literal["int32", "float32"]
    dims: list[int]  # without the batch dimension (Triton's `dims`); ONNX shape is [batch, *dims]
    columns: list[str] = []
    description: str = ""

    @property
    def triton_dtype(self) -> str:
        return {"int32": "TYPE_INT32", "float32": "TYPE_FP32"}[self.dtype]

    @property
    def onnx_shape(self) -> list:
        return ["batch", *self.dims]


class Signature(_M):
    max_batch_size: int = Field(ge=1)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class ParityFigure(_M):
    graph: Literal["fp32", "fp16"]
    runtime: str  # "onnxruntime-cpu", "tensorrt"
    batch: int
    rows: int
    max_abs: float
    max_rel: float
    topk: int
    topk_overlap_mean: float
    topk_overlap_min: float
    ndcg_delta: float
    limits: dict[str, float]
    passed: bool


class Metrics(_M):
    validation_auc: float
    validation_logloss: float
    validation_ndcg_at_10: float
    oracle_auc: float
    validation_ctr: float
    train_rows: int
    validation_rows: int
    train_seconds: float
    parity: list[ParityFigure]


class EngineEntry(_M):
    compute_capability: str
    serves: list[str]
    file: str  # repository-relative path of the engine
    status: Literal["built", "not-built"]
    reason: str | None = None  # why not built here, and where it gets built
    tensorrt_version: str
    tensorrt_image: str
    precision: str
    strongly_typed: bool
    hardware_compatibility: str
    version_compatible: bool
    profile: dict[str, int]
    timing_cache_key: str
    onnx: str  # repository-relative path of the graph it is (to be) built from
    record: str  # where a Job's EngineRecord goes
    build_jobs: list[str] = []  # repository-relative Job manifests that build it, one per environment
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")  # only when built
    size: int | None = None
    built_on: str | None = None  # GPU name the engine was built on


class EngineRecord(_M):
    """Written by an engine-build Job (or a GPU host) beside an engine added to a published version."""

    compute_capability: str
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    tensorrt_version: str
    onnx_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    built_on: str
    device_compute_capability: str
    hardware_compatibility: str
    version_compatible: bool
    profile: dict[str, int]
    parity: list[dict] = []
    built_at: str


class BenchRun(_M):
    runtime: str  # "pytorch-eager-cpu", "onnxruntime-cpu", "tensorrt-sm90", ...
    batch: int
    iterations: int
    p50_ms: float
    p99_ms: float
    rows_per_s: float


class Benchmark(_M):
    status: Literal["not-run", "measured"] = "not-run"
    measured_at: str | None = None
    host: dict[str, str | int | float | None] = {}
    rows_per_request: int | None = None
    latency_budget_ms: float | None = None
    runs: list[BenchRun] = []
    # Ranking requests per second per GPU, keyed by compute capability: only for GPUs actually measured
    # (infra.capacity reads it). CPU figures are never put here.
    qps_per_gpu: dict[str, float] = {}
    cpu: dict[str, float | int | str] | None = None
    note: str | None = None


class Manifest(_M):
    schema_version: int = SCHEMA_VERSION
    model: dict[str, str]  # name, version
    created_at: str
    git: dict[str, str | bool]
    data: dict[str, int | str | bool]
    ranker: dict
    training: dict
    metrics: Metrics
    signature: Signature
    onnx: dict[str, dict]  # graph ("fp32", "fp16") -> path, opset, ir_version, ops
    files: list[FileEntry]
    compute_capabilities: list[str]
    onnx_fallback_for: list[str]
    engines: dict[str, EngineEntry]  # keyed by the compute capability the engine is built on
    tensorrt_version: str
    triton: dict[str, str | list[str] | None]
    serving: dict[str, str]
    build_plan: dict
    benchmark: Benchmark = Benchmark()

    @field_validator("files")
    @classmethod
    def _unique(cls, v: list[FileEntry]) -> list[FileEntry]:
        paths = [f.path for f in v]
        if len(set(paths)) != len(paths):
            raise ValueError("every file is listed once")
        return v

    def file(self, path: str) -> FileEntry | None:
        return next((f for f in self.files if f.path == path), None)

    def files_by_role(self, role: str) -> list[FileEntry]:
        return [f for f in self.files if f.role == role]


def file_entry(root: Path, rel: str, role: Role) -> FileEntry:
    p = root / rel
    return FileEntry(path=rel, sha256=sha256_file(p), size=p.stat().st_size, role=role)


def write_manifest(directory: str | os.PathLike, manifest: Manifest) -> Path:
    """Write `manifest.json` atomically: a reader sees the old manifest, no manifest, or the whole new one."""
    d = Path(directory)
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(manifest.model_dump_json(indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, d / MANIFEST)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return d / MANIFEST


def load_manifest(path: str | os.PathLike) -> Manifest:
    """Parse and validate a manifest; `path` is the file or the repository directory holding it."""
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST
    return Manifest.model_validate_json(p.read_text())


class ManifestError(ValueError):
    """A document that is not JSON or not a manifest of this schema; the message is one line naming where it was
    read and the first problem."""


def parse_manifest(doc: Mapping[str, Any] | str | bytes, source: str) -> Manifest:
    """Validate a parsed manifest (a mapping) or its JSON text (`source` names where it came from, for the error).

    Raises ManifestError with the first problem (the dotted path of the offending field and what is wrong with it)
    instead of pydantic's report of one paragraph per error.
    """
    try:
        if isinstance(doc, (str, bytes)):
            return Manifest.model_validate_json(doc)
        return Manifest.model_validate(doc)
    except ValidationError as e:
        first = e.errors()[0]
        if first["type"] == "json_invalid":
            raise ManifestError(
                f"{source} is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}"
            ) from None
        where = ".".join(str(part) for part in first["loc"]) or "the document"
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise ManifestError(
            f"{source} does not match model_build's manifest schema: {where}: {first['msg']}{more}"
        ) from None


def engines_available(m: Manifest, read: Callable[[str], bytes | None]) -> dict[str, str]:
    """Per compute capability: "built", "added-by-job", "onnx-fallback" or "missing" (see the module doc)."""
    out: dict[str, str] = {}
    for cc in m.compute_capabilities:
        engine = next((e for e in m.engines.values() if cc in e.serves), None)
        if engine is None:
            out[cc] = "onnx-fallback" if cc in m.onnx_fallback_for else "missing"
        elif engine.status == "built":
            out[cc] = "built"
        else:
            out[cc] = "added-by-job" if _record_ok(m, engine, read(engine.record)) else "missing"
    return out


def _record_ok(m: Manifest, e: EngineEntry, raw: bytes | None) -> bool:
    if raw is None:
        return False
    try:
        r = EngineRecord.model_validate_json(raw)
    except (ValidationError, ValueError):
        return False
    src = m.file(e.onnx)
    return (
        r.file == e.file
        and r.compute_capability == e.compute_capability
        and r.tensorrt_version == e.tensorrt_version
        and src is not None
        and r.onnx_sha256 == src.sha256
    )


def _repo_files(root: Path) -> set[str]:
    out = set()
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            out.add((Path(dirpath) / name).relative_to(root).as_posix())
    return out


def verify(directory: str | os.PathLike) -> list[str]:
    """Every way `directory` differs from the build its manifest describes; [] when it matches exactly."""
    root = Path(directory)
    if not (root / MANIFEST).is_file():
        return [f"{MANIFEST}: missing (an unfinished build, or not a model repository): {root}"]
    try:
        m = load_manifest(root)
    except (ValidationError, ValueError) as e:
        return [f"{MANIFEST}: does not match the manifest schema: {str(e).splitlines()[0]}"]

    problems: list[str] = []
    intact: set[str] = set()
    for f in m.files:
        p = root / f.path
        if not p.is_file():
            problems.append(f"{f.path}: missing")
            continue
        size = p.stat().st_size
        if size != f.size:
            problems.append(f"{f.path}: size {size} != {f.size} in the manifest")
            continue
        digest = sha256_file(p)
        if digest != f.sha256:
            problems.append(f"{f.path}: sha256 {digest} != {f.sha256} in the manifest")
            continue
        intact.add(f.path)

    # Engines the manifest lists as not built here may have been added later by a build Job; they count
    # only with a record that matches them byte for byte and names the right graph and TensorRT version.
    accounted = {MANIFEST, SIGNATURE, *(f.path for f in m.files)}
    for cc, entry in m.engines.items():
        if entry.status == "built":
            if entry.file not in accounted:
                problems.append(f"{entry.file}: engine for {cc} is 'built' but not among the manifest's files")
            continue
        engine, record = root / entry.file, root / entry.record
        if not engine.exists() and not record.exists():
            continue
        accounted.update({entry.file, entry.record})
        problems += _check_record(root, m, cc, entry)

    for rel in sorted(_repo_files(root) - accounted):
        problems.append(f"{rel}: unexpected file, not in the manifest")

    problems += _check_signatures(root, m, intact)
    return problems


def _check_record(root: Path, m: Manifest, cc: str, e: EngineEntry) -> list[str]:
    engine, record = root / e.file, root / e.record
    if not record.is_file():
        return [f"{e.file}: engine present but its record {e.record} is missing"]
    if not engine.is_file():
        return [f"{e.record}: record present but its engine {e.file} is missing"]
    try:
        r = EngineRecord.model_validate_json(record.read_text())
    except (ValidationError, ValueError) as ex:
        return [f"{e.record}: not a valid engine record: {str(ex).splitlines()[0]}"]
    src = m.file(e.onnx)
    out = []
    if r.file != e.file or r.compute_capability != cc:
        out.append(f"{e.record}: describes {r.file} for {r.compute_capability}, expected {e.file} for {cc}")
    if r.tensorrt_version != e.tensorrt_version:
        out.append(f"{e.record}: built with TensorRT {r.tensorrt_version}, the manifest requires {e.tensorrt_version}")
    if src is None or r.onnx_sha256 != src.sha256:
        out.append(f"{e.record}: built from ONNX {r.onnx_sha256[:12]}..., not from this version's {e.onnx}")
    if engine.stat().st_size != r.size or sha256_file(engine) != r.sha256:
        out.append(f"{e.file}: does not match its record {e.record} (sha256/size)")
    return out


def _check_signatures(root: Path, m: Manifest, intact: set[str]) -> list[str]:
    """The ONNX graphs and Triton configs must still declare the manifest's signature (only intact files
    are parsed: a file that failed its hash is already reported and is not fed to a parser)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    problems: list[str] = []
    sig = m.signature
    want_onnx = {t.name: (t.dtype, t.onnx_shape) for t in [*sig.inputs, *sig.outputs]}
    for f in m.files:
        if f.role in ("onnx", "onnx-trt-source") and f.path in intact:
            try:
                got = onnx_signature(root / f.path)
            except Exception as e:  # noqa: BLE001 - any parser failure (a corrupt protobuf...) is reported
                problems.append(f"{f.path}: cannot be read as ONNX: {e}")
                continue
            if got != want_onnx:
                problems.append(f"{f.path}: ONNX signature {got} != manifest {want_onnx}")
    want_io = (
        {t.name: (t.triton_dtype, t.dims) for t in sig.inputs},
        {t.name: (t.triton_dtype, t.dims) for t in sig.outputs},
    )
    for f in m.files:
        if f.role != "triton-config" or f.path not in intact:
            continue
        try:
            cfg = text_format.Parse((root / f.path).read_text(), model_config_pb2.ModelConfig())
        except Exception as e:  # noqa: BLE001 - any parser failure is reported as a problem, not raised
            problems.append(f"{f.path}: does not parse as a Triton ModelConfig: {e}")
            continue
        io = (
            {i.name: (model_config_pb2.DataType.Name(i.data_type), list(i.dims)) for i in cfg.input},
            {o.name: (model_config_pb2.DataType.Name(o.data_type), list(o.dims)) for o in cfg.output},
        )
        if io != want_io:
            problems.append(f"{f.path}: inputs/outputs {io} != manifest signature {want_io}")
        if cfg.max_batch_size != sig.max_batch_size:
            problems.append(f"{f.path}: max_batch_size {cfg.max_batch_size} != manifest {sig.max_batch_size}")
        if cfg.platform == "tensorrt_plan":
            want = {cc: PurePosixPath(e.file).name for e in m.engines.values() for cc in e.serves}
            if dict(cfg.cc_model_filenames) != want:
                problems.append(f"{f.path}: cc_model_filenames {dict(cfg.cc_model_filenames)} != engines {want}")
            if cfg.default_model_filename:
                problems.append(
                    f"{f.path}: default_model_filename {cfg.default_model_filename!r} would serve unknown GPUs silently"
                )
            maxes = {e.profile.get("max") for e in m.engines.values()}
            if maxes and maxes != {cfg.max_batch_size}:
                profile_maxes = sorted(maxes)  # type: ignore[type-var]  # build-written profiles all carry "max"
                problems.append(f"{f.path}: max_batch_size {cfg.max_batch_size} != engine profile max {profile_maxes}")
    return problems


def onnx_signature(path: str | os.PathLike) -> dict[str, tuple[str, list]]:
    """{tensor name: (dtype, shape)} of an ONNX file's graph inputs and outputs."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    out = {}
    for vi in [*m.graph.input, *m.graph.output]:
        t = vi.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        out[vi.name] = (dtype, [d.dim_param or d.dim_value for d in t.shape.dim])
    return out
