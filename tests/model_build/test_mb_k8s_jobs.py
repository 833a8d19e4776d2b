"""Engine-build Job manifests: valid Kubernetes (strict schemas, offline), on the right GPU pool and image."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import yaml

from model_build import trt_engine
from model_build.build import BuildResult
from model_build.trt_plan import NODE_LABEL_CC, sm

K8S = "1.33.0"  # the clusters' kubernetes_version in stacks/


def _docs(path: Path) -> list[dict]:
    return list(yaml.safe_load_all(path.read_text()))


def test_one_job_per_environment_and_engine_listed_in_the_manifest(built: BuildResult):
    files = sorted(p.relative_to(built.out).as_posix() for p in (built.out / "jobs").glob("*.yaml"))
    assert files == sorted(j.file for j in built.plan.jobs)
    assert files == sorted(f.path for f in built.manifest.files_by_role("k8s-job"))
    for cc, e in built.manifest.engines.items():
        assert e.build_jobs and all(f"-engine-{sm(cc)}.yaml" in j for j in e.build_jobs)


def test_jobs_validate_strictly_and_target_the_pool(built: BuildResult):
    fp16 = built.manifest.file("ranker_trt/model.fp16.onnx")
    assert fp16 is not None
    for j in built.plan.jobs:
        cm, job = _docs(built.out / j.file)
        for doc in (cm, job):
            kubernetes_validate.validate(doc, K8S, strict=True)
        assert (cm["kind"], job["kind"], job["apiVersion"]) == ("ConfigMap", "Job", "batch/v1")
        spec = job["spec"]["template"]["spec"]
        assert spec["nodeSelector"] == {NODE_LABEL_CC: j.compute_capability}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        build = next(c for c in spec["initContainers"] if c["name"] == "build")
        assert (
            build["image"] == "nvcr.io/nvidia/tensorrt:25.01-py3"
        )  # Triton image nvcr.io/nvidia/tritonserver:25.01-py3
        assert build["resources"]["limits"]["nvidia.com/gpu"] == 1
        others = [c for c in [*spec["initContainers"], *spec["containers"]] if c["name"] != "build"]
        assert all("nvidia.com/gpu" not in c["resources"].get("limits", {}) for c in others)
        assert spec["restartPolicy"] == "Never" and spec["serviceAccountName"] == j.service_account
        # the script in the ConfigMap is exactly the tested module, and its plan pins the graph's hash
        assert cm["data"]["trt_engine.py"] == Path(trt_engine.__file__).read_text()
        plan = json.loads(cm["data"]["plan.json"])
        assert plan["onnx_sha256"] == fp16.sha256 and plan["engine"]["compute_capability"] == j.compute_capability
        assert plan["shapes"]["dense"] == [[1, 8], [256, 8], [4096, 8]]
        publish = spec["containers"][0]["command"][-1]
        assert "--if-none-match '*'" in publish and "--checksum-algorithm SHA256" in publish
        assert publish.index("ranker_trt/1/") < publish.index("engine_records/")  # engine, then its record
        env = {e["name"]: e for e in spec["containers"][0]["env"]}
        assert env["AWS_REGION"]["value"] == j.region and env["PREFIX"]["value"] == "ranker/2026.11.0"


def test_a_job_missing_a_required_field_is_rejected_by_the_validator(built: BuildResult):
    _, job = _docs(built.out / built.plan.jobs[0].file)
    job["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"  # typo: strict schema catches it
    try:
        kubernetes_validate.validate(job, K8S, strict=True)
    except kubernetes_validate.ValidationError:
        return
    raise AssertionError("strict validation accepted an unknown field")
