"""config.pbtxt files parse with Triton's own protobuf and say what the fleet needs."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from infra.config import envs, load_fleet
from model_build.build import BuildResult


def _cfg(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def test_every_config_parses_and_is_listed(built: BuildResult):
    configs = sorted(built.out.rglob("config.pbtxt"))
    assert [p.parent.name for p in configs] == ["ranker_onnx", "ranker_py", "ranker_trt"]
    listed = {f.path for f in built.manifest.files_by_role("triton-config")}
    for p in configs:
        cfg = _cfg(p)
        assert cfg.name == p.parent.name
        assert p.relative_to(built.out).as_posix() in listed
        assert cfg.max_batch_size == 4096
        assert [(i.name, mc.DataType.Name(i.data_type), list(i.dims)) for i in cfg.input] == [
            ("sparse_ids", "TYPE_INT32", [8]),
            ("dense", "TYPE_FP32", [8]),
        ]
        assert [(o.name, mc.DataType.Name(o.data_type), list(o.dims)) for o in cfg.output] == [
            ("score", "TYPE_FP32", [1])
        ]
        assert cfg.HasField("dynamic_batching")


def test_tensorrt_model_names_an_engine_for_every_fleet_gpu_and_no_default(built: BuildResult):
    cfg = _cfg(built.out / "ranker_trt/config.pbtxt")
    fleet_ccs = sorted({cc for e in envs() for cc in load_fleet(e).compute_capabilities})
    assert cfg.platform == "tensorrt_plan"
    assert dict(cfg.cc_model_filenames) == {cc: f"model.sm{cc.replace('.', '')}.plan" for cc in fleet_ccs}
    assert cfg.default_model_filename == ""  # an unknown GPU fails to load instead of running a foreign engine
    assert {e.profile["max"] for e in built.manifest.engines.values()} == {cfg.max_batch_size}
    assert list(cfg.dynamic_batching.preferred_batch_size) == [built.plan.opt_batch_size]
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU


def test_onnx_fallback_and_python_model_serve_the_same_single_file(built: BuildResult):
    onnx_cfg = _cfg(built.out / "ranker_onnx/config.pbtxt")
    assert onnx_cfg.platform == "onnxruntime_onnx" and onnx_cfg.default_model_filename == "model.onnx"
    assert (built.out / "ranker_onnx/1/model.onnx").is_file()
    py = _cfg(built.out / "ranker_py/config.pbtxt")
    assert py.backend == "python" and py.platform == ""
    params = {k: v.string_value for k, v in py.parameters.items()}
    assert params["onnx_model"] == "ranker_onnx/1/model.onnx" and params["manifest"] == "manifest.json"
    assert (built.out / "ranker_py/1/model.py").is_file()
    assert not list((built.out / "ranker_py").rglob("*.onnx"))  # one file, one hash: no copy
    assert py.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
