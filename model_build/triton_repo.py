"""Triton model configurations, built as Triton's own protobuf (`model_config_pb2`) and written as text.

Three models share one signature:
- `<model>_trt` (platform `tensorrt_plan`): one engine per compute capability through `cc_model_filenames`,
  and deliberately no `default_model_filename`: on a GPU whose capability has no engine the model fails
  to load, loudly, instead of deserialising an engine built for another GPU. Its max batch is the engines'
  profile max.
- `<model>_onnx` (platform `onnxruntime_onnx`): the explicit fallback, the same float32 graph on ONNX Runtime,
  for capabilities that the stack config serves without an engine (`model.onnx_fallback_for`) or while
  an engine is missing.
- `<model>_py` (backend `python`): the CPU rehearsal's model. Its `model.py` runs the *same* ONNX file
  (`<model>_onnx/1/model.onnx`, named by the `onnx_model` parameter, one file and one hash) with ONNX
  Runtime, after checking that file's sha256 against the repository's manifest.

Serve with `--model-control-mode=explicit --load-model=<name>`: the repository also holds the manifest,
the Job manifests and the training checkpoint, and a CPU Triton has only the python backend. Serve a synced
copy with PYTHONDONTWRITEBYTECODE=1: a `__pycache__/` that the python stub writes next to model.py is a file
the manifest does not list, and `verify` reports it (a stale .pyc can change what runs).
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from model_build.manifest import Signature

QUEUE_DELAY_US = 500  # how long the dynamic batcher may hold a request to fill a batch
WARMUP_RUNS = 3  # warm-up requests per model load: the first initialises, the others reach steady state


def _io(cfg: mc.ModelConfig, sig: Signature) -> None:
    for t in sig.inputs:
        cfg.input.add(name=t.name, data_type=mc.DataType.Value(t.triton_dtype), dims=t.dims)
    for t in sig.outputs:
        cfg.output.add(name=t.name, data_type=mc.DataType.Value(t.triton_dtype), dims=t.dims)


def _batching(cfg: mc.ModelConfig, preferred: list[int]) -> None:
    cfg.dynamic_batching.max_queue_delay_microseconds = QUEUE_DELAY_US
    cfg.dynamic_batching.preferred_batch_size.extend(preferred)


def _warmup(cfg: mc.ModelConfig, sig: Signature, batch: int) -> None:
    """Triton's `model_warmup`: WARMUP_RUNS zero-filled requests of `batch` rows before the model turns ready, so a
    new pod's first user request does not pay for lazy initialisation (CUDA context and TensorRT execution context,
    ONNX Runtime's session arenas). Zeros are a valid request of any ranker signature (id 0 exists in every
    vocabulary). The warm-up is part of the model load: /v2/health/ready answers 200 only after it."""
    w = cfg.model_warmup.add(name="zeros", batch_size=min(batch, sig.max_batch_size), count=WARMUP_RUNS)
    for t in sig.inputs:
        w.inputs[t.name].data_type = mc.DataType.Value(t.triton_dtype)
        w.inputs[t.name].dims.extend(t.dims)
        w.inputs[t.name].zero_data = True


def tensorrt_config(name: str, sig: Signature, cc_model_filenames: dict[str, str], opt_batch: int) -> mc.ModelConfig:
    if not cc_model_filenames:
        raise ValueError("a TensorRT model needs at least one engine in cc_model_filenames")
    cfg = mc.ModelConfig(name=name, platform="tensorrt_plan", max_batch_size=sig.max_batch_size)
    _io(cfg, sig)
    for cc, file in sorted(cc_model_filenames.items()):
        cfg.cc_model_filenames[cc] = file
    _batching(cfg, [opt_batch])
    _warmup(cfg, sig, opt_batch)
    cfg.instance_group.add(kind=mc.ModelInstanceGroup.KIND_GPU, count=1)
    return cfg


def onnx_config(name: str, sig: Signature, opt_batch: int) -> mc.ModelConfig:
    cfg = mc.ModelConfig(
        name=name, platform="onnxruntime_onnx", max_batch_size=sig.max_batch_size, default_model_filename="model.onnx"
    )
    _io(cfg, sig)
    _batching(cfg, [opt_batch])
    _warmup(cfg, sig, opt_batch)
    cfg.instance_group.add(kind=mc.ModelInstanceGroup.KIND_GPU, count=1)
    return cfg


def python_config(name: str, sig: Signature, onnx_model: str, manifest: str, threads: int = 1) -> mc.ModelConfig:
    cfg = mc.ModelConfig(name=name, backend="python", max_batch_size=sig.max_batch_size)
    _io(cfg, sig)
    _batching(cfg, [])
    _warmup(cfg, sig, min(32, sig.max_batch_size))
    cfg.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    # Paths relative to the repository root (the parent of this model's directory).
    cfg.parameters["onnx_model"].string_value = onnx_model
    cfg.parameters["manifest"].string_value = manifest
    cfg.parameters["intra_op_threads"].string_value = str(threads)
    return cfg


def write_config(path: Path, cfg: mc.ModelConfig) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text_format.MessageToString(cfg))


def read_config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(Path(path).read_text(), mc.ModelConfig())
