"""The per-region serving repository, built as the regional stack's pod builds it, plus the CPU stand-in.

Model of AWS: in a region, Triton pods fetch the immutable version prefix `model_build publish` wrote, and their
verify-model init container verifies it and links the models the pod serves into the repository Triton reads. Here
the declared fetch-model script fetches the same files from the region's bucket in moto (`pod.fetch_declared`),
`prepare_serving_repo` runs the declared verify-model command (drills.rehearsal.pod) over them, then adds the
python-backend model that stands in
for the declared TensorRT / ONNX Runtime model on this CPU server (the `nvidia-pytriton` server has the python
backend and nothing else):
- the declared models' directories, linked by the declared script, exactly as on a pod (Triton does not load them
  here: the stand-in's `--load-model` replaces theirs);
- python-backend models (`backend: "python"` in config.pbtxt, e.g. `<model>_py/`), whole, and the ONNX file and
  `manifest.json` they read (by the `onnx_model` and `manifest` parameters), at their own relative paths;
- nothing else: TensorRT engines, the TensorRT source graph, checkpoints, golden rows and Job manifests stay in the
  verified version, outside what Triton reads.
Every file the stand-in needs is checked (sha256, size) in the source and again in the repository; a mismatch, a
missing file or an ONNX file the manifest does not cover stops the preparation with `ArtifactError` and nothing is
served: a corrupted artifact never serves.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from drills.rehearsal.pod import PodError, PodSpec, build_serving_repo
from model_build.manifest import MANIFEST, FileEntry, Manifest, ManifestError, parse_manifest

_V2_DATATYPE = {"int32": "INT32", "float32": "FP32"}  # manifest dtype -> KServe V2 datatype


class ArtifactError(RuntimeError):
    """A model artifact is missing, corrupted or unservable; the message says which file and what to do."""


@dataclass
class ServingRepo:
    path: Path
    models: list[str]  # the python-backend model(s) to --load-model
    manifest: Manifest
    served: dict[str, str] = field(default_factory=dict)  # relative path -> sha256 (verified)
    excluded: dict[str, str] = field(default_factory=dict)  # relative path -> why it is not served
    unlisted: list[str] = field(default_factory=list)  # served files the manifest does not list

    @property
    def model_name(self) -> str:
        return manifest_model(self.manifest)[0]

    @property
    def model_version(self) -> str:
        return manifest_model(self.manifest)[1]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(src: Path) -> Manifest:
    """The manifest of a model_build output (or a bucket sync), validated against model_build's schema; ArtifactError
    naming the file when it is missing, not JSON or not a manifest of that schema."""
    path = Path(src) / MANIFEST
    if not path.exists():
        raise ArtifactError(
            f"{path} is missing: {src} is not a complete model_build output "
            f"(the manifest is written last); run `python -m model_build --out {src}`"
        )
    try:
        return parse_manifest(path.read_bytes(), str(path))
    except ManifestError as e:
        raise ArtifactError(f"{e}: rebuild with `python -m model_build`") from None


def manifest_files(manifest: Manifest) -> dict[str, FileEntry]:
    """relative path -> its entry (sha256, size, role); the schema keeps every path inside the repository."""
    return {f.path: f for f in manifest.files}


def manifest_model(manifest: Manifest) -> tuple[str, str]:
    """(model name, version): the bucket prefix `<name>/<version>` the version is published under."""
    name, version = manifest.model.get("name"), manifest.model.get("version")
    if not name or not version:
        raise ArtifactError(f"the manifest's `model` {manifest.model} lacks a name or a version: rebuild the model")
    return name, version


def manifest_inputs(manifest: Manifest) -> list[dict]:
    """The input signature as [{name, datatype (V2: INT32, FP32), shape (batch first, -1)}].

    model_build's manifest has `signature.inputs[] = {name, dtype: "int32", dims: [8]}` (Triton's dims, without the
    batch dimension).
    """
    return [
        {"name": t.name, "datatype": _V2_DATATYPE[t.dtype], "shape": [-1, *t.dims]} for t in manifest.signature.inputs
    ]


def manifest_seed(manifest: Manifest) -> int | None:
    """The data seed the build drew its golden rows from (`data.seed`), None when the manifest records none."""
    seed = manifest.data.get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def _config_kind(config_text: str) -> str:
    """'python', 'onnx', 'tensorrt' or 'other', from a config.pbtxt's backend/platform lines."""
    m = re.search(r'^\s*(backend|platform)\s*:\s*"([^"]+)"', config_text, re.M)
    value = m.group(2) if m else ""
    if value == "python":
        return "python"
    if value in ("onnxruntime", "onnxruntime_onnx"):
        return "onnx"
    if value in ("tensorrt", "tensorrt_plan"):
        return "tensorrt"
    return "other:" + (value or "unknown")


def config_parameters(config_text: str) -> dict[str, str]:
    """The string parameters of a config.pbtxt (e.g. model_build's `onnx_model`, `manifest`)."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2 as mc

        cfg = text_format.Parse(config_text, mc.ModelConfig())
        return {k: v.string_value for k, v in cfg.parameters.items()}
    except ImportError:  # pragma: no cover - tritonclient is in the venv; a regex is enough for this field
        return dict(re.findall(r'key:\s*"([^"]+)"\s*value\s*{\s*string_value:\s*"([^"]*)"', config_text))


def _models(src: Path) -> tuple[dict[str, str], set[str]]:
    """(model dir -> kind, files the python models reference by parameter)."""
    kinds: dict[str, str] = {}
    referenced: set[str] = set()
    for cfg in sorted(Path(src).glob("*/config.pbtxt")):
        text = cfg.read_text()
        kinds[cfg.parent.name] = _config_kind(text)
        if kinds[cfg.parent.name] == "python":
            params = config_parameters(text)
            referenced |= {v for k, v in params.items() if k in ("onnx_model", "manifest") and v}
    return kinds, referenced


def classify(src: Path) -> tuple[list[str], dict[str, str], list[str]]:
    """(python models, excluded relative path -> reason, served relative paths) for a model_build output.

    The ONNX file served is the one a python model's `onnx_model` parameter names (model_build's python
    model reads it from there); without that parameter every .onnx file is served.
    """
    src = Path(src)
    py_models: list[str] = []
    excluded: dict[str, str] = {}
    served: list[str] = []
    kinds, referenced = _models(src)
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src).as_posix()
        if "__pycache__" in path.parts:
            continue
        top = rel.split("/", 1)[0]
        kind = kinds.get(top)
        is_onnx = path.suffix == ".onnx" or path.name.endswith(".onnx.data")
        if rel == MANIFEST or rel in referenced:
            served.append(rel)  # the python model runs the ONNX file with ONNX Runtime
        elif kind == "python" or (is_onnx and not any(r.endswith(".onnx") for r in referenced)):
            served.append(rel)
        elif is_onnx:
            excluded[rel] = "an ONNX file the python model does not load (e.g. the TensorRT engines' source graph)"
        elif kind == "onnx":
            excluded[rel] = (
                "ONNX Runtime backend model config: the pytriton server has no onnxruntime backend "
                "(the python model serves the same ONNX file instead)"
            )
        elif kind == "tensorrt" or path.suffix in (".plan", ".engine"):
            excluded[rel] = (
                "TensorRT engine/model: needs the TensorRT backend and a GPU of its compute capability, "
                "which the CPU rehearsal server does not have"
            )
        elif kind is not None:
            excluded[rel] = f"model with {kind}: not loadable by the python-only server"
        else:
            excluded[rel] = "not part of a python-backend model"
    py_models = sorted(m for m, k in kinds.items() if k == "python")
    return py_models, excluded, served


def _verify(path: Path, rel: str, want: FileEntry, where: str) -> None:
    if not path.exists():
        raise ArtifactError(
            f"{where}: {rel} is listed in the manifest but missing; the artifact is incomplete, "
            f"republish the model version"
        )
    size = path.stat().st_size
    if want.size != size:
        raise ArtifactError(
            f"{where}: {rel} is {size} bytes, the manifest says {want.size}: corrupted or "
            f"truncated artifact, refusing to serve it; republish the model version"
        )
    got = sha256_file(path)
    if got != want.sha256:
        raise ArtifactError(
            f"{where}: {rel} has sha256 {got[:16]}…, the manifest says {want.sha256[:16]}…: "
            f"corrupted artifact, refusing to serve it; republish the model version"
        )


def verify_tree(src: Path, rels: list[str] | None = None) -> dict[str, str]:
    """Check the listed files (default: all in the manifest) of a model_build output; return rel -> sha256."""
    src = Path(src)
    files = manifest_files(read_manifest(src))
    ok = {}
    for rel in rels if rels is not None else sorted(files):
        if rel in files:
            _verify(src / rel, rel, files[rel], str(src))
            ok[rel] = files[rel].sha256
    return ok


def prepare_serving_repo(src: Path, dest: Path, pod: PodSpec, digest: str) -> ServingRepo:
    """Build `dest`, the repository this region's Triton reads, from the version `src` synced from the bucket, as
    the regional stack's pod does: its declared verify-model command verifies the version and links the declared
    models into it (refusing a manifest whose sha256 is not `digest`, the stack's pin); then the stand-in
    python-backend model (pod.SUBSTITUTIONS) and the files it reads are linked
    beside them, after the rehearsal's own checks of those files.

    Built in `<dest>.partial` and renamed into place only once complete, so `dest` is either a complete verified
    repository or absent. A refusal (the script's, or a stand-in file that fails its hash) is an ArtifactError.
    """
    src, dest = Path(src), Path(dest)
    manifest = read_manifest(src)
    files = manifest_files(manifest)
    py_models, excluded, served = classify(src)
    if not py_models:
        raise ArtifactError(
            f'{src} has no python-backend model (a <model>_py/ dir with backend "python"): the CPU '
            f"rehearsal server cannot serve anything else; rebuild with `python -m model_build`"
        )
    onnx = [r for r in served if r.endswith(".onnx")]
    for rel in onnx:
        if rel not in files:
            raise ArtifactError(
                f"{src}: {rel} is not listed in the manifest, so its integrity cannot be checked; refusing to serve it"
            )
    # A file the manifest lists that serving needs but that is absent: an incomplete artifact.
    _, referenced = _models(src)
    any_ref_onnx = any(r.endswith(".onnx") for r in referenced)
    for rel in files:
        needed = rel.split("/", 1)[0] in py_models or rel in referenced or (rel.endswith(".onnx") and not any_ref_onnx)
        if needed and rel not in served:
            raise ArtifactError(
                f"{src}: {rel} is listed in the manifest but missing; the artifact is incomplete, "
                f"republish the model version"
            )
    for rel in served:
        if rel in files:
            _verify(src / rel, rel, files[rel], str(src))
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        loads = build_serving_repo(pod, src, tmp, served, digest)
    except PodError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ArtifactError(str(e)) from None
    missing = [m for m in loads if m not in py_models]
    if missing:
        raise ArtifactError(f"{src}: the pod would load {missing}, which the version does not hold as a python model")
    in_repo = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
    # Check what Triton reads too: it is what was verified.
    for rel in in_repo:
        if rel in files:
            _verify(tmp / rel, rel, files[rel], f"serving repository {tmp}")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    not_loaded = "in the repository as declared, not loaded here: the python-backend model stands in for it"
    return ServingRepo(
        path=dest,
        models=loads,
        manifest=manifest,
        served={r: files[r].sha256 for r in in_repo if r in files},
        excluded={
            **{r: why for r, why in excluded.items() if r not in in_repo},
            **{r: not_loaded for r in in_repo if r not in served},
            **{r: "verified by verify-model; not a model this pod serves" for r in files if r not in in_repo},
        },
        unlisted=[r for r in in_repo if r not in files and r != MANIFEST],
    )


# ---------------------------------------------------------------- buckets
def upload_tree(s3, bucket: str, prefix: str, src: Path) -> list[str]:
    """Upload a model_build output under `prefix`, manifest last (a reader never sees a manifest whose files
    are not there yet). Stand-in for `model_build publish` until the rehearsal calls that directly."""
    src = Path(src)
    rels = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    rels.sort(key=lambda r: r == MANIFEST)
    for rel in rels:
        s3.put_object(Bucket=bucket, Key=f"{prefix.rstrip('/')}/{rel}", Body=(src / rel).read_bytes())
    return rels
