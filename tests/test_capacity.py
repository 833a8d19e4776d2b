"""N+1 capacity math and `python -m infra.capacity ENV` (infra/capacity.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra.capacity import findings, main, n_plus_one, region_capacity, shares_after_loss
from infra.config import ROOT, STACKS_DIR, load_fleet
from model_build.manifest import write_manifest
from tests.manifests import manifest


@pytest.fixture(autouse=True)
def _no_ambient_manifest(monkeypatch, tmp_path):
    monkeypatch.setenv("RECO_DR_MANIFEST", str(tmp_path / "absent-manifest.json"))


def stacks(tmp_path: Path, edits: dict[str, dict]) -> Path:
    d = tmp_path / "stacks"
    d.mkdir(exist_ok=True)
    for p in STACKS_DIR.glob("Pulumi.*.yaml"):
        shutil.copy(p, d / p.name)
    for stack, kv in edits.items():
        path = d / f"Pulumi.{stack}.yaml"
        doc = yaml.safe_load(path.read_text())
        doc["config"].update({f"reco-dr:{k}": v for k, v in kv.items()})
        path.write_text(yaml.safe_dump(doc))
    return d


SMALL_EUW1 = {
    "prod-euw1": {"gpu_pools": [{"name": "a10g", "instance_type": "g5.12xlarge", "min": 1, "desired": 1, "max": 2}]}
}


def test_shares_renormalise_like_route53():
    assert shares_after_loss({"a": 40, "b": 30, "c": 30}, None) == {"a": 0.4, "b": 0.3, "c": 0.3}
    assert shares_after_loss({"a": 40, "b": 30, "c": 30}, "a") == {"b": 0.5, "c": 0.5}
    # A standby at weight 0 takes everything when the only weighted region goes (Route 53 answers zero
    # weights equally when no non-zero record is healthy).
    assert shares_after_loss({"a": 100, "b": 0}, "a") == {"b": 1.0}
    assert shares_after_loss({"a": 1}, "a") == {}


def test_failover_mode_secondary_takes_all():
    fleet = load_fleet("staging")
    by_lost = {sc.lost: {r.region: r.share for r in sc.regions} for sc in n_plus_one(fleet)}
    assert by_lost[None] == {"us-east-1": 1.0, "us-west-2": 0.0}
    assert by_lost["us-east-1"] == {"us-west-2": 1.0}


def test_region_capacity_counts_gpus_per_instance():
    fleet = load_fleet("prod")
    usw2 = fleet.regions["us-west-2"]  # p4d.24xlarge x max 3 = 24 A100s at 7,000 QPS each
    rc = region_capacity(fleet, usw2, 0.5)
    assert (rc.gpus_min, rc.gpus_max) == (8, 24)
    assert rc.gpus_required == 11  # ceil(75,000 / 7,000)
    assert rc.ok and rc.shortfall == 0


def test_prod_holds_n_plus_one():
    assert findings(n_plus_one(load_fleet("prod"))) == []


def test_failing_fleet_names_lost_region_survivor_and_shortfall(tmp_path):
    fleet = load_fleet("prod", stacks(tmp_path, SMALL_EUW1))
    problems = findings(n_plus_one(fleet))
    assert any(
        p.startswith("with us-east-1 lost, eu-west-1 needs 30 GPUs") and "short by 22 GPUs" in p for p in problems
    )


def test_cli_prints_table_and_exits_zero_for_prod(capsys):
    assert main(["prod"]) == 0
    out = capsys.readouterr().out
    for text in ("N+1 GPU capacity for prod", "lost region", "GPUs required", "GPUs min", "GPUs max", "N+1 holds"):
        assert text in out


def test_cli_reports_a_failing_fleet_and_exits_nonzero(tmp_path, capsys):
    d = stacks(tmp_path, SMALL_EUW1)
    assert main(["prod", "--stacks-dir", str(d)]) == 1
    out = capsys.readouterr().out
    assert "N+1 FAILS: with us-east-1 lost, eu-west-1 needs 30 GPUs" in out and "short by 22 GPUs" in out
    assert "N+1 does not hold" in out


def test_cli_json(tmp_path, capsys):
    d = stacks(tmp_path, SMALL_EUW1)
    assert main(["prod", "--stacks-dir", str(d), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    lost = next(s for s in doc["scenarios"] if s["lost"] == "us-east-1")
    euw1 = next(r for r in lost["regions"] if r["region"] == "eu-west-1")
    assert (euw1["gpus_required"], euw1["gpus_max"], euw1["shortfall"]) == (30, 8, 22)


def test_cli_uses_manifest_benchmarks(tmp_path, capsys):
    m = write_manifest(tmp_path, manifest(built=["8.9", "8.6"], qps_per_gpu={"8.9": 100, "8.6": 100}))
    assert main(["staging", "--manifest", str(m)]) == 1
    assert "benchmarked in" in capsys.readouterr().out


def test_cli_refuses_a_manifest_that_does_not_validate(tmp_path, capsys):
    m = tmp_path / "manifest.json"
    m.write_text(json.dumps({"benchmark": {"qps_per_gpu": {"8.9": 100, "8.6": 100}}}))  # a fragment, not a manifest
    assert main(["staging", "--manifest", str(m)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {m} does not match model_build's manifest schema: model: Field required")


def test_cli_bad_env_exits_2(capsys):
    assert main(["nosuchenv"]) == 2
    assert "error:" in capsys.readouterr().err


def test_module_entry_point_exit_status(tmp_path):
    """`python -m infra.capacity` as a user runs it: non-zero for a failing fleet."""
    d = stacks(tmp_path, SMALL_EUW1)
    run = subprocess.run(
        [sys.executable, "-m", "infra.capacity", "prod", "--stacks-dir", str(d)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1, run.stderr
    assert "short by 22 GPUs" in run.stdout
