"""Fixtures for the rehearsal tests: a tiny model_build-shaped output and a leftover-process audit.

`tiny_model_build(dir)` writes what `python -m model_build` leaves (a manifest.json of model_build's schema with
every file's sha256, size and role, an ONNX file, a python-backend model running it, an ONNX Runtime model config
and a TensorRT model the CPU server cannot load, signed by the test signer), small enough to build in milliseconds.
Once model_build's own output is available the rehearsal serves that; these tests keep the contract pinned without
a minute-long training run. `pinned_stacks` pins it in a copy of stacks/.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from infra.config import STACKS_DIR
from model_build.manifest import MANIFEST, SIGNATURE, Role, file_entry, write_manifest
from model_build.signing import manifest_digest
from tests.manifests import manifest
from tests.signing import sign, signing_key

FIXTURES = Path(__file__).parent / "fixtures"


def _tiny_onnx() -> bytes:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # score = sigmoid(dense @ w + sum(float(sparse_ids)) * 1e-4): deterministic, batch-dynamic, int32 ids.
    w = numpy_helper.from_array(np.linspace(-0.5, 0.5, 8, dtype=np.float32).reshape(8, 1), "w")
    k = numpy_helper.from_array(np.array([1e-4], dtype=np.float32), "k")
    nodes = [
        helper.make_node("Cast", ["sparse_ids"], ["ids_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["ids_f"], ["ids_sum"], keepdims=1),
        helper.make_node("Mul", ["ids_sum", "k"], ["ids_term"]),
        helper.make_node("MatMul", ["dense", "w"], ["lin"]),
        helper.make_node("Add", ["lin", "ids_term"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_ranker",
        [
            helper.make_tensor_value_info("sparse_ids", TensorProto.INT32, ["batch", 8]),
            helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["batch", 8]),
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        initializer=[w, k],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def tiny_model_build(out: Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(FIXTURES / "ranker_py", out / "ranker_py", dirs_exist_ok=True)
    (out / "ranker_onnx" / "1").mkdir(parents=True, exist_ok=True)
    (out / "ranker_onnx" / "1" / "model.onnx").write_bytes(_tiny_onnx())
    (out / "ranker_onnx" / "config.pbtxt").write_text(
        'name: "ranker_onnx"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 4096\n'
    )
    (out / "trt_src").mkdir(exist_ok=True)
    (out / "trt_src" / "model.fp16.onnx").write_bytes(b"the TensorRT engines' source graph, not served")
    (out / "ranker_trt" / "1").mkdir(parents=True, exist_ok=True)
    (out / "ranker_trt" / "1" / "model_8.9.plan").write_bytes(b"not a real engine")
    (out / "ranker_trt" / "config.pbtxt").write_text(
        'name: "ranker_trt"\nplatform: "tensorrt_plan"\nmax_batch_size: 4096\n'
        'cc_model_filenames [ { key: "8.9" value: "model_8.9.plan" } ]\n'
    )
    rels = sorted(
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and p.name not in (MANIFEST, SIGNATURE) and "__pycache__" not in p.parts
    )
    files = [file_entry(out, rel, _role(rel)) for rel in rels]
    m = manifest(
        built=["8.9"],  # the TensorRT model the CPU server cannot load
        engine_file="ranker_trt/1/model_{cc}.plan",
        files=files,
        serving={"tensorrt": "ranker_trt", "onnx_fallback": "ranker_onnx", "cpu_rehearsal": "ranker_py"},
    )
    write_manifest(out, m)
    sign(out)
    return out


def pinned_stacks(dst: Path, model_dir: Path) -> Path:
    """A copy of stacks/ whose regional stacks pin the test signer and `model_dir`'s manifest digest, as the change
    that publishes a release does (the committed stacks pin a placeholder digest no build has)."""
    from drills.rehearsal.rehearse import pin_releases
    from infra.config import envs

    dst.mkdir(parents=True, exist_ok=True)
    for f in STACKS_DIR.glob("Pulumi.*.yaml"):
        shutil.copy(f, dst / f.name)
    version = str(json.loads((model_dir / MANIFEST).read_text())["model"]["version"])
    for env in envs(dst):
        pin_releases(dst, env, {version: manifest_digest(model_dir)}, signing_key()[1].read_text())
    return dst


def _role(rel: str) -> Role:
    """A file's role in the tiny build, as model_build assigns them."""
    if rel.startswith("trt_src/"):
        return "onnx-trt-source"
    if rel.endswith(".plan"):
        return "engine"
    if rel.endswith(".onnx"):
        return "onnx"
    if rel.endswith("config.pbtxt"):
        return "triton-config"
    if rel.endswith(".py"):
        return "python-model"
    raise ValueError(f"tiny_model_build: no role for {rel}")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_build(tmp_path_factory.mktemp("model_build") / "out")


@pytest.fixture(scope="session")
def stacks_dir(model_dir, tmp_path_factory) -> Path:
    """stacks/ with the tiny build pinned (`pinned_stacks`)."""
    return pinned_stacks(tmp_path_factory.mktemp("stacks"), model_dir)


@pytest.fixture
def no_leftovers():
    """Yields a list to append Supervisors to; after the test every pid they ever started must be gone."""
    from drills.rehearsal.procs import pid_alive

    sups: list = []
    yield sups
    for sup in sups:
        left = sup.leftovers()
        assert not left, f"processes left behind: {left}"
        for pid in sup.all_pids():
            assert not pid_alive(pid) or pid not in left


@pytest.fixture(autouse=True)
def _bounded(request):
    """Every rehearsal test is bounded: a hang (a deadlock, a server that never answers) fails the test with
    a traceback after 180 s instead of stalling CI; the tests' own teardown then stops every process."""
    import faulthandler
    import signal
    import sys

    def expired(signum, frame):
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        raise TimeoutError(f"{request.node.nodeid} ran past 180 s")

    prev = signal.signal(signal.SIGALRM, expired)
    signal.alarm(180)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, prev)


@pytest.fixture(scope="session")
def small_model(tmp_path_factory) -> Path:
    """A real `python -m model_build` output at a small training config (about 11 s on 2 cores): the rehearse
    command and the drills against the world serve exactly what model_build writes, verified and published by
    model_build's own code, only trained on fewer rows. Session-scoped: built once for every test that needs it."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("model_build_small") / "model"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "model_build",
            "--out",
            str(out),
            "--train-requests",
            "32",
            "--validation-requests",
            "8",
            "--epochs",
            "1",
            "--env",
            "staging",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return out


def declared_pods(fleet, onnx_fallback: bool = True) -> list[dict]:
    """Every regional stack's stable Triton Deployments as declared records (the component's own manifests, as the
    offline plan records them), for worlds built from hand-made records. `onnx_fallback`: every compute capability
    declared `model.onnx_fallback_for`, as the rehearsal's stack copy declares it."""
    from drills.rehearsal.pod import DEPLOYMENT
    from infra.components.triton import deployment_manifest

    out = []
    for region, cfg in fleet.regions.items():
        stack = fleet.stack_names[region]
        model = cfg.model
        if onnx_fallback:
            model = model.model_copy(update={"onnx_fallback_for": cfg.compute_capabilities})
        for pool in cfg.gpu_pools:
            m = deployment_manifest(pool, cfg.triton, model, f"{stack}-artifacts", region)
            name = m["metadata"]["name"]
            urn = f"urn:pulumi:{stack}::reco-dr::{DEPLOYMENT}::{name}"
            out.append({"type": DEPLOYMENT, "name": name, "urn": urn, "inputs": m})
    return out


def pod_for(fleet, region: str, onnx_fallback: bool = True):
    """What `region`'s declared Triton pods run (drills.rehearsal.pod.PodSpec)."""
    from drills.rehearsal.pod import declared_pod

    return declared_pod(declared_pods(fleet, onnx_fallback), fleet.stack_names[region])


@pytest.fixture(scope="session")
def pod():
    """staging us-east-1's declared Triton pod, as the rehearsal's stack copy declares it (ONNX fallback)."""
    from infra.config import load_fleet

    return pod_for(load_fleet("staging"), "us-east-1")
