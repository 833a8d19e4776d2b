"""Parity gates: the exported graph must score the golden set like PyTorch does.

At three batch sizes — 1, the TensorRT profile's opt and Triton's max — the golden rows go through PyTorch
(float32, the reference) and through a runtime (ONNX Runtime here; TensorRT on a GPU host), in chunks of
that batch size. The gate compares:
- the maximum absolute error and the maximum relative error (relative to max(|reference|, 1e-3), since
  scores are probabilities and a relative error against a score of 1e-7 means nothing);
- ranking: per request (CANDIDATES rows), the overlap of the top-k items, mean and worst;
- the golden NDCG@10 against the golden labels, which must not move.
Limits depend on the graph's precision: float32 graphs must agree to float32 round-off, the float16 graph
TensorRT builds from to half-precision round-off. `run_gates` returns the figures; any failure fails the build.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from model_build import data
from model_build.manifest import ParityFigure
from model_build.train import ndcg_at_k
from model_build.trt_plan import Precision

LIMITS = {
    "fp32": {"max_abs": 1e-5, "max_rel": 1e-4, "topk_overlap_mean": 0.99, "topk_overlap_min": 0.75, "ndcg_delta": 1e-3},
    "fp16": {"max_abs": 5e-3, "max_rel": 2e-2, "topk_overlap_mean": 0.95, "topk_overlap_min": 0.5, "ndcg_delta": 1e-2},
}
TOPK = 8
BATCH1_ROWS = 256  # batch 1 runs one row per call: a slice of the golden set keeps it quick

Runner = Callable[[dict[str, np.ndarray]], np.ndarray]


def _scores(run: Runner, golden: data.Split, batch: int, rows: int) -> np.ndarray:
    out = [np.asarray(run(golden.batch(i, min(i + batch, rows)))).reshape(-1) for i in range(0, rows, batch)]
    return np.concatenate(out).astype(np.float64)


def topk_overlap(ref: np.ndarray, got: np.ndarray, request: np.ndarray, k: int = TOPK) -> tuple[float, float]:
    bounds = np.flatnonzero(np.diff(request)) + 1
    ov = []
    for r, g in zip(np.split(ref, bounds), np.split(got, bounds), strict=True):
        kk = min(k, len(r))
        a = set(np.argsort(-r, kind="stable")[:kk].tolist())
        b = set(np.argsort(-g, kind="stable")[:kk].tolist())
        ov.append(len(a & b) / kk)
    return float(np.mean(ov)), float(np.min(ov))


def gate(
    reference: np.ndarray, run: Runner, golden: data.Split, batch: int, graph: Precision, runtime: str
) -> ParityFigure:
    rows = min(len(golden), BATCH1_ROWS) if batch == 1 else len(golden)
    ref = reference[:rows].astype(np.float64)
    got = _scores(run, golden, batch, rows)
    err = np.abs(got - ref)
    rel = err / np.maximum(np.abs(ref), 1e-3)
    mean_ov, min_ov = topk_overlap(ref, got, golden.request[:rows])
    ndcg_delta = abs(
        ndcg_at_k(golden.labels[:rows], ref, golden.request[:rows])
        - ndcg_at_k(golden.labels[:rows], got, golden.request[:rows])
    )
    lim = LIMITS[graph]
    passed = bool(
        err.max() <= lim["max_abs"]
        and rel.max() <= lim["max_rel"]
        and mean_ov >= lim["topk_overlap_mean"]
        and min_ov >= lim["topk_overlap_min"]
        and ndcg_delta <= lim["ndcg_delta"]
    )
    return ParityFigure(
        graph=graph,
        runtime=runtime,
        batch=batch,
        rows=rows,
        max_abs=float(err.max()),
        max_rel=float(rel.max()),
        topk=TOPK,
        topk_overlap_mean=mean_ov,
        topk_overlap_min=min_ov,
        ndcg_delta=float(ndcg_delta),
        limits=lim,
        passed=passed,
    )


def batch_sizes(opt: int, max_batch: int) -> list[int]:
    return sorted({1, opt, max_batch})


def run_gates(
    reference: np.ndarray, run: Runner, golden: data.Split, *, opt: int, max_batch: int, graph: Precision, runtime: str
) -> list[ParityFigure]:
    return [gate(reference, run, golden, b, graph, runtime) for b in batch_sizes(opt, max_batch)]
