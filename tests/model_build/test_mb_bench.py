"""bench: PyTorch eager and ONNX Runtime side by side, into the manifest; no CPU figure posing as a GPU one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import pytest

from model_build.bench import BenchError, run_bench
from model_build.manifest import load_manifest, verify


def test_bench_records_both_runtimes_at_every_batch(repo: Path):
    b = run_bench(repo, [1, 64, 4096], budget_s=0.02, log=lambda s: None)
    assert {(r.runtime, r.batch) for r in b.runs} == {
        (rt, n) for rt in ("pytorch-eager-cpu", "onnxruntime-cpu") for n in (1, 64, 4096)
    }
    assert all(r.p50_ms > 0 and r.p99_ms >= r.p50_ms and r.rows_per_s > 0 and r.iterations >= 5 for r in b.runs)
    m = load_manifest(repo)
    assert m.benchmark.status == "measured" and m.benchmark.runs == b.runs
    assert m.benchmark.qps_per_gpu == {}  # nothing here ran on a GPU
    cpu = m.benchmark.cpu
    assert cpu is not None
    assert cpu["runtime"] == "onnxruntime-cpu" and cast(float, cpu["requests_per_s"]) > 0
    # what infra.capacity reads from a manifest
    assert json.loads((repo / "manifest.json").read_text())["benchmark"]["qps_per_gpu"] == {}
    assert verify(repo) == []  # only the manifest changed, and it is not a hashed file


def test_bench_refuses_a_tampered_repository_and_bad_batches(repo: Path):
    with pytest.raises(BenchError, match="batch sizes"):
        run_bench(repo, [8192], log=lambda s: None)
    (repo / "golden/golden.npz").write_bytes(b"")
    with pytest.raises(BenchError, match="does not verify"):
        run_bench(repo, [1], log=lambda s: None)
