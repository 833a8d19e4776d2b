"""Triton python-backend model: the ranker's ONNX graph on ONNX Runtime (CPU), for the CPU rehearsal.

This file is copied verbatim into the repository as `<model>_py/1/model.py`. It depends only on the
standard library, numpy and onnxruntime, because Triton's python-backend stub runs it in whatever Python
environment serves it, without this project on the path.

It serves the same ONNX file as the ONNX Runtime fallback model, not a copy: the `onnx_model` parameter
of its config.pbtxt names it relative to the repository root (the parent of this model's directory), and
`manifest` names the manifest. On load it reads the file once, checks those exact bytes' sha256 and size
against the manifest entry, and refuses to load (raises) on any mismatch or a missing entry; the session is
created from the checked bytes, so nothing can swap the file between check and use.

`load_session` and `score` are the whole computation and are importable without Triton (tests call them
directly); `TritonPythonModel` only adapts them to the python backend's request/response objects.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

try:  # present inside Triton's python backend only
    import triton_python_backend_utils as pb_utils
except ImportError:  # pragma: no cover - exercised when imported outside Triton
    pb_utils = None

INPUTS = (("sparse_ids", np.int32), ("dense", np.float32))
OUTPUT = "score"


class ManifestMismatch(RuntimeError):
    """The ONNX file is not the one the manifest describes."""


def verified_model_bytes(repo_root: str, onnx_rel: str, manifest_rel: str = "manifest.json") -> tuple[bytes, str]:
    """The ONNX file's bytes after checking them against the manifest; raises ManifestMismatch."""
    with open(os.path.join(repo_root, manifest_rel)) as f:
        manifest = json.load(f)
    entry = next((e for e in manifest.get("files", []) if e.get("path") == onnx_rel), None)
    if entry is None:
        raise ManifestMismatch(f"{onnx_rel} is not listed in {manifest_rel}; refusing to load it")
    with open(os.path.join(repo_root, onnx_rel), "rb") as f:
        blob = f.read()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != entry.get("sha256") or len(blob) != entry.get("size"):
        raise ManifestMismatch(
            f"{onnx_rel}: sha256 {digest} / {len(blob)} bytes, "
            f"manifest says {entry.get('sha256')} / {entry.get('size')} bytes; refusing to load it"
        )
    return blob, digest


def load_session(repo_root: str, onnx_rel: str, manifest_rel: str = "manifest.json", threads: int = 1):
    """An ONNX Runtime CPU session over the verified bytes of `onnx_rel`."""
    import onnxruntime as ort

    blob, _ = verified_model_bytes(repo_root, onnx_rel, manifest_rel)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(threads))
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(blob, sess_options=opts, providers=["CPUExecutionProvider"])


def check_inputs(sparse_ids: np.ndarray, dense: np.ndarray, n_sparse: int, n_dense: int) -> None:
    if sparse_ids.ndim != 2 or sparse_ids.shape[1] != n_sparse or sparse_ids.dtype != np.int32:
        raise ValueError(
            f"sparse_ids must be int32 [batch, {n_sparse}], got {sparse_ids.dtype} {list(sparse_ids.shape)}"
        )
    if dense.ndim != 2 or dense.shape[1] != n_dense or dense.dtype != np.float32:
        raise ValueError(f"dense must be float32 [batch, {n_dense}], got {dense.dtype} {list(dense.shape)}")
    if sparse_ids.shape[0] != dense.shape[0]:
        raise ValueError(f"sparse_ids and dense batch sizes differ: {sparse_ids.shape[0]} != {dense.shape[0]}")


def score(session, sparse_ids: np.ndarray, dense: np.ndarray) -> np.ndarray:
    """Scores float32 [batch, 1] for one batch of rows."""
    return session.run([OUTPUT], {"sparse_ids": sparse_ids, "dense": dense})[0]


def _input_widths(session) -> tuple[int, int]:
    shapes = {i.name: i.shape for i in session.get_inputs()}
    return int(shapes["sparse_ids"][1]), int(shapes["dense"][1])


class TritonPythonModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()}
        # args["model_repository"] is this model's directory; the repository root is its parent.
        root = os.path.dirname(os.path.normpath(args["model_repository"]))
        self.session = load_session(
            root,
            params["onnx_model"],
            params.get("manifest", "manifest.json"),
            int(params.get("intra_op_threads", "1") or 1),
        )
        self.n_sparse, self.n_dense = _input_widths(self.session)

    def execute(self, requests):
        # The dynamic batcher hands over several requests: check each, run the good ones as one batch,
        # answer every request on its own (a malformed request fails alone).
        arrays, errors = [], {}
        for i, req in enumerate(requests):
            try:
                sp = pb_utils.get_input_tensor_by_name(req, "sparse_ids").as_numpy()
                de = pb_utils.get_input_tensor_by_name(req, "dense").as_numpy()
                check_inputs(sp, de, self.n_sparse, self.n_dense)
                arrays.append((i, sp, de))
            except Exception as e:  # noqa: BLE001 - reported to that request's client
                errors[i] = str(e)
        outputs: dict[int, np.ndarray] = {}
        if arrays:
            try:
                out = score(
                    self.session, np.concatenate([a[1] for a in arrays]), np.concatenate([a[2] for a in arrays])
                )
                start = 0
                for i, sp, _ in arrays:
                    outputs[i] = out[start : start + sp.shape[0]]
                    start += sp.shape[0]
            except Exception as e:  # noqa: BLE001 - reported to the batch's clients, the model stays up
                errors.update({i: str(e) for i, _, _ in arrays})
        responses = []
        for i in range(len(requests)):
            if i in errors:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(errors[i])))
            else:
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(OUTPUT, outputs[i])]))
        return responses

    def finalize(self):
        self.session = None
