"""ONNX export: dynamo, dynamic batch, int32 ids, no EmbeddingBag, checked, and equal to PyTorch."""

from __future__ import annotations

from typing import cast

import numpy as np
import onnx
import pytest

from model_build import data, export
from model_build.build import BuildResult, load_checkpoint
from model_build.manifest import onnx_signature


def _graphs(built: BuildResult):
    return {g: built.out / info["path"] for g, info in built.manifest.onnx.items()}


def test_both_graphs_have_the_documented_signature(built: BuildResult):
    graphs = _graphs(built)
    assert set(graphs) == {"fp32", "fp16"}
    for g, path in graphs.items():
        m = onnx.load(str(path))
        onnx.checker.check_model(m, full_check=True)
        export.check(m)  # strict shape inference: output float32 [batch, 1]
        assert onnx_signature(path) == {
            "sparse_ids": ("int32", ["batch", 8]),
            "dense": ("float32", ["batch", 8]),
            "score": ("float32", ["batch", 1]),
        }
        ops = {n.op_type for n in m.graph.node}
        assert not any("bag" in op.lower() for op in ops), ops
        assert "Gather" in ops  # embeddings are plain gathers over int32 ids
        assert m.opset_import[0].version == export.OPSET
        meta = {p.key: p.value for p in m.metadata_props}
        assert meta["precision"] == g and meta["version"] == built.manifest.model["version"]
    # the fp16 graph really carries half precision inside (TensorRT strongly typed builds follow it)
    fp16 = onnx.load(str(graphs["fp16"]))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in fp16.graph.initializer)
    fp32 = onnx.load(str(graphs["fp32"]))
    assert all(t.data_type != onnx.TensorProto.FLOAT16 for t in fp32.graph.initializer)


@pytest.mark.parametrize("batch", [1, 37, 4096])
def test_any_batch_size_matches_pytorch(built: BuildResult, batch: int):
    model = export.scorer(load_checkpoint(built.out / "checkpoint/ranker.pt"), "fp32")
    sess = export.ort_session(built.out / "ranker_onnx/1/model.onnx")
    b = data.golden_batch(cast(int, built.manifest.data["seed"]), batch, start=100)
    got = sess.run(["score"], b)[0]
    assert got.shape == (batch, 1) and got.dtype == np.float32
    assert np.abs(got - export.torch_scores(model, b)).max() < 1e-5


def test_out_of_vocabulary_ids_score_like_the_oov_row(built: BuildResult):
    model = export.scorer(load_checkpoint(built.out / "checkpoint/ranker.pt"), "fp32")
    sess = export.ort_session(built.out / "ranker_onnx/1/model.onnx")
    b = data.golden_batch(cast(int, built.manifest.data["seed"]), 4)
    cards = np.array(data.FEATURES["cardinalities"], dtype=np.int32)
    weird = {"sparse_ids": b["sparse_ids"].copy(), "dense": b["dense"]}
    weird["sparse_ids"][0] = -5
    weird["sparse_ids"][1] = cards + 1000
    oov = {"sparse_ids": np.tile(cards, (4, 1)).astype(np.int32), "dense": b["dense"]}  # id == card is the OOV row
    got = sess.run(["score"], weird)[0]
    want = export.torch_scores(model, oov)
    assert np.isfinite(got).all()
    assert np.abs(got[:2] - want[:2]).max() < 1e-5
    assert np.abs(export.torch_scores(model, weird) - got).max() < 1e-5


def test_checkpoint_round_trip_reproduces_the_reference_scores(built: BuildResult):
    with np.load(built.out / "golden/golden.npz") as z:
        model = export.scorer(load_checkpoint(built.out / "checkpoint/ranker.pt"), "fp32")
        got = export.torch_scores(model, {"sparse_ids": z["sparse_ids"], "dense": z["dense"]}).ravel()
        assert np.abs(got - z["reference"]).max() < 1e-6
        assert len(z["reference"]) == built.manifest.signature.max_batch_size


def test_export_refuses_embedding_bag():
    g = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["score"])],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 1])],
        [onnx.helper.make_tensor_value_info("score", onnx.TensorProto.FLOAT, ["batch", 1])],
    )
    m = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 18)])
    export.check(m)  # a fine graph passes
    bad = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("EmbeddingBag", ["x"], ["score"], domain="custom")],
            "g",
            list(g.input),
            list(g.output),
        ),
        opset_imports=[onnx.helper.make_opsetid("", 18), onnx.helper.make_opsetid("custom", 1)],
    )
    with pytest.raises(ValueError, match="EmbeddingBag"):
        export.check(bad)
