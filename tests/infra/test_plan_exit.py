"""`python -m infra.plan` exit status: 0 with warnings only, 3 when a fleet finding is an ERROR (the plan is still
printed), 2 for a config error (one line, no traceback); a --diff baseline with ERROR findings is still compared."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra import invariants as inv
from infra import plan as P
from infra.config import STACKS_DIR

ROOT = Path(__file__).resolve().parents[2]
SMALL_EUW1 = [{"name": "a10g", "instance_type": "g5.12xlarge", "min": 1, "desired": 1, "max": 2}]


@pytest.fixture(autouse=True)
def _no_ambient_manifest(monkeypatch, tmp_path):
    # A model built on this machine (build/model/manifest.json) must not change the findings (subprocesses inherit).
    monkeypatch.setenv(inv.MANIFEST_ENV, str(tmp_path / "absent-manifest.json"))


def _copy_stacks(dst: Path, small_euw1: bool) -> Path:
    shutil.copytree(STACKS_DIR, dst)
    if small_euw1:  # eu-west-1 cannot carry its N+1 share: a capacity.n-plus-one ERROR for the prod fleet
        path = dst / "Pulumi.prod-euw1.yaml"
        doc = yaml.safe_load(path.read_text())
        doc["config"]["reco-dr:gpu_pools"] = SMALL_EUW1
        path.write_text(yaml.safe_dump(doc))
    return dst


def _plan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra.plan", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_warnings_only_exit_0(tmp_path):
    res = _plan("prod-use1", "--stacks-dir", str(_copy_stacks(tmp_path / "stacks", small_euw1=False)))
    assert res.returncode == 0, res.stderr
    assert "WARNING [model.engines]" in res.stdout and "ERROR" not in res.stdout
    assert res.stderr == ""


def test_an_error_finding_exits_3_after_the_plan(tmp_path):
    res = _plan("prod-use1", "--stacks-dir", str(_copy_stacks(tmp_path / "stacks", small_euw1=True)))
    assert res.returncode == P.EXIT_ERROR_FINDINGS == 3
    assert res.stdout.startswith("Stack prod-use1: ") and "ERROR [capacity.n-plus-one]" in res.stdout
    assert "Traceback" not in res.stderr
    lines = res.stderr.splitlines()
    assert lines and all(line.startswith("error: fleet finding [capacity.n-plus-one] ") for line in lines)


def test_an_error_finding_exits_3_with_the_json_plan(tmp_path):
    res = _plan("prod-use1", "--json", "--stacks-dir", str(_copy_stacks(tmp_path / "stacks", small_euw1=True)))
    assert res.returncode == 3
    d = json.loads(res.stdout)
    assert d["resources"] and {f["id"] for f in P.error_findings(d)} == {"capacity.n-plus-one"}


def test_a_config_error_exits_2_with_one_line(tmp_path):
    stacks = _copy_stacks(tmp_path / "stacks", small_euw1=False)
    path = stacks / "Pulumi.prod-use1.yaml"
    path.write_text(
        path.read_text().replace("  reco-dr:vpc_cidr: 10.10.0.0/16\n", "  reco-dr:vpc_cidr: 10.10.0.0/33\n")
    )
    res = _plan("prod-use1", "--stacks-dir", str(stacks))
    assert (res.returncode, res.stdout) == (2, "")
    assert res.stderr == (
        "error: stack prod-use1: reco-dr:vpc_cidr = '10.10.0.0/33': rule: an IPv4 CIDR block such as 10.10.0.0/16 "
        "(address/prefix, no host bits set); '10.10.0.0/33' is not one\n"
    )


def test_help_names_the_stacks_dir_and_the_exit_statuses(capsys):
    with pytest.raises(SystemExit) as e:
        P.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--stacks-dir DIR" in out and "default: stacks/" in out
    assert "3 planned, but the fleet" in out and "warnings are reported, not failed" in out


def test_diff_with_an_error_finding_exits_3(monkeypatch, capsys, tmp_path):
    stacks = _copy_stacks(tmp_path / "stacks", small_euw1=True)
    monkeypatch.setattr(P, "baseline_plan", lambda stack, ref: {"resources": [], "outputs": {}})
    assert P.main(["prod-use1", "--diff", "HEAD", "--stacks-dir", str(stacks)]) == 3
    out, err = capsys.readouterr()
    assert "to add, 0 to remove, 0 to change" in out
    assert "error: fleet finding [capacity.n-plus-one]" in err


def test_a_baseline_with_error_findings_is_still_compared(tmp_path):
    """The baseline runs `python -m infra.plan STACK --json` at the revision: exit 3 there is a plan, not a failure."""
    repo = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for top in ("infra", "model_build"):
        shutil.copytree(ROOT / top, repo / top, ignore=ignore)
    _copy_stacks(repo / "stacks", small_euw1=True)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "baseline"], check=True)
    old = P.baseline_plan("prod-use1", "HEAD", repo=repo)
    assert old["stack"] == "prod-use1" and old["resources"]
    assert {f["id"] for f in P.error_findings(old)} == {"capacity.n-plus-one"}
