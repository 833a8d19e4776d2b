"""One real Triton 2.51 on the CPU (nvidia-pytriton wheel): ready, inference, the three data-plane faults, and a
server that never becomes ready. Each test checks that no process and no shared-memory region is left."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from drills.rehearsal.healthcheck import probe
from drills.rehearsal.procs import ProcessError, Supervisor, free_port_block
from drills.rehearsal.repo import prepare_serving_repo
from drills.rehearsal.triton import TritonServer
from model_build.signing import manifest_digest

ADDR = "127.0.10.9"  # a loopback address of its own, like a region's load balancer


def _server(sup, repo, tmp_path, pod, **kw):
    base = free_port_block(3, [ADDR])
    return TritonServer(
        sup,
        name="t",
        repository=repo.path if hasattr(repo, "path") else repo,
        models=kw.pop("models", ["ranker_py"]),
        address=ADDR,
        http_port=base,
        grpc_port=base + 1,
        metrics_port=base + 2,
        workdir=tmp_path / "triton",
        pod=pod,
        exit_timeout=1,
        **kw,
    )


def test_triton_serves_the_onnx_file_and_survives_faults(model_dir, tmp_path, no_leftovers, pod):
    repo = prepare_serving_repo(model_dir, tmp_path / "repo", pod, manifest_digest(model_dir))
    x = {
        "sparse_ids": np.arange(32 * 8, dtype=np.int32).reshape(32, 8) % 3,
        "dense": np.linspace(-1, 1, 32 * 8, dtype=np.float32).reshape(32, 8),
    }
    with Supervisor(tmp_path / "logs") as sup:
        no_leftovers.append(sup)
        t = _server(sup, repo, tmp_path, pod)
        ready_s = t.start()
        assert ready_s < 30 and t.is_ready()
        out = t.infer("ranker_py", x)["outputs"][0]
        assert out["name"] == "score" and out["shape"] == [32, 1]
        # The python model ran the very ONNX file: same numbers as ONNX Runtime here.
        import onnxruntime as ort

        sess = ort.InferenceSession(str(repo.path / "ranker_onnx/1/model.onnx"), providers=["CPUExecutionProvider"])
        assert np.allclose(np.array(out["data"]), sess.run(None, x)[0].ravel(), atol=1e-6)
        assert t.metadata("ranker_py")["inputs"][0]["name"] == "sparse_ids"
        assert "nv_inference_request_success" in t.metrics()
        # Triton's own latency summary, which the release p99 gates read (drills.release.metrics), as on AWS.
        from drills.release.metrics import snapshot

        assert snapshot(t.metrics(), "ranker_py").quantiles_us.get("0.99", 0) > 0
        assert 10 < t.rss_mib() < 1024 and t.shm_regions()

        t.fail("stall")  # SIGSTOP: the port still accepts, nothing answers
        ok, reason = probe(f"{t.url}/v2/health/ready", 0.3)  # a fresh connection, as a health checker opens
        assert not ok and reason.startswith("timeout"), reason
        t.restore()
        assert t.is_ready()

        t.fail("kill")  # a crash: connection refused, the python stub goes with it
        assert t.state == "killed" and not t.is_ready(0.3) and not t.shm_regions()
        t.restore()  # a fresh process on the same address and ports
        assert t.is_ready() and len(t.ready_s) == 2
        assert t.infer("ranker_py", x)["outputs"][0]["shape"] == [32, 1]

        t.fail("unload")  # gray failure: inference fails; readiness only blips while unloading
        with pytest.raises(ProcessError, match="HTTP 40"):
            t.infer("ranker_py", x)
        t.restore()
        assert t.infer("ranker_py", x)["outputs"][0]["shape"] == [32, 1]
        t.fail("stall")  # teardown must cope with a stopped server
    assert not t.shm_regions()


def test_triton_that_never_becomes_ready_is_stopped_with_its_log(model_dir, tmp_path, no_leftovers, pod):
    repo = tmp_path / "slow"
    shutil.copytree(model_dir / "ranker_py", repo / "ranker_py")
    (repo / "ranker_py/1/model.py").write_text(
        "import time\nclass TritonPythonModel:\n    def initialize(self, args):\n        time.sleep(60)\n"
    )
    with Supervisor(tmp_path / "logs") as sup:
        no_leftovers.append(sup)
        t = _server(sup, repo, tmp_path, pod, ready_timeout=3.0)
        with pytest.raises(ProcessError) as e:
            t.start()
        msg = str(e.value)
        assert "not ready" in msg and "after 3 s" in msg and "ranker_py" in msg  # the log tail names the model
        assert not sup.leftovers() and t.state == "stopped"


def test_triton_that_exits_reports_why(tmp_path, no_leftovers, pod):
    repo = tmp_path / "broken"
    (repo / "ranker_py" / "1").mkdir(parents=True)
    (repo / "ranker_py" / "config.pbtxt").write_text('name: "ranker_py"\nplatform: "onnxruntime_onnx"\n')
    with Supervisor(tmp_path / "logs") as sup:
        no_leftovers.append(sup)
        t = _server(sup, repo, tmp_path, pod)
        with pytest.raises(ProcessError, match="exited with status") as e:
            t.start()
        assert "onnxruntime" in str(e.value)  # Triton's own words: the backend is not in this build


def test_triton_runs_the_declared_args_with_the_listed_substitutions_only(model_dir, tmp_path, no_leftovers, pod):
    """The regional stack's own args reach the server: explicit model control, the declared models (their python
    stand-in), exit on a load error, strict readiness, no auto-completed config; Triton's log shows it."""
    repo = prepare_serving_repo(model_dir, tmp_path / "repo", pod, manifest_digest(model_dir))
    with Supervisor(tmp_path / "logs") as sup:
        no_leftovers.append(sup)
        t = _server(sup, repo, tmp_path, pod)
        argv = t.argv()
        declared_kept = [a for a in pod.args[1:] if a.split("=")[0] in KEPT]
        assert declared_kept and all(a in argv for a in declared_kept)
        assert "--model-control-mode=explicit" in argv and "--load-model=ranker_py" in argv
        assert not any(a.startswith(("--load-model=ranker_onnx", "--load-model=ranker_trt")) for a in argv)
        assert "--allow-gpu-metrics=false" in argv and f"--http-address={ADDR}" in argv
        t.start()
        log = t.child.log_path.read_text() if t.child else ""
        assert "model_control_mode" in log and "MODE_EXPLICIT" in log and "strict_readiness" in log
        assert _loaded(t) == ["ranker_py"]  # the declared model's stand-in only; ranker_onnx sits there unloaded


KEPT = ("--model-control-mode", "--exit-on-error", "--strict-readiness", "--disable-auto-complete-config")


def _loaded(t) -> list[str]:
    import requests

    r = requests.post(f"{t.url}/v2/repository/index", json={"ready": True}, timeout=5)
    return [m["name"] for m in r.json()]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (("--exit-on-error=true", "--exit-on-eror=true"), "exit-on-eror"),  # a typo in a declared flag
        # The old defect (poll the whole repository): refused with the declared models.
        (("--model-control-mode=explicit", "--model-control-mode=none"), "--model-control-mode=explicit"),
        (("--load-model=ranker_onnx", "--load-model=ranker_missing"), "ranker_missing"),  # a model not in the repo
    ],
)
def test_a_broken_declared_flag_fails_the_start_naming_it(model_dir, tmp_path, no_leftovers, pod, change, named):
    from dataclasses import replace

    old, new = change
    assert old in pod.args
    broken = replace(pod, args=tuple(new if a == old else a for a in pod.args))
    repo = prepare_serving_repo(model_dir, tmp_path / "repo", pod, manifest_digest(model_dir))
    with Supervisor(tmp_path / "logs") as sup:
        no_leftovers.append(sup)
        t = _server(sup, repo, tmp_path, broken, ready_timeout=30.0)
        with pytest.raises(ProcessError) as e:
            t.start()
        assert named in str(e.value), str(e.value)[-2000:]
        assert not sup.leftovers()
