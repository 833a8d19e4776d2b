"""Parity gates: figures at batch 1 / opt / max, and a failing gate leaves no manifest."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from model_build import build as build_mod
from model_build import data, parity
from model_build.build import BuildError, BuildOptions, BuildResult
from model_build.config import TrainConfig
from model_build.manifest import MANIFEST, ParityFigure


def test_build_gated_every_graph_at_1_opt_and_max(built: BuildResult):
    figs = built.manifest.metrics.parity
    seen = {(f.graph, f.batch) for f in figs}
    plan = built.plan
    assert seen == {(g, b) for g in ("fp32", "fp16") for b in (1, plan.opt_batch_size, plan.max_batch_size)}
    assert plan.max_batch_size == 4096 and plan.opt_batch_size == 256
    for f in figs:
        assert f.passed and f.runtime == "onnxruntime-cpu"
        assert f.rows == (parity.BATCH1_ROWS if f.batch == 1 else 4096)
        assert f.max_abs <= f.limits["max_abs"] and f.topk_overlap_mean >= f.limits["topk_overlap_mean"]
    fp32 = [f for f in figs if f.graph == "fp32"]
    assert max(f.max_abs for f in fp32) < 1e-5


def _golden(n: int = 512) -> data.Split:
    return data.rows(5, "golden", 0, n)


def test_gate_fails_on_error_and_on_reordering():
    g = _golden()
    ref = np.random.default_rng(0).random(len(g)).astype(np.float32)
    same = parity.gate(ref, _replay(ref, lambda x: x), g, 64, "fp32", "test")
    assert same.passed and same.max_abs == 0.0 and same.topk_overlap_min == 1.0
    noisy = parity.gate(ref, _replay(ref, lambda x: x + 1e-3), g, 64, "fp32", "test")
    assert not noisy.passed and noisy.max_abs == pytest.approx(1e-3, rel=1e-3)
    flipped = parity.gate(ref, _replay(ref, lambda x: 1 - x), g, 64, "fp16", "test")
    assert not flipped.passed and flipped.topk_overlap_mean < 0.5


def _replay(ref: np.ndarray, transform: Callable[[np.ndarray], np.ndarray]) -> parity.Runner:
    """A stand-in runtime: each call returns the next slice of `ref`, transformed."""
    state = [0]
    return lambda b: transform(_slice(ref, b, state))


def _slice(ref: np.ndarray, b: dict, state: list[int]) -> np.ndarray:
    n = len(b["dense"])
    out = ref[state[0] : state[0] + n]
    state[0] += n
    return out.reshape(-1, 1)


def test_topk_overlap_counts_per_request():
    req = np.repeat([0, 1], 4)
    ref = np.array([4, 3, 2, 1, 4, 3, 2, 1.0])
    got = np.array([4, 3, 2, 1, 1, 2, 3, 4.0])
    mean, worst = parity.topk_overlap(ref, got, req, k=2)
    assert (mean, worst) == (0.5, 0.0)


def test_a_failed_gate_fails_the_build_and_writes_no_manifest(tmp_path, monkeypatch):
    def failing(*a, **k):
        return [
            ParityFigure(
                graph="fp32",
                runtime="onnxruntime-cpu",
                batch=1,
                rows=1,
                max_abs=1.0,
                max_rel=1.0,
                topk=8,
                topk_overlap_mean=0.0,
                topk_overlap_min=0.0,
                ndcg_delta=1.0,
                limits={},
                passed=False,
            )
        ]

    monkeypatch.setattr(build_mod.parity, "run_gates", failing)
    out = tmp_path / "out"
    with pytest.raises(BuildError, match="parity gate failed"):
        build_mod.build(
            BuildOptions(
                out=out, precision="fp32", train=TrainConfig(train_requests=16, validation_requests=8, epochs=1)
            ),
            log=lambda s: None,
        )
    assert (out / "ranker_onnx/1/model.onnx").exists()  # it got that far...
    assert not (out / MANIFEST).exists()  # ...and still does not look like a release
