"""`drills readiness`: each check fails on its own, the CLI's exit codes and the Prometheus gauges."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from drills.cli import main
from drills.readiness.checks import (
    Declared,
    FleetSnapshot,
    PoolLive,
    RegionLive,
    capacity_n_plus_one,
    config_drift,
    declared_config,
    declared_from,
    digest_parity,
    engine_coverage,
    evaluate,
    health_checks,
    prometheus_text,
    replication,
    tensorrt_match,
)
from drills.readiness.view import active_reserved, image_tensorrt
from infra.config import load_fleet

DIGEST = "ab" * 32


@pytest.fixture(autouse=True)
def _no_ambient_manifest(monkeypatch, tmp_path):
    monkeypatch.setenv("RECO_DR_MANIFEST", str(tmp_path / "absent-manifest.json"))


def ready(env: str = "prod") -> tuple[FleetSnapshot, Declared]:
    """The live fleet exactly as the stacks declare it, reservations active: every check passes."""
    fleet = load_fleet(env)
    declared = declared_from(fleet)
    regions = {}
    for r, cfg in fleet.regions.items():
        pools = tuple(
            PoolLive(p.name, p.gpu.gpus, p.gpu.compute_capability, p.min, p.desired, p.max, p.capacity.instances)
            for p in cfg.gpu_pools
        )
        regions[r] = RegionLive(
            region=r,
            pools=pools,
            served_version=cfg.model.version,
            manifest_digest=DIGEST,
            engines=dict.fromkeys(cfg.compute_capabilities, "built"),
            engine_tensorrt=dict.fromkeys(cfg.compute_capabilities, cfg.triton.tensorrt),
            image_tensorrt=cfg.triton.tensorrt,
            replication_backlog=0,
            replication_lag_seconds=60.0,
            config=declared_config(cfg),
            health_check=dict(declared.health_check),
        )
    return FleetSnapshot(env, regions), declared


def change(live: FleetSnapshot, region: str, **kw) -> FleetSnapshot:
    return FleetSnapshot(live.env, {**live.regions, region: dataclasses.replace(live.regions[region], **kw)})


def failing(live: FleetSnapshot, declared: Declared) -> list[str]:
    return [r.name for r in evaluate(live, declared) if not r.ok]


def test_the_declared_fleet_is_ready():
    live, declared = ready()
    assert failing(live, declared) == []
    staging, d = ready("staging")
    assert failing(staging, d) == []


def test_capacity_fails_alone_when_a_reservation_is_gone():
    live, declared = ready()
    euw1 = live.regions["eu-west-1"]
    pools = tuple(dataclasses.replace(p, reserved_instances=0) for p in euw1.pools)
    # The config check compares the live reservation too; keep it equal here so capacity fails on its own.
    cfg = {**euw1.config, **{f"gpu_pools.{p.pool}.reserved_instances": 0 for p in pools}}
    broken = change(live, "eu-west-1", pools=pools, config=cfg)
    declared = dataclasses.replace(
        declared,
        config={**declared.config, "eu-west-1": cfg},
    )
    result = capacity_n_plus_one(broken, declared)
    assert (
        not result.ok and "with us-east-1 lost, eu-west-1 has 26,000 QPS guaranteed of 75,000 needed" in result.detail
    )
    assert failing(broken, declared) == ["capacity"]


def test_engines_fail_alone_when_a_compute_capability_has_none():
    live, declared = ready()
    broken = change(live, "eu-west-1", engines={"8.9": "built", "8.6": "missing"})
    result = engine_coverage(broken)
    assert not result.ok and "eu-west-1 serves 2026.11.0 with no engine for compute capability 8.6" in result.detail
    assert failing(broken, declared) == ["engines"]


def test_tensorrt_fails_alone_when_an_engine_was_built_on_another_version():
    live, declared = ready()
    broken = change(live, "us-west-2", engine_tensorrt={"8.0": "10.5.0"})
    result = tensorrt_match(broken)
    assert not result.ok and "us-west-2: the 8.0 engine was built with TensorRT 10.5.0" in result.detail
    assert failing(broken, declared) == ["tensorrt"]


def test_digest_fails_alone_when_one_region_serves_another_manifest():
    live, declared = ready()
    broken = change(live, "us-west-2", manifest_digest="cd" * 32)
    result = digest_parity(broken)
    assert not result.ok and "digests differ" in result.detail and "us-west-2 cdcdcdcdcdcd" in result.detail
    assert failing(broken, declared) == ["digest"]


def test_replication_fails_alone_on_lag_or_backlog():
    live, declared = ready()
    lagging = change(live, "us-east-1", replication_lag_seconds=1200.0)
    assert "us-east-1: replication lag 1200 s > RPO 900 s" in replication(lagging, declared).detail
    assert failing(lagging, declared) == ["replication"]
    backlog = change(live, "us-east-1", replication_backlog=42)
    assert "42 objects pending replication" in replication(backlog, declared).detail
    assert failing(backlog, declared) == ["replication"]


def test_config_fails_alone_on_drift():
    live, declared = ready()
    cfg = {**live.regions["us-east-1"].config, "model.canary_weight": 10}
    broken = change(live, "us-east-1", config=cfg)
    result = config_drift(broken, declared)
    assert not result.ok and "us-east-1 config model.canary_weight = 10, declared 0" in result.detail
    assert failing(broken, declared) == ["config"]


def test_health_checks_fail_alone_when_changed_outside_the_stack():
    live, declared = ready()
    broken = change(live, "eu-west-1", health_check={**declared.health_check, "failure_threshold": 10})
    result = health_checks(broken, declared)
    assert not result.ok and "eu-west-1 health check failure_threshold = 10, declared 3" in result.detail
    assert failing(broken, declared) == ["health_checks"]


def test_prometheus_gauges_one_per_check():
    live, declared = ready()
    text = prometheus_text(evaluate(change(live, "us-west-2", manifest_digest=None), declared), "prod")
    assert "# TYPE reco_readiness gauge" in text
    assert 'reco_readiness{check="digest",env="prod"} 0' in text
    assert 'reco_readiness{check="capacity",env="prod"} 1' in text
    assert len([line for line in text.splitlines() if line.startswith("reco_readiness{")]) == 7


def test_helpers_of_the_aws_view():
    from datetime import UTC, datetime

    assert image_tensorrt("nvcr.io/nvidia/tritonserver:25.01-py3") == "10.8.0"
    assert image_tensorrt("nvcr.io/nvidia/tritonserver:99.01-py3") is None
    now = datetime(2026, 12, 5, tzinfo=UTC)
    items = [
        {"State": "active", "TotalInstanceCount": 2},
        {"State": "active", "TotalInstanceCount": 3, "EndDate": datetime(2026, 12, 1, tzinfo=UTC)},
        {"State": "cancelled", "TotalInstanceCount": 4},
    ]
    assert active_reserved(items, now) == 2


def _write(path: Path, live: FleetSnapshot) -> Path:
    path.write_text(
        json.dumps({"env": live.env, "regions": {r: dataclasses.asdict(v) for r, v in live.regions.items()}})
    )
    return path


def test_cli_exit_0_when_ready_with_gauges(tmp_path, capsys):
    live, _ = ready()
    snap = _write(tmp_path / "snap.json", live)
    prom = tmp_path / "readiness.prom"
    assert main(["readiness", "--env", "prod", "--snapshot", str(snap), "--prom-file", str(prom)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("READY")
    assert 'reco_readiness{check="engines",env="prod"} 1' in prom.read_text()


def test_cli_exit_1_naming_each_failing_check(tmp_path, capsys):
    live, _ = ready()
    broken = change(change(live, "us-west-2", manifest_digest="cd" * 32), "eu-west-1", replication_backlog=5)
    snap = _write(tmp_path / "snap.json", broken)
    assert main(["readiness", "--env", "prod", "--snapshot", str(snap), "--json"]) == 1
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["ready"] is False and [c["name"] for c in doc["checks"] if not c["ok"]] == ["digest", "replication"]
    assert "not ready: digest, replication" in captured.err


def test_cli_exit_2_on_usage_and_config_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["readiness"])  # --env is required
    assert e.value.code == 2
    assert main(["readiness", "--env", "nosuchenv", "--snapshot", str(tmp_path / "x.json")]) == 2
    assert "error:" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["readiness", "--env", "prod", "--snapshot", str(bad)]) == 2
