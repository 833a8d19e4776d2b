"""The TensorRT build plan for the fleet: engines, profiles, file names, timing caches, Jobs — no TensorRT."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from infra.config import STACKS_DIR, envs, load_fleet
from model_build.trt_plan import PlanError, Profile, make_plan, sm, timing_cache_key


def _all():
    return make_plan([load_fleet(e) for e in envs()])


def test_one_engine_per_compute_capability_in_the_fleet():
    plan = _all()
    assert plan.envs == ["prod", "staging"]
    assert plan.compute_capabilities == ["8.0", "8.6", "8.9", "9.0"]
    assert [(e.compute_capability, e.file, e.path) for e in plan.engines] == [
        (cc, f"model.{sm(cc)}.plan", f"ranker_trt/1/model.{sm(cc)}.plan") for cc in plan.compute_capabilities
    ]
    assert plan.cc_model_filenames() == {
        "8.0": "model.sm80.plan",
        "8.6": "model.sm86.plan",
        "8.9": "model.sm89.plan",
        "9.0": "model.sm90.plan",
    }
    assert plan.onnx_fallback_for == []


def test_profile_precision_versions_and_timing_cache_keys():
    plan = _all()
    assert (plan.triton_release, plan.triton_version, plan.tensorrt_version) == ("25.01", "2.54.0", "10.8.0")
    assert plan.tensorrt_image == "nvcr.io/nvidia/tensorrt:25.01-py3"  # the TensorRT that Triton 25.01 runs
    for e in plan.engines:
        assert e.profile == Profile(min=1, opt=256, max=4096)  # max = Triton's max_batch_size
        assert e.precision == "fp16" and e.strongly_typed and e.onnx == "ranker_trt/model.fp16.onnx"
        assert e.timing_cache_key == f"timing-cache/tensorrt-10.8.0/{sm(e.compute_capability)}.cache"
        assert (e.hardware_compatibility, e.version_compatible) == ("NONE", False)
        assert e.record == f"engine_records/model.{sm(e.compute_capability)}.json"
    keys = [e.timing_cache_key for e in plan.engines]
    assert len(set(keys)) == len(keys)
    assert timing_cache_key("9.0", "10.7.0") != timing_cache_key("9.0", "10.8.0")
    assert Profile(min=1, opt=256, max=4096).shapes({"sparse_ids": [8], "dense": [8]}) == {
        "sparse_ids": ([1, 8], [256, 8], [4096, 8]),
        "dense": ([1, 8], [256, 8], [4096, 8]),
    }


def test_jobs_run_on_a_pool_of_the_engines_capability_in_each_environment():
    plan = _all()
    jobs = {(j.env, j.compute_capability): j for j in plan.jobs}
    assert sorted(jobs) == [
        ("prod", "8.0"),
        ("prod", "8.6"),
        ("prod", "8.9"),
        ("prod", "9.0"),
        ("staging", "8.6"),
        ("staging", "8.9"),
    ]
    for (env, cc), j in jobs.items():
        fleet = load_fleet(env)
        pool = next(p for p in fleet.regions[j.region].gpu_pools if p.name == j.pool)
        assert pool.gpu.compute_capability == cc and pool.instance_type == j.instance_type
        assert j.stack == fleet.stack_names[j.region] and j.file == f"jobs/{env}-engine-{sm(cc)}.yaml"
    assert jobs[("prod", "9.0")].stack == "prod-use1"


def test_one_environment_builds_only_its_capabilities():
    plan = make_plan([load_fleet("staging")], opt_batch=100000)
    assert plan.compute_capabilities == ["8.6", "8.9"]
    assert {e.profile.opt for e in plan.engines} == {4096}  # opt is clamped to the max batch


def test_ampere_plus_hardware_compatibility_is_one_engine_for_all():
    plan = make_plan([load_fleet(e) for e in envs()], hardware_compatibility="AMPERE_PLUS", version_compatible=True)
    assert len(plan.engines) == 1
    e = plan.engines[0]
    assert (
        e.compute_capability == "8.0"
        and e.serves == ["8.0", "8.6", "8.9", "9.0"]
        and e.file == "model.ampere_plus.plan"
    )
    assert set(plan.cc_model_filenames().values()) == {"model.ampere_plus.plan"}
    assert e.timing_cache_key == "timing-cache/tensorrt-10.8.0/ampere_plus-sm80.cache" and e.version_compatible


def _stacks(tmp_path: Path, edit) -> Path:
    d = tmp_path / "stacks"
    shutil.copytree(STACKS_DIR, d)
    for p in d.glob("Pulumi.*.yaml"):
        doc = yaml.safe_load(p.read_text())
        edit(p.name[len("Pulumi.") : -len(".yaml")], doc["config"])
        p.write_text(yaml.safe_dump(doc))
    return d


def test_explicit_onnx_fallback_skips_the_engine(tmp_path: Path):
    def edit(stack, cfg):
        if stack.startswith("staging-") and "reco-dr:model" in cfg:
            cfg["reco-dr:model"]["onnx_fallback_for"] = ["8.6"]

    d = _stacks(tmp_path, edit)
    plan = make_plan([load_fleet("staging", d)])
    assert plan.onnx_fallback_for == ["8.6"] and [e.compute_capability for e in plan.engines] == ["8.9"]
    assert plan.engine_for("8.6") is None and list(plan.cc_model_filenames()) == ["8.9"]
    # prod still serves 8.6 with an engine, so the union keeps it
    both = make_plan([load_fleet("prod", d), load_fleet("staging", d)])
    assert both.engine_for("8.6") is not None and both.onnx_fallback_for == []


def test_fleet_must_agree_on_tensorrt_version_and_max_batch(tmp_path: Path):
    def older_triton(stack, cfg):
        if stack == "prod-euw1":
            cfg["reco-dr:triton"]["image"] = "nvcr.io/nvidia/tritonserver:24.12-py3"

    d = _stacks(tmp_path, older_triton)
    with pytest.raises(PlanError, match="TensorRT version"):
        make_plan([load_fleet("prod", d)])

    def smaller_batch(stack, cfg):
        if stack == "staging-use1":
            cfg["reco-dr:triton"]["max_batch_size"] = 1024

    d2 = _stacks(tmp_path / "b", smaller_batch)
    with pytest.raises(PlanError, match="max_batch_size"):
        make_plan([load_fleet("prod", d2), load_fleet("staging", d2)])


def test_version_override_is_validated():
    assert make_plan([load_fleet("staging")], version="2026.11.1-bad").version == "2026.11.1-bad"
    with pytest.raises(PlanError, match="not a valid version"):
        make_plan([load_fleet("staging")], version="../escape")
