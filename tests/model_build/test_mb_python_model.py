"""The python-backend model.py: runs the manifest-verified ONNX file, refuses a mismatching one."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from model_build.build import BuildResult


class _Tensor:
    def __init__(self, name, array):
        self._name, self._array = name, array

    def name(self):
        return self._name

    def as_numpy(self):
        return self._array


class _Response:
    def __init__(self, output_tensors, error=None):
        self.output_tensors, self.error = output_tensors, error


def _stub_pb_utils() -> types.ModuleType:
    """Enough of `triton_python_backend_utils` for execute(): tensors in, responses out."""
    m: Any = types.ModuleType("triton_python_backend_utils")  # a stand-in module: attributes set below
    m.Tensor = _Tensor
    m.InferenceResponse = _Response
    m.TritonError = lambda msg: msg
    m.get_input_tensor_by_name = lambda req, name: req.get(name)
    return m


@pytest.fixture
def model_py(built: BuildResult, monkeypatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _stub_pb_utils())
    spec = importlib.util.spec_from_file_location("ranker_py_model", built.out / "ranker_py/1/model.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _args(repo: Path) -> dict:
    cfg = text_format.Parse((repo / "ranker_py/config.pbtxt").read_text(), mc.ModelConfig())
    # The python backend hands the config over as JSON, like this.
    return {
        "model_config": json.dumps(json_format.MessageToDict(cfg, preserving_proto_field_name=True)),
        "model_repository": str(repo / "ranker_py"),
        "model_version": "1",
    }


def test_compute_path_matches_the_pytorch_reference(built: BuildResult, model_py):
    sess = model_py.load_session(str(built.out), "ranker_onnx/1/model.onnx")
    with np.load(built.out / "golden/golden.npz") as z:
        got = model_py.score(sess, z["sparse_ids"][:512], z["dense"][:512])
        assert got.shape == (512, 1)
        assert np.abs(got.ravel() - z["reference"][:512]).max() < 1e-5


def test_execute_batches_requests_and_fails_only_the_malformed_one(built: BuildResult, model_py):
    m = model_py.TritonPythonModel()
    m.initialize(_args(built.out))
    with np.load(built.out / "golden/golden.npz") as z:
        sp, de, ref = z["sparse_ids"], z["dense"], z["reference"]
    reqs = [
        {"sparse_ids": _Tensor("sparse_ids", sp[:3]), "dense": _Tensor("dense", de[:3])},
        {"sparse_ids": _Tensor("sparse_ids", sp[3:4, :5]), "dense": _Tensor("dense", de[3:4])},  # wrong width
        {"sparse_ids": _Tensor("sparse_ids", sp[10:17]), "dense": _Tensor("dense", de[10:17])},
    ]
    out = m.execute(reqs)
    assert len(out) == 3
    assert out[1].error and "sparse_ids must be int32 [batch, 8]" in out[1].error
    np.testing.assert_allclose(out[0].output_tensors[0].as_numpy().ravel(), ref[:3], atol=1e-5)
    np.testing.assert_allclose(out[2].output_tensors[0].as_numpy().ravel(), ref[10:17], atol=1e-5)
    assert out[0].error is None and out[2].output_tensors[0].name() == "score"
    m.finalize()


def test_refuses_to_load_an_onnx_file_the_manifest_does_not_vouch_for(repo: Path, model_py):
    with open(repo / "ranker_onnx/1/model.onnx", "ab") as f:
        f.write(b"x")
    with pytest.raises(model_py.ManifestMismatch, match="refusing to load"):
        model_py.TritonPythonModel().initialize(_args(repo))
    with pytest.raises(model_py.ManifestMismatch, match="not listed"):
        model_py.load_session(str(repo), "ranker_trt/model.onnx")
