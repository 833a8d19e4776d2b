"""Kubernetes Job manifests that build each TensorRT engine on a GPU of its compute capability.

One file per (environment, engine): a ConfigMap holding `trt_engine.py` (the TensorRT call sites, run as a
plain script) and the Job's plan, and a Job whose pod runs on the region's GPU pool of that capability
(node selector on the pool label `reco-dr/compute-capability`, toleration for the `nvidia.com/gpu` taint,
one GPU) in three steps:

1. `fetch` (AWS CLI): download the published version's manifest, the FP16 graph, the golden set and the
   timing cache for (capability, TensorRT version) if one exists; refuse if the engine already exists.
2. `build` (NVIDIA TensorRT container of the Triton image's release, so the engine's TensorRT version is
   the one Triton runs): verify, build, check I/O and profile, golden parity gates, write engine + record.
3. `publish` (AWS CLI): put the engine and then its record under the version prefix with SHA-256 checksums
   and `If-None-Match: *` (never overwrite), then the timing cache (a cache: overwritten on purpose).

What the cluster must provide (the regional stack's side of the contract): namespace `model-build`, service
account `engine-builder` with a pod identity that may read the version prefix and write
`<model>/<version>/<model>_trt/1/*`, `<model>/<version>/engine_records/*` and `timing-cache/*` in the
regional bucket, and a ConfigMap `reco-dr-artifacts` with key `bucket` naming that bucket.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import yaml

from model_build import trt_engine
from model_build.trt_plan import NODE_LABEL_CC, BuildPlan, EnginePlan, JobPlan, sm

AWS_CLI_IMAGE = "public.ecr.aws/aws-cli/aws-cli:2.22.0"  # S3 conditional writes (--if-none-match) need >= 2.18
ARTIFACTS_CONFIGMAP = "reco-dr-artifacts"
CODE_DIR = "/opt/model-build"


def job_plan_json(
    plan: BuildPlan, engine: EnginePlan, onnx_sha256: str, signature: dict, parity: dict, golden: str
) -> dict:
    """What `trt_engine.py` needs in the container: the engine plan, the graph's hash, shapes, parity limits."""
    inputs = {t["name"]: t["dims"] for t in signature["inputs"]}
    return {
        "model": plan.model,
        "version": plan.version,
        "engine": engine.model_dump(mode="json"),
        "onnx_sha256": onnx_sha256,
        "shapes": engine.profile.shapes(inputs),
        "signature": signature,
        "golden": golden,
        "parity": parity,
    }


def _sh(*lines: str) -> list[str]:
    return ["/bin/sh", "-ec", "\n".join(lines)]


def render(plan: BuildPlan, job: JobPlan, job_plan: dict) -> list[dict]:
    engine = plan.engine_for(job.compute_capability)
    assert engine is not None and engine.compute_capability == job.compute_capability
    prefix = f"{plan.model}/{plan.version}"
    cache = f"/work/cache/{sm(job.compute_capability)}.cache"
    labels = {
        "app.kubernetes.io/name": f"{plan.model}-engine-build",
        "app.kubernetes.io/part-of": "reco-dr",
        "reco-dr/model": plan.model,
        "reco-dr/model-version": plan.version,
        NODE_LABEL_CC: job.compute_capability,
    }
    meta = {"name": job.name, "namespace": job.namespace, "labels": labels}
    env = [
        {"name": "BUCKET", "valueFrom": {"configMapKeyRef": {"name": ARTIFACTS_CONFIGMAP, "key": "bucket"}}},
        {"name": "AWS_REGION", "value": job.region},
        {"name": "PREFIX", "value": prefix},
    ]
    work = {"name": "work", "mountPath": "/work"}
    onnx_dir = str(PurePosixPath(engine.onnx).parent)
    fetch = _sh(
        f"mkdir -p /work/in/{onnx_dir} /work/in/golden /work/out /work/cache",
        f'if aws s3api head-object --bucket "$BUCKET" --key "$PREFIX/{engine.path}" >/dev/null 2>&1; then '
        f'echo "$PREFIX/{engine.path} already exists: a published engine is never replaced" >&2; exit 1; fi',
        'aws s3 cp "s3://$BUCKET/$PREFIX/manifest.json" /work/in/manifest.json',
        f'aws s3 cp "s3://$BUCKET/$PREFIX/{engine.onnx}" /work/in/{engine.onnx}',
        f'aws s3 cp "s3://$BUCKET/$PREFIX/{job_plan["golden"]}" /work/in/{job_plan["golden"]}',
        f'aws s3 cp "s3://$BUCKET/{engine.timing_cache_key}" {cache} '
        f'|| echo "no timing cache yet for {engine.timing_cache_key}"',
    )
    publish = _sh(
        f'aws s3api put-object --bucket "$BUCKET" --key "$PREFIX/{engine.path}" --body /work/out/{engine.file} '
        "--checksum-algorithm SHA256 --if-none-match '*'",
        f'aws s3api put-object --bucket "$BUCKET" --key "$PREFIX/{engine.record}" --body /work/out/record.json '
        "--checksum-algorithm SHA256 --if-none-match '*'",
        f'aws s3api put-object --bucket "$BUCKET" --key "{engine.timing_cache_key}" --body {cache} '
        "--checksum-algorithm SHA256",
        f'echo "published $PREFIX/{engine.path} to s3://$BUCKET"',
    )
    small = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {
            "trt_engine.py": Path(trt_engine.__file__).read_text(),
            "plan.json": json.dumps(job_plan, indent=2, sort_keys=True),
        },
    }
    job_obj = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": 1,
            "activeDeadlineSeconds": 3600,
            "ttlSecondsAfterFinished": 7 * 24 * 3600,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": job.service_account,
                    "nodeSelector": {NODE_LABEL_CC: job.compute_capability},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "volumes": [
                        {"name": "work", "emptyDir": {}},
                        {"name": "code", "configMap": {"name": job.name}},
                    ],
                    "initContainers": [
                        {
                            "name": "fetch",
                            "image": AWS_CLI_IMAGE,
                            "command": fetch,
                            "env": env,
                            "volumeMounts": [work],
                            "resources": small,
                        },
                        {
                            "name": "build",
                            "image": engine.tensorrt_image,
                            "command": [
                                "python3",
                                f"{CODE_DIR}/trt_engine.py",
                                "--plan",
                                f"{CODE_DIR}/plan.json",
                                "--in",
                                "/work/in",
                                "--out",
                                "/work/out",
                                "--cache",
                                cache,
                            ],
                            "volumeMounts": [work, {"name": "code", "mountPath": CODE_DIR, "readOnly": True}],
                            "resources": {
                                "requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": 1},
                                "limits": {"memory": "16Gi", "nvidia.com/gpu": 1},
                            },
                        },
                    ],
                    "containers": [
                        {
                            "name": "publish",
                            "image": AWS_CLI_IMAGE,
                            "command": publish,
                            "env": env,
                            "volumeMounts": [work],
                            "resources": small,
                        },
                    ],
                },
            },
        },
    }
    return [configmap, job_obj]


def write(path: Path, docs: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# Builds one TensorRT engine on a GPU of its compute capability; generated by `python -m model_build`.\n"
        "# Apply to the region's cluster: kubectl apply -f <this file>. See model_build/k8s_jobs.py.\n"
    )
    path.write_text(header + yaml.safe_dump_all(docs, sort_keys=False, width=120))
