"""What a regional stack's Triton pod runs, read from its declared Deployments, and how the rehearsal runs it.

`declared_pod(records, stack)` reads the stable Triton Deployments of a regional stack's offline plan: Triton's
container args and the `verify-model` init container's command (the script that verifies the fetched version
against its manifest and builds the serving repository Triton reads). The rehearsal runs exactly these, changed
only by the substitutions in SUBSTITUTIONS (listed in every rehearsal report), so a defect in a declared flag or in
the verify script fails the rehearsal at start, naming Triton's or the script's own words.

One Triton per region stands for the region's pods: the models its pools load are the union of their
`--load-model`s; every other declared argument must be the same across the pools (else the plan is refused here,
as the rehearsal could not stand for both).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drills.rehearsal import aws_shim
from infra.health import DEEP_HEALTH_CONTAINER
from infra.names import APP, triton_models

REPO_ROOT = Path(__file__).resolve().parents[2]  # the shim runs as `python -m drills.rehearsal.aws_shim`

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
TRITON_CONTAINER, FETCH_CONTAINER, VERIFY_CONTAINER = "triton", "fetch-model", "verify-model"
DEEP_CONTAINER = DEEP_HEALTH_CONTAINER

# (what the stack declares, what runs here instead, why): the one list of differences between a pod and the
# rehearsal's Triton. Everything else in the declared args and verify command runs as declared.
SUBSTITUTIONS: list[tuple[str, str, str]] = [
    ("tritonserver", "the nvidia-pytriton wheel's tritonserver (Triton 2.51, CPU build)", "no Triton container here"),
    (
        "--load-model=<model>_trt / <model>_onnx",
        "--load-model=<model>_py, linked into the serving repository with the ONNX file it runs",
        "no GPU or TensorRT, and the wheel has no onnxruntime backend: the python-backend model runs the same ONNX "
        "file with ONNX Runtime",
    ),
    (
        "--model-repository=/models/serving",
        "the region's serving repository under the run directory, built by the declared verify-model script",
        "no pod volume",
    ),
    (
        "--http-port / --grpc-port / --metrics-port",
        "the rehearsal's port block, on the region's load-balancer address (--http-address etc. added)",
        "every region shares this machine",
    ),
    ("--allow-gpu-metrics=true", "--allow-gpu-metrics=false", "no GPU (NVML/DCGM errors at every start otherwise)"),
    (
        "(not declared)",
        "--backend-directory, --exit-timeout-secs, --backend-config=python,shm-region-prefix-name=<unique>",
        "the wheel's python backend assembled per run; bounded shutdown; shared memory removable after a SIGKILL",
    ),
    (
        "fetch-model: /bin/sh -c <fetch script> with the AWS CLI (aws s3 sync, aws s3api get-object)",
        "the same script under /bin/sh, with drills/rehearsal/aws_shim.py as `aws` (those two commands against "
        "moto_server; any other option refused), the rehearsal's bucket, a local directory and $TMPDIR",
        "no AWS CLI image or S3 here",
    ),
    (
        "python3 -c <verify script> /models/<model>/<version> /models/serving <models>",
        "this interpreter, the version synced from the region's bucket, the run's serving repository",
        "no init container",
    ),
    (
        "deep-health: python3 -c <script> <port> http://triton.triton.svc.cluster.local:8000 <model>_trt <bound> "
        "<path> <ok> <fail> <cache>",
        "this interpreter, the same script and bound, on <pod address>:<the rehearsal's port>, against the region's "
        "Service listener in its load-balancer model (the same targets and pod-network faults), <model>_py",
        "every pod shares this machine's ports; no cluster DNS or kube-proxy; the stand-in model",
    ),
]


class PodError(Exception):
    """The declared Deployments cannot be run as one rehearsal Triton (missing, or pools that differ)."""


@dataclass(frozen=True)
class PodSpec:
    stack: str
    deployments: tuple[str, ...]
    args: tuple[str, ...]  # Triton's declared container args (the first pool's; --load-model: the union)
    verify: tuple[str, ...]  # the verify-model init container's declared command
    fetch: tuple[str, ...]  # the fetch-model init container's declared command
    models: tuple[str, ...]  # the Triton models the pods load (the union over the pools)
    deep_health: tuple[str, ...] = ()  # the deep-health sidecar's declared command


def _flag(arg: str) -> str:
    return arg.split("=", 1)[0]


def _container(spec: dict, name: str, where: str, init: bool = False) -> dict:
    key = "initContainers" if init else "containers"
    found = [c for c in spec.get(key) or [] if c.get("name") == name]
    if len(found) != 1:
        raise PodError(f"{where}: expected one {'init ' if init else ''}container {name!r}, found {len(found)}")
    return found[0]


def declared_pod(records: list[dict[str, Any]], stack: str) -> PodSpec:
    """The stack's stable Triton Deployments (label app.kubernetes.io/name = triton) as one PodSpec."""
    prefix = f"urn:pulumi:{stack}::"
    deps = sorted(
        (r for r in records if r.get("type") == DEPLOYMENT and str(r.get("urn") or "").startswith(prefix)),
        key=lambda r: str(r["inputs"]["metadata"]["name"]),
    )
    deps = [r for r in deps if (r["inputs"]["metadata"].get("labels") or {}).get("app.kubernetes.io/name") == APP]
    if not deps:
        raise PodError(f"{stack}: its offline plan declares no Triton Deployment (label app.kubernetes.io/name={APP})")
    args: list[str] | None = None
    verify: list[str] | None = None
    fetch: list[str] | None = None
    deep: list[str] | None = None
    models: list[str] = []
    for r in deps:
        where = f"{stack} Deployment {r['inputs']['metadata']['name']}"
        pod = r["inputs"]["spec"]["template"]["spec"]
        a = [str(x) for x in _container(pod, TRITON_CONTAINER, where).get("args") or []]
        v = [str(x) for x in _container(pod, VERIFY_CONTAINER, where, init=True).get("command") or []]
        f = [str(x) for x in _container(pod, FETCH_CONTAINER, where, init=True).get("command") or []]
        d = [str(x) for x in _container(pod, DEEP_CONTAINER, where).get("command") or []]
        loads = [x.split("=", 1)[1] for x in a if _flag(x) == "--load-model"]
        models += [m for m in loads if m not in models]
        rest = [x for x in a if _flag(x) != "--load-model"]
        if args is None or verify is None or fetch is None or deep is None:
            args, verify, fetch, deep = a, v, f, d
        elif (
            rest != [x for x in args if _flag(x) != "--load-model"]
            or v[:4] != verify[:4]
            or f != fetch
            or d[:5] + d[6:] != deep[:5] + deep[6:]  # the model it checks may differ between pools
        ):
            raise PodError(
                f"{where}: its Triton args, fetch, verify or deep-health command differ from "
                f"{deps[0]['inputs']['metadata']['name']}'s beyond the models loaded; one rehearsal Triton cannot "
                "stand for both"
            )
    assert args is not None and verify is not None and fetch is not None and deep is not None
    first_load = next((i for i, x in enumerate(args) if _flag(x) == "--load-model"), len(args))
    union = [x for x in args if _flag(x) != "--load-model"]
    union[first_load:first_load] = [f"--load-model={m}" for m in models]
    return PodSpec(
        stack,
        tuple(str(r["inputs"]["metadata"]["name"]) for r in deps),
        tuple(union),
        tuple(verify),
        tuple(fetch),
        tuple(models),
        tuple(deep),
    )


def fetch_declared(
    pod: PodSpec, *, bucket: str, prefix: str, version: str, dest: Path, region: str, endpoint: str
) -> str:
    """Run the declared fetch-model command (`/bin/sh -c <script> fetch-model <bucket> <prefix> <local> <pins key>
    <version>`) for `version` under `prefix` of the region's rehearsal bucket into `dest`, with the aws shim first
    on PATH (SUBSTITUTIONS); the pins key runs as declared. Returns the script's own line; raises PodError with its
    words when it fails."""
    cmd = list(pod.fetch)
    if len(cmd) != 9 or cmd[:2] != ["/bin/sh", "-c"]:
        raise PodError(
            f"{pod.stack}: fetch-model's command is not `/bin/sh -c <script> fetch-model <bucket> <prefix> <local> "
            f"<pins> <version>`: {cmd[:2]} ... ({len(cmd)} words)"
        )
    script, name, pins = cmd[2], cmd[3], cmd[7]
    work = dest.parent / f"{dest.name}.fetch"
    tmp = work / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        "PATH": f"{aws_shim.install(work / 'bin')}{os.pathsep}{os.environ.get('PATH', '')}",
        "TMPDIR": str(tmp),
        "PYTHONPATH": str(REPO_ROOT),
        aws_shim.ENDPOINT_ENV: endpoint,
        "AWS_DEFAULT_REGION": region,
    }
    argv = ["/bin/sh", "-c", script, name, bucket, prefix.rstrip("/") + "/", str(dest), pins, version]
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    if r.returncode != 0:
        raise PodError(f"fetch-model exited {r.returncode}: {(r.stderr or r.stdout).strip()}")
    return r.stdout.strip()


def stand_in(model: str) -> str:
    """The rehearsal's model for a declared one: the python-backend model of the same ranker."""
    for name in ("_trt", "_onnx"):
        if model.endswith(name):
            return triton_models(model[: -len(name)])["python"]
    return model  # anything else runs as declared (and fails to load if the version lacks it)


def build_serving_repo(
    pod: PodSpec, version_dir: Path, serving_dir: Path, python_files: list[str], digest: str
) -> list[str]:
    """Run the declared verify-model command over `version_dir` (synced from the bucket), building `serving_dir`;
    then link the stand-in python models (`python_files`: their files and the ONNX file and manifest they read,
    relative paths in the version, all verified by the script). `digest` is the manifest sha256 the stack copy pins
    for this version (each Deployment's command carries its own version's, as on AWS). Returns the models Triton
    loads here. Raises PodError with the script's own message when it refuses (a tampered, unsigned or unpinned
    version)."""
    cmd = list(pod.verify)
    if len(cmd) < 6 or cmd[:2] != ["python3", "-c"]:
        raise PodError(
            f"{pod.stack}: verify-model's command is not `python3 -c <script> <version> <serving> <digest> ...`"
        )
    serving_dir.parent.mkdir(parents=True, exist_ok=True)
    run = [sys.executable, "-c", cmd[2], str(version_dir), str(serving_dir), digest, *cmd[6:]]
    r = subprocess.run(run, capture_output=True, text=True, timeout=600, check=False)
    if r.returncode != 0:
        raise PodError((r.stderr or r.stdout).strip() or f"verify-model exited {r.returncode}")
    loads = list(dict.fromkeys(stand_in(m) for m in pod.models))
    for rel in python_files:
        dst = serving_dir / rel
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.link(version_dir / rel, dst)
    return loads


def rehearsal_argv(
    pod: PodSpec,
    *,
    binary: str,
    repository: Path,
    address: str,
    ports: dict[str, int],
    extra: list[str],
) -> list[str]:
    """The declared Triton args with SUBSTITUTIONS applied (in the declared order; `extra`: the added flags)."""
    if not pod.args or pod.args[0] != "tritonserver":
        raise PodError(f"{pod.stack}: Triton's declared args do not start with `tritonserver`: {list(pod.args)[:3]}")
    out = [binary]
    loads: list[str] = []
    for a in pod.args[1:]:
        flag, _, value = a.partition("=")
        if flag in ("--model-repository", "--http-port", "--grpc-port", "--metrics-port", "--load-model") and not _:
            raise PodError(f"{pod.stack}: declared {a!r} without `=value`: the rehearsal substitutes only --flag=value")
        if flag == "--model-repository":
            out.append(f"--model-repository={repository}")
        elif flag in ("--http-port", "--grpc-port", "--metrics-port"):
            kind = flag[2:].split("-")[0]
            out += [f"--{kind}-address={address}", f"--{kind}-port={ports[kind]}"]
        elif flag == "--load-model":
            m = stand_in(value)
            if m not in loads:
                loads.append(m)
                out.append(f"--load-model={m}")
        elif flag == "--allow-gpu-metrics":
            out.append("--allow-gpu-metrics=false")
        else:
            out.append(a)
    return out + extra


def deep_health_argv(pod: PodSpec, *, address: str, port: int, triton_url: str) -> list[str]:
    """The declared deep-health sidecar command with SUBSTITUTIONS applied: this interpreter, bound to the pod's
    address and the rehearsal's port, against the region's Service listener (`triton_url`), checking the stand-in
    models. The script, its bound, path, strings and cache run as declared."""
    cmd = list(pod.deep_health)
    if len(cmd) != 11 or cmd[:2] != ["python3", "-c"]:
        raise PodError(
            f"{pod.stack}: {DEEP_CONTAINER}'s command is not `python3 -c <script> <port> <triton url> <model> <bound> "
            f"<path> <ok> <fail> <cache>`: {cmd[:2]} ... ({len(cmd)} words)"
        )
    models = ",".join(dict.fromkeys(stand_in(m) for m in cmd[5].split(",")))
    return [sys.executable, "-c", cmd[2], f"{address}:{port}", triton_url, models, *cmd[6:]]
