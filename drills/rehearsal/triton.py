"""One real Triton Inference Server (2.51, CPU) per region, from the `nvidia-pytriton` wheel.

Model of AWS: a region's serving endpoint, i.e. its load balancer in front of Triton pods. Each region gets
its own loopback address (127.0.0.0/8 is all loopback on Linux) and Triton binds its HTTP, gRPC and metrics
ports on that address with `--http-address` (verified to work on this build), so the address a client
resolved through DNS alone decides which region answers, as the ELB's address does in AWS. All regions use
the same port numbers, like every ELB listening on 443.

Launch recipe (ARCHITECTURE.md "What this workplace can and cannot run"):
- binary `<site-packages>/pytriton/tritonserver/bin/tritonserver`, shared libraries from
  `<site-packages>/nvidia_pytriton.libs` through LD_LIBRARY_PATH;
- the wheel ships the python backend only (`pytriton/tritonserver/backends/python`); the stub that matches
  the interpreter (`python_backend_stubs/3.11/triton_python_backend_stub`) must sit next to
  `libtriton_python.so` in `<backend dir>/python/`, so each run assembles a backend dir of symlinks;
- the venv's bin first on PATH: the stub derives `sys.prefix` from the `python3` it finds there, which is
  how `model.py` sees the venv's numpy and onnxruntime (the stub links Debian's libpython3.11);
- the arguments are the regional stack's declared ones (`pod.rehearsal_argv`: explicit model control, the declared
  models' python-backend stand-in, the addresses and ports of this machine; pod.SUBSTITUTIONS lists every change);
  `--exit-timeout-secs` bounds shutdown;
- `--backend-config=python,shm-region-prefix-name=<unique>`: the python backend keeps a shared-memory
  region per model instance in /dev/shm. The stub removes it when the server dies, but a SIGKILL of the
  whole group (the last resort of a stop) kills the stub too and leaves the region behind; a unique prefix
  lets the stop hook remove exactly this server's regions.

Faults (data plane only; nothing touches Route 53 or Pulumi):
- `kill`: SIGKILL to the server process: a crash. Connections are refused from then on (the python stub
  notices its parent is gone and exits, cleaning its shared memory). Models a region whose LB has no
  healthy targets and answers nothing / resets connections.
- `stall`: SIGSTOP to the server's process group: the kernel still accepts TCP connections into the listen
  backlog, but nothing answers, so probes and requests time out. Models a hung or black-holed region.
- `unload`: `POST /v2/repository/models/<m>/unload`. Measured on this build: `/v2/health/ready` answers
  not-ready only while the model unloads (about 1.4 s, the python stub shutting down) and 200 again
  afterwards, because readiness in explicit mode covers loaded models only; inference answers 404/400 for
  as long as the model stays unloaded. A gray failure: a Route 53 health check on /v2/health/ready with a
  threshold longer than that blip does NOT detect it. Offered to show exactly that, not as a way to
  trigger DNS failover (use kill or stall for that).
`restore()` undoes the current fault (restart after kill, SIGCONT after stall, load after unload).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import sys
import sysconfig
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests

from drills.rehearsal.pod import PodSpec, rehearsal_argv
from drills.rehearsal.procs import Child, ProcessError, Supervisor, check_ports_free, rss_kib


class TritonUnavailable(ProcessError):
    """The pytriton wheel (server binary, libraries or the matching python stub) is not installed."""


@dataclass(frozen=True)
class PyTritonLayout:
    site_packages: Path
    tritonserver: Path
    libs: Path
    python_backend: Path  # libtriton_python.so + triton_python_backend_utils.py
    stub: Path
    venv_bin: Path


def locate(python_version: tuple[int, int] | None = None) -> PyTritonLayout:
    """Find the server pieces inside the installed `nvidia-pytriton` wheel; explain what is missing."""
    sp = Path(sysconfig.get_paths()["purelib"])
    major, minor = python_version or sys.version_info[:2]
    ver = f"{major:d}.{minor:d}"
    base = sp / "pytriton" / "tritonserver"
    layout = PyTritonLayout(
        site_packages=sp,
        tritonserver=base / "bin" / "tritonserver",
        libs=sp / "nvidia_pytriton.libs",
        python_backend=base / "backends" / "python",
        stub=base / "python_backend_stubs" / ver / "triton_python_backend_stub",
        venv_bin=Path(sys.executable).parent,
    )
    for what, path in [
        ("server binary", layout.tritonserver),
        ("shared libraries", layout.libs),
        ("python backend", layout.python_backend / "libtriton_python.so"),
        (f"python {ver} backend stub", layout.stub),
    ]:
        if not path.exists():
            raise TritonUnavailable(
                f"Triton {what} not found at {path}: install nvidia-pytriton==0.7.0 into a venv made from"
                f" Debian's python3.11 (make venv)"
            )
    return layout


def make_backend_dir(dest: Path, layout: PyTritonLayout | None = None) -> Path:
    """`dest/python/` with the backend library, its utils and the stub, as symlinks; returns `dest`."""
    layout = layout or locate()
    py = dest / "python"
    py.mkdir(parents=True, exist_ok=True)
    links = {p.name: p for p in layout.python_backend.iterdir() if p.is_file()}
    links["triton_python_backend_stub"] = layout.stub
    for name, src in links.items():
        link = py / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(src)
    return dest


def server_env(layout: PyTritonLayout) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(layout.libs), os.environ.get("LD_LIBRARY_PATH")]))
    env["PATH"] = os.pathsep.join([str(layout.venv_bin), os.environ.get("PATH", "/usr/bin:/bin")])
    env["PYTHONNOUSERSITE"] = "1"  # the model sees the venv, not ~/.local
    env.setdefault("OMP_NUM_THREADS", "1")  # ONNX Runtime inside the stub: one thread per region on 2 cores
    return env


# ---------------------------------------------------------------- V2 protocol helpers
_V2_TYPES = {
    np.dtype("float32"): "FP32",
    np.dtype("float64"): "FP64",
    np.dtype("int32"): "INT32",
    np.dtype("int64"): "INT64",
    np.dtype("bool"): "BOOL",
    np.dtype("float16"): "FP16",
}


def v2_infer_body(inputs: Mapping[str, np.ndarray], outputs: Sequence[str] = ()) -> bytes:
    """A KServe V2 JSON inference request body for `inputs` (name -> array)."""
    body = {
        "inputs": [
            {"name": n, "shape": list(a.shape), "datatype": _V2_TYPES[a.dtype], "data": a.ravel().tolist()}
            for n, a in inputs.items()
        ]
    }
    if outputs:
        body["outputs"] = [{"name": o} for o in outputs]
    return json.dumps(body).encode()


# ---------------------------------------------------------------- server
def _why(child: Child) -> str:
    """What an early exit says. Triton answers bad arguments with its 200-line usage text and one line of complaint
    (first: "unrecognized option ..."; last: "Error: ..."): that line, rather than the usage's tail."""
    lines = child.log_path.read_text(errors="replace").splitlines() if child.log_path else []
    if (lines and lines[0].startswith("Usage")) or any("unrecognized option" in x for x in lines[:1]):
        return "\n".join(x for x in lines if "unrecognized option" in x or x.startswith("Error"))
    return child.log_tail()


class TritonServer:
    """One region's Triton, supervised. `start()` returns once /v2/health/ready answers 200."""

    def __init__(
        self,
        sup: Supervisor,
        *,
        name: str,
        repository: Path,
        models: Sequence[str],
        address: str,
        http_port: int,
        grpc_port: int,
        metrics_port: int,
        workdir: Path,
        pod: PodSpec,
        ready_timeout: float = 60.0,
        exit_timeout: int = 2,
        layout: PyTritonLayout | None = None,
    ):
        self.sup, self.name, self.repository, self.models = sup, name, Path(repository), list(models)
        self.address, self.http_port, self.grpc_port, self.metrics_port = address, http_port, grpc_port, metrics_port
        self.workdir, self.ready_timeout, self.exit_timeout = Path(workdir), ready_timeout, exit_timeout
        self.pod = pod
        self.layout = layout or locate()
        self.child: Child | None = None
        self.state = "new"  # new | ready | killed | stalled | unloaded | stopped
        self.ready_s: list[float] = []  # seconds from spawn to ready, per start
        self._shm_prefix = ""
        self._session = requests.Session()

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.http_port}"

    def endpoints(self) -> list[tuple[str, int]]:
        return [(self.address, p) for p in (self.http_port, self.grpc_port, self.metrics_port)]

    # ------------------------------------------------------------ lifecycle
    def argv(self) -> list[str]:
        """The regional stack's declared Triton args with the rehearsal's substitutions (drills.rehearsal.pod)."""
        backend = make_backend_dir(self.workdir / "backends", self.layout)
        return rehearsal_argv(
            self.pod,
            binary=str(self.layout.tritonserver),
            repository=self.repository,
            address=self.address,
            ports={"http": self.http_port, "grpc": self.grpc_port, "metrics": self.metrics_port},
            extra=[
                f"--backend-directory={backend}",
                f"--exit-timeout-secs={self.exit_timeout}",
                f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
            ],
        )

    def start(self) -> float:
        """Spawn and wait for readiness; return the seconds it took. Raise ProcessError with the log tail."""
        check_ports_free(self.endpoints())
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._shm_prefix = f"recodr_{self.name}_{uuid.uuid4().hex[:8]}_"
        t0 = time.monotonic()
        self.child = self.sup.start(
            f"triton-{self.name}",
            self.argv(),
            env=server_env(self.layout),
            log_path=self.workdir / "triton.log",
            on_stop=self._cleanup_shm,
        )
        deadline = t0 + self.ready_timeout
        while time.monotonic() < deadline:
            if not self.child.alive():
                rc = self.child.popen.returncode
                self.sup.stop(self.child)
                self.state = "stopped"
                raise ProcessError(
                    f"Triton for {self.name} exited with status {rc} before it was ready "
                    f"(log {self.child.log_path}):\n{_why(self.child)}"
                )
            if self.is_ready(timeout=0.5):
                dt = time.monotonic() - t0
                self.ready_s.append(dt)
                self.state = "ready"
                return dt
            time.sleep(0.05)
        tail = self.child.log_tail()
        self.stop()
        raise ProcessError(
            f"Triton for {self.name} not ready on {self.url}/v2/health/ready after"
            f" {self.ready_timeout:g} s; stopped it. Its log ({self.child.log_path}) ends:\n{tail}"
        )

    def stop(self) -> None:
        if self.child is not None:
            # SIGINT to the server alone: it unloads the model, which shuts its stub down cleanly.
            # The supervisor sends SIGCONT right after, so a stalled server can act on it.
            self.sup.stop(
                self.child, first=signal.SIGINT, first_to_group=False, grace=self.exit_timeout + 3.0, term_grace=2.0
            )
        self._session.close()
        self.state = "stopped"

    def _cleanup_shm(self, child: Child) -> None:
        if self._shm_prefix:
            for path in glob.glob(f"/dev/shm/{self._shm_prefix}*"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    def shm_regions(self) -> list[str]:
        return sorted(glob.glob(f"/dev/shm/{self._shm_prefix}*")) if self._shm_prefix else []

    # ------------------------------------------------------------ probes
    def is_ready(self, timeout: float = 1.0) -> bool:
        try:
            # A fresh connection per probe: a pooled keep-alive connection the server has since closed would
            # read as "not ready" once, and a probe should see what a new client sees.
            return (
                requests.get(
                    f"{self.url}/v2/health/ready", timeout=timeout, headers={"Connection": "close"}
                ).status_code
                == 200
            )
        except requests.RequestException:
            return False

    def infer(self, model: str, inputs: Mapping[str, np.ndarray], timeout: float = 5.0) -> dict:
        r = self._session.post(
            f"{self.url}/v2/models/{model}/infer",
            data=v2_infer_body(inputs),
            timeout=timeout,
            headers={"Content-Type": "application/json"},
        )
        if r.status_code != 200:
            raise ProcessError(f"inference on {self.name}/{model}: HTTP {r.status_code}: {r.text[:300]}")
        return r.json()

    def metadata(self, model: str) -> dict:
        r = self._session.get(f"{self.url}/v2/models/{model}", timeout=2)
        r.raise_for_status()
        return r.json()

    def metrics(self) -> str:
        return requests.get(f"http://{self.address}:{self.metrics_port}/metrics", timeout=2).text

    def rss_mib(self) -> float:
        """Resident memory of the server and its python stub(s), MiB."""
        if self.child is None or not self.child.alive():
            return 0.0
        return rss_kib(self.child.group()) / 1024

    def pids(self) -> list[int]:
        return self.child.group() if self.child is not None and self.child.alive() else []

    # ------------------------------------------------------------ faults
    def fail(self, mode: str = "kill") -> None:
        if self.state != "ready":
            raise ProcessError(f"region {self.name} is {self.state}; restore it before injecting another fault")
        if mode == "kill":
            assert self.child is not None
            self.child.group()  # remember the stub's pid for the leftover audit
            self.child.signal(signal.SIGKILL, group=False)
            self.child.popen.wait(5)
            self.sup.stop(self.child)  # reaps, waits for the stub to go, runs the shm hook
            self.state = "killed"
        elif mode == "stall":
            assert self.child is not None
            self.child.signal(signal.SIGSTOP, group=True)
            self.state = "stalled"
        elif mode == "unload":
            for m in self.models:
                r = self._session.post(f"{self.url}/v2/repository/models/{m}/unload", timeout=10)
                if r.status_code != 200:
                    raise ProcessError(f"unload {m} on {self.name}: HTTP {r.status_code}: {r.text[:200]}")
            self.state = "unloaded"
        else:
            raise ValueError(f"unknown fault mode {mode!r}: kill, stall or unload")

    def restore(self) -> float:
        """Undo the current fault; return the seconds until ready again."""
        t0 = time.monotonic()
        if self.state in ("killed", "stopped"):
            return self.start()
        if self.state == "stalled":
            assert self.child is not None
            self.child.signal(signal.SIGCONT, group=True)
        elif self.state == "unloaded":
            for m in self.models:
                r = self._session.post(f"{self.url}/v2/repository/models/{m}/load", timeout=self.ready_timeout)
                if r.status_code != 200:
                    raise ProcessError(f"load {m} on {self.name}: HTTP {r.status_code}: {r.text[:200]}")
        elif self.state == "ready":
            return 0.0
        deadline = t0 + self.ready_timeout
        while time.monotonic() < deadline:
            if self.is_ready(0.5):
                self.state = "ready"
                return time.monotonic() - t0
            time.sleep(0.05)
        raise ProcessError(f"Triton for {self.name} did not become ready again after restore")
