"""ONNX export with the dynamo exporter: dynamic batch, int32 ids, checked and shape-inferred.

Two graphs come out of one trained ranker:
- `fp32`: what ONNX Runtime serves (the explicit fallback model and the CPU rehearsal model);
- `fp16`: what TensorRT engines are built from. TensorRT 10.x builds strongly typed networks whose precision
  is the graph's own, so FP16 is put into the graph (weights, embedding table and activations in half,
  float32 at the inputs and the output) rather than asked of the builder with a precision flag.
Both have the same signature (`signature()`), which the manifest records and `verify` checks.
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn
from torch.export import Dim

from model_build import data
from model_build.manifest import Signature, TensorSpec
from model_build.ranker import Ranker

OPSET = 18  # supported by ONNX Runtime 1.31 and by the ONNX parser of TensorRT 10.x
INPUTS = ("sparse_ids", "dense")
OUTPUT = "score"


def signature(max_batch_size: int) -> Signature:
    n_sparse, n_dense = len(data.FEATURES["sparse"]), len(data.FEATURES["dense"])
    return Signature(
        max_batch_size=max_batch_size,
        inputs=[
            TensorSpec(
                name="sparse_ids",
                dtype="int32",
                dims=[n_sparse],
                columns=data.FEATURES["sparse"],
                description="one id per sparse feature; ids outside a feature's vocabulary map to its OOV row",
            ),
            TensorSpec(
                name="dense",
                dtype="float32",
                dims=[n_dense],
                columns=data.FEATURES["dense"],
                description="raw dense features; the graph standardises them",
            ),
        ],
        outputs=[
            TensorSpec(
                name=OUTPUT,
                dtype="float32",
                dims=[1],
                columns=["click_probability"],
                description="sigmoid of the ranking logit",
            )
        ],
    )


class Fp32Scorer(nn.Module):
    def __init__(self, ranker: Ranker):
        super().__init__()
        self.ranker = ranker

    def forward(self, sparse_ids: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.ranker(sparse_ids, dense))


class Fp16Scorer(nn.Module):
    """Half-precision ranker behind float32 inputs and output: the cast lives in the graph."""

    def __init__(self, ranker: Ranker):
        super().__init__()
        self.ranker = copy.deepcopy(ranker).half()  # .half() converts float tensors only: ids stay int32

    def forward(self, sparse_ids: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.ranker(sparse_ids, dense.half()).float())


def scorer(ranker: Ranker, precision: str) -> nn.Module:
    return (Fp16Scorer(ranker) if precision == "fp16" else Fp32Scorer(ranker)).eval()


def export(
    ranker: Ranker,
    path: Path,
    precision: str,
    *,
    max_batch_size: int,
    doc: str = "",
    metadata: dict[str, str] | None = None,
) -> dict:
    """Export `ranker` as `precision` ONNX to `path`; return facts for the manifest (opset, ops, ...)."""
    model = scorer(ranker, precision)
    batch = Dim("batch", min=1, max=max_batch_size)
    n_sparse, n_dense = len(data.FEATURES["sparse"]), len(data.FEATURES["dense"])
    example = (torch.zeros(8, n_sparse, dtype=torch.int32), torch.zeros(8, n_dense, dtype=torch.float32))
    with warnings.catch_warnings():
        # The exporter warns about optional torchvision ops and pytree internals: noise for this model.
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        prog = torch.onnx.export(
            model,
            example,
            dynamo=True,
            input_names=list(INPUTS),
            output_names=[OUTPUT],
            dynamic_shapes={"sparse_ids": {0: batch}, "dense": {0: batch}},
            opset_version=OPSET,
            verbose=False,
        )
    assert prog is not None, "the dynamo exporter always returns an ONNXProgram"
    proto = prog.model_proto
    for vi in [*proto.graph.input, *proto.graph.output]:
        vi.type.tensor_type.shape.dim[0].dim_param = "batch"  # one documented name for the dynamic axis
    proto.doc_string = doc
    proto.producer_name = "reco-dr model_build"
    del proto.metadata_props[:]  # exporter internals; replaced by our own provenance
    for k, v in sorted((metadata or {}).items()):
        proto.metadata_props.add(key=k, value=str(v))
    proto.metadata_props.add(key="precision", value=precision)
    check(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)  # the file as written, not just the proto
    ops = sorted({n.op_type for n in proto.graph.node})
    return {"path": str(path), "precision": precision, "opset": OPSET, "ir_version": proto.ir_version, "ops": ops}


def check(proto: onnx.ModelProto) -> None:
    """onnx.checker plus strict shape inference; the output must come out as [batch, 1] float32."""
    bag = [n.op_type for n in proto.graph.node if "bag" in n.op_type.lower()]
    if bag:
        raise ValueError(f"graph contains {bag}: EmbeddingBag-style ops are not allowed")
    onnx.checker.check_model(proto, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    out = inferred.graph.output[0].type.tensor_type
    dims = [d.dim_param or d.dim_value for d in out.shape.dim]
    if out.elem_type != onnx.TensorProto.FLOAT or dims != ["batch", 1]:
        raise ValueError(
            f"exported output is {onnx.TensorProto.DataType.Name(out.elem_type)} {dims}, expected FLOAT ['batch', 1]"
        )


def ort_session(path: Path, threads: int = 0, spinning: bool = True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    if not spinning:  # idle worker threads would otherwise spin and steal the core from whatever runs next
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def torch_scores(model: nn.Module, batch: dict[str, np.ndarray]) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(batch["sparse_ids"]), torch.from_numpy(batch["dense"])).float().numpy()
