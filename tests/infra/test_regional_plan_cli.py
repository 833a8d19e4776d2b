"""`python -m infra.plan`: text, --json, --diff, and config errors as exit 2 without a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra import plan as P

ROOT = Path(__file__).resolve().parents[2]


def _run(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "infra.plan", *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_json_lists_what_the_issue_asks_for():
    res = _run("prod-use1", "--json")
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    types = {r["type"] for r in d["resources"]}
    for t in (
        "aws:eks/cluster:Cluster",
        "aws:eks/nodeGroup:NodeGroup",
        "aws:s3/bucket:Bucket",
        "aws:s3/bucketVersioning:BucketVersioning",
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        "kubernetes:apps/v1:Deployment",
        "aws:lb/loadBalancer:LoadBalancer",
    ):
        assert t in types
    assert "/v2/health/ready" in res.stdout and "nvidia.com/gpu" in res.stdout
    assert d["counts"]["aws:eks/nodeGroup:NodeGroup"] == 3
    assert sum(d["counts"].values()) == len(d["resources"])
    assert d["outputs"]["region"] == "us-east-1"


def test_text_summary(capsys):
    assert P.main(["prod-euw1"]) == 0
    out = capsys.readouterr().out
    assert "aws:eks/nodeGroup:NodeGroup  gpu-a10g-nodes" in out
    assert 'instanceTypes: ["g5.12xlarge"]' in out
    assert "Counts per type:" in out and "Outputs:" in out and "lb_zone_id: Z32O12XQLNTSW2" in out


def test_config_error_exits_2_with_message_and_no_traceback(tmp_path):
    from infra.config import STACKS_DIR

    shutil.copytree(STACKS_DIR, tmp_path / "stacks")
    path = tmp_path / "stacks" / "Pulumi.prod-use1.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["config"]["reco-dr:triton"]["image"] = "nvcr.io/nvidia/tritonserver:latest"
    path.write_text(yaml.safe_dump(doc))
    res = _run("prod-use1", "--json", "--stacks-dir", str(tmp_path / "stacks"))
    assert res.returncode == 2
    assert res.stdout == ""
    assert "Traceback" not in res.stderr
    assert res.stderr.strip() == (
        "error: stack prod-use1: reco-dr:triton.image = 'nvcr.io/nvidia/tritonserver:latest': "
        "rule: the Triton image must be pinned by a version tag (not 'latest') or a sha256 digest"
    )


def test_unknown_stack_exits_2(capsys):
    assert P.main(["prod-mars1"]) == 2
    assert "the stack file must exist" in capsys.readouterr().err


def test_diff_plans_reports_added_removed_changed():
    old = {
        "resources": [
            {"type": "t", "name": "a", "inputs": {"x": 1, "y": {"z": 1}}},
            {"type": "t", "name": "gone", "inputs": {}},
        ],
        "outputs": {"o": 1},
    }
    new = {
        "resources": [
            {"type": "t", "name": "a", "inputs": {"x": 1, "y": {"z": 2}}},
            {"type": "t", "name": "new", "inputs": {}},
        ],
        "outputs": {"o": 2},
    }
    d = P.diff_plans(old, new)
    assert d == {
        "added": [{"type": "t", "name": "new"}],
        "removed": [{"type": "t", "name": "gone"}],
        "changed": [{"type": "t", "name": "a", "changed": ["y.z"]}],
        "outputs_changed": ["o"],
    }


@pytest.fixture
def baseline_repo(tmp_path):
    """A git repository holding this program with prod-euw1's a10g pool at a different max and no l40s pool."""
    repo = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("infra", "model_build"):  # infra reads model manifests through model_build.manifest
        shutil.copytree(ROOT / package, repo / package, ignore=ignore)
    shutil.copytree(ROOT / "stacks", repo / "stacks")
    path = repo / "stacks" / "Pulumi.prod-euw1.yaml"
    doc = yaml.safe_load(path.read_text())
    pools = doc["config"]["reco-dr:gpu_pools"]
    doc["config"]["reco-dr:gpu_pools"] = [{**p, "max": 2} for p in pools if p["name"] == "a10g"]
    path.write_text(yaml.safe_dump(doc))
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "baseline"], check=True)
    return repo


def test_diff_against_another_revision(baseline_repo):
    from infra.mocks import run_program

    old = P.baseline_plan("prod-euw1", "HEAD", repo=baseline_repo)
    new = P.plan_dict(run_program("prod-euw1"))
    d = P.diff_plans(old, new)
    added = {(r["type"], r["name"]) for r in d["added"]}
    assert ("aws:eks/nodeGroup:NodeGroup", "gpu-l40s-nodes") in added
    assert ("kubernetes:apps/v1:Deployment", "triton-l40s") in added
    assert d["removed"] == []
    changed = {(c["type"], c["name"]): c["changed"] for c in d["changed"]}
    assert changed[("aws:eks/nodeGroup:NodeGroup", "gpu-a10g-nodes")] == ["scalingConfig.maxSize"]
    assert "spec.maxReplicas" in changed[("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "triton-a10g-hpa")]
    assert "gpu_pools" in d["outputs_changed"]


def test_diff_cli_prints_the_changes(monkeypatch, capsys):
    """The CLI wiring of --diff (the baseline itself is exercised by the test above)."""

    def baseline(stack, ref):
        d = P.plan_dict(__import__("infra.mocks", fromlist=["run_program"]).run_program(stack))
        d["resources"] = [r for r in d["resources"] if r["name"] != "triton-h100"]
        return d

    monkeypatch.setattr(P, "baseline_plan", baseline)
    assert P.main(["prod-use1", "--diff", "HEAD"]) == 0
    out = capsys.readouterr().out
    assert "  + kubernetes:apps/v1:Deployment  triton-h100" in out and "1 to add, 0 to remove, 0 to change" in out
    assert P.main(["prod-use1", "--diff", "HEAD", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["added"] == [{"type": "kubernetes:apps/v1:Deployment", "name": "triton-h100"}] and d["ref"] == "HEAD"


def test_diff_bad_ref_is_an_error(capsys):
    assert P.main(["prod-use1", "--diff", "no-such-ref-xyz"]) == 1
    assert "cannot read revision 'no-such-ref-xyz'" in capsys.readouterr().err
