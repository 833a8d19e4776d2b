"""The TensorRT call sites, and the engine-build Job's entry point. Written to the TensorRT 10.x Python API.

Everything that touches TensorRT or the GPU is in this one file, imported lazily: `import tensorrt` happens
inside the functions, so the module imports (and its pure helpers are tested) on a machine without
TensorRT. It depends only on the standard library, numpy and tensorrt, because the Kubernetes Job runs it
as a plain script inside NVIDIA's TensorRT container (`nvcr.io/nvidia/tensorrt:<release>-py3`), mounted
from a ConfigMap, with no project code or other packages installed.

- `probe()`: is TensorRT importable, is there a GPU, which compute capability — without raising.
- `build_engine(...)`: ONNX bytes -> serialized engine. Strongly typed network (precision is the graph's;
  no FP16 builder flag, which strongly typed networks reject), one optimisation profile with the planned
  min/opt/max shapes, a timing cache loaded and saved per (compute capability, TensorRT version),
  optional hardware compatibility level and version compatibility.
- `Engine`: deserialise and run an engine with device buffers from the CUDA runtime through ctypes (no
  cuda-python or torch needed in the container); used for parity and for the benchmark.
- `main(argv)`: the Job: verify the downloaded ONNX against the manifest and the plan, refuse a GPU of the
  wrong compute capability, build, check the engine's I/O and profile, run the golden parity gates, write
  the engine, its record (see `model_build.manifest.EngineRecord`) and the updated timing cache.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as _dt
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path


# ----------------------------------------------------------------------------- environment
def probe() -> dict:
    """{"tensorrt": version|None, "gpu": name|None, "compute_capability": cc|None, "reason": why not usable}."""
    out: dict = {"tensorrt": None, "gpu": None, "compute_capability": None, "reason": None}
    try:
        import tensorrt as trt

        out["tensorrt"] = trt.__version__
    except Exception as e:  # noqa: BLE001 - ImportError, or a broken install missing libnvinfer: reported, not raised
        out["reason"] = f"TensorRT is not importable here ({type(e).__name__}: {e})"
    try:
        out["compute_capability"] = device_compute_capability()
        out["gpu"] = device_name()
    except Exception as e:  # noqa: BLE001 - no driver, no libcudart, no device...: reported, not raised
        out["reason"] = (out["reason"] + "; " if out["reason"] else "") + f"no CUDA GPU here ({e})"
    return out


class CudaRt:
    """The few CUDA runtime calls an engine needs, through ctypes on libcudart."""

    H2D, D2H = 1, 2

    def __init__(self) -> None:
        last: Exception | None = None
        for name in ("libcudart.so", "libcudart.so.12", "libcudart.so.13", "libcudart.so.11.0"):
            try:
                self.lib = ctypes.CDLL(name)
                break
            except OSError as e:
                last = e
        else:
            raise RuntimeError(f"CUDA runtime library not found: {last}")
        self.lib.cudaGetErrorString.restype = ctypes.c_char_p

    def _ok(self, code: int, what: str) -> None:
        if code != 0:
            raise RuntimeError(f"{what} failed: {self.lib.cudaGetErrorString(code).decode()} ({code})")

    def attribute(self, attr: int, device: int = 0) -> int:
        v = ctypes.c_int()
        self._ok(self.lib.cudaDeviceGetAttribute(ctypes.byref(v), attr, device), "cudaDeviceGetAttribute")
        return v.value

    def malloc(self, nbytes: int) -> int:
        p = ctypes.c_void_p()
        self._ok(self.lib.cudaMalloc(ctypes.byref(p), ctypes.c_size_t(max(nbytes, 1))), "cudaMalloc")
        assert p.value is not None, "cudaMalloc succeeded, so it set the pointer"
        return int(p.value)

    def free(self, ptr: int) -> None:
        self._ok(self.lib.cudaFree(ctypes.c_void_p(ptr)), "cudaFree")

    def copy(self, dst: int, src: int, nbytes: int, kind: int) -> None:
        self._ok(
            self.lib.cudaMemcpy(ctypes.c_void_p(dst), ctypes.c_void_p(src), ctypes.c_size_t(nbytes), kind), "cudaMemcpy"
        )

    def stream(self) -> int:
        s = ctypes.c_void_p()
        self._ok(self.lib.cudaStreamCreate(ctypes.byref(s)), "cudaStreamCreate")
        return int(s.value or 0)

    def sync(self, stream: int) -> None:
        self._ok(self.lib.cudaStreamSynchronize(ctypes.c_void_p(stream)), "cudaStreamSynchronize")


def device_compute_capability(device: int = 0) -> str:
    rt = CudaRt()
    # cudaDevAttrComputeCapabilityMajor = 75, cudaDevAttrComputeCapabilityMinor = 76
    return f"{rt.attribute(75, device)}.{rt.attribute(76, device)}"


def device_name(device: int = 0) -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", f"--id={device}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return out.stdout.strip().splitlines()[0]
    except Exception:  # noqa: BLE001 - the name is cosmetic: any nvidia-smi failure falls back to a generic one
        return "unknown NVIDIA GPU"


# ----------------------------------------------------------------------------- build
class EngineBuildError(RuntimeError):
    pass


def build_engine(
    onnx_bytes: bytes,
    *,
    shapes: dict[str, tuple[list[int], list[int], list[int]]],
    timing_cache: bytes | None = None,
    hardware_compatibility: str = "NONE",
    version_compatible: bool = False,
    workspace_bytes: int = 1 << 30,
) -> tuple[bytes, bytes, list[dict]]:
    """Build a serialized engine from ONNX; returns (engine, updated timing cache, network I/O)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Strongly typed: every tensor's type follows the ONNX graph (FP16 where the graph is FP16).
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError("ONNX parser failed: " + "; ".join(errors))
    io = [
        {"name": t.name, "mode": mode, "dtype": str(t.dtype), "shape": list(t.shape)}
        for mode, n, get in (
            ("input", network.num_inputs, network.get_input),
            ("output", network.num_outputs, network.get_output),
        )
        for t in (get(i) for i in range(n))
    ]
    missing = sorted(set(shapes) - {t["name"] for t in io if t["mode"] == "input"})
    if missing:
        raise EngineBuildError(f"planned profile names inputs the network lacks: {missing}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    profile = builder.create_optimization_profile()
    for name, (mn, opt, mx) in shapes.items():
        profile.set_shape(name, mn, opt, mx)
    config.add_optimization_profile(profile)
    # The timing cache is only valid for this GPU and this TensorRT build: never ignore a mismatch.
    cache = config.create_timing_cache(timing_cache or b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    if hardware_compatibility == "AMPERE_PLUS":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    elif hardware_compatibility != "NONE":
        raise EngineBuildError(f"unknown hardware compatibility level {hardware_compatibility!r}")
    if version_compatible:
        # Embeds the lean runtime; Triton must run with --backend-config=tensorrt,version-compatible=true.
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError("build_serialized_network returned None (see the TensorRT log above)")
    return bytes(memoryview(serialized)), bytes(memoryview(config.get_timing_cache().serialize())), io


class Engine:
    """A deserialised engine with device buffers sized for its profile's max batch."""

    def __init__(self, engine_bytes: bytes, *, host_code_allowed: bool = False):
        import numpy as np
        import tensorrt as trt

        self.np, self.trt = np, trt
        self.cuda = CudaRt()
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        if host_code_allowed:  # version-compatible engines carry the lean runtime's host code
            self.runtime.engine_host_code_allowed = True
        self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise EngineBuildError("deserialize_cuda_engine failed: built for another GPU or TensorRT version?")
        self.context = self.engine.create_execution_context()
        self.stream = self.cuda.stream()
        self.tensors: dict[str, dict] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            shape = list(self.engine.get_tensor_shape(name))
            prof = [list(s) for s in self.engine.get_tensor_profile_shape(name, 0)] if is_input else None
            max_shape = prof[2] if prof else [self._max_batch() if d < 0 else d for d in shape]
            nbytes = int(np.prod(max_shape)) * dtype.itemsize
            self.tensors[name] = {
                "input": is_input,
                "dtype": dtype,
                "shape": shape,
                "profile": prof,
                "ptr": self.cuda.malloc(nbytes),
            }
            self.context.set_tensor_address(name, self.tensors[name]["ptr"])

    def _max_batch(self) -> int:
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            if self.engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT:
                return int(self.engine.get_tensor_profile_shape(name, 0)[2][0])
        raise EngineBuildError("engine has no inputs")

    def io(self) -> dict[str, dict]:
        return {
            n: {k: (str(v) if k == "dtype" else v) for k, v in t.items() if k != "ptr"} for n, t in self.tensors.items()
        }

    def __call__(self, batch: dict) -> dict:
        np = self.np
        n = None
        for name, t in self.tensors.items():
            if t["input"]:
                a = np.ascontiguousarray(batch[name], dtype=t["dtype"])
                n = a.shape[0]
                self.context.set_input_shape(name, a.shape)
                self.cuda.copy(t["ptr"], a.ctypes.data, a.nbytes, CudaRt.H2D)
        if not self.context.execute_async_v3(self.stream):
            raise EngineBuildError("execute_async_v3 failed")
        self.cuda.sync(self.stream)
        out = {}
        for name, t in self.tensors.items():
            if not t["input"]:
                shape = list(self.context.get_tensor_shape(name))
                host = np.empty([n if d < 0 else d for d in shape], dtype=t["dtype"])
                self.cuda.copy(host.ctypes.data, t["ptr"], host.nbytes, CudaRt.D2H)
                out[name] = host
        return out

    def close(self) -> None:
        for t in self.tensors.values():
            self.cuda.free(t["ptr"])
        self.tensors = {}


# ----------------------------------------------------------------------------- parity (numpy only)
def compare(ref, got, request, topk: int) -> dict:
    """max_abs, max_rel (against max(|ref|, 1e-3)) and per-request top-k overlap (mean, min)."""
    import numpy as np

    ref, got = np.asarray(ref, np.float64).ravel(), np.asarray(got, np.float64).ravel()
    err = np.abs(ref - got)
    bounds = np.flatnonzero(np.diff(request)) + 1
    ov = []
    for r, g in zip(np.split(ref, bounds), np.split(got, bounds), strict=True):
        k = min(topk, len(r))
        ov.append(len(set(np.argsort(-r, kind="stable")[:k]) & set(np.argsort(-g, kind="stable")[:k])) / k)
    return {
        "max_abs": float(err.max()),
        "max_rel": float((err / np.maximum(np.abs(ref), 1e-3)).max()),
        "topk_overlap_mean": float(np.mean(ov)),
        "topk_overlap_min": float(np.min(ov)),
    }


def golden_parity(
    engine: Engine, golden: dict, output: str, batches: list[int], limits: dict, topk: int, batch1_rows: int
) -> list[dict]:
    """The build's parity gates, for an engine, against the golden set's float32 PyTorch reference."""
    import numpy as np

    out = []
    inputs = [n for n, t in engine.tensors.items() if t["input"]]
    for b in batches:
        rows = min(len(golden["reference"]), batch1_rows) if b == 1 else len(golden["reference"])
        got = np.concatenate(
            [engine({n: golden[n][i : min(i + b, rows)] for n in inputs})[output].ravel() for i in range(0, rows, b)]
        )
        fig = compare(golden["reference"][:rows], got, golden["request"][:rows], topk)
        fig.update(batch=b, rows=rows, graph="fp16", runtime="tensorrt", limits=limits)
        fig["passed"] = bool(
            fig["max_abs"] <= limits["max_abs"]
            and fig["max_rel"] <= limits["max_rel"]
            and fig["topk_overlap_mean"] >= limits["topk_overlap_mean"]
            and fig["topk_overlap_min"] >= limits["topk_overlap_min"]
        )
        out.append(fig)
    return out


# ----------------------------------------------------------------------------- the Job
def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="trt_engine.py",
        description="Build one TensorRT engine from a published model version (the engine-build Job's step).",
    )
    ap.add_argument(
        "--plan",
        required=True,
        help="job plan JSON written by `python -m model_build` (engine plan, signature, parity limits)",
    )
    ap.add_argument(
        "--in",
        dest="src",
        required=True,
        help="directory holding the downloaded repository files (manifest.json, the ONNX graph, golden/golden.npz)",
    )
    ap.add_argument("--out", required=True, help="directory for the engine and its record")
    ap.add_argument("--cache", required=True, help="timing cache file: read if present, rewritten after the build")
    a = ap.parse_args(argv)
    plan = json.loads(Path(a.plan).read_text())
    eng, src, out = plan["engine"], Path(a.src), Path(a.out)

    manifest = json.loads((src / "manifest.json").read_text())
    if (manifest["model"]["name"], manifest["model"]["version"]) != (plan["model"], plan["version"]):
        print(f"manifest is {manifest['model']}, the plan is for {plan['model']} {plan['version']}", file=sys.stderr)
        return 2
    entry = next((f for f in manifest["files"] if f["path"] == eng["onnx"]), None)
    onnx_bytes = (src / eng["onnx"]).read_bytes()
    if entry is None or _sha256(onnx_bytes) != entry["sha256"] or entry["sha256"] != plan["onnx_sha256"]:
        print(f"{eng['onnx']}: sha256 does not match the manifest and the plan; refusing to build", file=sys.stderr)
        return 2

    env = probe()
    if env["tensorrt"] is None or env["compute_capability"] is None:
        print(f"cannot build here: {env['reason']}", file=sys.stderr)
        return 3
    if env["tensorrt"].split(".")[:3] != eng["tensorrt_version"].split(".")[:3]:
        print(
            f"TensorRT {env['tensorrt']} here, the Triton image needs engines from {eng['tensorrt_version']}",
            file=sys.stderr,
        )
        return 3
    if env["compute_capability"] != eng["compute_capability"]:
        print(
            f"this GPU is compute capability {env['compute_capability']}, "
            f"the engine is for {eng['compute_capability']}: "
            "an engine must be built on a GPU of its own capability (check the Job's node selector)",
            file=sys.stderr,
        )
        return 3

    cache_path = Path(a.cache)
    cache = cache_path.read_bytes() if cache_path.is_file() else None
    shapes = {name: tuple(s) for name, s in plan["shapes"].items()}
    t0 = time.time()
    engine_bytes, cache_out, io = build_engine(
        onnx_bytes,
        shapes=shapes,
        timing_cache=cache,
        hardware_compatibility=eng["hardware_compatibility"],
        version_compatible=eng["version_compatible"],
    )
    build_s = time.time() - t0
    print(f"built {eng['file']} in {build_s:.1f} s on {env['gpu']} (sm {env['compute_capability']}), network I/O {io}")

    engine = Engine(engine_bytes, host_code_allowed=eng["version_compatible"])
    got_io = engine.io()
    for t in plan["signature"]["inputs"]:
        prof = got_io.get(t["name"], {}).get("profile")
        want = [[b, *t["dims"]] for b in (eng["profile"]["min"], eng["profile"]["opt"], eng["profile"]["max"])]
        if prof != want:
            print(f"engine input {t['name']}: profile {prof} != planned {want}", file=sys.stderr)
            return 4
    parity = []
    golden_path = src / plan["golden"]
    if golden_path.is_file():
        import numpy as np

        with np.load(golden_path) as z:
            golden = {k: z[k] for k in z.files}
        parity = golden_parity(
            engine,
            golden,
            plan["signature"]["outputs"][0]["name"],
            plan["parity"]["batches"],
            plan["parity"]["limits"],
            plan["parity"]["topk"],
            plan["parity"]["batch1_rows"],
        )
        for p in parity:
            print(
                f"parity batch {p['batch']}: max_abs {p['max_abs']:.2e} max_rel {p['max_rel']:.2e} "
                f"top-{plan['parity']['topk']} overlap {p['topk_overlap_mean']:.3f} "
                f"-> {'ok' if p['passed'] else 'FAIL'}"
            )
    engine.close()
    if not parity or not all(p["passed"] for p in parity):
        print("parity gate failed (or golden set missing): no engine is written", file=sys.stderr)
        return 5

    out.mkdir(parents=True, exist_ok=True)
    (out / eng["file"]).write_bytes(engine_bytes)
    record = {
        "compute_capability": eng["compute_capability"],
        "file": eng["path"],
        "sha256": _sha256(engine_bytes),
        "size": len(engine_bytes),
        "tensorrt_version": eng["tensorrt_version"],
        "onnx_sha256": entry["sha256"],
        "built_on": env["gpu"],
        "device_compute_capability": env["compute_capability"],
        "hardware_compatibility": eng["hardware_compatibility"],
        "version_compatible": eng["version_compatible"],
        "profile": eng["profile"],
        "parity": parity,
        "built_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    (out / "record.json").write_text(json.dumps(record, indent=2) + "\n")
    tmp = cache_path.with_suffix(".tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(cache_out)
    os.replace(tmp, cache_path)
    print(f"wrote {out / eng['file']} ({len(engine_bytes)} bytes, sha256 {record['sha256']}) and {out / 'record.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
