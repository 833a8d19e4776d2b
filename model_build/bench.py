"""`python -m model_build bench`: PyTorch eager against ONNX Runtime (and TensorRT where present), side by side.

Every runtime scores the same golden rows at every batch size in one run; each point is timed call by call
(p50, p99) after a warm-up, for a fixed time budget. Throughput is rows per second (batch x calls / time).

What goes into the manifest's `benchmark` section:
- `runs`: every point measured;
- `cpu`: the best ONNX Runtime throughput on this CPU among batch sizes whose p99 stays within the latency
  budget, as rows/s and as ranking requests/s (`rows_per_request` candidates per request);
- `qps_per_gpu`: the same figure for TensorRT, keyed by the compute capability of the GPU it ran on — only
  for a GPU actually measured. A CPU figure is never recorded as a GPU figure: without TensorRT and a GPU
  this stays empty and `infra.capacity` keeps using the configured per-GPU figures.
The benchmark refuses to run on a repository that does not verify, and rewrites only the manifest
(atomically); its file list and hashes do not change.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np

from model_build import data, export, trt_engine
from model_build.manifest import Benchmark, BenchRun, load_manifest, verify, write_manifest

DEFAULT_BATCHES = [1, 8, 64, 256, 1024, 4096]


class BenchError(Exception):
    pass


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def time_point(
    fn: Callable[[dict], object], batch: dict, budget_s: float, min_calls: int = 5, warmup: int = 2
) -> tuple[list[float], int]:
    for _ in range(warmup):
        fn(batch)
    lat: list[float] = []
    t_end = time.perf_counter() + budget_s
    while len(lat) < min_calls or time.perf_counter() < t_end:
        t = time.perf_counter()
        fn(batch)
        lat.append(time.perf_counter() - t)
        if len(lat) >= 10000:
            break
    return lat, len(lat)


def run_bench(
    directory: Path,
    batches: list[int] | None = None,
    budget_s: float = 0.4,
    latency_budget_ms: float = 50.0,
    log: Callable[[str], None] = print,
    threads: int = 1,
) -> Benchmark:
    directory = Path(directory)
    problems = verify(directory)
    if problems:
        raise BenchError(f"{directory} does not verify, refusing to benchmark it: " + "; ".join(problems[:3]))
    m = load_manifest(directory)
    batches = sorted(set(batches or DEFAULT_BATCHES))
    if max(batches) > m.signature.max_batch_size or min(batches) < 1:
        raise BenchError(f"batch sizes must be within 1..{m.signature.max_batch_size} (the model's max batch)")

    import torch

    from model_build.build import CHECKPOINT, load_checkpoint

    # The same intra-op thread count for both CPU runtimes, without spin-waiting, so that neither measures
    # the other's idle threads (or, on a shared machine, the neighbours').
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    scorer = export.scorer(load_checkpoint(directory / CHECKPOINT), "fp32")
    onnx_rel = next(f.path for f in m.files if f.role == "onnx")
    sess = export.ort_session(directory / onnx_rel, threads=threads, spinning=False)

    def torch_run(b: dict) -> object:
        with torch.inference_mode():
            return scorer(torch.from_numpy(b["sparse_ids"]), torch.from_numpy(b["dense"]))

    runtimes: dict[str, Callable[[dict], object]] = {
        "pytorch-eager-cpu": torch_run,
        "onnxruntime-cpu": lambda b: sess.run(["score"], b),
    }
    env = trt_engine.probe()
    engine = None
    cc = env["compute_capability"]
    if env["tensorrt"] and cc:
        e = next((e for e in m.engines.values() if cc in e.serves and (directory / e.file).is_file()), None)
        if e is not None:
            engine = trt_engine.Engine((directory / e.file).read_bytes(), host_code_allowed=e.version_compatible)
            runtimes[f"tensorrt-sm{cc.replace('.', '')}"] = lambda b: engine(b)
        else:
            log(f"TensorRT {env['tensorrt']} and a GPU (sm {cc}) are here, but the repository has no engine for it")
    else:
        log(f"TensorRT not measured: {env['reason']}")

    rows = data.golden_batch(cast(int, m.data["seed"]), max(batches))
    runs: list[BenchRun] = []
    try:
        for b in batches:
            batch = {k: np.ascontiguousarray(v[:b]) for k, v in rows.items()}
            for name, fn in runtimes.items():
                lat, n = time_point(fn, batch, budget_s)
                ms = np.array(lat) * 1000
                run = BenchRun(
                    runtime=name,
                    batch=b,
                    iterations=n,
                    p50_ms=float(np.percentile(ms, 50)),
                    p99_ms=float(np.percentile(ms, 99)),
                    rows_per_s=float(b * n / (ms.sum() / 1000)),
                )
                runs.append(run)
                log(
                    f"batch {b:>5}  {name:<20} p50 {run.p50_ms:8.3f} ms  p99 {run.p99_ms:8.3f} ms  "
                    f"{run.rows_per_s:>12,.0f} rows/s  ({n} calls)"
                )
    finally:
        torch.set_num_threads(threads_before)
        if engine is not None:
            engine.close()

    def best(runtime: str) -> BenchRun | None:
        ok = [r for r in runs if r.runtime == runtime and r.p99_ms <= latency_budget_ms]
        return max(ok, key=lambda r: r.rows_per_s) if ok else None

    rpr = int(m.data.get("rows_per_request", data.CANDIDATES))

    cpu = best("onnxruntime-cpu")
    qps_per_gpu: dict[str, float] = {}
    trt_best = best(f"tensorrt-sm{cc.replace('.', '')}") if engine is not None and cc else None
    if trt_best is not None and cc:
        qps_per_gpu[cc] = round(trt_best.rows_per_s / rpr, 1)
    bench = Benchmark(
        status="measured",
        measured_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        host={
            "cpu": _cpu_name(),
            "cpu_count": os.cpu_count() or 1,
            "threads_per_runtime": threads,
            "gpu": env["gpu"],
            "gpu_compute_capability": cc,
            "tensorrt": env["tensorrt"],
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnxruntime": __import__("onnxruntime").__version__,
        },
        rows_per_request=rpr,
        latency_budget_ms=latency_budget_ms,
        runs=runs,
        qps_per_gpu=qps_per_gpu,
        cpu=None
        if cpu is None
        else {
            "runtime": cpu.runtime,
            "batch": cpu.batch,
            "rows_per_s": round(cpu.rows_per_s, 1),
            "requests_per_s": round(cpu.rows_per_s / rpr, 1),
            "p99_ms": round(cpu.p99_ms, 3),
            "threads": threads,
        },
        note=(
            "qps_per_gpu: ranking requests/s per GPU from TensorRT on the GPU measured here"
            if qps_per_gpu
            else "no GPU measured here: qps_per_gpu is empty, the CPU figure is under `cpu` only"
        ),
    )
    write_manifest(directory, m.model_copy(update={"benchmark": bench}))
    return bench
