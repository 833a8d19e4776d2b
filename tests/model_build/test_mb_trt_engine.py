"""The TensorRT call sites without TensorRT: lazy import, honest probe, the Job's refusals, the call wiring.

No TensorRT builder can be installed here, so the real API is never executed in this suite. What is tested:
the module imports and probes without it; the Job entry point verifies its inputs and refuses to build
without TensorRT/GPU; and, against a call-recording stand-in for the `tensorrt` module (not TensorRT), that
the plan reaches the documented TensorRT 10.x calls: STRONGLY_TYPED network, one profile with the planned
shapes, the timing cache created from the cached bytes and set without ignoring mismatches, no FP16 builder
flag, the compatibility options only when asked.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from model_build import k8s_jobs, parity, trt_engine
from model_build.build import BuildResult


def test_module_imports_and_probe_says_why_not_without_tensorrt():
    assert "tensorrt" not in sys.modules
    p = trt_engine.probe()
    assert p["tensorrt"] is None and "TensorRT is not importable" in p["reason"]
    with pytest.raises(ImportError):
        trt_engine.build_engine(b"", shapes={})


def _job_inputs(built: BuildResult, tmp_path: Path, cc: str = "9.0") -> list[str]:
    plan, sig = built.plan, built.manifest.signature
    e = plan.engine_for(cc)
    assert e is not None
    src = built.manifest.file(e.onnx)
    assert src is not None
    jp = k8s_jobs.job_plan_json(
        plan,
        e,
        src.sha256,
        sig.model_dump(mode="json"),
        {"batches": [1, 256, 4096], "limits": parity.LIMITS["fp16"], "topk": 8, "batch1_rows": 256},
        "golden/golden.npz",
    )
    (tmp_path / "plan.json").write_text(json.dumps(jp))
    return [
        "--plan",
        str(tmp_path / "plan.json"),
        "--in",
        str(built.out),
        "--out",
        str(tmp_path / "out"),
        "--cache",
        str(tmp_path / "cache" / "sm90.cache"),
    ]


def test_job_refuses_to_build_without_tensorrt_or_gpu(built: BuildResult, tmp_path: Path, capsys):
    assert trt_engine.main(_job_inputs(built, tmp_path)) == 3
    assert "cannot build here" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_job_refuses_an_onnx_that_does_not_match_the_manifest(built: BuildResult, repo: Path, tmp_path: Path, capsys):
    args = _job_inputs(built, tmp_path)
    args[args.index("--in") + 1] = str(repo)
    with open(repo / "ranker_trt/model.fp16.onnx", "ab") as f:
        f.write(b"x")
    assert trt_engine.main(args) == 2
    assert "refusing to build" in capsys.readouterr().err


def test_compare_reports_error_and_ranking_overlap():
    ref = np.array([0.9, 0.8, 0.1, 0.2])
    fig = trt_engine.compare(ref, ref + 1e-4, np.array([0, 0, 1, 1]), topk=1)
    assert fig["max_abs"] == pytest.approx(1e-4) and fig["topk_overlap_min"] == 1.0


class _Recorder:
    """A call-recording stand-in for `tensorrt` (NOT TensorRT): checks which calls the plan leads to."""

    def __init__(self):
        self.calls: list[tuple] = []
        rec = self

        class Flag:
            STRONGLY_TYPED = 2
            VERSION_COMPATIBLE = "VERSION_COMPATIBLE"
            FP16 = "FP16"

        class Tensor:
            def __init__(self, name):
                self.name, self.dtype, self.shape = name, "DataType.FLOAT", [-1, 8]

        class Network:
            num_inputs, num_outputs = 2, 1

            def get_input(self, i):
                return Tensor(["sparse_ids", "dense"][i])

            def get_output(self, i):
                return Tensor("score")

        class Parser:
            num_errors = 0

            def __init__(self, network, logger):
                pass

            def parse(self, blob):
                rec.calls.append(("parse", len(blob)))
                return True

        class Profile:
            def set_shape(self, name, mn, opt, mx):
                rec.calls.append(("set_shape", name, mn, opt, mx))

        class Cache:
            def serialize(self):
                return b"cache-out"

        class Config:
            hardware_compatibility_level = None

            def set_memory_pool_limit(self, pool, n):
                rec.calls.append(("workspace", n))

            def add_optimization_profile(self, p):
                rec.calls.append(("add_optimization_profile",))

            def create_timing_cache(self, blob):
                rec.calls.append(("create_timing_cache", blob))
                return Cache()

            def set_timing_cache(self, cache, ignore_mismatch):
                rec.calls.append(("set_timing_cache", ignore_mismatch))

            def get_timing_cache(self):
                return Cache()

            def set_flag(self, flag):
                rec.calls.append(("set_flag", flag))

            def __setattr__(self, k, v):
                rec.calls.append(("config", k, v))
                object.__setattr__(self, k, v)

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                rec.calls.append(("create_network", flags))
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                rec.calls.append(("build_serialized_network",))
                return b"engine-bytes"

        self.module = types.SimpleNamespace(
            Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
            Builder=Builder,
            OnnxParser=Parser,
            NetworkDefinitionCreationFlag=Flag,
            BuilderFlag=Flag,
            MemoryPoolType=types.SimpleNamespace(WORKSPACE="WORKSPACE"),
            HardwareCompatibilityLevel=types.SimpleNamespace(AMPERE_PLUS="AMPERE_PLUS"),
        )


@pytest.mark.parametrize("hw,vc", [("NONE", False), ("AMPERE_PLUS", True)])
def test_plan_reaches_the_documented_tensorrt_calls(monkeypatch, built: BuildResult, hw: str, vc: bool):
    rec = _Recorder()
    monkeypatch.setitem(sys.modules, "tensorrt", rec.module)
    e = built.plan.engine_for("9.0")
    assert e is not None
    shapes = e.profile.shapes({t.name: t.dims for t in built.manifest.signature.inputs})
    engine, cache, io = trt_engine.build_engine(
        b"onnx", shapes=shapes, timing_cache=b"old-cache", hardware_compatibility=hw, version_compatible=vc
    )
    assert (engine, cache) == (b"engine-bytes", b"cache-out")
    assert [t["name"] for t in io] == ["sparse_ids", "dense", "score"]
    calls = rec.calls
    assert ("create_network", 1 << 2) in calls  # 1 << STRONGLY_TYPED
    assert ("set_shape", "sparse_ids", [1, 8], [256, 8], [4096, 8]) in calls
    assert ("set_shape", "dense", [1, 8], [256, 8], [4096, 8]) in calls
    assert ("create_timing_cache", b"old-cache") in calls and ("set_timing_cache", False) in calls
    assert ("set_flag", "FP16") not in calls  # strongly typed: precision comes from the graph
    assert (("set_flag", "VERSION_COMPATIBLE") in calls) == vc
    assert (("config", "hardware_compatibility_level", "AMPERE_PLUS") in calls) == (hw == "AMPERE_PLUS")
    assert calls[-1] == ("build_serialized_network",)
