"""The policy pack's wiring (infra/policy/__main__.py), run with the pack's own interpreter.

REQUIRES .venv-policy: pulumi-policy cannot be installed in .venv (it pins protobuf 5; onnx needs 6), so
these tests drive tests/policy/pack_driver.py with `.venv-policy/bin/python` in a subprocess. They are
skipped where that venv is missing; `make test` always creates it (`make policy-venv`), so in CI they run.
The resources fed to the pack are the ones the real program declares under infra.mocks, planned here in .venv.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess

import pytest
import yaml

from infra import mocks as m
from infra.config import ROOT, STACKS_DIR

POLICY_PY = ROOT / ".venv-policy" / "bin" / "python"
DRIVER = ROOT / "tests" / "policy" / "pack_driver.py"
# The analyzer's sentinel for a string that is unknown during preview (pulumi_policy.proxy.UNKNOWN_STRING_VALUE).
UNKNOWN_STRING = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"

pytestmark = pytest.mark.skipif(
    not POLICY_PY.exists(), reason="needs .venv-policy (run `make policy-venv`; `make test` does)"
)

EXPECTED = {
    "route53-record-health-check": "ResourceValidationPolicy",
    "route53-health-check-https": "ResourceValidationPolicy",
    "s3-replication-rtc": "ResourceValidationPolicy",
    "eks-gpu-node-taint": "ResourceValidationPolicy",
    "route53-record-sets": "StackValidationPolicy",
    "route53-region-health": "StackValidationPolicy",
    "s3-bucket-controls": "StackValidationPolicy",
    "s3-replication-mesh": "StackValidationPolicy",
    "n-plus-one-capacity": "StackValidationPolicy",
    "model-engines": "StackValidationPolicy",
}


def planned(stack: str) -> list[dict]:
    return [
        {
            "type": r.type,
            "name": r.name,
            "urn": r.urn,
            "props": r.inputs,
            "property_dependencies": r.property_dependencies,
        }
        for r in m.run_program(stack).resources
        if r.custom
    ]


def routed(props: dict) -> bool:
    """A weighted/failover record (it has a set identifier), not a plain per-region one."""
    return "setIdentifier" in props


def edit(resources: list[dict], type_: str, fn, first_only: bool = False, where=lambda props: True) -> list[dict]:
    out, done = copy.deepcopy(resources), False
    for r in out:
        if r["type"] == type_ and where(r["props"]) and not (first_only and done):
            fn(r["props"])
            done = True
    return out


def on_shallow_check(resources: list[dict]) -> list[dict]:
    """The first routed record made to carry its region's shallow check instead of the calculated one (its id and,
    as the engine reports it, the URN it depends on)."""
    out = copy.deepcopy(resources)
    rec = next(r for r in out if r["type"] == "aws:route53/record:Record" and routed(r["props"]))
    region = rec["props"]["setIdentifier"]
    (shallow,) = [
        r
        for r in out
        if r["type"] == "aws:route53/healthCheck:HealthCheck"
        and (r["props"]["tags"]["region"], r["props"]["tags"]["check"]) == (region, "shallow")
    ]
    rec["props"]["healthCheckId"] = UNKNOWN_STRING  # as in a preview that creates the checks
    rec["property_dependencies"]["healthCheckId"] = [shallow["urn"]]
    return out


def run_pack(tmp_path, cases: dict, stacks_dir=None) -> dict:
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(cases))
    cmd = [str(POLICY_PY), str(DRIVER), str(path)] + ([str(stacks_dir)] if stacks_dir else [])
    res = subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "RECO_DR_MANIFEST": str(tmp_path / "absent.json")},
        check=False,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def plans() -> dict[str, list[dict]]:
    return {s: planned(s) for s in ("prod-global", "prod-use1", "staging-global")}


def test_pack_wiring_and_declared_stacks_comply(tmp_path, plans):
    report = run_pack(tmp_path, plans)
    assert {k: v["kind"] for k, v in report["policies"].items()} == EXPECTED
    assert all(v["mandatory"] for v in report["policies"].values())
    assert report["cases"] == {"prod-global": [], "prod-use1": [], "staging-global": []}


def test_pack_reports_violations(tmp_path, plans):
    g, r = plans["prod-global"], plans["prod-use1"]
    cases = {
        "no-health-check": edit(
            g, "aws:route53/record:Record", lambda p: p.pop("healthCheckId"), first_only=True, where=routed
        ),
        "unknown-health-check": edit(
            g, "aws:route53/record:Record", lambda p: p.update(healthCheckId=UNKNOWN_STRING), where=routed
        ),
        "all-zero": edit(
            g, "aws:route53/record:Record", lambda p: p.update(weightedRoutingPolicies=[{"weight": 0}]), where=routed
        ),
        "no-rtc": edit(
            g,
            "aws:s3/bucketReplicationConfig:BucketReplicationConfig",
            lambda p: p["rules"][0]["destination"].pop("replicationTime"),
            first_only=True,
        ),
        "no-taint": edit(r, "aws:eks/nodeGroup:NodeGroup", lambda p: p.pop("taints", None)),
        "unversioned": [x for x in r if x["type"] != "aws:s3/bucketVersioning:BucketVersioning"],
        "record-on-a-child-check": on_shallow_check(g),
        "lax-calculated-check": edit(
            g,
            "aws:route53/healthCheck:HealthCheck",
            lambda p: p.update(childHealthThreshold=3),
            where=lambda p: p["type"] == "CALCULATED",
        ),
    }
    got = {case: sorted({name for name, _ in v}) for case, v in run_pack(tmp_path, cases)["cases"].items()}
    assert got == {
        "no-health-check": ["route53-record-health-check"],
        "unknown-health-check": [],  # unknown during preview is not missing
        "all-zero": ["route53-record-sets"],
        "no-rtc": ["s3-replication-rtc"],
        "no-taint": ["eks-gpu-node-taint"],
        "unversioned": ["s3-bucket-controls"],
        "record-on-a-child-check": ["route53-region-health"],
        "lax-calculated-check": ["route53-health-check-https", "route53-region-health"],
    }


def test_pack_enforces_n_plus_one_from_the_stack_files(tmp_path, plans):
    d = tmp_path / "stacks"
    d.mkdir()
    for p in STACKS_DIR.glob("Pulumi.*.yaml"):
        shutil.copy(p, d / p.name)
    path = d / "Pulumi.prod-euw1.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["config"]["reco-dr:gpu_pools"] = [
        {"name": "a10g", "instance_type": "g5.12xlarge", "min": 1, "desired": 1, "max": 2}
    ]
    path.write_text(yaml.safe_dump(doc))
    violations = run_pack(tmp_path, {"prod-global": plans["prod-global"]}, stacks_dir=d)["cases"]["prod-global"]
    assert violations and {name for name, _ in violations} == {"n-plus-one-capacity"}
    assert any("with us-east-1 lost, eu-west-1" in msg and "short by 26 GPUs" in msg for _, msg in violations)


def test_pack_starts_its_analyzer_as_the_cli_runs_it():
    """Run as "__main__" (the CLI runs it with `python -u`), the pack constructs PolicyPack, which accepts the
    policies and serves: it prints the port the engine connects to. Stopped here by this test's own process id."""
    import select

    proc = subprocess.Popen(
        [str(POLICY_PY), "-u", str(ROOT / "infra" / "policy" / "__main__.py")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None  # both are PIPEs
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline().strip() if ready else ""
        assert line.isdigit(), (
            f"no analyzer port printed; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
        )
    finally:
        proc.kill()
        proc.wait(timeout=10)
