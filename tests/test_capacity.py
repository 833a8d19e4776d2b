"""N+1 capacity math and `python -m infra.capacity ENV` (infra/capacity.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
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
        p.startswith("with us-east-1 lost, eu-west-1 needs 30 GPUs") and "short by 26 GPUs" in p for p in problems
    )


def test_cli_prints_table_and_exits_zero_for_prod(capsys):
    assert main(["prod"]) == 0
    out = capsys.readouterr().out
    for text in ("N+1 GPU capacity for prod", "lost region", "GPUs required", "guaranteed", "reachable at max"):
        assert text in out


def test_cli_reports_a_failing_fleet_and_exits_nonzero(tmp_path, capsys):
    d = stacks(tmp_path, SMALL_EUW1)
    assert main(["prod", "--stacks-dir", str(d)]) == 1
    out = capsys.readouterr().out
    assert "N+1 FAILS: with us-east-1 lost, eu-west-1 needs 30 GPUs" in out and "short by 26 GPUs" in out
    assert "N+1 does not hold" in out


def test_cli_json(tmp_path, capsys):
    d = stacks(tmp_path, SMALL_EUW1)
    assert main(["prod", "--stacks-dir", str(d), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    lost = next(s for s in doc["scenarios"] if s["lost"] == "us-east-1")
    euw1 = next(r for r in lost["regions"] if r["region"] == "eu-west-1")
    assert (euw1["gpus_required"], euw1["gpus_guaranteed"], euw1["gpus_max"]) == (30, 4, 8)
    assert (euw1["shortfall"], euw1["shortfall_at_max"], euw1["reachable_at_max"]) == (26, 22, False)


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
    assert "short by 26 GPUs" in run.stdout


# ---------------------------------------------------------------- guaranteed capacity (issue 18)
def _without_reservations(tmp_path: Path) -> Path:
    """The prod stacks with every pool's `capacity` removed: the same pools, nothing reserved."""
    edits = {}
    for stack in ("prod-use1", "prod-usw2", "prod-euw1"):
        pools = yaml.safe_load((STACKS_DIR / f"Pulumi.{stack}.yaml").read_text())["config"]["reco-dr:gpu_pools"]
        edits[stack] = {"gpu_pools": [{k: v for k, v in p.items() if k != "capacity"} for p in pools]}
    return stacks(tmp_path, edits)


def test_prod_passes_on_guaranteed_capacity_with_its_reservations():
    scenarios = n_plus_one(load_fleet("prod"))
    lost_use1 = {r.region: r for r in next(s for s in scenarios if s.lost == "us-east-1").regions}
    euw1 = lost_use1["eu-west-1"]
    # l40s: 4 reserved x 4 L40S; a10g: 2 reserved x 4 A10G (min 1 each, so reservations decide).
    assert (euw1.gpus_min, euw1.gpus_reserved, euw1.gpus_guaranteed) == (8, 24, 24)
    assert euw1.qps_guaranteed == 4 * 4 * 4000 + 2 * 4 * 2500 >= euw1.qps == 75_000
    assert all(r.ok for s in scenarios for r in s.regions)


def test_without_reservations_n_plus_one_fails_though_reachable_at_max_holds(tmp_path):
    fleet = load_fleet("prod", _without_reservations(tmp_path))
    scenarios = n_plus_one(fleet)
    failing = [(s.lost, r) for s in scenarios for r in s.regions if not r.ok]
    assert failing and all(r.reachable_at_max for _, r in failing)
    euw1 = next(r for lost, r in failing if lost == "us-east-1" and r.region == "eu-west-1")
    # 1 L40S node + 1 A10G node running = 26,000 QPS of 75,000.
    assert (euw1.gpus_guaranteed, euw1.gpus_reserved, euw1.qps_guaranteed) == (8, 0, 26_000)
    assert any(
        "eu-west-1 needs 23 GPUs" in p and "has 8 guaranteed (running 8, reserved 0)" in p and "not guaranteed" in p
        for p in findings(scenarios)
    )


def test_capacity_block_counts_until_its_end():
    from infra.capacity import guaranteed_instances
    from infra.config import GpuPool

    pool = GpuPool.model_validate(
        {
            "name": "h100",
            "instance_type": "p5.48xlarge",
            "min": 1,
            "desired": 1,
            "max": 4,
            "capacity": {
                "kind": "capacity-block",
                "reservation_id": "cr-0123456789abcdef0",
                "instances": 3,
                "end_date": "2027-01-01T11:30:00Z",
            },
        }
    )
    assert guaranteed_instances(pool, datetime(2026, 12, 31, tzinfo=UTC)) == 3
    assert guaranteed_instances(pool, datetime(2027, 1, 1, 11, 30, tzinfo=UTC)) == 1  # ended: back to min


def test_postures_json(capsys):
    assert main(["prod", "--postures", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["primary"] == "us-east-1" and "as published" in doc["prices_source"]
    by = {p["name"]: p for p in doc["postures"]}
    assert set(by) == {"active-active N+1 (as configured)", "active-active N+1, hot", "warm standby", "pilot light"}
    configured = by["active-active N+1 (as configured)"]
    assert configured["capacity_guaranteed"] and configured["gpus_held"] == 12 + 16 + 24
    assert configured["gpus_running"] == 12 + 8 + 8
    # Reserved nodes still boot after a loss: the capacity part is in the RTO; a hot posture has none.
    startup = sum(s["seconds"] for s in doc["startup"])
    assert configured["rto_seconds"] == by["active-active N+1, hot"]["rto_seconds"] + startup
    assert set(configured["rto_parts"]) >= {"detection", "dns ttl", "node boot", "image pull", "warm-up"}
    pilot = by["pilot light"]
    assert not pilot["capacity_guaranteed"] and pilot["gpus_held"] < by["warm standby"]["gpus_held"]
    assert all(r["gpus_held"] == 0 for r in pilot["regions"] if r["role"] == "standby")
    assert 0 < pilot["monthly_usd"] < configured["monthly_usd"] and pilot["unpriced"] == []


def test_postures_table(capsys):
    assert main(["prod", "--postures"]) == 0
    out = capsys.readouterr().out
    for text in ("DR postures for prod", "warm standby", "pilot light", "predicted RTO", "as published"):
        assert text in out
